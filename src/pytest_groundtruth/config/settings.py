"""Configuration: ``[tool.groundtruth]`` in pyproject.toml, layered ``groundtruth.toml`` files.

Every key is validated: an unknown key or a value of the wrong type is a
:class:`ConfigError` that names the file and the key. The same :class:`Settings` object
serves the pytest plugin and the ``groundtruth`` command.

Example::

    [tool.groundtruth]
    models = ["smollm2-135m", "my-model"]
    runtimes = ["llamacpp", "apr"]
    quantizations = ["int8", "int4"]
    cache_max_size = "20G"                 # trimmed at session end, least recently used first

    [tool.groundtruth.roster.my-model]     # the source is enough; stated shape keys
    source = "hf:my-org/my-model"          # (layers = 30, ...) are checked against it

    [[tool.groundtruth.bounds]]
    suite = "token"
    runtime = "llamacpp"
    quantization = "int8"
    max_mismatches = 16
    reason = "measured 13 mismatches at position 19 on the code prompt (near tie)"

    [[tool.groundtruth.artifacts]]      # test a file someone else produced
    model = "smollm2-135m"
    runtime = "llamacpp"
    quantization = "int4"
    path = "dist/smollm2-q4_0.gguf"
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pytest_groundtruth.config import schema
from pytest_groundtruth.config.qualification import (
    ANY_RUNTIME,
    GRADE_NAMES,
    THRESHOLD_KEYS,
    threshold_table,
)
from pytest_groundtruth.config.roster import BUILTIN, ModelSpec, RosterError, spec_from_table
from pytest_groundtruth.config.schema import Speculative
from pytest_groundtruth.core.budget import process_budget
from pytest_groundtruth.core.failures import InputError
from pytest_groundtruth.core.paths import default_cache_dir, name_problem
from pytest_groundtruth.core.plugins import RUNTIMES, SUITES, load, registered
from pytest_groundtruth.core.usage import parse_size
from pytest_groundtruth.measures.near_ties import MODES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NEAR_TIE_MODES = MODES  # how the greedy-token suites treat near ties
MATCH_KEYS = ("suite", "model", "runtime", "quantization", "prompt")


class ConfigError(InputError, ValueError):
    """Invalid configuration; names the file and the key."""


@dataclass(frozen=True)
class BoundRule:
    suite: str
    values: dict[str, int | float]
    reason: str
    origin: str  # file that set it
    match: dict[str, str] = field(default_factory=dict)  # model/runtime/quantization/prompt

    def matches(self, **context: str | None) -> bool:
        return all(context.get(k) == v for k, v in self.match.items())


@dataclass(frozen=True)
class Bound:
    """A resolved bound with where it came from (shown in failure messages)."""

    value: Any
    origin: str  # "default" or "<file>: <reason>"


@dataclass(frozen=True)
class ExternalArtifact:
    model: str
    runtime: str
    quantization: str
    path: Path


@dataclass(frozen=True)
class Settings:
    root: Path
    models: tuple[str, ...] = ("smollm2-135m",)
    runtimes: tuple[str, ...] = ("llamacpp", "torchao", "transformers", "apr")
    quantizations: tuple[str, ...] = ("int8", "int4")
    # None: every registered suite, in rank order (resolved by the suites layer:
    # suites.matrix.configured_suites); config reads the registry's names only.
    suites: tuple[str, ...] | None = None
    prompts: tuple[str, ...] | None = None
    oracle_dir: Path = Path("oracle")
    prompts_dir: Path = Path("prompts")
    eval_text: Path = Path("prompts/eval/perplexity.txt")
    cache_dir: Path | None = None
    # Bytes; the cache is trimmed to it, least recently used first, when a pytest session
    # ends (docs/speed.md). Written "5G", "500M" or a number of bytes. None: no limit.
    cache_max_size: int | None = None
    cache_url: str | None = None  # a shared artifact store behind cache_dir (fsspec URL)
    max_new_tokens: int = 32
    top_k: int = 10
    near_ties: str = "rule"  # measures.near_ties.MODES
    apr_bin: str = "apr"
    timeout: float = 300.0
    cuda_precisions: tuple[str, ...] = ("bfloat16", "float16")
    roster: dict[str, ModelSpec] = field(default_factory=lambda: dict(BUILTIN))
    # [tool.groundtruth.runtime.<name>]: a configured runtime's kind and options
    runtime_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    bounds: tuple[BoundRule, ...] = ()
    artifacts: tuple[ExternalArtifact, ...] = ()
    speculative: Speculative = field(default_factory=Speculative)
    sources: tuple[str, ...] = ()  # the files the settings were read from
    # Qualification (config/qualification.py): the lowest grade a combination may score,
    # and performance floors per runtime ("*": any); never part of a default check.
    min_grade: str | None = None
    min_throughput: dict[str, float] = field(default_factory=dict)  # tokens/s
    max_p99_ms: dict[str, float] = field(default_factory=dict)  # per-token latency
    # The memory the whole run may use, in bytes (None: the machine's less a margin);
    # each pytest process gets an equal share (core/budget.py, docs/memory.md).
    max_memory: int | None = None

    def path(self, value: Path) -> Path:
        return value if value.is_absolute() else self.root / value

    def cache_root(self) -> Path:
        """The cache directory: ``cache_dir`` (or ``--gt-cache-dir``), else the default."""
        return self.path(self.cache_dir) if self.cache_dir else default_cache_dir()

    def memory_budget(self, workers: int = 1) -> int:
        """One process's share of ``max_memory`` among ``workers`` (xdist) processes."""
        return process_budget(self.max_memory, workers)

    def supplied_artifact(self, model: str, runtime: str, quantization: str) -> Path | None:
        """The user's file for this cell (``[[artifacts]]``, ``--gt-artifact``), if any."""
        for art in self.artifacts:
            if (art.model, art.runtime, art.quantization) == (model, runtime, quantization):
                return self.path(art.path)
        return None

    def spec(self, slug: str) -> ModelSpec:
        try:
            return self.roster[slug]
        except KeyError:
            raise ConfigError(
                f"model {slug!r} is not in the roster (known: {', '.join(sorted(self.roster))}); "
                f"add it under [tool.groundtruth.roster.{slug}]"
            ) from None

    def rule(
        self,
        suite: str,
        param: str,
        *,
        model: str | None = None,
        runtime: str | None = None,
        quantization: str | None = None,
        prompt: str | None = None,
    ) -> Bound | None:
        """The most specific ``[[bounds]]`` rule for this suite parameter, or None (the
        suite framework resolves the rest: :func:`pytest_groundtruth.framework.bounds.resolve`)."""
        context = {"model": model, "runtime": runtime, "quantization": quantization,
                   "prompt": prompt}
        best: BoundRule | None = None
        for rule in self.bounds:  # later rules win ties: files read later are more local
            if (
                rule.suite == suite
                and param in rule.values
                and rule.matches(**context)
                and (best is None or len(rule.match) >= len(best.match))
            ):
                best = rule
        if best is not None:
            return Bound(best.values[param], f"{best.origin}: {best.reason}")
        return None


