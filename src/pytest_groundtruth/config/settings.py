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

from pytest_groundtruth.config.qualification import (
    ANY_RUNTIME,
    GRADE_NAMES,
    THRESHOLD_KEYS,
    threshold_table,
)
from pytest_groundtruth.config.roster import BUILTIN, ModelSpec, RosterError, spec_from_table
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
class Speculative:
    """``[tool.groundtruth.speculative]``: which drafts assist which target, and how many
    tokens a draft proposes per step (docs/speculative.md)."""

    drafts: dict[str, tuple[str, ...]] = field(default_factory=dict)  # target -> draft slugs
    draft_tokens: int = 5  # transformers: num_assistant_tokens (constant schedule)
    lookup_tokens: int = 10  # llama.cpp prompt lookup: num_pred_tokens
    lookup_ngram: int = 2  # llama.cpp prompt lookup: max_ngram_size

    def drafts_for(self, target: str, roster: dict[str, ModelSpec]) -> tuple[str, ...]:
        """The configured drafts of ``target``, else its ``<target>-draft`` roster entry
        (when there is one) and the target itself."""
        if target in self.drafts:
            return self.drafts[target]
        return (*(d for d in (f"{target}-draft",) if d in roster), target)


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

_LIST_KEYS = {
    "models": str,
    "runtimes": str,
    "quantizations": str,
    "suites": str,
    "prompts": str,
    "cuda_precisions": str,
}
_PATH_KEYS = ("oracle_dir", "prompts_dir", "eval_text", "cache_dir")
_SCALAR_KEYS: dict[str, type | tuple[type, ...]] = {
    "max_new_tokens": int,
    "top_k": int,
    "near_ties": str,
    "apr_bin": str,
    "cache_url": str,
    "timeout": (int, float),
    "min_grade": str,
    "cache_max_size": (str, int),
    "max_memory": (str, int),
}
# Scalar keys whose value is parsed (the error names the file and the key).
_PARSED: dict[str, Callable[[Any], Any]] = {"cache_max_size": parse_size,
                                            "max_memory": lambda v: memory_size(v, "")}
_TABLE_KEYS = ("roster", "runtime", "bounds", "artifacts", "adapters", "speculative")
KNOWN_KEYS = (*_LIST_KEYS, *_PATH_KEYS, *_SCALAR_KEYS, *_TABLE_KEYS, *THRESHOLD_KEYS)


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
    """Layer one configuration table over ``settings``; validate every key."""
    unknown = sorted(set(table) - set(KNOWN_KEYS))
    if unknown:
        raise ConfigError(
            f"{origin}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(KNOWN_KEYS)}"
        )
    changes: dict[str, Any] = {"sources": (*settings.sources, origin)}
    for key, kind in _LIST_KEYS.items():
        if key in table:
            value = table[key]
            if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
                raise ConfigError(f"{origin}: key {key!r} must be a list of strings")
            changes[key] = tuple(value)
    for key in _PATH_KEYS:
        if key in table:
            if not isinstance(table[key], str) or not table[key]:
                raise ConfigError(f"{origin}: key {key!r} must be a non-empty path string")
            changes[key] = Path(table[key])
    for key, scalar in _SCALAR_KEYS.items():
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, scalar):
                raise ConfigError(f"{origin}: key {key!r} = {value!r} has the wrong type")
            if key in _PARSED:
                try:
                    value = _PARSED[key](value)
                except ValueError as exc:
                    raise ConfigError(f"{origin}: key {key!r}: {exc}") from None
            changes[key] = value
    for key in THRESHOLD_KEYS:
        if key in table:
            try:
                changes[key] = {**getattr(settings, key), **threshold_table(table[key], key)}
            except ValueError as exc:
                raise ConfigError(f"{origin}: key {exc}") from None
    roster = dict(settings.roster)
    for slug, entry in _table(table, "roster", origin).items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{origin}: [roster.{slug}] must be a table")
        try:
            roster[slug] = spec_from_table(slug, entry, base=roster.get(slug))
        except (RosterError, TypeError) as exc:
            raise ConfigError(f"{origin}: {exc}") from exc
    roster.update(_adapters(_table(table, "adapters", origin), roster, origin))
    changes["roster"] = roster
    if "speculative" in table:
        changes["speculative"] = _speculative(settings.speculative,
                                              _table(table, "speculative", origin), origin)
    runtime_options = dict(settings.runtime_options)
    for name, entry in _table(table, "runtime", origin).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
            raise ConfigError(f"{origin}: [runtime.{name}] must be a table with a string key "
                              f"'kind' (a registered runtime kind, e.g. 'command')")
        check_name(name, f"{origin}: [runtime.{name}]")
        runtime_options[name] = dict(entry)
    changes["runtime_options"] = runtime_options
    changes["bounds"] = settings.bounds + tuple(
        _bound_rule(rule, origin, i) for i, rule in enumerate(_list(table, "bounds", origin))
    )
    changes["artifacts"] = settings.artifacts + tuple(
        _external(entry, origin, i) for i, entry in enumerate(_list(table, "artifacts", origin))
    )
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


