"""Command-line options: one group, one ``--gt-`` prefix, ``dest`` always set.

Values stay plain strings and lists (pytest-xdist sends option values to workers).
:func:`apply_overrides` layers them over the file configuration.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_groundtruth.config.settings import (
    NEAR_TIE_MODES,
    QUANTIZATIONS,
    RUNTIMES,
    ConfigError,
    ExternalArtifact,
    Settings,
    validate,
)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("groundtruth", "pytest-groundtruth: LLM conversion parity")
    group.addoption("--gt-model", dest="gt_model", action="append", metavar="SLUG",
                    help="run only these roster models (repeatable; default: [tool.groundtruth] "
                    "models)")
    group.addoption("--gt-runtime", dest="gt_runtime", action="append", choices=RUNTIMES,
                    help="run only these runtimes (repeatable)")
    group.addoption("--gt-quant", dest="gt_quant", action="append", choices=QUANTIZATIONS,
                    help="run only these quantizations (repeatable)")
    group.addoption("--gt-prompt", dest="gt_prompt", action="append", metavar="NAME",
                    help="run only these prompts (file stems in the prompts directory)")
    group.addoption("--gt-near-ties", dest="gt_near_ties", choices=NEAR_TIE_MODES,
                    help="count (default) or exempt a first flip at an oracle near tie in "
                    "count-based suites (always reported)")
    group.addoption("--gt-cache-dir", dest="gt_cache_dir", metavar="DIR",
                    help="artifact/generation cache (default: cache_dir or "
                    "$XDG_CACHE_HOME/pytest-groundtruth)")
    group.addoption("--gt-no-cache", dest="gt_no_cache", action="store_true",
                    help="rebuild artifacts and rerun engines instead of using cached results")
    group.addoption("--gt-apr-bin", dest="gt_apr_bin", metavar="PATH",
                    help="the apr executable (default: apr_bin or `apr` on PATH)")
    group.addoption("--gt-timeout", dest="gt_timeout", metavar="SECONDS",
                    help="timeout for one engine subprocess call (apr)")
    group.addoption("--gt-artifact", dest="gt_artifact", action="append",
                    metavar="MODEL:RUNTIME:QUANT=PATH",
                    help="test this pre-built artifact instead of converting (repeatable)")
    group.addoption("--gt-results", dest="gt_results", metavar="FILE",
                    help="write every measurement as JSON to FILE")
    group.addoption("--gt-ticket", dest="gt_ticket", metavar="FILE",
                    help="write a GitHub issue (markdown) for the failures; nothing when none")
    group.addoption("--gt-baseline", dest="gt_baseline", metavar="FILE",
                    help="known falsifications: listed failures become strict xfails")
    group.addoption("--gt-baseline-update", dest="gt_baseline_update", action="store_true",
                    help="rewrite --gt-baseline from this run's parity failures")


def parse_artifact(text: str) -> ExternalArtifact:
    spec, sep, path = text.partition("=")
    parts = spec.split(":")
    if not sep or len(parts) != 3 or not all(parts) or not path:
        raise ConfigError(f"--gt-artifact {text!r}: expected MODEL:RUNTIME:QUANT=PATH")
    return ExternalArtifact(parts[0], parts[1], parts[2], Path(path))


def apply_overrides(settings: Settings, config: pytest.Config) -> Settings:
    """Layer the ``--gt-*`` options over ``settings`` and validate the result."""
    opt = config.option
    changes: dict[str, Any] = {}
    for option, key in (("gt_model", "models"), ("gt_runtime", "runtimes"),
                        ("gt_quant", "quantizations"), ("gt_prompt", "prompts")):
        value = getattr(opt, option, None)
        if value:
            changes[key] = tuple(dict.fromkeys(value))
    if opt.gt_near_ties:
        changes["near_ties"] = opt.gt_near_ties
    if opt.gt_apr_bin:
        changes["apr_bin"] = opt.gt_apr_bin
    if opt.gt_timeout:
        try:
            changes["timeout"] = float(opt.gt_timeout)
        except ValueError:
            raise ConfigError(f"--gt-timeout {opt.gt_timeout!r} is not a number") from None
    if opt.gt_cache_dir:
        changes["cache_dir"] = Path(opt.gt_cache_dir).resolve()
    if opt.gt_artifact:
        extra = tuple(parse_artifact(a) for a in opt.gt_artifact)
        changes["artifacts"] = settings.artifacts + tuple(
            replace(a, path=a.path.resolve()) for a in extra
        )
    if not changes:
        return settings
    result = replace(settings, **changes)
    validate(result, "command line")
    return result
