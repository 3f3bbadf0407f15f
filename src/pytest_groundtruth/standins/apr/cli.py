"""A STAND-IN for the ``apr`` CLI of aprender (``cargo install apr-cli``). Not aprender.

aprender cannot be installed on the project's machines (no crates.io access), so the
apr runner (:mod:`pytest_groundtruth.runtimes.apr`) is exercised against this program,
which speaks the same documented command line and JSON (apr-cli's current flags) and does
real work with real parts:

``apr import <hf://ID | file.safetensors | dir | file.gguf> --quantize int8|int4|fp16 -o OUT``
    Reads the source (a hub snapshot through the local Hugging Face cache, a float32
    safetensors model directory, or a GGUF file dequantized by transformers' GGUF
    loader) and writes OUT in the stand-in's own format (below).
``apr run FILE -p PROMPT -n 32 [--temperature 0 --top-k 1] [--json]``
    Loads the weights with transformers at float32, applies the quantization for real
    (int8: torchao ``Int8WeightOnlyConfig()``; int4: torchao
    ``IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32))``; fp16:
    float16 weights and activations) and greedy-generates with the project's
    transformers runner (stop after EOS, which is included in ``tokens``). ``--json``
    prints model, text, tokens, tokens_generated, max_tokens, tok_per_sec,
    inference_time_ms, used_gpu, cached (plus ``standin: true``).
``apr eval FILE --json [--text TEXT] [--threshold T]``
    Perplexity of TEXT, one forward pass, the same definition as the transformers
    runtime. Prints model, dataset, perplexity, cross_entropy, tokens_evaluated,
    eval_time_secs, threshold, passed; exits 1 (after printing the JSON) when the
    perplexity is over the threshold (default 20.0, the stand-in's choice).
``apr export FILE --format gguf|safetensors -o OUT``
    GGUF through :func:`pytest_groundtruth.ggufio.writer.export_gguf` (int8 -> Q8_0,
    int4 -> Q4_0, fp16 -> F16, unquantized -> F32).
``apr inspect FILE [--json]``
    architecture, num_layers, num_heads, hidden_size, vocab_size, tensor_count, format,
    metadata (of a stand-in .apr or a GGUF file). Does not import torch.
``apr --version``
    ``apr 0.0.0+groundtruth-standin.1 (pytest-groundtruth stand-in, not aprender;
    transformers X, torch Y, torchao Z)``.

The stand-in's ``.apr`` format (NOT aprender's APR v2 format, which stores quantized
tensors in its own binary layout): a zip archive (stored, uncompressed) holding

- ``apr-standin.json``: ``{"format": "apr-standin", "format_version": 1, "standin":
  true, "quantization": "int8"|"int4"|"fp16"|"none", "source": ..., "source_kind":
  "hf"|"safetensors"|"directory"|"gguf", "tokenizer_pre": ..., "created_by": ...}``
- ``model/``: the float32 Hugging Face model directory (config.json, model.safetensors,
  tokenizer files). The quantization is applied when the file is loaded, so the file is
  self-contained: deleting the source does not break it.

Fault injection, for the runner's robustness tests: ``APR_STANDIN_FAULT`` is a
comma-separated list of ``FAULT`` or ``COMMAND:FAULT`` items (``run:nan``); an
unscoped fault applies to every subcommand but not to ``--version`` (scope it as
``version:FAULT`` for that). Faults:

``ansi``          colour codes around and inside the JSON (jq -C style) and a coloured log line
``noisy``         log lines with braces on stdout before and after the JSON
``garbage``       non-JSON text on stdout, exit 0
``crash``         a Rust panic message on stderr, exit 101
``hang``          sleep forever (with a child process that holds the pipes open)
``nan``           eval reports a NaN perplexity; run reports the text "NaN"
``bad-tokens``    run reports non-integer token ids
``refuse-flags``  run rejects ``--temperature``/``--top-k`` like a build without them
``old-cli``       the older command line: ``apr run FILE PROMPT -n 32 -f json`` works,
                  ``-p`` and ``--json`` are rejected (clap's "unexpected argument")
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_groundtruth.runtimes.hf import TransformersRunner

FORMAT = "apr-standin"
FORMAT_VERSION = 1

STANDIN_MARKER = "groundtruth-standin"  # in the --version line; how tests tell it from apr
STANDIN_VERSION = f"0.0.0+{STANDIN_MARKER}.{FORMAT_VERSION}"


def _engine_versions() -> str:
    """The libraries that do the stand-in's work (they decide its outputs, so they belong
    in the version that artifact and generation cache keys hash), without importing them."""
    found = []
    for dist in ("transformers", "torch", "torchao"):
        try:
            found.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{dist} missing")
    return ", ".join(found)


VERSION_LINE = (
    f"apr {STANDIN_VERSION} (pytest-groundtruth stand-in, not aprender; {_engine_versions()})"
)
MANIFEST = "apr-standin.json"
MODEL_PREFIX = "model/"

FAULT_ENV = "APR_STANDIN_FAULT"
FAULTS = (
    "ansi", "noisy", "garbage", "crash", "hang", "nan", "bad-tokens", "refuse-flags", "old-cli",
)
QUANTS = ("int8", "int4", "fp16")
GGUF_QTYPES = {"int8": "Q8_0", "int4": "Q4_0", "fp16": "F16", "none": "F32"}
TORCHAO_CONFIGS = {
    "int8": "Int8WeightOnlyConfig()",
    "int4": "IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32))",
}
DEFAULT_EVAL_THRESHOLD = 20.0
# Files of a Hugging Face model directory that go into the archive (sources.py's list).
_MODEL_SUFFIXES = (".json", ".safetensors", ".model", ".txt", ".jinja")

SAMPLE_TEXT = (
    "The quick brown fox jumps over the lazy dog. Language models assign a probability to "
    "every token of a text; perplexity is the exponential of the mean negative log-likelihood."
)


class StandinError(Exception):
    """A user error: printed as ``error: ...`` on stderr, exit 1 (as apr does)."""


def is_standin_version(text: str) -> bool:
    """Whether an ``apr --version`` output is this stand-in's."""
    return STANDIN_MARKER in text


