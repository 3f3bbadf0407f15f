"""The llama.cpp runtime on real models: our GGUF export run by llama-cpp-python,
compared with the transformers float32 reference.

Fast tests use the tiny models; ``slow`` ones the embedded SmolLM2.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from pytest_groundtruth.config.roster import BUILTIN
from pytest_groundtruth.config.settings import ConfigError, Settings
from pytest_groundtruth.core.failures import EngineFailure, FailureKind, RuntimeUnavailable
from pytest_groundtruth.ggufio import EXPORTER_VERSION, export_gguf, quants
from pytest_groundtruth.ggufio import quantize as quantizer
from pytest_groundtruth.ggufio.reader import scan_gguf
from pytest_groundtruth.models.sources import ResolvedModel, resolve
from pytest_groundtruth.runtimes.base import Artifact, Capability, Generation
from pytest_groundtruth.runtimes.hf import TransformersRunner, TransformersRuntime
from pytest_groundtruth.runtimes.llamacpp import (
    ContextTooSmall,
    LlamaCppRunner,
    LlamaCppRuntime,
    llama_cpp_version,
)
from pytest_groundtruth.runtimes.registry import make_runtime
from pytest_groundtruth.runtimes.threads import default_threads
from pytest_groundtruth.store.artifacts import ArtifactCache, prepare, reimported

pytestmark = [
    pytest.mark.requires_llamacpp,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None,
        reason="llama-cpp-python is not installed: pip install llama-cpp-python",
    ),
]

ARCHS = ("llama", "qwen2", "gpt2", "qwen3", "gemma3", "phi3")


def first_fast(values: Sequence[str]) -> list[Any]:
    """The first value in the fast loop, the others ``slow``: each architecture opens two
    engines on its tiny model (seconds), and the full run still covers all of them."""
    return [values[0], *(pytest.param(v, marks=pytest.mark.slow) for v in values[1:])]

EXACT = ("llama", "qwen2", "qwen3", "phi3")  # F32 greedy identical to transformers
PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"
PROMPTS = {p.stem: p.read_text().strip() for p in sorted(PROMPTS_DIR.glob("*.txt"))}
PARAGRAPH = (PROMPTS_DIR / "eval" / "perplexity.txt").read_text().strip()
EXTRA_TEXTS = [
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "Numbers 12345 and 3.14159, symbols !?;: and a single\nnewline",
    "Unicode: café, naïve, 日本語, emoji 🚀🦙",
]


def mismatches(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, int | None]:
    """count_mismatches (positional over the shorter + length difference), first divergence."""
    n = min(len(a), len(b))
    diffs = [i for i in range(n) if a[i] != b[i]]
    first = diffs[0] if diffs else (n if len(a) != len(b) else None)
    return len(diffs) + abs(len(a) - len(b)), first


def near_tie_at_first_divergence(ref: Generation, got: Generation) -> bool:
    """vLLM's check_logprobs_close: at the first differing step each side's token is in
    the other side's top-k."""
    _, first = mismatches(ref.tokens, got.tokens)
    if first is None:
        return True
    if first >= min(len(ref.tokens), len(got.tokens)):
        return False  # one stopped (EOS) where the other did not: not a near tie
    assert ref.topk is not None
    assert got.topk is not None
    return ref.tokens[first] in got.topk[first].ids and got.tokens[first] in ref.topk[first].ids


@pytest.fixture(scope="module")
def runtime() -> LlamaCppRuntime:
    rt = LlamaCppRuntime(n_ctx=512)  # logits_all keeps n_ctx x vocab floats per runner
    reason = rt.unavailable()
    if reason:
        pytest.skip(reason)
    return rt


@pytest.fixture(scope="module")
def cache(gt_cache: Path) -> ArtifactCache:
    return ArtifactCache(gt_cache)


