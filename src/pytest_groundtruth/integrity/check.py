"""Check one artifact: pick the readers its kind allows and run the three checks.

* a GGUF file: metadata from its key/values, the engine's tokenizer, every tensor read
  from the file (:mod:`.gguf_tensors`);
* a transformers model directory (the transformers and torchao runtimes): its own
  config.json and tokenizer when it is not the source directory itself, and every
  weight of the loaded module (:mod:`.torch_weights`);
* an apr file: what ``apr inspect --json`` reports; apr's JSON commands expose neither
  its tokenizer nor its tensor values, so those checks are skipped with that reason.

The result is a :class:`Measurement` (JSON-friendly, cached by the suite); tensors are
judged afterwards by :func:`evaluate`, so a bound override needs no new measurement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_groundtruth.ggufio import names
from pytest_groundtruth.ggufio.reader import scan_gguf
from pytest_groundtruth.integrity import metadata, tokenizer
from pytest_groundtruth.integrity.expected_error import no_reference_reason
from pytest_groundtruth.integrity.findings import (
    FAILED,
    PASSED,
    SKIPPED,
    IntegrityReport,
    MetadataFinding,
    Section,
    TensorFinding,
    TensorStats,
    TokenizerFinding,
    to_jsonable,
)
from pytest_groundtruth.integrity.gguf_arrays import array_lengths
from pytest_groundtruth.integrity.gguf_tensors import TensorMeasurement, measure_gguf
from pytest_groundtruth.integrity.source import SourceTensors
from pytest_groundtruth.integrity.tensors import judge
from pytest_groundtruth.integrity.torch_weights import measure_module

ENGINE_FAILED = "the engine could not load the artifact"


@dataclass(frozen=True)
class EngineTokenizer:
    """The artifact's own tokenizer as the engine runs it."""

    encode: Callable[[str], Sequence[int]]
    decode: Callable[[Sequence[int]], str] | None
    call: str


@dataclass
class Measurement:
    metadata: Section
    tokenizer: Section
    tensors: TensorMeasurement | None
    tensors_skipped: str = ""
    calls: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = to_jsonable({"metadata": self.metadata, "tokenizer": self.tokenizer,
                                            "tensors_skipped": self.tensors_skipped,
                                            "calls": self.calls})
        data["tensors"] = None if self.tensors is None else to_jsonable({
            "stats": self.tensors.stats, "structural": self.tensors.structural,
            "notes": self.tensors.notes})
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Measurement:
        def section(raw: Mapping[str, Any], kind: type) -> Section:
            return Section(raw["name"], raw["status"], raw["checked"], raw["reason"],
                           tuple(_finding(kind, f) for f in raw["findings"]),
                           tuple(raw["notes"]))

        tensors = None
        if data["tensors"] is not None:
            raw = data["tensors"]
            tensors = TensorMeasurement(
                [_finding(TensorStats, s) for s in raw["stats"]],
                [_finding(TensorFinding, s) for s in raw["structural"]],
                list(raw["notes"]))
        return cls(section(data["metadata"], MetadataFinding),
                   section(data["tokenizer"], TokenizerFinding), tensors,
                   data["tensors_skipped"], list(data["calls"]))


def _finding(kind: type, raw: Mapping[str, Any]) -> Any:
    values = dict(raw)
    for key in ("shape", "expected_ids", "actual_ids", "expected", "actual"):
        if key in values and isinstance(values[key], list):
            values[key] = tuple(values[key])
    if kind in (TensorStats, TensorFinding):
        for key, value in values.items():
            if value in ("inf", "nan", "-inf") and key not in _TEXT_FIELDS:
                values[key] = float(value)
    return kind(**values)


_TEXT_FIELDS = ("name", "artifact_name", "qtype", "problem", "ref_kind", "diagnosis")


# --------------------------------------------------------------------------- sections


def metadata_section(expected: Mapping[str, metadata.Value], actual: Mapping[str, metadata.Value],
                     read: str, only: Sequence[str] | None = None) -> Section:
    found = metadata.compare_fields(expected, actual, only)
    failed = any(not f.ok for f in found)
    notes = tuple(f"{f.field}: {f.note}" for f in found if f.ok and f.note)
    return Section("metadata", FAILED if failed else PASSED, len(found), read, tuple(found),
                   notes)


def tokenizer_section(samples: Sequence[str], reference: Any, engine: EngineTokenizer
                      ) -> Section:
    def ref_encode(text: str) -> list[int]:
        return [int(t) for t in reference(text)["input_ids"]]

    def ref_decode(ids: Sequence[int]) -> str:
        return str(reference.decode(list(ids), skip_special_tokens=True))

    found = tokenizer.compare_tokenizers(samples, ref_encode, ref_decode, engine.encode,
                                         engine.decode, tokenizer.normalizer_of(reference))
    notes = [] if engine.decode is not None else ["decode not checked: the engine exposes "
                                                  "no detokenizer"]
    notes += [f"{f.text!r} encodes differently only because the engine does not apply the "
              "reference's Unicode normalization (llama.cpp has no normalizer): not a "
              "conversion fault" for f in found if f.ok]
    failed = any(not f.ok for f in found)
    return Section("tokenizer", FAILED if failed else PASSED, len(samples), engine.call,
                   tuple(found), tuple(notes))


def skipped(name: str, reason: str) -> Section:
    return Section(name, SKIPPED, 0, reason)


def load_reference_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


# --------------------------------------------------------------------------- artifacts


