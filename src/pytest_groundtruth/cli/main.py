"""The ``groundtruth`` command: oracles, the roster, measurements and benchmarks.

Each subcommand parses its options here and hands off to the module that does the work.
Every kind of failure has its own exit status (:class:`Exit`, listed in ``--help``):
an error is one line naming the file, model or key, never a traceback.
"""

from __future__ import annotations

import argparse
import enum
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from pytest_groundtruth.cli import clean, convert, roster
from pytest_groundtruth.config import schema as config_schema
from pytest_groundtruth.config.options import RUN_OPTIONS, add_cli_options, apply_overrides
from pytest_groundtruth.config.prompts import load_prompts
from pytest_groundtruth.config.roster import TINY_MODELS
from pytest_groundtruth.config.settings import ConfigError, Settings, load_settings, memory_size
from pytest_groundtruth.context import Context
from pytest_groundtruth.core.atomic import atomic_write_text, remove_stale
from pytest_groundtruth.core.failures import EngineFailure, InputError
from pytest_groundtruth.core.paths import OutsideFolder
from pytest_groundtruth.core.usage import Lease, parse_size, show_size
from pytest_groundtruth.framework.bounds import DATA
from pytest_groundtruth.lab import (
    benchmark,
    calibrate,
    compare,
    falsify,
    measure,
    memory_bench,
    merge,
    model_bounds,
    near_tie_margin,
    qualify,
    rescore_calibration,
    suite_report,
)
from pytest_groundtruth.models.sources import ModelUnavailable, resolve
from pytest_groundtruth.oracle.diff import CROSS_MACHINE_TOLERANCE
from pytest_groundtruth.oracle.generation import oracles
from pytest_groundtruth.report.results_json import ResultsError
from pytest_groundtruth.runtimes.hf import MemoryBudget
from pytest_groundtruth.runtimes.registry import make_runtime
from pytest_groundtruth.store.entries import trim
from pytest_groundtruth.suites import agreement, consistency, ppl, rescore
from pytest_groundtruth.suites.matrix import check_quantizations
from pytest_groundtruth.suites.spec import suite_names