@pytest.fixture(scope="module")
def runners(
    runtime: LlamaCppRuntime, cache: ArtifactCache, tiny: Callable[[str], ResolvedModel]
) -> Iterator[Callable[[str, str], LlamaCppRunner]]:
    """``runners(arch, quant)``: one open llama.cpp runner per tiny model and quant."""
    opened: dict[tuple[str, str], LlamaCppRunner] = {}

    def get(arch: str, quant: str) -> LlamaCppRunner:
        if (arch, quant) not in opened:
            model = tiny(arch)
            opened[arch, quant] = runtime.open(prepare(runtime, model, quant, cache), model)
        return opened[arch, quant]

    yield get
    for runner in opened.values():
        runner.close()


@pytest.fixture(scope="module")
def references(
    cache: ArtifactCache, tiny: Callable[[str], ResolvedModel]
) -> Iterator[Callable[[str], TransformersRunner]]:
    """``references(arch)``: the transformers float32 runner of a tiny model."""
    opened: dict[str, TransformersRunner] = {}
    hf = TransformersRuntime()

    def get(arch: str) -> TransformersRunner:
        if arch not in opened:
            model = tiny(arch)
            opened[arch] = hf.open(prepare(hf, model, "float32", cache), model)
        return opened[arch]

    yield get
    for runner in opened.values():
        runner.close()


# --------------------------------------------------------------------------- the runtime


@pytest.mark.parametrize(("workers", "expected"), [("1", 8), ("2", 8), ("4", 4), ("32", 1),
                                                   ("", 8), ("auto", 8)])