def known_runtimes(settings: Settings) -> set[str]:
    """Runtime names ``settings`` can run: registered kinds and configured runtimes."""
    return set(registered(RUNTIMES)) | set(settings.runtime_options)


def check_name(name: str, where: str) -> None:
    """A name that becomes part of test ids and file names (roster slugs, runtime names,
    quantizations, prompt names): :func:`~pytest_groundtruth.core.paths.name_problem`."""
    problem = name_problem(name)
    if problem:
        raise ConfigError(f"{where}: {problem}")


# --------------------------------------------------------------------------- loading

# Scalar keys whose value is parsed (the error names the file and the key).
_PARSED: dict[str, Callable[[Any], Any]] = {"cache_max_size": parse_size,
                                            "max_memory": lambda v: memory_size(v, "")}
_PATH_KEYS = ("oracle_dir", "prompts_dir", "eval_text", "cache_dir")
_TABLE_KEYS = ("roster", "runtime", "bounds", "artifacts", "adapters", "speculative")
KNOWN_KEYS = schema.KNOWN_KEYS


def read_pyproject(root: Path) -> tuple[dict[str, Any], str] | None:
    path = root / "pyproject.toml"
    if not path.is_file():
        return None
    data = _read_toml(path)
    table = data.get("tool", {}).get("groundtruth")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.groundtruth] must be a table")
    return table, f"{path} [tool.groundtruth]"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
            return data
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from exc


def load_settings(root: Path, extra_files: list[Path] | tuple[Path, ...] = ()) -> Settings:
    """Settings from ``root/pyproject.toml`` then each of ``extra_files`` in order."""
    settings = Settings(root=root)
    layers: list[tuple[dict[str, Any], str]] = []
    found = read_pyproject(root)
    if found is not None:
        layers.append(found)
    for file in extra_files:
        layers.append((_read_toml(file), str(file)))
    for table, origin in layers:
        settings = apply_table(settings, table, origin)
    return settings