def write_launcher(directory: Path, name: str = "apr") -> Path:
    """Write an executable ``name`` in ``directory`` that runs this stand-in with the
    current interpreter (put ``directory`` on PATH to make it ``apr``)."""
    directory.mkdir(parents=True, exist_ok=True)
    launcher = directory / name
    launcher.write_text(
        f"#!{sys.executable}\n"
        "# pytest-groundtruth stand-in for aprender's `apr` CLI (not aprender)\n"
        "import sys\n"
        "from pytest_groundtruth.standins.apr.cli import main\n"
        "sys.exit(main())\n"
    )
    launcher.chmod(0o755)
    return launcher


# --------------------------------------------------------------------------- faults


def active_faults(command: str) -> set[str]:
    """The faults ``APR_STANDIN_FAULT`` turns on for ``command``."""
    active = set()
    for item in os.environ.get(FAULT_ENV, "").split(","):
        item = item.strip()
        if not item:
            continue
        scope, _, fault = item.rpartition(":")
        if fault not in FAULTS:
            raise StandinError(
                f"{FAULT_ENV}: unknown fault {fault!r} (known: {', '.join(FAULTS)})"
            )
        if scope == command or (not scope and command != "version"):
            active.add(fault)
    return active


def _clap_refusal(flag: str, usage: str) -> int:
    sys.stderr.write(
        f"error: unexpected argument '{flag}' found\n\n"
        f"  tip: to pass '{flag}' as a value, use '-- {flag}'\n\n"
        f"Usage: {usage}\n\nFor more information, try '--help'.\n"
    )
    return 2


def _crash(command: str) -> int:
    sys.stderr.write(
        f"thread 'main' panicked at crates/apr-cli/src/commands/{command}.rs:212:38:\n"
        "called `Option::unwrap()` on a `None` value\n"
        "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n"
        f"(pytest-groundtruth apr stand-in: injected by {FAULT_ENV}=crash)\n"
    )
    sys.stderr.flush()
    return 101


def _hang() -> int:
    print("Loading model...", flush=True)
    # A child holding stdout/stderr open: killing only the parent would leave the
    # caller waiting for EOF on the pipes; the runner must kill the process group.
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    sys.stderr.write(f"apr stand-in: hanging ({FAULT_ENV}=hang), helper pid {helper.pid}\n")
    sys.stderr.flush()
    while True:
        time.sleep(3600)


