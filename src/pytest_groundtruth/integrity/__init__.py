"""The integrity checks: an artifact's metadata, tokenizer and every tensor against its source.

Modules, one job each:

* :mod:`.findings` - the result types (pure data);
* :mod:`.expected_error` - what a declared quantization type costs a tensor, and the bounds;
* (:mod:`pytest_groundtruth.ggufio.ggml_encoder`: ggml's encoders for types gguf lacks);
* :mod:`.source` - the source model's tensors, one at a time;
* :mod:`.tensors` - running statistics of one tensor and the verdict;
* :mod:`.diagnose` - what a wrong tensor holds instead (shuffled rows, another layer, ...);
* :mod:`.gguf_tensors` / :mod:`.torch_weights` - every tensor of a GGUF file / a loaded module;
* :mod:`.gguf_arrays` - array lengths of a GGUF's key/values, cheaply;
* :mod:`.metadata` / :mod:`.tokenizer` - the metadata fields / tokenizer parity;
* :mod:`.check` - one artifact, per kind; :mod:`.report` - summary line and tables.

The ``integrity`` suite (:mod:`pytest_groundtruth.suites.integrity`) runs them per model x
runtime x quantization; docs/integrity.md explains the rule for expected errors.
"""