def apply_table(settings: Settings, table: dict[str, Any], origin: str) -> Settings:
    """Layer one configuration table over ``settings``; validate every key (the shapes by
    the declaration, config/schema.py; names against the registries by :func:`validate`)."""
    try:
        parsed = schema.Groundtruth.model_validate(table)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {schema.explain(exc.errors(), table)}") from None
    given = parsed.model_fields_set
    changes: dict[str, Any] = {"sources": (*settings.sources, origin)}
    for key in KNOWN_KEYS:
        if key not in given or key in _TABLE_KEYS or key in THRESHOLD_KEYS:
            continue
        value = getattr(parsed, key)
        if isinstance(value, list):
            value = tuple(value)
        elif key in _PATH_KEYS:
            value = Path(value)
        elif key in _PARSED:
            try:
                value = _PARSED[key](value)
            except ValueError as exc:
                raise ConfigError(f"{origin}: key {key!r}: {exc}") from None
        changes[key] = value
    for key in THRESHOLD_KEYS:
        if key in given:
            try:
                changes[key] = {**getattr(settings, key), **threshold_table(table[key], key)}
            except ValueError as exc:
                raise ConfigError(f"{origin}: key {exc}") from None
    roster = dict(settings.roster)
    for slug in parsed.roster or {}:
        try:
            # the table as written (checked): a ceiling of 35 stays 35
            roster[slug] = spec_from_table(slug, dict(table["roster"][slug]),
                                           base=roster.get(slug))
        except (RosterError, TypeError) as exc:
            raise ConfigError(f"{origin}: {exc}") from exc
    roster.update(_adapters(parsed.adapters or {}, roster, origin))
    changes["roster"] = roster
    if "speculative" in given:
        assert parsed.speculative is not None
        changes["speculative"] = _speculative(settings.speculative, parsed.speculative)
    runtime_options = dict(settings.runtime_options)
    for name in parsed.runtime or {}:
        check_name(name, f"{origin}: [runtime.{name}]")
        runtime_options[name] = dict(table["runtime"][name])
    changes["runtime_options"] = runtime_options
    changes["bounds"] = settings.bounds + tuple(
        _bound_rule(rule, origin, i) for i, rule in enumerate(parsed.bounds or ()))
    changes["artifacts"] = settings.artifacts + tuple(
        ExternalArtifact(a.model, a.runtime, a.quantization, Path(a.path))
        for a in parsed.artifacts or ())
    result = replace(settings, **changes)
    validate(result, origin)
    return result


def memory_size(value: Any, where: str) -> int:
    """A memory size (``"12G"``, ``"512M"``, ``"12GiB"`` or bytes: ``parse_size``) that
    must be positive, as bytes; raises ValueError (ConfigError naming ``where``)."""
    try:
        size = parse_size(value)
    except ValueError as exc:
        if where:
            raise ConfigError(f"{where}: {exc}") from None
        raise
    if size <= 0:
        message = f"{value!r} must be a positive memory size"
        raise ConfigError(f"{where}: {message}") if where else ValueError(message)
    return size


def _bound_rule(rule: schema.Bound, origin: str, index: int) -> BoundRule:
    where = f"{origin}: bounds[{index}]"
    suite = rule.suite
    if suite not in registered(SUITES):
        raise ConfigError(f"{where}: key 'suite' = {suite!r} is not one of "
                          f"{', '.join(registered(SUITES))}")
    params = load(SUITES, suite).params
    values = dict(rule.model_extra or {})
    for key in values:
        if key not in params:
            raise ConfigError(
                f"{where}: unknown key {key!r} for suite {suite!r}; it takes "
                f"{', '.join(params) or 'no bounds'} and may match on {', '.join(MATCH_KEYS[1:])}"
            )
    if not values:
        raise ConfigError(f"{where}: sets no bound (suite {suite!r} takes {', '.join(params)})")
    match = {key: getattr(rule, key) for key in MATCH_KEYS[1:] if getattr(rule, key) is not None}
    return BoundRule(suite, values, rule.reason.strip(), origin, match)


def _adapters(table: dict[str, schema.Adapter], roster: dict[str, ModelSpec], origin: str
              ) -> dict[str, ModelSpec]:
    """``[adapters.NAME]`` (``base``, optional ``path``): the merged model NAME, a roster
    entry of ``base``'s shape with source ``lora:BASE[:PATH]``."""
    found = {}
    for name, entry in table.items():
        where = f"{origin}: [adapters.{name}]"
        check_name(name, where)
        base = entry.base
        if base not in roster:
            raise ConfigError(f"{where}: key 'base' = {base!r} is not in the roster")
        if name in roster and roster[name].scheme != "lora":
            raise ConfigError(f"{where}: {name!r} is already a roster model")
        source = f"lora:{base}" + (f":{entry.path}" if entry.path else "")
        found[name] = replace(roster[base], slug=name, source=source,
                              description=f"{base} with the adapter {source} merged")
    return found