def check_gguf(path: Path, model_dir: Path, prompts: Sequence[str],
               engine: EngineTokenizer | str) -> Measurement:
    """A GGUF artifact; ``engine`` is the engine's tokenizer or why there is none."""

    config = names.read_config(model_dir)
    hp = names.hparams(config, str(model_dir / "config.json"))
    reference = load_reference_tokenizer(model_dir)
    facts = tokenizer.reference_facts(reference, config)
    scan = scan_gguf(path)
    actual = metadata.gguf_fields(scan.scalars, array_lengths(path), scan.tensors.keys())
    meta = metadata_section(metadata.expected_fields(config, facts), actual,
                            f"GGUF key/values of {path.name}")
    if isinstance(engine, str):
        tok = skipped("tokenizer", engine)
        if engine.startswith(ENGINE_FAILED):
            tok = Section("tokenizer", FAILED, 0, engine)
    else:
        tok = tokenizer_section(tokenizer.texts(prompts, facts), reference, engine)
    with SourceTensors(model_dir, hp.tied) as source:
        tensors = measure_gguf(path, source, hp)
    calls = [f"scan_gguf({str(path)!r}) key/values and tensor table; tensors memory-mapped, "
             "decoded with gguf.quants; references encoded with gguf.quants "
             "(ggml_quantize_chunk for the types it lacks)",
             f"AutoTokenizer.from_pretrained({str(model_dir)!r}) (reference tokenizer)"]
    if not isinstance(engine, str):
        calls.append(engine.call)
    return Measurement(meta, tok, tensors, calls=calls)


def check_directory(path: Path, model_dir: Path, prompts: Sequence[str], module: Any,
                    reference: Callable[..., Any], load_call: str,
                    engine: EngineTokenizer | None = None) -> Measurement:
    """A transformers model directory loaded as ``module``; ``reference`` builds each
    tensor's reference (:mod:`.torch_weights`)."""

    config = names.read_config(model_dir)
    hp = names.hparams(config, str(model_dir / "config.json"))
    same = Path(path).resolve() == Path(model_dir).resolve()
    if same:
        why = "the artifact is the source directory itself ({} is the reference)"
        meta = skipped("metadata", why.format("its config.json"))
        tok = skipped("tokenizer", why.format("its tokenizer"))
    else:
        ref_tok = load_reference_tokenizer(model_dir)
        facts = tokenizer.reference_facts(ref_tok, config)
        art_config = names.read_config(Path(path))
        art_tok = load_reference_tokenizer(Path(path))
        art_facts = tokenizer.reference_facts(art_tok, art_config)
        meta = metadata_section(metadata.expected_fields(config, facts),
                                metadata.config_fields(art_config, art_facts),
                                f"{path}/config.json")
        engine = engine or EngineTokenizer(
            lambda text: [int(t) for t in art_tok(text)["input_ids"]],
            lambda ids: str(art_tok.decode(list(ids), skip_special_tokens=True)),
            f"AutoTokenizer.from_pretrained({str(path)!r})")
        tok = tokenizer_section(tokenizer.texts(prompts, facts), ref_tok, engine)
    with SourceTensors(model_dir, hp.tied) as source:
        tensors = measure_module(module, source, hp, reference)
    return Measurement(meta, tok, tensors, calls=[
        f"{load_call}: every state_dict tensor (dequantized where quantized) against "
        f"{model_dir}/model*.safetensors"])


def check_apr(info: Mapping[str, Any], model_dir: Path, call: str) -> Measurement:
    """What ``apr inspect --json`` reports; tokenizer and tensors are not exposed."""
    config = names.read_config(model_dir)
    expected = metadata.expected_fields(config, None)
    actual = metadata.apr_fields(info)
    reported = [f for f, v in actual.items() if v.value is not None]
    meta = metadata_section(expected, actual, call, only=reported)
    missing = [f for f in metadata.APR_KEYS if f not in reported]
    if missing:
        meta = Section(meta.name, meta.status, meta.checked, meta.reason, meta.findings,
                       (*meta.notes, f"not reported by apr inspect: {', '.join(missing)}"))
    tok = skipped("tokenizer", "apr's JSON commands do not expose its tokenizer "
                  "(`apr run --json` reports generated ids only, not the prompt's)")
    count = info.get("tensor_count")
    why = ("apr's JSON commands do not expose tensor values (`apr inspect --json` reports "
           f"tensor_count {count} only)")
    return Measurement(meta, tok, None, tensors_skipped=why, calls=[call])


# --------------------------------------------------------------------------- verdict


def evaluate(measurement: Measurement, slack: float = 1.0) -> IntegrityReport:
    """Judge the tensors (with ``slack`` on every derived bound) and assemble the report."""

    if measurement.tensors is None:
        tensors = skipped("tensors", measurement.tensors_skipped)
        verdicts: list[TensorFinding] = []
    else:
        verdicts = [judge(s, slack) for s in measurement.tensors.stats]
        bad = [v for v in verdicts if v.problem]
        bad.sort(key=lambda f: (not f.diagnosis, -f.severity))  # explained ones first
        structural = list(measurement.tensors.structural)
        unjudged = sorted({s.qtype for s in measurement.tensors.stats
                           if s.ref_rel_error is None})
        notes = list(measurement.tensors.notes)
        if unjudged:

            notes += [f"values of {q} tensors not judged: {no_reference_reason(q)}"
                      for q in unjudged]
        failures = tuple(structural + bad)
        tensors = Section("tensors", FAILED if failures else PASSED,
                          len(measurement.tensors.stats) + len(structural),
                          "every tensor against the source", failures, tuple(notes))
    identical = (0 if measurement.tensors is None
                 else sum(st.identical for st in measurement.tensors.stats))
    details = {"tensors": [to_jsonable(v) for v in verdicts], "identical": identical}
    return IntegrityReport(measurement.metadata, measurement.tokenizer, tensors,
                           tuple(measurement.calls), details)