def _colour_json(payload: dict[str, Any]) -> str:
    """JSON with jq -C style colour codes between (never inside) the tokens."""
    text = json.dumps(payload, indent=2)
    decoder = json.JSONDecoder()
    out = ["\x1b[1;39m"]
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            _value, end = decoder.raw_decode(text, i)
            colour = "\x1b[34;1m" if text[end:end + 1] == ":" else "\x1b[0;32m"
            out.append(f"\x1b[0m{colour}{text[i:end]}\x1b[0m\x1b[1;39m")
            i = end
        elif ch in "{}[]:,":
            out.append(f"\x1b[1;39m{ch}\x1b[0m")
            i += 1
        else:
            out.append(ch)
            i += 1
    out.append("\x1b[0m")
    return "".join(out)


def emit_json(payload: dict[str, Any], faults: set[str]) -> None:
    if "noisy" in faults:
        print("[apr] loading tensors {layers: 2, dtype: f32} ... done")
        print("[apr] kv-cache {capacity: 512}")
    if "ansi" in faults:
        print("\x1b[32m✓\x1b[0m \x1b[1mModel loaded\x1b[0m")
        print(_colour_json(payload))
    else:
        print(json.dumps(payload, indent=2))
    if "noisy" in faults:
        print("[apr] done {exit: 0}")
    sys.stdout.flush()


# --------------------------------------------------------------------------- the archive


def _tokenizer_pre(config: dict[str, Any], gguf_pre: str | None) -> str:
    """llama.cpp's ``tokenizer.ggml.pre`` for GGUF export.

    From the source GGUF when there is one; otherwise a heuristic on the config (the
    SmolLM tokenizer has 49152 entries; qwen2 and gpt2 name themselves), overridable
    with ``APR_STANDIN_TOKENIZER_PRE``. The real apr decides this itself.
    """
    override = os.environ.get("APR_STANDIN_TOKENIZER_PRE")
    if override:
        return override
    if gguf_pre:
        return gguf_pre
    model_type = config.get("model_type")
    if config.get("vocab_size") == 49152:
        return "smollm"
    if model_type == "qwen2":
        return "qwen2"
    if model_type == "gpt2":
        return "gpt-2"
    return "default"


def _gguf_string(path: Path, key: str) -> str | None:
    from gguf import GGUFReader

    field = GGUFReader(path).fields.get(key)
    return str(field.contents()) if field is not None else None


@contextlib.contextmanager
def _source_directory(source: str) -> Iterator[tuple[Path, str, str | None]]:
    """Yield (float32 HF directory, source kind, GGUF pre-tokenizer) for an import source."""
    if source.startswith("hf://"):
        from huggingface_hub import snapshot_download

        from pytest_groundtruth.models.sources import HF_ALLOW_PATTERNS

        repo = source[len("hf://"):]
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        try:
            snapshot = snapshot_download(
                repo, allow_patterns=HF_ALLOW_PATTERNS, local_files_only=offline
            )
        except Exception as exc:  # the hub's many error types: report, do not trace
            raise StandinError(f"cannot fetch {source}: {exc}") from exc
        yield Path(snapshot), "hf", None
        return
    file = Path(source)
    if not file.exists():
        raise StandinError(f"{source}: no such file or directory")
    if file.suffix == ".gguf":
        from pytest_groundtruth.models.sources import gguf_to_hf_dir

        with tempfile.TemporaryDirectory(prefix="apr-standin-gguf-") as tmp:
            directory = Path(tmp) / "model"
            gguf_to_hf_dir(file, directory)
            yield directory, "gguf", _gguf_string(file, "tokenizer.ggml.pre")
        return
    if file.is_dir():
        yield file, "directory", None
        return
    if file.suffix == ".safetensors":
        if not (file.parent / "config.json").is_file():
            raise StandinError(f"{source}: no config.json beside the safetensors file")
        yield file.parent, "safetensors", None
        return
    raise StandinError(f"{source}: unsupported source (hf://ID, .safetensors, directory, .gguf)")