def _table(table: dict[str, Any], key: str, origin: str) -> dict[str, Any]:
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: key {key!r} must be a table")
    return value


def _list(table: dict[str, Any], key: str, origin: str) -> list[dict[str, Any]]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{origin}: key {key!r} must be an array of tables ([[{key}]])")
    return value


def _bound_rule(rule: dict[str, Any], origin: str, index: int) -> BoundRule:
    where = f"{origin}: bounds[{index}]"
    suite = rule.get("suite")
    if suite not in registered(SUITES):
        raise ConfigError(f"{where}: key 'suite' = {suite!r} is not one of "
                          f"{', '.join(registered(SUITES))}")
    reason = rule.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ConfigError(
            f"{where}: key 'reason' is required: say which measurement justifies the bound"
        )
    params = load(SUITES, suite).params
    values: dict[str, int | float] = {}
    match: dict[str, str] = {}
    for key, value in rule.items():
        if key in ("suite", "reason"):
            continue
        if key in MATCH_KEYS:
            if not isinstance(value, str):
                raise ConfigError(f"{where}: key {key!r} must be a string")
            match[key] = value
        elif key in params:
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value)):
                raise ConfigError(f"{where}: key {key!r} = {value!r} must be a finite number")
            values[key] = value
        else:
            raise ConfigError(
                f"{where}: unknown key {key!r} for suite {suite!r}; it takes "
                f"{', '.join(params) or 'no bounds'} and may match on {', '.join(MATCH_KEYS[1:])}"
            )
    if not values:
        raise ConfigError(f"{where}: sets no bound (suite {suite!r} takes {', '.join(params)})")
    return BoundRule(suite, values, reason.strip(), origin, match)


def _external(entry: dict[str, Any], origin: str, index: int) -> ExternalArtifact:
    where = f"{origin}: artifacts[{index}]"
    keys = ("model", "runtime", "quantization", "path")
    unknown = sorted(set(entry) - set(keys))
    missing = [k for k in keys if not isinstance(entry.get(k), str)]
    if unknown or missing:
        raise ConfigError(f"{where}: needs string keys {', '.join(keys)} "
                          f"(unknown: {unknown}, missing: {missing})")
    return ExternalArtifact(entry["model"], entry["runtime"], entry["quantization"],
                            Path(entry["path"]))


def _adapters(table: dict[str, Any], roster: dict[str, ModelSpec], origin: str
              ) -> dict[str, ModelSpec]:
    """``[adapters.NAME]`` (``base``, optional ``path``): the merged model NAME, a roster
    entry of ``base``'s shape with source ``lora:BASE[:PATH]``."""
    found = {}
    for name, entry in table.items():
        where = f"{origin}: [adapters.{name}]"
        check_name(name, where)
        if not isinstance(entry, dict) or set(entry) - {"base", "path"} \
                or not isinstance(entry.get("base"), str) \
                or not isinstance(entry.get("path", ""), str):
            raise ConfigError(f"{where}: must be a table with a string key 'base' (a roster "
                              "model) and optionally 'path' (a peft LoRA adapter directory; "
                              "default: the built-in deterministic adapter)")
        base = entry["base"]
        if base not in roster:
            raise ConfigError(f"{where}: key 'base' = {base!r} is not in the roster")
        if name in roster and roster[name].scheme != "lora":
            raise ConfigError(f"{where}: {name!r} is already a roster model")
        source = f"lora:{base}" + (f":{entry['path']}" if entry.get("path") else "")
        found[name] = replace(roster[base], slug=name, source=source,
                              description=f"{base} with the adapter {source} merged")
    return found


def _speculative(current: Speculative, table: dict[str, Any], origin: str) -> Speculative:
    changes: dict[str, Any] = {}
    for key in ("draft_tokens", "lookup_tokens", "lookup_ngram"):
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{origin}: [speculative] key {key!r} = {value!r} must be a "
                                  "positive integer")
            changes[key] = value
    drafts = table.get("drafts", {})
    if not isinstance(drafts, dict) or not all(
            isinstance(v, list) and v and all(isinstance(d, str) for d in v)
            for v in drafts.values()):
        raise ConfigError(f"{origin}: [speculative] key 'drafts' must map a target model to a "
                          "non-empty list of draft models, e.g. drafts = "
                          "{ smollm2-135m = ['smollm2-135m-draft', 'smollm2-135m'] }")
    if drafts:
        changes["drafts"] = {**current.drafts, **{k: tuple(v) for k, v in drafts.items()}}
    unknown = sorted(set(table) - {"drafts", "draft_tokens", "lookup_tokens", "lookup_ngram"})
    if unknown:
        raise ConfigError(f"{origin}: [speculative] unknown key(s) "
                          f"{', '.join(map(repr, unknown))}; known keys: drafts, draft_tokens, "
                          "lookup_tokens, lookup_ngram")
    return replace(current, **changes)


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