class Exit(enum.IntEnum):
    """``groundtruth``'s exit statuses, one per kind of failure (see ``EXIT_MEANINGS``)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    UNAVAILABLE = 3
    BAD_INPUT = 4
    CANNOT_WRITE = 5
    ENGINE = 6


EXIT_MEANINGS = {
    Exit.OK: "done; the oracle files are up to date or were written",
    Exit.FAILED: "oracle files differ and were not written (--check, or no --force);\n"
                 "     convert: an artifact failed;\n"
                 "     falsify: a fault no suite caught",
    Exit.USAGE: "a bad option, argument or configuration key",
    Exit.UNAVAILABLE: "a model cannot be obtained here (the message says how)",
    Exit.BAD_INPUT: "a prompt, the evaluation text, a model or an oracle file is\n"
                    "     unusable (e.g. a prompt longer than the model's context)",
    Exit.CANNOT_WRITE: "an output file or folder cannot be written",
    Exit.ENGINE: "the reference engine crashed or produced NaN/Inf",
}
EXIT_STATUSES = "exit statuses:\n" + "\n".join(
    f"  {status.value}  {meaning}" for status, meaning in EXIT_MEANINGS.items())


def _settings(args: argparse.Namespace) -> Settings:
    root = Path(args.root).resolve()
    extra = [Path(p) for p in args.config]
    for file in extra:
        if not file.is_file():
            raise ConfigError(f"--config {file}: no such file")
    return apply_overrides(load_settings(root, extra), args)


def _workers(text: str) -> list[int]:
    try:
        counts = [int(n) for n in text.split(",")]
    except ValueError:
        counts = []
    if not counts or any(n < 0 for n in counts):
        raise ConfigError(f"--workers {text!r}: expected comma-separated worker counts >= 0, "
                          "e.g. 0,2")
    return counts


def _known(what: str, values: Sequence[str], allowed: Sequence[str]) -> None:
    for value in values:
        if value not in allowed:
            raise ConfigError(f"{what} {value!r} is not one of {', '.join(allowed)}")


def validate_args(args: argparse.Namespace) -> None:
    """Every option value that can be checked without work, checked before any: a bad one
    is a :class:`ConfigError` (exit 2, one line), never a traceback after minutes."""
    settings = _settings(args) if hasattr(args, "root") else None
    tolerance = getattr(args, "tolerance", None)
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError(f"--tolerance {tolerance!r}: expected a finite number of nats >= 0")
    if args.command == "bench":
        _workers(args.workers)
        if args.repeat < 1:
            raise ConfigError(f"--repeat {args.repeat}: expected a count >= 1")
    if args.command == "suite-report":
        _known("--suite", args.suite, suite_names())
    if args.command == "falsify" and settings is not None:
        _known("--suite", args.suite or (), falsify.SUITES)
        _known("--model", [args.model], sorted(settings.roster))
        _known("--quant", args.quant or (),
               make_runtime(falsify.RUNTIME, settings).quantizations)
    if settings is not None and getattr(args, "gt_quant", None):
        check_quantizations(settings)
        offered = {q for name in settings.runtimes
                   for q in make_runtime(name, settings).quantizations}
        _known("--quant", args.gt_quant, sorted(offered))


def _context(args: argparse.Namespace, settings: Settings) -> Context:
    return Context.open(settings, refresh_token="measure" if args.gt_no_cache else None)


def cmd_oracle(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.device == "cpu" and args.precision != "float32":
        print("error: CPU oracles are float32; lower precisions are GPU oracles "
              "(--device cuda)", file=sys.stderr)
        return Exit.USAGE
    if args.device == "cuda":
        import torch  # only here: --help and the other commands stay light

        if not torch.cuda.is_available():
            print("error: --device cuda but torch.cuda.is_available() is False",
                  file=sys.stderr)
            return Exit.UNAVAILABLE
    # --all: every roster model with a reference of its own; a speculative draft
    # (truncate:) is only ever compared with its target's tokens, never with an oracle.
    slugs = ([s for s, spec in settings.roster.items() if spec.scheme != "truncate"]
             if args.all else list(settings.models))
    cache = settings.cache_root()
    Lease.take(cache)  # the models it builds and reads are in use until it exits
    models = []
    for slug in slugs:
        try:
            models.append(resolve(settings.spec(slug), cache, settings.root, settings.roster))
        except ModelUnavailable as exc:
            if not args.all:
                print(f"error: {exc}", file=sys.stderr)
                return Exit.UNAVAILABLE
            print(f"skipped {slug}: {exc}", file=sys.stderr)
    prompts = load_prompts(settings.path(settings.prompts_dir),
                           list(settings.prompts) if settings.prompts else None)
    oracle_root = settings.path(settings.oracle_dir)
    for folder in (oracle_root, oracle_root.parent / f"{oracle_root.name}-gpu"):
        for stale in remove_stale(folder):  # left by a run killed before its rename
            print(f"removed stale temporary {stale}", file=sys.stderr)
    blocked = 0
    for change in oracles.build_all(
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
        budget=MemoryBudget.from_settings(settings),
        perplexity=not args.gt_prompt,  # --prompt NAME: that prompt's files, nothing else
    ):
        if change.status == "unchanged":
            if not args.quiet:
                print(f"unchanged  {change.path}")
            continue
        if change.status == "skipped":
            print(f"skipped    {change.path}: {change.detail}")
            continue
        noise = change.status == "noise"
        verb = "wrote" if change.written else ("would write" if change.status == "new"
                                               else "kept" if noise else "NOT written")
        print(f"{change.status:<10} {change.path}: {verb}"
              + (f" - {change.detail}" if change.detail else ""))
        blocked += not (change.written or noise or change.status == "sealed")
    if blocked:
        hint = "" if args.check else "; rerun with --force to overwrite"
        print(f"{blocked} oracle file(s) differ from what was generated{hint}", file=sys.stderr)
        return Exit.FAILED
    return Exit.OK


def cmd_convert(args: argparse.Namespace) -> int:
    settings = _settings(args)
    ctx = _context(args, settings)
    counts: dict[str, int] = {}
    try:
        for outcome in convert.convert(ctx):
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
            print(f"{outcome.status:<8} {outcome.target}: {outcome.detail}", flush=True)
    finally:
        ctx.close()
    print(", ".join(f"{n} {status}" for status, n in counts.items()) or "nothing to convert",
          file=sys.stderr)
    return Exit.FAILED if counts.get("failed") else Exit.OK


def cmd_clean(args: argparse.Namespace) -> int:
    settings = _settings(args)
    root = settings.cache_root()
    if args.max_size is not None:
        return _trim(root, args.max_size, args.dry_run)
    done = clean.clean(settings, root, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for entry in done.artifacts:
        print(f"{verb}  {show_size(entry.size):>7}  {entry.path}")
    for note in done.notes:
        print(f"kept     {note}", file=sys.stderr)
    size = show_size(sum(e.size for e in done.artifacts) + done.results_size)
    print(f"{len(done.artifacts)} artifact(s) and {done.results} result(s) of "
          f"{', '.join(settings.runtimes)} "
          f"{'would be dropped' if args.dry_run else 'dropped'} from {root} ({size}"
          f"{'; --dry-run: nothing removed' if args.dry_run else ''})", file=sys.stderr)
    if done.untagged:
        print(f"{done.untagged} older result file(s) name no artifact and were kept; "
              "`pytest --gt-no-cache` reruns every engine regardless", file=sys.stderr)
    return Exit.OK


def _trim(root: Path, limit: int, dry_run: bool) -> int:
    done = trim(root, limit, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for entry in done.removed:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used))
        print(f"{verb}  {show_size(entry.size):>7}  last used {used}  {entry.path}")
    for entry in done.in_use:
        print(f"in use        {show_size(entry.size):>7}  kept (a running session uses it)  "
              f"{entry.path}", file=sys.stderr)
    state = "would hold" if dry_run else "holds"
    print(f"{root} {state} {show_size(done.after)} (was {show_size(done.before)}; "
          f"--max-size {show_size(limit)}): {len(done.removed)} least recently used "
          f"entr{'y' if len(done.removed) == 1 else 'ies'} "
          f"{'to remove (--dry-run: nothing removed)' if dry_run else 'removed'}",
          file=sys.stderr)
    return 0


def _size_argument(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_models(args: argparse.Namespace) -> int:
    settings = _settings(args)
    found = roster.rows(settings, args.resolve)
    if args.markdown or args.write:
        _publish(args, roster.markdown(found))
    else:
        print(roster.text(found), end="")
    return Exit.OK


def cmd_fetch(args: argparse.Namespace) -> int:
    settings = _settings(args)
    cache = settings.cache_root()
    for slug in args.model:
        try:
            model = resolve(settings.spec(slug), cache, settings.root, settings.roster)
            print(f"{slug}: {model.path}")
        except ModelUnavailable as exc:
            print(f"{slug}: {exc}", file=sys.stderr)
            return Exit.UNAVAILABLE
    return Exit.OK


def cmd_schema(args: argparse.Namespace) -> int:
    _publish(args, schema_text())
    return Exit.OK


def schema_text() -> str:
    """The configuration's JSON Schema as ``docs/schema.json`` holds it."""
    return json.dumps(config_schema.json_schema(), indent=2)


