"""Options, declared once: the pytest plugin's ``--gt-*`` flags and the ``groundtruth`` CLI's.

Each :class:`Option` is one flag: its help, what it parses to and which setting it
overrides. The plugin adds them all to one pytest group (``--gt-<name>``); a CLI
subcommand adds the ones it takes (``--<name>``). Both hand the parsed values to
:func:`apply_overrides`, so a value is validated the same way whichever way it came.
Values stay plain strings and lists (pytest-xdist sends option values to workers).
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pytest_groundtruth.config.qualification import GRADE_NAMES, THRESHOLD_KEYS, parse_threshold
from pytest_groundtruth.config.settings import (
    NEAR_TIE_MODES,
    ConfigError,
    ExternalArtifact,
    Settings,
    validate,
)

PYTEST_PREFIX = "--gt-"


@dataclass(frozen=True)
class Option:
    name: str  # the flag without its prefix: "model" -> --gt-model / --model
    help: str
    metavar: str | None = None
    repeat: bool = False  # may be given several times (a list)
    flag: bool = False  # takes no value (store_true)
    choices: tuple[str, ...] | None = None
    setting: str | None = None  # the Settings field it overrides
    parse: Callable[[Any], Any] | None = None  # value -> setting value (raises ConfigError)

    @property
    def dest(self) -> str:
        return "gt_" + self.name.replace("-", "_")

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"dest": self.dest, "help": self.help}
        if self.flag:
            kw["action"] = "store_true"
            return kw
        kw["action"] = "append" if self.repeat else "store"
        if self.metavar:
            kw["metavar"] = self.metavar
        if self.choices:
            kw["choices"] = self.choices
        return kw


def parse_artifact(text: str) -> ExternalArtifact:
    spec, sep, path = text.partition("=")
    parts = spec.split(":")
    if not sep or len(parts) != 3 or not all(parts) or not path:
        raise ConfigError(f"--gt-artifact {text!r}: expected MODEL:RUNTIME:QUANT=PATH")
    return ExternalArtifact(parts[0], parts[1], parts[2], Path(path).resolve())


def parse_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--gt-timeout {text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"--gt-timeout {text!r} must be a positive, finite number of seconds")
    return value


def parse_thresholds(option: str) -> Callable[[list[str]], dict[str, float]]:
    """``[RUNTIME=]NUMBER`` values (repeatable) -> runtime -> number (``*``: any)."""

    def parse(values: list[str]) -> dict[str, float]:
        try:
            return dict(parse_threshold(v, option) for v in values)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    return parse


def _names(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


OPTIONS: tuple[Option, ...] = (
    Option("model", "run only these roster models (repeatable; default: [tool.groundtruth] "
           "models)", "SLUG", repeat=True, setting="models", parse=_names),
    Option("runtime", "run only these runtimes (repeatable)", "NAME", repeat=True,
           setting="runtimes", parse=_names),
    Option("quant", "run only these quantizations (repeatable)", "QUANT", repeat=True,
           setting="quantizations", parse=_names),
    Option("prompt", "run only these prompts (file stems in the prompts directory)", "NAME",
           repeat=True, setting="prompts", parse=_names),
    Option("near-ties", "count (default) or exempt a first flip at an oracle near tie in "
           "count-based suites (always reported)", choices=NEAR_TIE_MODES, setting="near_ties"),
    Option("cache-dir", "artifact/result cache (default: cache_dir or the user cache "
           "directory); write --gt-cache-dir=DIR", "DIR", setting="cache_dir",
           parse=lambda v: Path(v).resolve()),
    Option("no-cache", "rebuild artifacts and rerun engines instead of using cached results",
           flag=True),
    Option("apr-bin", "the apr executable (default: apr_bin or `apr` on PATH)", "PATH",
           setting="apr_bin"),
    Option("timeout", "timeout in seconds for one engine subprocess call", "SECONDS",
           setting="timeout", parse=parse_seconds),
    Option("artifact", "test this pre-built artifact instead of converting (repeatable)",
           "MODEL:RUNTIME:QUANT=PATH", repeat=True, setting="artifacts",
           parse=lambda values: tuple(parse_artifact(v) for v in values)),
    Option("results", "write every measurement as JSON to FILE", "FILE"),
    Option("ticket", "write a GitHub issue (markdown) for the failures; nothing when none",
           "FILE"),
    Option("baseline", "known falsifications: listed failures become strict xfails", "FILE"),
    Option("strict-skips", "fail the run when a parity test skipped because something is "
           "missing here (a model, an engine, an API key, an oracle field); the matrix's "
           "declared holes (a runtime without perplexity, ...) do not count", flag=True),
    Option("baseline-update", "rewrite --gt-baseline from this run's parity failures",
           flag=True),
    Option("min-grade", "fail the run when a model x runtime x quantization scores below "
           "this qualification grade (docs/qualification.md)", "GRADE", choices=GRADE_NAMES,
           setting="min_grade"),
    Option("min-throughput", "fail a combination generating fewer tokens/s (repeatable; "
           "RUNTIME=TOK_S for one runtime)", "[RUNTIME=]TOK_S", repeat=True,
           setting="min_throughput", parse=parse_thresholds("--gt-min-throughput")),
    Option("max-p99-ms", "fail a combination whose 99th-percentile per-token latency is "
           "higher (repeatable; RUNTIME=MS for one runtime)", "[RUNTIME=]MS", repeat=True,
           setting="max_p99_ms", parse=parse_thresholds("--gt-max-p99-ms")),
)
BY_NAME = {o.name: o for o in OPTIONS}
# The options that narrow or configure a run (the CLI's measuring commands take these).
RUN_OPTIONS = ("model", "runtime", "quant", "prompt", "near-ties", "cache-dir", "no-cache",
               "apr-bin", "timeout", "artifact")


# pytest picks its rootdir and configuration file before it loads plugins, so it reads
# the value of `--gt-cache-dir /path` (written with a space) as a test path.
EQUALS_FORM = ("write an option's value with '=' (--gt-cache-dir=/path): pytest chooses "
               "its rootdir and configuration file before it knows these options, and "
               "takes a value after a space that is an existing path for a test path")


def separate_values(args: Sequence[str]) -> list[tuple[str, str]]:
    """``(flag, value)`` for each ``--gt-*`` option in ``args`` whose value is the next
    argument (``--gt-cache-dir /path``), not attached (``--gt-cache-dir=/path``)."""
    takes_value = {PYTEST_PREFIX + o.name for o in OPTIONS if not o.flag}
    return [(flag, value) for flag, value in itertools.pairwise(args)
            if flag in takes_value]


def add_pytest_options(parser: Any) -> None:
    """Every option on pytest's parser, in one group, as ``--gt-<name>``."""
    group = parser.getgroup("groundtruth", "pytest-groundtruth: LLM conversion parity; "
                            + EQUALS_FORM)
    for option in OPTIONS:
        group.addoption(PYTEST_PREFIX + option.name, **option.kwargs())