def _speculative(current: Speculative, parsed: Speculative) -> Speculative:
    """``[speculative]`` over ``current``: the keys it gives replace, its drafts join."""
    changes = {key: getattr(parsed, key) for key in parsed.model_fields_set}
    if parsed.drafts:
        changes["drafts"] = {**current.drafts, **parsed.drafts}
    return current.model_copy(update=changes)


def validate(settings: Settings, origin: str) -> None:
    """Cross-field checks: names must exist in the roster, runtimes, quantizations, suites."""
    for slug in settings.models:
        if slug not in settings.roster:
            raise ConfigError(
                f"{origin}: key 'models' names {slug!r}, which is not in the roster "
                f"(known: {', '.join(sorted(settings.roster))})"
            )
    runtimes = known_runtimes(settings)
    for name in settings.runtimes:
        if name not in runtimes:
            raise ConfigError(
                f"{origin}: key 'runtimes' has {name!r}, which is neither a registered runtime "
                f"({', '.join(sorted(registered(RUNTIMES)))}) nor configured in "
                f"[tool.groundtruth.runtime.{name}]"
            )
    for quant in settings.quantizations:
        check_name(quant, f"{origin}: key 'quantizations'")
    checks = (
        ("suites", settings.suites or (), tuple(registered(SUITES))),
        ("cuda_precisions", settings.cuda_precisions, ("bfloat16", "float16")),
    )
    for key, values, allowed in checks:
        for value in values:
            if value not in allowed:
                raise ConfigError(
                    f"{origin}: key {key!r} has {value!r}, not one of {', '.join(allowed)}"
                )
    if settings.near_ties not in NEAR_TIE_MODES:
        raise ConfigError(
            f"{origin}: key 'near_ties' = {settings.near_ties!r} is not one of {NEAR_TIE_MODES}"
        )
    if settings.max_new_tokens <= 0 or settings.top_k < 2:
        raise ConfigError(f"{origin}: 'max_new_tokens' must be > 0 and 'top_k' >= 2")
    if not math.isfinite(settings.timeout) or settings.timeout <= 0:
        raise ConfigError(f"{origin}: key 'timeout' = {settings.timeout!r} must be a positive, "
                          "finite number of seconds")
    for rule in settings.bounds:  # a bound that names nothing would silently never apply
        where = f"{rule.origin}: a bound for suite {rule.suite!r} ({rule.reason})"
        runtime = rule.match.get("runtime")
        if runtime is not None and runtime not in runtimes:
            raise ConfigError(
                f"{where}: key 'runtime' = {runtime!r} is neither a registered runtime "
                f"({', '.join(sorted(registered(RUNTIMES)))}) nor configured in "
                f"[tool.groundtruth.runtime.{runtime}]"
            )
        model = rule.match.get("model")
        if model is not None and model not in settings.roster:
            raise ConfigError(f"{where}: key 'model' = {model!r} is not in the roster "
                              f"(known: {', '.join(sorted(settings.roster))})")
    if settings.min_grade is not None and settings.min_grade not in GRADE_NAMES:
        raise ConfigError(f"{origin}: key 'min_grade' = {settings.min_grade!r} is not one of "
                          f"{', '.join(GRADE_NAMES)}")
    for key in THRESHOLD_KEYS:
        for name in getattr(settings, key):
            if name != ANY_RUNTIME and name not in runtimes:
                raise ConfigError(
                    f"{origin}: key {key!r} names runtime {name!r}, which is neither a "
                    f"registered runtime ({', '.join(sorted(registered(RUNTIMES)))}) nor "
                    f"configured in [tool.groundtruth.runtime.{name}]")
    for target, drafts in settings.speculative.drafts.items():
        for slug in (target, *drafts):
            if slug not in settings.roster:
                raise ConfigError(f"{origin}: [speculative] drafts: {slug!r} is not in the "
                                  f"roster (known: {', '.join(sorted(settings.roster))})")
    for art in settings.artifacts:
        if art.runtime not in runtimes or art.model not in settings.roster:
            raise ConfigError(
                f"{origin}: artifact {art.path}: unknown runtime {art.runtime!r} or model "
                f"{art.model!r}"
            )