def _publish(args: argparse.Namespace, text: str) -> None:
    """Print a generated document and, with --write FILE, write it atomically."""
    if args.write:
        atomic_write_text(Path(args.write), text)
        print(f"wrote {args.write}", file=sys.stderr)
    print(text)


def cmd_measure(args: argparse.Namespace) -> int:
    settings = _settings(args)
    ctx = _context(args, settings)
    try:
        text = measure.measure(ctx, list(settings.models), list(settings.runtimes),
                               args.gt_quant or list(measure.QUANTIZATIONS))
    finally:
        ctx.close()
    _publish(args, text)
    return Exit.OK


def cmd_near_ties(args: argparse.Namespace) -> int:
    settings = _settings(args)
    ctx = _context(args, settings)
    try:
        found = near_tie_margin.measure_all(ctx, args.model)
    finally:
        ctx.close()
    _publish(args, near_tie_margin.render(args.model, found))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    settings = _settings(args)
    runtimes, quants = list(settings.runtimes), list(settings.quantizations)
    if len(settings.models) == 2 and not args.gt_runtime and not args.gt_quant:
        runtimes, quants = list(compare.TWO_MODEL_RUNTIMES), list(compare.TWO_MODEL_QUANTS)
    ctx = _context(args, settings)
    try:
        result = compare.compare(ctx, list(settings.models), list(runtimes), list(quants))
    except compare.CompareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Exit.USAGE
    finally:
        ctx.close()
    print(compare.render(result, args.format))
    return Exit.OK


