"""llama-cli-test: a small command-line engine around llama-cpp-python, written for the tests.

It lets the command runtime (``kind = "command"``) be tested with a real executable that
does real work: llama.cpp through llama-cpp-python (the project's llama.cpp runner, so
the greedy rule, EOS handling and KV cache type are those of the in-process ``llamacpp``
runtime), conversion by the project's GGUF exporter. It speaks the command runtime's
documented JSON, so configured as in ``LLAMA_CLI_TOML`` (tests/engines/config.py) the
whole parity matrix runs through it and must reach the in-process runtime's verdicts::

    llama_cli.py --version
    llama_cli.py convert MODEL_DIR --quant Q --tokenizer-pre P -o OUT.gguf
    llama_cli.py reimport GGUF --quant Q -o OUT.gguf
    llama_cli.py generate GGUF --quant Q (--prompt TEXT | --prompt-file F) -n N [--top-k K]
    llama_cli.py chat GGUF --quant Q --messages-file F -n N [--top-k K]
    llama_cli.py perplexity GGUF --quant Q --text-file F
    llama_cli.py score GGUF --quant Q --tokens-file F --start S -o OUT.npy
    llama_cli.py export GGUF -o OUT.gguf
    llama_cli.py inspect GGUF

One JSON object on stdout per command; errors on stderr with exit status 1 (2 for a
command line it does not accept, as argparse does).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pytest_groundtruth.config.prompts import Message
from pytest_groundtruth.ggufio import EXPORTER_VERSION, export_gguf
from pytest_groundtruth.ggufio.reader import scan_gguf
from pytest_groundtruth.models.sources import gguf_to_hf_dir
from pytest_groundtruth.runtimes.base import Artifact, Generation
from pytest_groundtruth.runtimes.llamacpp import (
    LlamaCppRunner,
    LlamaCppRuntime,
    llama_cpp_version,
)
from pytest_groundtruth.runtimes.toolchain import QTYPES

VERSION = f"llama-cli-test 1 (llama-cpp-python {llama_cpp_version()}, ggufio {EXPORTER_VERSION})"


def runner(path: str, quant: str) -> LlamaCppRunner:
    """The in-process runner on ``path`` with the KV cache the llamacpp runtime would use."""
    artifact = Artifact("llama-cli-test", "cli", quant, Path(path), key="", recipe="")
    return LlamaCppRunner(artifact, kv_cache=LlamaCppRuntime().kv_cache_type(quant))


def generation_json(gen: Generation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tokens": list(gen.tokens), "text": gen.text, "prompt_tokens": list(gen.prompt_tokens),
        "stop_reason": gen.stop_reason, "seconds": gen.seconds,
    }
    if gen.topk is not None:
        out["topk"] = [{"ids": list(t.ids), "logprobs": list(t.logprobs)} for t in gen.topk]
    return out


def cmd_convert(args: argparse.Namespace) -> dict[str, Any]:
    export_gguf(Path(args.model_dir), Path(args.output), QTYPES[args.quant], args.tokenizer_pre)
    return {"output": args.output, "type": QTYPES[args.quant]}


def cmd_reimport(args: argparse.Namespace) -> dict[str, Any]:
    pre = scan_gguf(Path(args.gguf)).scalars.get("tokenizer.ggml.pre")
    with tempfile.TemporaryDirectory(prefix="llama-cli-") as tmp:
        gguf_to_hf_dir(Path(args.gguf), Path(tmp) / "hf")
        export_gguf(Path(tmp) / "hf", Path(args.output), QTYPES[args.quant],
                    pre if isinstance(pre, str) else "default")
    return {"output": args.output, "type": QTYPES[args.quant]}


def cmd_generate(args: argparse.Namespace) -> dict[str, Any]:
    prompt = args.prompt if args.prompt is not None else Path(args.prompt_file).read_text(
        encoding="utf-8")
    with runner(args.gguf, args.quant) as engine:
        return generation_json(engine.generate(prompt, args.max_tokens, top_k=args.top_k))


def cmd_chat(args: argparse.Namespace) -> dict[str, Any]:
    data = json.loads(Path(args.messages_file).read_text(encoding="utf-8"))
    messages = [Message(m["role"], m["content"]) for m in data]
    with runner(args.gguf, args.quant) as engine:
        return generation_json(engine.chat(messages, args.max_tokens, top_k=args.top_k))


def cmd_perplexity(args: argparse.Namespace) -> dict[str, Any]:
    with runner(args.gguf, args.quant) as engine:
        result = engine.perplexity(Path(args.text_file).read_text(encoding="utf-8"))
    return {"perplexity": result.perplexity, "cross_entropy": result.cross_entropy,
            "tokens_evaluated": result.tokens_evaluated, "seconds": result.seconds}


def cmd_score(args: argparse.Namespace) -> dict[str, Any]:
    ids = json.loads(Path(args.tokens_file).read_text(encoding="utf-8"))
    with runner(args.gguf, args.quant) as engine:
        rows = engine.score(ids, args.start)
    np.save(args.output, np.asarray(rows, dtype=np.float32))
    return {"output": args.output, "shape": list(rows.shape)}


def cmd_export(args: argparse.Namespace) -> dict[str, Any]:
    shutil.copyfile(args.gguf, args.output)
    return {"output": args.output}


def cmd_inspect(args: argparse.Namespace) -> dict[str, Any]:
    scalars = scan_gguf(Path(args.gguf)).scalars
    arch = scalars.get("general.architecture")
    return {"architecture": arch, "num_layers": scalars.get(f"{arch}.block_count")}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="llama_cli.py", description=__doc__.splitlines()[0])
    top.add_argument("--version", action="version", version=VERSION)
    sub = top.add_subparsers(dest="command", required=True)
    quants = sorted(QTYPES)

    p = sub.add_parser("convert")
    p.add_argument("model_dir")
    p.add_argument("--quant", choices=quants, required=True)
    p.add_argument("--tokenizer-pre", default="default")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(run=cmd_convert)

    p = sub.add_parser("reimport")
    p.add_argument("gguf")
    p.add_argument("--quant", choices=quants, required=True)
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(run=cmd_reimport)

    for name, run in (("generate", cmd_generate), ("chat", cmd_chat)):
        p = sub.add_parser(name)
        p.add_argument("gguf")
        p.add_argument("--quant", choices=quants, required=True)
        if name == "generate":
            source = p.add_mutually_exclusive_group(required=True)
            source.add_argument("--prompt")
            source.add_argument("--prompt-file")
        else:
            p.add_argument("--messages-file", required=True)
        p.add_argument("-n", "--max-tokens", type=int, required=True)
        p.add_argument("--top-k", type=int, default=0)
        p.set_defaults(run=run)

    p = sub.add_parser("perplexity")
    p.add_argument("gguf")
    p.add_argument("--quant", choices=quants, required=True)
    p.add_argument("--text-file", required=True)
    p.set_defaults(run=cmd_perplexity)

    p = sub.add_parser("score")
    p.add_argument("gguf")
    p.add_argument("--quant", choices=quants, required=True)
    p.add_argument("--tokens-file", required=True)
    p.add_argument("--start", type=int, required=True)
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(run=cmd_score)

    p = sub.add_parser("export")
    p.add_argument("gguf")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("inspect")
    p.add_argument("gguf")
    p.set_defaults(run=cmd_inspect)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result = args.run(args)
    except Exception as exc:  # the engine's error, as a CLI reports it
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
