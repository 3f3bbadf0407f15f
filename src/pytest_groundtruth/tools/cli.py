"""The ``groundtruth`` command: oracles, the roster, measurements and benchmarks.

Each subcommand parses its options here and hands off to the module that does the work.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_groundtruth.config.settings import ConfigError, Settings, load_settings
from pytest_groundtruth.oracle.diff import CROSS_MACHINE_TOLERANCE

if TYPE_CHECKING:
    from pytest_groundtruth.suites.context import Workbench


def _settings(args: argparse.Namespace) -> Settings:
    root = Path(args.root).resolve()
    extra = [Path(p) for p in args.config]
    return load_settings(root, extra)


def _cache_dir(settings: Settings, override: str | None) -> Path:
    from pytest_groundtruth.store.cache import default_cache_dir

    if override:
        return Path(override)
    return settings.path(settings.cache_dir) if settings.cache_dir else default_cache_dir()


def cmd_oracle(args: argparse.Namespace) -> int:
    from pytest_groundtruth.config.prompts import load_prompts
    from pytest_groundtruth.models.sources import ModelUnavailable, resolve
    from pytest_groundtruth.tools.oracles import build_all

    settings = _settings(args)
    if args.device == "cpu" and args.precision != "float32":
        print("error: CPU oracles are float32; lower precisions are GPU oracles "
              "(--device cuda)", file=sys.stderr)
        return 2
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda but torch.cuda.is_available() is False",
                  file=sys.stderr)
            return 2
    slugs = list(settings.roster) if args.all else (args.model or list(settings.models))
    cache = _cache_dir(settings, args.cache_dir)
    models = []
    for slug in slugs:
        try:
            models.append(resolve(settings.spec(slug), cache, settings.root))
        except ModelUnavailable as exc:
            if not args.all:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(f"skipped {slug}: {exc}", file=sys.stderr)
    prompts = load_prompts(settings.path(settings.prompts_dir),
                           list(settings.prompts) if settings.prompts else None)
    blocked = 0
    for change in build_all(
        models,
        prompts,
        settings.path(settings.oracle_dir),
        settings.path(settings.eval_text),
        settings.root,
        max_new_tokens=settings.max_new_tokens,
        top_k=settings.top_k,
        device=args.device,
        precision=args.precision,
        force=args.force,
        check=args.check,
        tolerance=args.tolerance,
        progress=not args.quiet,
    ):
        if change.status == "unchanged":
            if not args.quiet:
                print(f"unchanged  {change.path}")
            continue
        noise = change.status == "noise"
        verb = "wrote" if change.written else ("would write" if change.status == "new"
                                               else "kept" if noise else "NOT written")
        print(f"{change.status:<10} {change.path}: {verb}"
              + (f" - {change.detail}" if change.detail else ""))
        blocked += not (change.written or noise)
    if blocked:
        hint = "" if args.check else "; rerun with --force to overwrite"
        print(f"{blocked} oracle file(s) differ from what was generated{hint}", file=sys.stderr)
        return 1
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from pytest_groundtruth.models.sources import ModelError, ModelUnavailable, resolve

    settings = _settings(args)
    cache = _cache_dir(settings, args.cache_dir)
    for slug, spec in sorted(settings.roster.items()):
        status = "not resolved (pass --resolve)"
        if args.resolve:
            try:
                status = f"ok: {resolve(spec, cache, settings.root).path}"
            except (ModelUnavailable, ModelError) as exc:
                status = f"unavailable: {exc}"
        print(f"{slug:<14} {spec.architecture:<6} {spec.source}\n    {status}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from pytest_groundtruth.models.sources import ModelUnavailable, resolve

    settings = _settings(args)
    cache = _cache_dir(settings, args.cache_dir)
    for slug in args.model:
        try:
            print(f"{slug}: {resolve(settings.spec(slug), cache, settings.root).path}")
        except ModelUnavailable as exc:
            print(f"{slug}: {exc}", file=sys.stderr)
            return 1
    return 0


def _publish(args: argparse.Namespace, text: str) -> None:
    """Print a generated document and, with --write FILE, write it atomically."""
    from pytest_groundtruth.core.atomic import atomic_write_text

    if args.write:
        atomic_write_text(Path(args.write), text)
        print(f"wrote {args.write}", file=sys.stderr)
    print(text)


def _workbench(args: argparse.Namespace, settings: Settings) -> Workbench:
    from pytest_groundtruth.suites.context import Workbench

    return Workbench(settings, _cache_dir(settings, args.cache_dir),
                     refresh_token="measure" if getattr(args, "no_cache", False) else None)


def cmd_measure(args: argparse.Namespace) -> int:
    from pytest_groundtruth.tools.measure import measure

    settings = _settings(args)
    bench = _workbench(args, settings)
    try:
        text = measure(bench, args.model or list(settings.models),
                       args.runtime or list(settings.runtimes),
                       args.quant or ["float32", "float16", "bfloat16", "int8", "int4", "q4_1"])
    finally:
        bench.close()
    _publish(args, text)
    return 0


def cmd_falsify(args: argparse.Namespace) -> int:
    from pytest_groundtruth.tools.falsify import FAULT_NAMES, SUITES, falsify, missed, render

    settings = _settings(args)
    quants = tuple(args.quant or ("float32", "int8", "int4"))
    suites = tuple(args.suite or SUITES)
    rows = falsify(settings, _cache_dir(settings, args.cache_dir), args.model, quants,
                   tuple(args.fault or FAULT_NAMES), suites)
    text = render(args.model, rows, suites, quants)
    _publish(args, text)
    escaped = missed(rows)
    if escaped:
        print(f"faults no suite caught: {', '.join(escaped)}", file=sys.stderr)
    return 1 if escaped else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pytest_groundtruth.tools.benchmark import DEFAULT_CELLS, run_bench

    settings = _settings(args)
    cells: tuple[tuple[str, str], ...] = DEFAULT_CELLS
    if args.cell:
        pairs = [c.partition(":") for c in args.cell]
        cells = tuple((runtime, quant) for runtime, _, quant in pairs)
    text = run_bench(settings, args.model, cells, parity=not args.no_parity,
                     workers=args.workers)
    _publish(args, text)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from pytest_groundtruth.core.atomic import atomic_write_text
    from pytest_groundtruth.suites.catalog import AGREEMENT_BOUNDS_FILE
    from pytest_groundtruth.tools.calibrate import bounds_document, calibrate

    settings = _settings(args)
    bench = _workbench(args, settings)
    try:
        bounds, text = calibrate(bench, args.model)
    finally:
        bench.close()
    print(text)
    if args.write:
        atomic_write_text(Path(args.write), text)
        atomic_write_text(AGREEMENT_BOUNDS_FILE, bounds_document(args.model, bounds))
        print(f"wrote {args.write} and {AGREEMENT_BOUNDS_FILE}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="groundtruth", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=".", help="project root holding pyproject.toml")
    common.add_argument("--config", action="append", default=[],
                        help="extra groundtruth.toml layered over [tool.groundtruth]")
    common.add_argument("--cache-dir", help="artifact/model cache (default: config or "
                        "$XDG_CACHE_HOME/pytest-groundtruth)")
    sub = parser.add_subparsers(dest="command", required=True)

    oracle = sub.add_parser("oracle", parents=[common],
                            help="generate oracle files with the float32 transformers reference")
    which = oracle.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true",
                       help="every roster model that resolves here")
    which.add_argument("--model", action="append", metavar="SLUG",
                       help="a roster model (repeatable); default: the configured models")
    oracle.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    oracle.add_argument("--precision", choices=("float32", "bfloat16", "float16"),
                        default="float32")
    oracle.add_argument("--force", action="store_true",
                        help="overwrite oracle files whose content changed")
    oracle.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when any file would change")
    oracle.add_argument("--tolerance", type=float, metavar="NATS", nargs="?",
                        const=CROSS_MACHINE_TOLERANCE,
                        help="treat changes that are only log-probability / cross-entropy "
                        "noise within NATS (tokens and top-k ids identical) as unchanged; "
                        f"bare: {CROSS_MACHINE_TOLERANCE}, the measured noise between CPUs "
                        "with margin; default: byte for byte")
    oracle.add_argument("--quiet", action="store_true", help="no progress bar")
    oracle.set_defaults(func=cmd_oracle)

    models = sub.add_parser("models", parents=[common], help="list the roster")
    models.add_argument("--resolve", action="store_true",
                        help="resolve each model (may convert or download)")
    models.set_defaults(func=cmd_models)

    measure = sub.add_parser("measure", parents=[common],
                             help="table: runtime x quantization x prompt against the oracle")
    measure.add_argument("--model", action="append", metavar="SLUG")
    measure.add_argument("--runtime", action="append", metavar="NAME")
    measure.add_argument("--quant", action="append", metavar="QUANT")
    measure.add_argument("--write", metavar="FILE", help="also write the markdown to FILE")
    measure.add_argument("--no-cache", action="store_true", help="rebuild and rerun engines")
    measure.set_defaults(func=cmd_measure)

    falsify = sub.add_parser("falsify", parents=[common],
                             help="inject faults into llama.cpp conversions; which suites catch "
                             "them")
    falsify.add_argument("--model", default="smollm2-135m", metavar="SLUG")
    falsify.add_argument("--quant", action="append", metavar="QUANT",
                         help="default: float32, int8, int4")
    falsify.add_argument("--fault", action="append", metavar="NAME", help="default: all")
    falsify.add_argument("--suite", action="append", metavar="NAME",
                         help="default: every suite but cuda")
    falsify.add_argument("--write", metavar="FILE", help="also write the markdown to FILE")
    falsify.set_defaults(func=cmd_falsify)

    bench = sub.add_parser("bench", parents=[common],
                           help="conversion time, tokens/s, full parity run cold and warm")
    bench.add_argument("--model", default="smollm2-135m", metavar="SLUG")
    bench.add_argument("--cell", action="append", metavar="RUNTIME:QUANT",
                       help="default: llama.cpp f32/int8/int4, torchao int8/int4, "
                       "transformers f32")
    bench.add_argument("--no-parity", action="store_true", help="skip the full parity runs")
    bench.add_argument("--workers", default="auto", help="pytest-xdist workers for the "
                       "parity runs ('0' for none)")
    bench.add_argument("--write", metavar="FILE", help="also write the markdown to FILE")
    bench.set_defaults(func=cmd_bench)

    calibrate = sub.add_parser("calibrate", parents=[common],
                               help="derive the agreement suite's default bounds")
    calibrate.add_argument("--model", default="smollm2-135m", metavar="SLUG")
    calibrate.add_argument("--write", metavar="FILE",
                           help="write the report to FILE and the bounds into the package")
    calibrate.set_defaults(func=cmd_calibrate)

    fetch = sub.add_parser("fetch", parents=[common],
                           help="download/convert models into the cache (needs the hub for hf:)")
    fetch.add_argument("model", nargs="+", metavar="SLUG")
    fetch.set_defaults(func=cmd_fetch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