def cmd_qualify(args: argparse.Namespace) -> int:
    path = Path(args.results)
    try:
        data = qualify.load(path)
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Exit.USAGE
    _publish(args, qualify.render(path, data))
    return Exit.OK


def cmd_merge(args: argparse.Namespace) -> int:
    outputs = merge.Outputs(*(Path(v) if v else None
                              for v in (args.results, args.html, args.junit, args.ticket)))
    try:
        run = merge.merge([Path(p) for p in args.shards])
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Exit.USAGE  # as qualify: the file given is not a results document
    for line in merge.matrix(run):
        print(line)
    try:
        lines = merge.write(run, outputs)
    except OSError as exc:
        print(f"error: could not write {exc.filename or ''}: {exc}", file=sys.stderr)
        return Exit.CANNOT_WRITE
    for line in lines:
        print(line)
    print(f"merged {len(run.records)} parity test(s) from {len(args.shards)} file(s); "
          f"{len(run.failures)} failed")
    return Exit.OK


def cmd_falsify(args: argparse.Namespace) -> int:
    settings = _settings(args)
    quants = tuple(args.quant or ("float32", "int8", "int4"))
    suites = tuple(args.suite or falsify.SUITES)
    chosen = [] if args.no_faults else (
        args.fault or [*falsify.FILE_FAULT_NAMES, *falsify.ENGINE_FAULT_NAMES])
    unknown = [f for f in chosen if f not in falsify.FILE_FAULT_NAMES
               and f not in falsify.ENGINE_FAULT_NAMES]
    if unknown:
        print(f"error: unknown fault(s) {', '.join(unknown)} (file faults: "
              f"{', '.join(falsify.FILE_FAULT_NAMES)}; engine faults: "
              f"{', '.join(falsify.ENGINE_FAULT_NAMES)})", file=sys.stderr)
        return Exit.USAGE
    if args.from_rows:
        runs = []
        for name in args.from_rows:
            try:
                model, rows = falsify.read_rows(Path(name))
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return Exit.USAGE
            if model != args.model:
                print(f"error: {name} holds rows of model {model!r}, not --model "
                      f"{args.model!r}", file=sys.stderr)
                return Exit.USAGE
            runs.append(rows)
        rows = falsify.merge_rows(*runs)
        quants = falsify.quants_of(rows, quants)
    else:
        rows = falsify.falsify(
            settings, settings.cache_root(), args.model, quants,
            [f for f in chosen if f in falsify.FILE_FAULT_NAMES],
            [f for f in chosen if f in falsify.ENGINE_FAULT_NAMES], suites,
            other_tools=not args.no_other_tools, other_types=args.other_type or (),
            on_row=None if not args.rows_out else lambda so_far: atomic_write_text(
                Path(args.rows_out), falsify.rows_json(args.model, so_far)))
    suites = falsify.suites_run(rows, suites)
    if args.rows_out:
        atomic_write_text(Path(args.rows_out), falsify.rows_json(args.model, rows))
        print(f"wrote the rows to {args.rows_out}", file=sys.stderr)
    text = falsify.render(args.model, rows, suites, quants, settings.cache_root())
    print(text)
    if args.write:  # one section per model: the other models' sections stay
        target = Path(args.write)
        document = target.read_text(encoding="utf-8") if target.is_file() else ""
        atomic_write_text(target, falsify.replace_model_section(document, args.model, text))
        print(f"wrote {args.model}'s section of {args.write}", file=sys.stderr)
    if args.trust:
        facts = falsify.trust_facts(args.model, rows, suites)
        atomic_write_text(Path(args.trust), facts.to_json())
        print(f"wrote the trust facts to {args.trust}", file=sys.stderr)
    if args.readme:
        readme = Path(args.readme)
        section = falsify.readme_section(rows, suites, quants)
        atomic_write_text(readme, falsify.replace_readme_section(readme.read_text(), section))
        print(f"wrote the suite table into {readme}", file=sys.stderr)
    escaped = falsify.missed(rows)
    if escaped:
        print(f"faults no suite caught: {', '.join(escaped)}", file=sys.stderr)
    return Exit.FAILED if escaped else Exit.OK