def test_threads_are_shared_among_xdist_workers(
        monkeypatch: pytest.MonkeyPatch, workers: str, expected: int) -> None:
    """16 CPUs: at most 8 threads, and the workers share the CPUs instead of fighting."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", workers)
    assert default_threads() == expected


def test_runtime_declaration(runtime: LlamaCppRuntime) -> None:
    assert runtime.name == "llamacpp"
    assert runtime.quantizations[:4] == ("float32", "float16", "int8", "int4")
    assert set(runtime.quantizations[4:]) == set(quants.CATALOG)
    assert {"q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0", "q4_1", "q3_k_m", "q2_k",
            "iq4_xs"} <= set(runtime.quantizations)
    assert not set(quants.NEEDS_IMATRIX) & set(runtime.quantizations)
    assert [runtime.qtype(q) for q in ("float32", "int8", "int4", "q4_k_m", "q4_1")] == [
        "F32", "Q8_0", "Q4_0", "Q4_K_M", "Q4_1"]
    assert runtime.key_parts("q4_k_m")["converter"] == "auto"
    # every capability but transformers' own (assisted generation, an unmerged adapter)
    assert runtime.capabilities == frozenset(Capability) - {Capability.ASSISTED,
                                                           Capability.LORA_UNMERGED}
    assert runtime.artifact_suffix("int8") == ".gguf"
    assert runtime.unavailable() is None
    version = runtime.version()
    assert f"llama-cpp-python {llama_cpp_version()}" in version
    assert f"exporter {EXPORTER_VERSION}" in version
    assert runtime.key_parts("float32")["kv_cache"] == "f32"
    assert runtime.key_parts("int4")["kv_cache"] == "f16"
    assert isinstance(make_runtime("llamacpp", Settings(root=Path.cwd())), LlamaCppRuntime)
    with pytest.raises(ValueError, match="has no quantization 'bfloat16'"):
        runtime.qtype("bfloat16")
    with pytest.raises(ValueError, match="kv_cache must be one of"):
        LlamaCppRuntime(kv_cache="q8")


def test_build_and_validate(
    runtime: LlamaCppRuntime,
    cache: ArtifactCache,
    tiny: Callable[[str], ResolvedModel],
    tmp_path: Path,
) -> None:
    model = tiny("qwen2")
    artifact = prepare(runtime, model, "int8", cache)
    assert artifact.path.suffix == ".gguf"
    assert "export_gguf(" in artifact.recipe
    assert "'Q8_0'" in artifact.recipe
    assert runtime.validate(artifact.path) is None
    assert {t.type for t in scan_gguf(artifact.path).tensors.values()} == {"F32", "Q8_0"}

    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(artifact.path.read_bytes()[:100_000])
    assert "truncated" in (runtime.validate(truncated) or "")
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    assert "too short" in (runtime.validate(empty) or "")
    assert runtime.validate(tmp_path / "absent.gguf") is not None


# --------------------------------------------------------------------------- tokens and text


@pytest.mark.parametrize("arch", first_fast(ARCHS))
def test_tokenization_matches_transformers(
    arch: str,
    runners: Callable[[str, str], LlamaCppRunner],
    references: Callable[[str], TransformersRunner],
) -> None:
    runner, reference = runners(arch, "float32"), references(arch)
    for text in [*PROMPTS.values(), *EXTRA_TEXTS, PARAGRAPH]:
        assert runner.tokenize(text) == reference.tokenize(text), text


# transformers 5 loads a qwen2 model's tokenizer as Qwen2Tokenizer, whose pre-tokenizer
# regex replaces tokenizer.json's (byte-level GPT-2 regex): "\n\n" is one token there,
# two in tokenizer.json and in llama.cpp with tokenizer.ggml.pre = "smollm". With
# tokenizer.ggml.pre = "qwen2" llama.cpp matches transformers (measured).


@pytest.mark.parametrize(
    "arch",
    first_fast([
        "llama",
        "gpt2",
        # transformers loads qwen2 tokenizers with Qwen2Tokenizer's pre-tokenizer; the
        # roster's tokenizer_pre "qwen2" makes llama.cpp split "\n\n" the same way.
        "qwen2",
        "qwen3",
        "gemma3",
        "phi3",
    ]),
)
def test_tokenization_of_newline_runs_matches_transformers(
    arch: str,
    runners: Callable[[str, str], LlamaCppRunner],
    references: Callable[[str], TransformersRunner],
) -> None:
    runner, reference = runners(arch, "float32"), references(arch)
    text = "spaces   and\ttabs\n\nnewlines\n\n\n  end"
    assert runner.tokenize(text) == reference.tokenize(text)


def test_decode_matches_transformers_skip_special_tokens(
    runners: Callable[[str, str], LlamaCppRunner],
    references: Callable[[str], TransformersRunner],
) -> None:
    runner, reference = runners("llama", "float32"), references("llama")
    sequences = [reference.tokenize(text) for text in EXTRA_TEXTS]
    sequences += [[1, 504, 3575, 2, 282, 0], [2], [], list(range(17, 60))]
    for ids in sequences:
        expected = reference.tokenizer.decode(ids, skip_special_tokens=True)
        assert runner.decode(ids) == expected, ids


# --------------------------------------------------------------------------- generation


@pytest.mark.parametrize("arch", first_fast(ARCHS))
def test_f32_greedy_against_transformers(
    arch: str,
    runners: Callable[[str, str], LlamaCppRunner],
    references: Callable[[str], TransformersRunner],
) -> None:
    """llama, qwen2, qwen3 and phi3 (F32 weights, F32 KV cache) give the reference's
    tokens; gpt2 and gemma3 may flip a near tie (ggml's GELU uses an F16 lookup table:
    logits differ by ~3e-3)."""
    runner, reference = runners(arch, "float32"), references(arch)
    for name, prompt in PROMPTS.items():
        ref = reference.generate(prompt, 32, top_k=5)
        got = runner.generate(prompt, 32, top_k=5)
        assert got.prompt_tokens == ref.prompt_tokens
        count, first = mismatches(ref.tokens, got.tokens)
        if arch in EXACT:
            assert count == 0, f"{name}: {count} mismatches from position {first}"
            assert got.text == ref.text
        else:
            assert near_tie_at_first_divergence(ref, got), f"{name}: diverged at {first}"
        # teacher forcing on the reference's sequence: the logits themselves agree
        ids = list(ref.prompt_tokens) + list(ref.tokens)
        start = len(ref.prompt_tokens)
        diff = np.abs(runner.score(ids, start) - reference.score(ids, start)).max()
        assert diff < (1e-3 if arch in EXACT else 2e-2), f"{name}: log-prob difference {diff}"


def test_generation_record(runners: Callable[[str, str], LlamaCppRunner]) -> None:
    runner = runners("llama", "int8")
    prompt = PROMPTS["completion"]
    first = runner.generate(prompt, 12, top_k=4)
    again = runner.generate(prompt, 12, top_k=4)
    assert first.tokens == again.tokens  # deterministic run to run
    assert first.topk == again.topk
    assert len(first.tokens) == 12
    assert first.stop_reason == "length"
    assert first.prompt_tokens == tuple(runner.tokenize(prompt))
    assert first.text == runner.decode(first.tokens)
    assert first.seconds > 0
    assert str(runner.artifact.path) in first.call
    assert "llama_cpp.Llama(" in first.call
    assert first.topk is not None
    assert len(first.topk) == 12
    for step, token in zip(first.topk, first.tokens, strict=True):
        assert step.ids[0] == token  # greedy picks the most likely token
        assert list(step.logprobs) == sorted(step.logprobs, reverse=True)
    assert runner.generate(prompt, 3).topk is None


def test_stops_after_the_end_of_sequence_token(
    runners: Callable[[str, str], LlamaCppRunner],
) -> None:
    runner = runners("llama", "float32")
    free = runner.generate(PROMPTS["greeting"], 8)
    stop_at = free.tokens[3]
    original = runner.eos
    runner.eos = [stop_at]
    try:
        stopped = runner.generate(PROMPTS["greeting"], 8)
    finally:
        runner.eos = original
    end = free.tokens.index(stop_at) + 1
    assert stopped.tokens == free.tokens[:end]
    assert stopped.stop_reason == "eos"


def test_eos_comes_from_the_model(runners: Callable[[str, str], LlamaCppRunner]) -> None:
    # generation_config.json says 2; llama.cpp's own end-of-generation set also has 0
    assert runners("gpt2", "float32").eos == [2]


def test_context_overflow_is_explained(runners: Callable[[str, str], LlamaCppRunner]) -> None:
    runner = runners("gpt2", "float32")  # the runtime opens it with n_ctx 512
    assert runner.n_ctx == 512
    with pytest.raises(ContextTooSmall, match=r"the llama\.cpp context holds 512 \(n_ctx\); "
                       r"raise it in pyproject\.toml: \[tool\.groundtruth\.runtime\.llamacpp\] "
                       r'with kind = "llamacpp" and n_ctx = 1024'):
        runner.generate(PROMPTS["greeting"], 600)


# --------------------------------------------------------------------------- perplexity, score


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "phi3"])
def test_perplexity_and_score_match_transformers(
    arch: str,
    runners: Callable[[str, str], LlamaCppRunner],
    references: Callable[[str], TransformersRunner],
) -> None:
    runner, reference = runners(arch, "float32"), references(arch)
    got, ref = runner.perplexity(PARAGRAPH), reference.perplexity(PARAGRAPH)
    assert got.tokens_evaluated == ref.tokens_evaluated
    assert got.perplexity == pytest.approx(ref.perplexity, rel=1e-4)
    assert got.cross_entropy == pytest.approx(ref.cross_entropy, abs=1e-4)
    ids = runner.tokenize(PARAGRAPH)[:50]
    scores = runner.score(ids, 10)
    assert scores.shape == (40, 49152)
    assert scores.dtype == np.float32
    assert np.allclose(np.exp(scores.astype(np.float64)).sum(axis=1), 1.0, atol=1e-4)
    assert np.abs(scores - reference.score(ids, 10)).max() < 1e-3
    with pytest.raises(ValueError, match="start must be in"):
        runner.score(ids, 0)


# --------------------------------------------------------------------------- faults, export


def artifact_at(path: Path, quant: str = "float32") -> Artifact:
    return Artifact(
        runtime="llamacpp", model="test", quant=quant, path=path, key="test", recipe="test"
    )


@pytest.mark.slow
def test_nan_logits_are_a_fault(tiny: Callable[[str], ResolvedModel], tmp_path: Path) -> None:
    source = tiny("llama")
    broken = tmp_path / "model"
    shutil.copytree(source.path, broken)
    weights = load_file(str(broken / "model.safetensors"))
    weights["model.norm.weight"] = np.full_like(weights["model.norm.weight"], np.nan)
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "nan.gguf"
    export_gguf(broken, out, "F32", "smollm")
    with LlamaCppRunner(artifact_at(out), eos_ids=[2]) as runner:
        with pytest.raises(EngineFailure) as info:
            runner.generate(PROMPTS["greeting"], 4)
        assert info.value.kind is FailureKind.NAN
        with pytest.raises(EngineFailure):
            runner.perplexity(PARAGRAPH)


def test_unloadable_file_is_a_crash(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 40)
    with pytest.raises(EngineFailure) as info:
        LlamaCppRunner(artifact_at(bad))
    assert info.value.kind is FailureKind.CRASHED


@pytest.mark.slow
def test_export_gguf_copies_the_artifact(
    runners: Callable[[str, str], LlamaCppRunner], tmp_path: Path
) -> None:
    runner = runners("qwen2", "int4")
    out = tmp_path / "exported.gguf"
    call = runner.export_gguf(out)
    assert out.read_bytes() == runner.artifact.path.read_bytes()
    assert str(runner.artifact.path) in call
    assert [p.name for p in tmp_path.iterdir()] == ["exported.gguf"]


# --------------------------------------------------------------------------- roundtrip


@pytest.mark.slow
def test_reimport_roundtrip_reproduces_the_artifact(
    runtime: LlamaCppRuntime,
    cache: ArtifactCache,
    tiny: Callable[[str], ResolvedModel],
    runners: Callable[[str, str], LlamaCppRunner],
    tmp_path: Path,
) -> None:
    """GGUF -> transformers (dequantized) -> GGUF at the same type gives the same tensors
    and therefore the same tokens (requantizing dequantized Q4_0 values is exact)."""
    model = tiny("llama")
    runner = runners("llama", "int4")
    exported = tmp_path / "exported" / "model.gguf"
    runner.export_gguf(exported)
    back = reimported(runtime, model, "int4", exported, cache)
    assert "gguf_to_hf_dir" in back.recipe
    a, b = scan_gguf(back.path), scan_gguf(runner.artifact.path)
    assert list(a.tensors.items()) == list(b.tensors.items())
    with back.path.open("rb") as fa, runner.artifact.path.open("rb") as fb:
        fa.seek(a.data_offset)
        fb.seek(b.data_offset)
        assert fa.read() == fb.read()
    with runtime.open(back, model) as again:
        for prompt in PROMPTS.values():
            assert again.generate(prompt, 16).tokens == runner.generate(prompt, 16).tokens


# --------------------------------------------------------------------------- embedded model


@pytest.fixture(scope="module")
def embedded(gt_cache: Path) -> ResolvedModel:
    return resolve(BUILTIN["smollm2-135m"], gt_cache)


@pytest.fixture(scope="module")
def embedded_reference(embedded: ResolvedModel, cache: ArtifactCache) -> Iterator[dict[str, Any]]:
    hf = TransformersRuntime()
    with hf.open(prepare(hf, embedded, "float32", cache), embedded) as reference:
        yield {
            "generations": {k: reference.generate(v, 32) for k, v in PROMPTS.items()},
            "tokens": {k: reference.tokenize(v) for k, v in PROMPTS.items()},
            "perplexity": reference.perplexity(PARAGRAPH),
        }


@pytest.mark.slow
def test_embedded_f32_against_transformers(
    runtime: LlamaCppRuntime,
    cache: ArtifactCache,
    embedded: ResolvedModel,
    embedded_reference: dict[str, Any],
) -> None:
    """The done-when bound: llama.cpp F32 within 2/32 mismatches on every prompt."""
    with runtime.open(prepare(runtime, embedded, "float32", cache), embedded) as runner:
        for name, prompt in PROMPTS.items():
            ref: Generation = embedded_reference["generations"][name]
            got = runner.generate(prompt, 32)
            assert runner.tokenize(prompt) == embedded_reference["tokens"][name]
            count, first = mismatches(ref.tokens, got.tokens)
            assert count <= 2, f"{name}: {count} mismatches from position {first}"
            assert got.stop_reason == ref.stop_reason
        ppl = runner.perplexity(PARAGRAPH)
    assert ppl.perplexity == pytest.approx(embedded_reference["perplexity"].perplexity, rel=1e-3)
    arithmetic = embedded_reference["generations"]["arithmetic"]
    assert arithmetic.tokens == (2,)  # <|im_end|> first: both sides stop at once
    assert arithmetic.stop_reason == "eos"


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["int8", "int4", "q4_1"])
def test_embedded_quantized_runs_deterministically(
    quant: str,
    runtime: LlamaCppRuntime,
    cache: ArtifactCache,
    embedded: ResolvedModel,
    embedded_reference: dict[str, Any],
) -> None:
    """Quantized greedy output drifts from the reference (measured, not bounded here;
    see the token suites' bounds); each run of it is reproducible."""
    with runtime.open(prepare(runtime, embedded, quant, cache), embedded) as runner:
        for prompt in PROMPTS.values():
            first, second = runner.generate(prompt, 32), runner.generate(prompt, 32)
            assert first.tokens == second.tokens
        ppl = runner.perplexity(PARAGRAPH).perplexity
    reference = embedded_reference["perplexity"].perplexity
    assert reference < ppl < 1.2 * reference


# --------------------------------------------------------------------------- llama.cpp's types


def tensor_types(path: Path) -> dict[str, str]:
    return {name: t.type for name, t in scan_gguf(path).tensors.items()}


def test_quantizer_types_are_llama_cpps_mixes(
    runtime: LlamaCppRuntime, cache: ArtifactCache, tiny: Callable[[str], ResolvedModel],
    runners: Callable[[str, str], LlamaCppRunner],
) -> None:
    model = tiny("qwen3")
    artifact = prepare(runtime, model, "q4_k_m", cache)
    assert "export_gguf(" in artifact.recipe  # our converter's F32 ...
    assert "llama_model_quantize('<f32>', '<out>', ftype=LLAMA_FTYPE_MOSTLY_Q4_K_M" in (
        artifact.recipe)
    types = tensor_types(artifact.path)
    assert {"Q4_K", "Q6_K"} <= set(types.values())  # the 256-wide rows
    assert types["blk.0.attn_q.weight"] in ("Q5_0", "Q4_0")  # 64-wide rows fall back
    runner = runners("qwen3", "q4_k_m")
    gen = runner.generate(PROMPTS["completion"], 8)
    assert len(gen.tokens) == 8


def test_the_converter_is_a_configured_runtime_option() -> None:
    settings = Settings(root=Path.cwd(), runtime_options={
        "llamacpp-hfconv": {"kind": "llamacpp", "converter": "llama.cpp"}})
    configured = make_runtime("llamacpp-hfconv", settings)
    assert isinstance(configured, LlamaCppRuntime)
    assert configured.converter == "llama.cpp"
    assert configured.name == "llamacpp-hfconv"
    with pytest.raises(ConfigError, match="converter must be one of"):
        make_runtime("bad", Settings(root=Path.cwd(), runtime_options={
            "bad": {"kind": "llamacpp", "converter": "mine"}}))


@pytest.mark.slow  # llama.cpp's converter in a child process, two runners
def test_the_converter_is_a_runtime_option(
    cache: ArtifactCache, tiny: Callable[[str], ResolvedModel], gt_cache: Path,
) -> None:
    theirs = LlamaCppRuntime(n_ctx=512, converter="llama.cpp", cache_dir=gt_cache)
    reason = theirs.unavailable()
    if reason:
        pytest.skip(reason)
    ours = LlamaCppRuntime(n_ctx=512, converter="ours")
    model = tiny("qwen3")
    a = prepare(ours, model, "float32", cache)
    b = prepare(theirs, model, "float32", cache)
    assert a.key != b.key
    assert "convert_hf_to_gguf.py" in b.recipe
    assert "--outtype f32" in b.recipe
    assert "converter llama.cpp" in theirs.version()
    q = prepare(theirs, model, "q6_k", cache)
    assert "convert_hf_to_gguf.py" in q.recipe
    assert "LLAMA_FTYPE_MOSTLY_Q6_K" in q.recipe
    with ours.open(a, model) as first, theirs.open(b, model) as second:
        for prompt in PROMPTS.values():
            assert first.generate(prompt, 16).tokens == second.generate(prompt, 16).tokens


def test_auto_takes_llama_cpps_converter_where_ours_does_not_write_the_architecture(
    tmp_path: Path, tiny: Callable[[str], ResolvedModel],
) -> None:
    auto = LlamaCppRuntime()
    assert auto.converter_for(tiny("phi3")) == "ours"
    other = tmp_path / "olmo2"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "olmo2"}')
    model = ResolvedModel(BUILTIN["tiny-llama"], other, fingerprint="x")
    assert auto.converter_for(model) == "llama.cpp"
    assert LlamaCppRuntime(converter="ours").converter_for(model) == "ours"


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "quant", "pure"), [("llama", "q4_0", True),
                                                     ("qwen3", "q4_k_m", False),
                                                     ("phi3", "q5_k_m", False)])