def write_archive(
    directory: Path, out: Path, quant: str, source: str, kind: str, gguf_pre: str | None
) -> dict[str, Any]:
    config = json.loads((directory / "config.json").read_text())
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "standin": True,
        "note": "pytest-groundtruth stand-in archive; the real aprender APR format differs",
        "quantization": quant,
        "source": source,
        "source_kind": kind,
        "architecture": config.get("model_type"),
        "tokenizer_pre": _tokenizer_pre(config, gguf_pre),
        "created_by": VERSION_LINE,
    }
    files = sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and (p.suffix in _MODEL_SUFFIXES or p.name.startswith("tokenizer"))
    )
    if not any(p.suffix == ".safetensors" for p in files):
        raise StandinError(f"{directory}: no safetensors weights to import")
    tmp = out.with_name(f".{out.name}.standin-tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr(MANIFEST, json.dumps(manifest, indent=2) + "\n")
            for file in files:
                archive.write(file, MODEL_PREFIX + file.name)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return manifest


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read(MANIFEST))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise StandinError(
            f"{path}: not an APR file this stand-in reads ({FORMAT} v{FORMAT_VERSION}): {exc}"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StandinError(f"{path}: not an {FORMAT} archive")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise StandinError(
            f"{path}: {FORMAT} version {manifest.get('format_version')} "
            f"(this stand-in reads v{FORMAT_VERSION}); import it again"
        )
    return manifest


def _model_name(manifest: dict[str, Any]) -> str:
    """A name for the model from its import source (hub repo, directory or file stem)."""
    source = str(manifest.get("source", ""))
    if source.startswith("hf://"):
        name = source.rstrip("/").rsplit("/", 1)[-1]
    else:
        file = Path(source)
        name = file.parent.name if file.suffix == ".safetensors" else file.stem
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip(".") or "model"


@contextlib.contextmanager
def open_model(path: Path) -> Iterator[tuple[Path, str, dict[str, Any]]]:
    """Yield (loadable path, quantization, manifest) for an .apr archive or a GGUF file."""
    if path.suffix == ".gguf":
        yield path, "none", {"source": str(path), "tokenizer_pre": None}
        return
    manifest = read_manifest(path)
    with tempfile.TemporaryDirectory(prefix="apr-standin-") as tmp:
        directory = Path(tmp) / _model_name(manifest)  # GGUF export's general.name
        directory.mkdir()
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if member.startswith(MODEL_PREFIX) and "/" not in member[len(MODEL_PREFIX):]:
                    target = directory / member[len(MODEL_PREFIX):]
                    with archive.open(member) as src, target.open("wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 22)
        yield directory, str(manifest["quantization"]), manifest


def _int4(torch: Any) -> Any:
    """``torch.int4`` (missing from torch's type stubs)."""
    return torch.int4


def load_runner(path: Path, quant: str) -> TransformersRunner:
    """The project's transformers runner on ``path``, quantized as ``quant``."""
    from pytest_groundtruth.runtimes.base import Artifact
    from pytest_groundtruth.runtimes.hf import TransformersRunner

    dtype = "float16" if quant == "fp16" else "float32"
    artifact = Artifact("apr-standin", path.name, dtype, path, key="", recipe="")
    runner = TransformersRunner(artifact)
    if quant in TORCHAO_CONFIGS:
        import torch
        from torchao.quantization import (
            Int8WeightOnlyConfig,
            IntxWeightOnlyConfig,
            quantize_,
        )
        from torchao.quantization.granularity import PerGroup

        config: Any = (
            Int8WeightOnlyConfig()
            if quant == "int8"
            else IntxWeightOnlyConfig(weight_dtype=_int4(torch), granularity=PerGroup(32))
        )
        with torch.no_grad():
            quantize_(runner.model, config)
    return runner


# --------------------------------------------------------------------------- commands


def cmd_import(args: argparse.Namespace, faults: set[str]) -> int:
    out = Path(args.output)
    quant = args.quantize or "none"
    with _source_directory(args.source) as (directory, kind, gguf_pre):
        manifest = write_archive(directory, out, quant, args.source, kind, gguf_pre)
    print(f"Imported {args.source} -> {out} (quantize: {quant}, {manifest['architecture']}) "
          "[pytest-groundtruth apr stand-in]")
    return 0


def cmd_run(args: argparse.Namespace, faults: set[str], prompt: str, as_json: bool) -> int:
    temperature = getattr(args, "temperature", 0.0)  # absent under refuse-flags
    if temperature != 0.0 or getattr(args, "top_k", 1) not in (0, 1):
        raise StandinError(
            "the stand-in implements greedy decoding only (--temperature 0 --top-k 1)"
        )
    path = Path(args.file)
    with open_model(path) as (model_path, quant, _manifest):
        runner = load_runner(model_path, quant)
        gen = runner.generate(prompt, args.max_tokens)
    tokens: list[Any] = list(gen.tokens)
    text = gen.text
    if "bad-tokens" in faults:
        tokens = [t + 0.5 for t in tokens]
    if "nan" in faults:
        text = "NaN"
    if not as_json:
        print(text)
        return 0
    ms = gen.seconds * 1000.0
    emit_json(
        {
            "model": str(path),
            "text": text,
            "tokens": tokens,
            "tokens_generated": len(tokens),
            "max_tokens": args.max_tokens,
            "tok_per_sec": round(len(tokens) / gen.seconds, 3) if gen.seconds > 0 else 0.0,
            "inference_time_ms": round(ms, 3),
            "used_gpu": False,
            "cached": False,
            "standin": True,
        },
        faults,
    )
    return 0


def cmd_eval(args: argparse.Namespace, faults: set[str], as_json: bool) -> int:
    from pytest_groundtruth.core.failures import EngineFailure, FailureKind

    text = args.text if args.text is not None else SAMPLE_TEXT
    dataset = "custom" if args.text is not None else "builtin-sample"
    path = Path(args.file)
    start = time.perf_counter()
    with open_model(path) as (model_path, quant, _manifest):
        runner = load_runner(model_path, quant)
        try:
            result = runner.perplexity(text)
            ppl, nll, count = result.perplexity, result.cross_entropy, result.tokens_evaluated
        except EngineFailure as fault:  # non-finite logits: a real engine prints NaN
            if fault.kind is not FailureKind.NAN:
                raise
            ppl, nll, count = math.nan, math.nan, len(runner.tokenize(text)) - 1
    if "nan" in faults:
        ppl, nll = math.nan, math.nan
    passed = ppl <= args.threshold  # NaN never passes
    payload = {
        "model": str(path),
        "dataset": dataset,
        "perplexity": ppl,
        "cross_entropy": nll,
        "tokens_evaluated": count,
        "eval_time_secs": round(time.perf_counter() - start, 3),
        "threshold": args.threshold,
        "passed": passed,
        "standin": True,
    }
    if as_json:
        emit_json(payload, faults)
    else:
        print(f"Perplexity: {ppl:.4f} ({count} tokens, threshold {args.threshold})")
    if not passed:
        sys.stderr.write(f"error: perplexity {ppl:.4f} is over the threshold {args.threshold}\n")
        return 1
    return 0


def cmd_export(args: argparse.Namespace, faults: set[str]) -> int:
    out = Path(args.output)
    path = Path(args.file)
    with open_model(path) as (model_path, quant, manifest):
        if model_path.suffix == ".gguf":
            raise StandinError(f"{path}: export reads .apr files")
        tmp = out.with_name(f".{out.name}.standin-tmp")
        try:
            if args.format == "safetensors":
                shutil.copyfile(model_path / "model.safetensors", tmp)
            else:
                from pytest_groundtruth.ggufio.writer import export_gguf  # torch, gguf: lazily

                export_gguf(
                    model_path, tmp, GGUF_QTYPES[quant], str(manifest.get("tokenizer_pre"))
                )
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
    print(f"Exported {path} -> {out} ({args.format}) [pytest-groundtruth apr stand-in]")
    return 0


def _safetensors_count(data: bytes) -> int:
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    return len([k for k in header if k != "__metadata__"])


def inspect_file(path: Path) -> dict[str, Any]:
    """The inspect JSON of a stand-in .apr archive or a GGUF file (no torch)."""
    if path.suffix == ".gguf":
        from gguf import GGUFReader

        reader = GGUFReader(path)

        def value(key: str) -> Any:
            field = reader.fields.get(key)
            return field.contents() if field is not None else None

        arch = value("general.architecture")
        tokens = reader.fields.get("tokenizer.ggml.tokens")
        return {
            "architecture": arch,
            "num_layers": value(f"{arch}.block_count"),
            "num_heads": value(f"{arch}.attention.head_count"),
            "hidden_size": value(f"{arch}.embedding_length"),
            "vocab_size": len(tokens.data) if tokens is not None else None,
            "tensor_count": len(reader.tensors),
            "format": "gguf",
            "metadata": {"general.name": value("general.name"),
                         "tokenizer.ggml.pre": value("tokenizer.ggml.pre"), "standin": True},
        }
    manifest = read_manifest(path)
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read(MODEL_PREFIX + "config.json"))
        count = 0
        for member in archive.namelist():
            if member.endswith(".safetensors"):
                with archive.open(member) as fh:
                    head = fh.read(8)
                    (size,) = struct.unpack("<Q", head)
                    count += _safetensors_count(head + fh.read(size))

    def pick(*keys: str) -> Any:
        return next((config[k] for k in keys if config.get(k) is not None), None)

    return {
        "architecture": config.get("model_type"),
        "num_layers": pick("num_hidden_layers", "n_layer"),
        "num_heads": pick("num_attention_heads", "n_head"),
        "hidden_size": pick("hidden_size", "n_embd"),
        "vocab_size": config.get("vocab_size"),
        "tensor_count": count,
        "format": f"{FORMAT} v{FORMAT_VERSION} (zip; not the aprender APR format)",
        "metadata": {k: v for k, v in manifest.items() if k not in ("format", "format_version")},
    }


def cmd_inspect(args: argparse.Namespace, faults: set[str]) -> int:
    info = inspect_file(Path(args.file))
    if args.json:
        emit_json(info, faults)
    else:
        for key, val in info.items():
            print(f"{key}: {val}")
    return 0


# --------------------------------------------------------------------------- argv


def _parser(faults: set[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apr", description="pytest-groundtruth stand-in for aprender's apr CLI"
    )
    parser.add_argument("-V", "--version", action="store_true")
    sub = parser.add_subparsers(dest="command")

    imp = sub.add_parser("import")
    imp.add_argument("source")
    imp.add_argument("--quantize", choices=QUANTS)
    imp.add_argument("-o", "--output", required=True)
    imp.add_argument("-f", "--force", action="store_true")

    exp = sub.add_parser("export")
    exp.add_argument("file")
    exp.add_argument("--format", choices=("gguf", "safetensors"), required=True)
    exp.add_argument("-o", "--output", required=True)

    run = sub.add_parser("run")
    run.add_argument("file")
    if "old-cli" in faults:
        run.add_argument("prompt")
        run.add_argument("-f", "--format", choices=("text", "json"), default="text")
    else:
        run.add_argument("-p", "--prompt", required=True)
        run.add_argument("--json", action="store_true")
    run.add_argument("-n", "--max-tokens", type=int, default=32)
    if "refuse-flags" not in faults:
        run.add_argument("--temperature", type=float, default=0.0)
        run.add_argument("--top-k", type=int, default=1)

    ev = sub.add_parser("eval")
    ev.add_argument("file")
    if "old-cli" in faults:
        ev.add_argument("-f", "--format", choices=("text", "json"), default="text")
    else:
        ev.add_argument("--json", action="store_true")
    ev.add_argument("--text")
    ev.add_argument("--dataset")
    ev.add_argument("--threshold", type=float, default=DEFAULT_EVAL_THRESHOLD)

    ins = sub.add_parser("inspect")
    ins.add_argument("file")
    ins.add_argument("--json", action="store_true")
    return parser


_USAGE = {
    "run": "apr run [OPTIONS] <FILE> <PROMPT>",
    "eval": "apr eval [OPTIONS] <FILE>",
}


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_list if not a.startswith("-")), "")
    if not command and any(a in ("-V", "--version") for a in args_list):
        command = "version"
    try:
        faults = active_faults(command)
    except StandinError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    # Faults that make the command line itself unacceptable come first (clap parses first).
    if "old-cli" in faults and command in _USAGE:
        for flag in ("-p", "--prompt", "--json"):
            if flag in args_list:
                return _clap_refusal(flag, _USAGE[command])
    if "refuse-flags" in faults and command == "run":
        for flag in ("--temperature", "--top-k"):
            if flag in args_list:
                return _clap_refusal(flag, "apr run [OPTIONS] --prompt <PROMPT> <FILE>")
    args = _parser(faults).parse_args(args_list)
    if args.version:
        print(VERSION_LINE)
        return 0
    if args.command is None:
        sys.stderr.write("error: a subcommand is required (import, export, run, eval, inspect)\n")
        return 2
    if "crash" in faults:
        return _crash(command)
    if "hang" in faults:
        return _hang()
    if "garbage" in faults:
        print("apr: \x01\x02 generated \ufffd\ufffd tokens; kv=[0x7f3a...] ok ok ok ok ok")
        return 0
    try:
        if args.command == "import":
            return cmd_import(args, faults)
        if args.command == "export":
            return cmd_export(args, faults)
        if args.command == "run":
            old = "old-cli" in faults
            as_json = args.format == "json" if old else args.json
            return cmd_run(args, faults, args.prompt, as_json)
        if args.command == "eval":
            as_json = args.format == "json" if "old-cli" in faults else args.json
            return cmd_eval(args, faults, as_json)
        return cmd_inspect(args, faults)
    except StandinError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
