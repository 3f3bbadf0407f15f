"""A STAND-IN for the ``apr`` CLI of aprender (``cargo install apr-cli``). Not aprender.

aprender cannot be installed on the project's machines (no crates.io access), so the
apr runtime (:mod:`pytest_groundtruth.runtimes.apr`) is exercised against this program,
which speaks the same documented command line and JSON (apr-cli's current
flags) and does real work with real parts:

``apr import <hf://ID | file.safetensors | dir | file.gguf> --quantize int8|int4|fp16 -o OUT``
    Reads the source (a hub snapshot through the local Hugging Face cache, a float32
    safetensors model directory, or a GGUF file dequantized by transformers' GGUF
    loader) and writes OUT in the stand-in's own format (:mod:`.archive`).
``apr run FILE -p PROMPT -n 32 [--temperature 0 --top-k 1] [--json]``
    Loads the weights with transformers at float32, applies the quantization for real
    (:mod:`.engine`: the torchao runtime's configurations; fp16: float16 weights and
    activations) and greedy-generates with the project's transformers runner (stop after
    EOS, which is included in ``tokens``). ``--json`` prints model, text, tokens,
    tokens_generated, max_tokens, tok_per_sec, inference_time_ms, used_gpu, cached (plus
    ``standin: true``).
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
    metadata (of a stand-in .apr or a GGUF file; :mod:`.inspection`). No torch.
``apr --version``
    ``apr 0.0.0+groundtruth-standin.1 (pytest-groundtruth stand-in, not aprender;
    transformers X, torch Y, torchao Z)``.

Fault injection for the runner's robustness tests: ``APR_STANDIN_FAULT`` (:mod:`.faults`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_groundtruth.core.failures import EngineFailure, FailureKind
from pytest_groundtruth.ggufio.quants import GGUF_TYPES
from standins.apr.archive import (
    FORMAT_VERSION,
    open_model,
    source_directory,
    write_archive,
)
from standins.apr.engine import load_runner
from standins.apr.faults import (
    FAULT_ENV,
    StandinError,
    active_faults,
    clap_refusal,
    crash,
    emit_json,
    garbage,
    hang,
)
from standins.apr.inspection import inspect_file

__all__ = ["FAULT_ENV", "VERSION_LINE", "is_standin_version", "main", "write_launcher"]

TESTS = Path(__file__).resolve().parents[2]  # tests/: where `standins` is imported from
STANDIN_MARKER = "groundtruth-standin"  # in the --version line; how tests tell it from apr
STANDIN_VERSION = f"0.0.0+{STANDIN_MARKER}.{FORMAT_VERSION}"
QUANTS = ("int8", "int4", "fp16")
# apr's quantization names -> the catalogue's names, whose GGUF types its export writes.
GGUF_QTYPES = {apr: GGUF_TYPES[ours] for apr, ours in
               {"int8": "int8", "int4": "int4", "fp16": "float16", "none": "float32"}.items()}
DEFAULT_EVAL_THRESHOLD = 20.0
SAMPLE_TEXT = (
    "The quick brown fox jumps over the lazy dog. Language models assign a probability to "
    "every token of a text; perplexity is the exponential of the mean negative log-likelihood."
)


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
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from standins.apr.cli import main\n"
        "sys.exit(main())\n"
    )
    launcher.chmod(0o755)
    return launcher


# --------------------------------------------------------------------------- commands


def cmd_import(args: argparse.Namespace, faults: set[str]) -> int:
    out = Path(args.output)
    quant = args.quantize or "none"
    with source_directory(args.source) as (directory, kind, gguf_pre):
        manifest = write_archive(directory, out, quant, args.source, kind, gguf_pre,
                                 VERSION_LINE)
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
                return clap_refusal(flag, _USAGE[command])
    if "refuse-flags" in faults and command == "run":
        for flag in ("--temperature", "--top-k"):
            if flag in args_list:
                return clap_refusal(flag, "apr run [OPTIONS] --prompt <PROMPT> <FILE>")
    args = _parser(faults).parse_args(args_list)
    if args.version:
        print(VERSION_LINE)
        return 0
    if args.command is None:
        sys.stderr.write("error: a subcommand is required (import, export, run, eval, inspect)\n")
        return 2
    if "crash" in faults:
        return crash(command)
    if "hang" in faults:
        return hang()
    if "garbage" in faults:
        return garbage()
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