def add_cli_options(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
    """The named options on an argparse (sub)command, as ``--<name>``."""
    for name in names:
        option = BY_NAME[name]
        parser.add_argument("--" + option.name, **option.kwargs())


def apply_overrides(settings: Settings, values: Mapping[str, Any] | argparse.Namespace,
                    origin: str = "command line") -> Settings:
    """Layer parsed option values (by ``dest``) over ``settings`` and validate the result."""
    get = (lambda k: getattr(values, k, None)) if isinstance(values, argparse.Namespace) \
        else values.get
    changes: dict[str, Any] = {}
    for option in OPTIONS:
        value = get(option.dest)
        if option.setting is None or value in (None, [], False):
            continue
        changes[option.setting] = option.parse(value) if option.parse else value
    if "artifacts" in changes:
        changes["artifacts"] = settings.artifacts + changes["artifacts"]
    for key in THRESHOLD_KEYS:  # an option for one runtime keeps the others' thresholds
        if key in changes:
            changes[key] = {**getattr(settings, key), **changes[key]}
    if not changes:
        return settings
    result = replace(settings, **changes)
    validate(result, origin)
    return result


def pytest_values(config: Any, names: Sequence[str] | None = None) -> dict[str, Any]:
    """The ``--gt-*`` values of a pytest config, by ``dest``."""
    return {o.dest: getattr(config.option, o.dest, None) for o in OPTIONS
            if names is None or o.name in names}