def _write_section(args: argparse.Namespace, text: str, begin: str, end: str) -> None:
    """One section of ``groundtruth bench`` into --write FILE and each --also-write FILE,
    between its markers; the rest of each file is kept."""
    for name in [*([args.write] if args.write else []), *(args.also_write or [])]:
        target = Path(name)
        document = target.read_text() if target.is_file() else ""
        atomic_write_text(target, benchmark.replace_between(document, text, begin, end))
        print(f"wrote {target}", file=sys.stderr)


def cmd_bench(args: argparse.Namespace) -> int:
    settings = _settings(args)
    workers = _workers(args.workers)
    if args.memory:
        budget = memory_size(args.budget, "--budget") if args.budget else None
        with tempfile.TemporaryDirectory(prefix="gt-memory-") as tmp:
            text = memory_bench.run_memory_bench(settings, args.tests, Path(tmp), budget,
                                                 args.quant)
        print(text)
        _write_section(args, text, memory_bench.BEGIN, memory_bench.END)
        return 0
    if args.shards_only:
        if args.shards < 2:
            print("--shards-only needs --shards N with N >= 2", file=sys.stderr)
            return Exit.USAGE
        text = benchmark.run_shard_bench(settings, args.tests, args.shards, args.select)
        print(text)
        _write_section(args, text, benchmark.SHARDS_BEGIN, benchmark.SHARDS_END)
        return Exit.OK
    text = benchmark.run_bench(settings, args.tests, workers, repeat=args.repeat,
                               parity=not args.no_parity, torchao=not args.no_torchao,
                               shards=args.shards)
    _publish(args, text)
    return Exit.OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    ctx = _context(args, settings)
    if not args.write:  # the model's own bounds, beside its oracles
        try:
            found = model_bounds.calibrate_model(ctx, args.model)
            path = model_bounds.write(ctx, found) if found.suites else None
        finally:
            ctx.close()
        print(model_bounds.render(found))
        if path is None:
            print(f"error: no bounds could be calibrated for {args.model} (see 'Not "
                  "calibrated' above)", file=sys.stderr)
            return Exit.UNAVAILABLE
        print(f"wrote {path}", file=sys.stderr)
        return Exit.OK
    random = tuple(args.random_model if args.random_model is not None else TINY_MODELS)
    try:
        cal, text = calibrate.calibrate(ctx, args.model, random)
        rescore_bounds, consistency_bounds, rescore_text = rescore_calibration.calibrate(
            ctx, args.model)
    finally:
        ctx.close()
    text += "\n" + rescore_text
    print(text)
    files = {agreement.BOUNDS_FILE: calibrate.bounds_document(cal),
             ppl.BOUNDS_FILE: calibrate.ppl_document(cal),
             rescore.BOUNDS_FILE: rescore_calibration.bounds_document(args.model,
                                                                      rescore_bounds),
             consistency.BOUNDS_FILE: rescore_calibration.bounds_document(args.model,
                                                                          consistency_bounds)}
    atomic_write_text(Path(args.write), text)
    for name, document in files.items():
        atomic_write_text(DATA / name, document)
    print(f"wrote {args.write} and {', '.join(str(DATA / n) for n in files)}", file=sys.stderr)
    return Exit.OK