def test_roundtrip_keeps_each_tensors_type(
    arch: str, quant: str, pure: bool,
    runtime: LlamaCppRuntime, cache: ArtifactCache, tiny: Callable[[str], ResolvedModel],
    tmp_path: Path,
) -> None:
    """A file from llama.cpp's quantizer (all Q4_0 with --pure, token embeddings
    included; a K-quant mix) comes back from GGUF -> transformers -> GGUF with every
    tensor at its own type, and the same tokens."""
    model = tiny(arch)
    f32 = tmp_path / "f32.gguf"
    export_gguf(model.path, f32, "F32", "smollm")
    original = tmp_path / "original.gguf"
    quantizer.quantize(f32, original, quant, pure=pure)
    types = tensor_types(original)
    if pure:
        assert types["token_embd.weight"] == "Q4_0"
        assert types["output.weight"] == "Q4_0"
    back = reimported(runtime, model, quant, original, cache)
    assert tensor_types(back.path) == types
    assert "like=" in back.recipe
    source = artifact_at(original, quant)
    with LlamaCppRunner(source) as first, runtime.open(back, model) as again:
        for prompt in PROMPTS.values():
            assert again.generate(prompt, 16).tokens == first.generate(prompt, 16).tokens


@pytest.mark.slow
def test_a_roundtrip_transformers_cannot_make_says_why(
    runtime: LlamaCppRuntime, cache: ArtifactCache, tiny: Callable[[str], ResolvedModel],
) -> None:
    """transformers' GGUF loader rebuilds a gemma3 tokenizer as GemmaTokenizer and adds
    '<mask>' beyond the tiny gemma3's byte-level BPE vocabulary: not a file to write."""
    model = tiny("gemma3")
    artifact = prepare(runtime, model, "q4_k_m", cache)
    with pytest.raises(RuntimeUnavailable, match=r"'<mask>' \(49152\) beyond its vocabulary"):
        reimported(runtime, model, "q4_k_m", artifact.path, cache)