def cmd_suite_report(args: argparse.Namespace) -> int:
    settings = _settings(args)
    text = suite_report.suite_report(settings, args.suite, refresh_token="measure"
                                     if args.gt_no_cache else None)
    _publish(args, text)
    return Exit.OK


def add_write(parser: argparse.ArgumentParser,
              help: str = "also write the markdown to FILE") -> None:
    """``--write FILE``: where a command that prints a document also writes it (atomically,
    :func:`_publish`)."""
    parser.add_argument("--write", metavar="FILE", help=help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="groundtruth", description=__doc__,
                                     epilog=EXIT_STATUSES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=".", help="project root holding pyproject.toml")
    common.add_argument("--config", action="append", default=[],
                        help="extra groundtruth.toml layered over [tool.groundtruth]")
    add_cli_options(common, ["cache-dir"])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("oracle", parents=[common],
                       help="generate oracle files with the float32 transformers reference",
                       epilog=EXIT_STATUSES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true",
                       help="every roster model that resolves here (speculative drafts excepted)")
    add_cli_options(which, ["model"])  # type: ignore[arg-type]  # a group adds like a parser
    add_cli_options(p, ["prompt", "max-memory"])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--precision", choices=("float32", "bfloat16", "float16"),
                   default="float32")
    p.add_argument("--force", action="store_true",
                   help="overwrite oracle files whose content changed")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when any file would change")
    p.add_argument("--tolerance", type=float, metavar="NATS", nargs="?",
                   const=CROSS_MACHINE_TOLERANCE,
                   help="treat changes that are only log-probability / cross-entropy "
                   "noise within NATS (tokens and top-k ids identical) as unchanged; "
                   f"bare: {CROSS_MACHINE_TOLERANCE}, the measured noise between CPUs "
                   "with margin; default: byte for byte")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_oracle)

    p = sub.add_parser("convert", parents=[common],
                       help="build every artifact of the matrix into the cache (make convert)")
    add_cli_options(p, ["model", "runtime", "quant", "no-cache"])
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("clean", parents=[common],
                       help="drop the cached artifacts and results of the selected runtimes, "
                       "or (--max-size) trim the cache to a size")
    add_cli_options(p, ["model", "runtime"])
    p.add_argument("--max-size", type=_size_argument, metavar="SIZE",
                   help="instead: remove the least recently used cache entries until the "
                   "cache holds at most SIZE (bytes, or e.g. 500M, 5G); entries in use by "
                   "a running session stay")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be removed, with sizes; remove nothing")
    p.set_defaults(func=cmd_clean)

    p = sub.add_parser("models", parents=[common],
                       help="the roster, each model's architecture and shape as it says")
    p.add_argument("--resolve", action="store_true",
                   help="resolve each model (may convert or download) and read its shape")
    p.add_argument("--markdown", action="store_true", help="a markdown table (docs/roster.md)")
    add_write(p)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("schema", help="the JSON Schema of [tool.groundtruth] and "
                       "groundtruth.toml (docs/schema.json: editors, validate-pyproject)")
    add_write(p, "also write the schema to FILE")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("measure", parents=[common],
                       help="table: runtime x quantization x prompt against the oracle")
    add_cli_options(p, [n for n in RUN_OPTIONS if n != "cache-dir"])
    add_write(p)
    p.set_defaults(func=cmd_measure)

    p = sub.add_parser("near-ties", parents=[common],
                       help="how far correct conversions move the reference's near ties "
                       "(the near-tie rule's margin)")
    p.add_argument("--model", default="smollm2-135m", metavar="SLUG")
    add_cli_options(p, ["no-cache"])
    p.add_argument("--write", metavar="FILE", help="also write the markdown to FILE")
    p.set_defaults(func=cmd_near_ties)

    p = sub.add_parser("compare", parents=[common],
                       help="the oracle's text and each runtime's side by side, per prompt; "
                       "--model A --model B: a teacher against a student")
    add_cli_options(p, [n for n in RUN_OPTIONS if n != "cache-dir"])
    p.add_argument("--format", choices=compare.FORMATS, default="text")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("qualify",
                       help="the qualification table (scores, grades) of a --gt-results file")
    p.add_argument("results", metavar="RESULTS.json")
    add_write(p)
    p.set_defaults(func=cmd_qualify)

    p = sub.add_parser("merge",
                       help="the --gt-results files of a sharded run (--gt-shard) -> the "
                       "results, ticket, JUnit XML and HTML of one run",
                       epilog=EXIT_STATUSES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shards", nargs="+", metavar="RESULTS.json")
    p.add_argument("--results", metavar="FILE", help="write the merged results JSON")
    p.add_argument("--html", metavar="FILE", help="write an HTML report")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML of the parity tests")
    p.add_argument("--ticket", metavar="FILE",
                   help="write the failures' GitHub issue (nothing when none failed)")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("falsify", parents=[common],
                       help="inject faults into llama.cpp conversions; which suites catch them")
    p.add_argument("--model", default="smollm2-135m", metavar="SLUG")
    p.add_argument("--quant", action="append", metavar="QUANT",
                   help="default: float32, int8, int4")
    p.add_argument("--fault", action="append", metavar="NAME",
                   help="a file or engine fault (default: all)")
    p.add_argument("--suite", action="append", metavar="NAME",
                   help="default: every CPU suite")
    p.add_argument("--no-other-tools", action="store_true",
                   help="skip the correct files made by llama.cpp's converter and quantizer "
                   "and the published file")
    add_write(p)
    p.add_argument("--readme", metavar="FILE",
                   help="also write the per-suite table between the markers in FILE")
    p.add_argument("--no-faults", action="store_true",
                   help="run the correct files only (enough for --trust)")
    p.add_argument("--trust", metavar="FILE",
                   help="write each suite's false alarms per quantization to FILE (the "
                   "score's trust facts: src/pytest_groundtruth/data/trust.json)")
    p.add_argument("--other-type", action="append", metavar="TYPE",
                   help="judge only the other tools' correct files of this GGUF type (F32, "
                   "Q8_0, Q4_0, Q4_K_M, Q5_K_M, Q6_K, the published file's type; "
                   "repeatable; default: all)")
    p.add_argument("--rows-out", metavar="FILE",
                   help="also write the run's rows to FILE (JSON), for --from; rewritten after "
                   "each row, so an interrupted run keeps the rows it finished")
    p.add_argument("--from", dest="from_rows", action="append", metavar="FILE",
                   help="run nothing: merge the rows of earlier runs (--rows-out; split "
                   "by quantization, fault or suite) and write their tables (repeatable)")
    p.set_defaults(func=cmd_falsify)

    p = sub.add_parser("bench", parents=[common],
                       help="the floor of a parity run against its cold and warm wall time")
    p.add_argument("--tests", default="tests/parity", metavar="DIR",
                   help="the parity tests to run (a folder with a groundtruth.toml)")
    p.add_argument("--workers", default="0,2", metavar="N,N",
                   help="pytest-xdist worker counts to compare (default: 0,2)")
    p.add_argument("--repeat", type=int, default=3,
                   help="warm runs and collect-only: the best of this many")
    p.add_argument("--no-parity", action="store_true",
                   help="leave out the parity runs (the floor, torchao and --shards still run)")
    p.add_argument("--no-torchao", action="store_true",
                   help="leave out the comparison of torchao's int4 paths on CPU")
    p.add_argument("--memory", action="store_true",
                   help="only the memory budget's section: the reference-loading suites "
                   "with max_memory below the model's float32 size (written between its "
                   "markers in --write FILE)")
    p.add_argument("--quant", metavar="NAME",
                   help="--memory: only the suites' tests of this quantization's artifacts "
                   "(and the oracle drift check): a shorter run")
    p.add_argument("--budget", metavar="SIZE",
                   help="--memory's max_memory (default: 3/4 of the float32 size)")
    p.add_argument("--shards", type=int, default=2, metavar="N",
                   help="also run the parity tests as N shards together (-n 1 each, a "
                   "shared cache_url) against one unsharded run; 0: leave out (default: 2)")
    p.add_argument("--shards-only", action="store_true",
                   help="only the shards' section (written between its markers in --write "
                   "FILE, the rest of the file kept)")
    p.add_argument("--also-write", metavar="FILE", action="append",
                   help="with --memory or --shards-only: also write the section between its "
                   "markers in FILE (repeatable)")
    p.add_argument("--select", metavar="EXPR",
                   help="with --shards-only: run only the parity tests -k EXPR selects (a "
                   "quick check of the bench; its verdict is then not judged)")
    add_write(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("calibrate", parents=[common],
                       help="the model's own bounds from its reference conversions, written "
                       "to <oracle_dir>/<model>/bounds.json; with --write, the package "
                       "defaults")
    p.add_argument("--model", default="smollm2-135m", metavar="SLUG",
                   help="the model whose bounds to calibrate on its configured GGUF runtimes "
                   "and quantizations (default: smollm2-135m)")
    p.add_argument("--random-model", action="append", metavar="SLUG",
                   help="random-weight models for their own bounds (default: the tiny "
                   "models; repeatable)")
    add_cli_options(p, ["no-cache"])
    add_write(p, "recalibrate the package defaults on --model's correct conversions (every "
              "runtime and quantization): write the report to FILE and the bounds into the "
              "package")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("suite-report", parents=[common],
                       help="run some suites over the configured matrix; markdown table")
    p.add_argument("--suite", action="append", required=True, metavar="NAME",
                   help="a registered suite (repeatable)")
    add_cli_options(p, [n for n in RUN_OPTIONS if n != "cache-dir"])
    add_write(p)
    p.set_defaults(func=cmd_suite_report)

    p = sub.add_parser("fetch", parents=[common],
                       help="download/convert models into the cache (needs the hub for hf:)")
    p.add_argument("model", nargs="+", metavar="SLUG")
    p.set_defaults(func=cmd_fetch)
    return parser


def plain_progress() -> None:
    """No progress bars where stderr is not a terminal (CI logs, pipes): each of their
    frames would be a carriage-return line. The commands print a line per step instead.
    Set before transformers / huggingface_hub are imported, which read it then."""
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        validate_args(args)
        code: int = args.func(args)
    except ConfigError as exc:
        return _error(exc, Exit.USAGE)
    except ModelUnavailable as exc:
        return _error(exc, Exit.UNAVAILABLE)
    except OutsideFolder as exc:
        return _error(exc, Exit.CANNOT_WRITE)
    except InputError as exc:  # prompts, evaluation text, model and oracle files
        return _error(exc, Exit.BAD_INPUT)
    except EngineFailure as exc:
        return _error(exc, Exit.ENGINE)
    except OSError as exc:  # reading inputs is checked above: this is an output
        return _error(f"cannot write: {exc}", Exit.CANNOT_WRITE)
    return code


def _error(message: object, status: Exit) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def run() -> None:
    """The ``groundtruth`` console script: the process-wide setup, then :func:`main`."""
    plain_progress()
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
