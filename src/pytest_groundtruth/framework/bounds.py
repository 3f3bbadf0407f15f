"""Calibrated bounds: the files that hold them, and which one a case's bound comes from.

A bound file maps a quantization key to a suite's parameters: ``"<runtime>:<quant>"``
(one runtime's scheme at that name, e.g. llama.cpp's Q4_0 at ``int4``) first, then
``"<quant>"``, then ``"*"`` (any other). Two kinds exist, read by one reader
(:func:`read_file`, on first use, never at import time):

* the package defaults, ``pytest_groundtruth/data/<suite>_bounds.json``, written by
  ``groundtruth calibrate --write`` on the embedded model (``bounds``) and on the tiny
  random-weight models (``random_bounds``; docs/calibration.md says why those differ);
* a model's own file, ``<oracle_dir>/<model>/bounds.json``, beside its oracles, written by
  ``groundtruth calibrate --model <model>`` from reference conversions of that model
  (:mod:`.auto`), for every calibrated suite, so that a team commits it.

A case's bound on a parameter (:func:`resolve`), first found wins:

1. a ``[[tool.groundtruth.bounds]]`` rule (its file and reason);
2. the model's committed file;
3. the automatic calibration of the model at hand (:mod:`.auto`; cached by content);
4. the package default: for a ``tiny:`` model the random-weight calibration, else the
   embedded model's (a default that names the model it was calibrated on).

Every :class:`Bound` carries that origin in words, and, for a calibrated one, the
command that recalibrates it for this model; failure messages print it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_groundtruth.config.settings import Bound, ConfigError, Settings
from pytest_groundtruth.core.paths import inside

if TYPE_CHECKING:
    from pytest_groundtruth.context import Context
    from pytest_groundtruth.runtimes.base import Artifact

DATA = Path(__file__).parents[1] / "data"
MODEL_FILE = "bounds.json"  # a model's own bounds, beside its oracles
RANDOM_SCHEME = "tiny"  # sources of random-weight models
DERIVED_SCHEMES = ("truncate", "lora")  # built from a base roster model (BASE[:...])

Table = dict[str, dict[str, float]]  # quantization key -> parameter -> value


@dataclass(frozen=True)
class Calibration:
    """How a suite's bounds are calibrated: the package file of its defaults, the
    statistics it measures on one correct conversion (JSON, made through the result
    store), and the rule that turns the statistics of correct conversions into bounds."""

    file: str  # the package defaults: data/<file>
    params: tuple[str, ...]  # the parameters it calibrates
    measure: Callable[[Context, Artifact], dict[str, Any]]
    # (statistics of each correct conversion, the quantization) -> parameter -> bound
    derive: Callable[[Sequence[Mapping[str, Any]], str], dict[str, float]]
    version: int = 1  # of the statistics' definitions and the rule: part of the cache key
    rule: str = ""  # the rule in a few words, for the bound's origin


@dataclass(frozen=True)
class BoundsFile:
    path: Path
    model: str  # the model it was calibrated on
    bounds: Table
    random_models: tuple[str, ...] = ()
    random_bounds: Table = field(default_factory=dict)


class BoundsFileError(ConfigError):
    """A bounds file that cannot be read; names the file and what is wrong."""


def _table(data: Any, path: Path, key: str) -> Table:
    if not isinstance(data, dict) or not all(
            isinstance(v, dict) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                        for x in v.values()) for v in data.values()):
        raise BoundsFileError(f"{path}: key {key!r} must map a quantization to a table of "
                              "numbers, e.g. {\"int4\": {\"max_kl\": 0.46}}")
    return {str(q): {str(p): float(v) for p, v in entry.items()} for q, entry in data.items()}


@cache
def _read(path: Path, stamp: tuple[int, int]) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BoundsFileError(f"{path}: not a readable bounds file ({exc})") from None
    if not isinstance(data, dict):
        raise BoundsFileError(f"{path}: not a JSON object")
    return data


def read_json(path: Path) -> dict[str, Any] | None:
    """A bounds file's JSON (None when there is none), read once per version of the file."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _read(path, (stat.st_mtime_ns, stat.st_size))


def read_file(path: Path) -> BoundsFile:
    """A package bounds file (empty before ``groundtruth calibrate`` first wrote it)."""
    data = read_json(path) or {}
    return BoundsFile(path, str(data.get("model", "")),
                      _table(data.get("bounds", {}), path, "bounds"),
                      tuple(data.get("random_models", ())),
                      _table(data.get("random_bounds", {}), path, "random_bounds"))


def package_file(name: str) -> BoundsFile:
    return read_file(DATA / name)


def lookup(table: Mapping[str, Mapping[str, float]], param: str, quant: str | None,
           runtime: str | None = None) -> float | None:
    """``param`` for ``quant`` on ``runtime``: ``"<runtime>:<quant>"``, ``"<quant>"``, ``"*"``."""
    q = quant or "*"
    keys = ([f"{runtime}:{q}"] if runtime else []) + [q, "*"]
    for key in keys:
        entry = table.get(key)
        if entry is not None and param in entry:
            return entry[param]
    return None


# --------------------------------------------------------------------------- a model's file


def model_file(settings: Settings, model: str) -> Path:
    """``<oracle_dir>/<model>/bounds.json``: the model's committed bounds."""
    return inside(settings.path(settings.oracle_dir), model, MODEL_FILE)


@dataclass(frozen=True)
class ModelBounds:
    """A model's committed bounds: per suite, a table; per quantization key, the reference
    conversions they were calibrated on."""

    path: Path
    model: str
    fingerprint: str
    suites: dict[str, Table]
    references: dict[str, str]  # quantization key -> how its reference population was made
    # quantization key -> the artifact the population was matched to: the SHA-256 of a
    # supplied file, or BUILT (the project's own conversion)
    artifacts: dict[str, str] = field(default_factory=dict)


BUILT = "built"  # a committed entry calibrated for the project's own conversion


def committed(settings: Settings, model: str) -> ModelBounds | None:
    path = model_file(settings, model)
    data = read_json(path)
    if data is None:
        return None
    suites = data.get("suites", {})
    if not isinstance(suites, dict):
        raise BoundsFileError(f"{path}: key 'suites' must map a suite to its bounds")
    return ModelBounds(path, str(data.get("model", model)), str(data.get("fingerprint", "")),
                       {s: _table(t, path, f"suites.{s}") for s, t in suites.items()},
                       {str(k): str(v) for k, v in dict(data.get("references", {})).items()},
                       {str(k): str(v) for k, v in dict(data.get("artifacts", {})).items()})


def model_document(model: str, fingerprint: str, suites: Mapping[str, Table],
                   references: Mapping[str, str],
                   artifacts: Mapping[str, str] | None = None) -> str:
    """The JSON of a model's bounds file (what :func:`committed` reads)."""
    return json.dumps({"generated_by": f"groundtruth calibrate --model {model}",
                       "model": model, "fingerprint": fingerprint,
                       "references": dict(references), "artifacts": dict(artifacts or {}),
                       "suites": {s: dict(t) for s, t in suites.items()}},
                      indent=2, sort_keys=True) + "\n"


def package_document(model: str, bounds: Table, random_models: Sequence[str] = (),
                     random_bounds: Table | None = None) -> str:
    """The JSON of a package bounds file (what :func:`read_file` reads)."""
    return json.dumps({"generated_by": "groundtruth calibrate", "model": model,
                       "bounds": bounds, "random_models": list(random_models),
                       "random_bounds": random_bounds or {}}, indent=2, sort_keys=True) + "\n"


# --------------------------------------------------------------------------- resolution


def recalibrate_command(model: str) -> str:
    return f"groundtruth calibrate --model {model}"


def random_weights(settings: Settings, model: str) -> bool:
    """Whether ``model`` is a random-weight model: a ``tiny:`` source, or a draft or merged
    adapter built on one (``truncate:tiny-llama``, ``lora:tiny-llama``)."""
    roster, seen = settings.roster, set()
    spec = settings.spec(model)
    while spec.scheme in DERIVED_SCHEMES and spec.slug not in seen:
        seen.add(spec.slug)
        base = roster.get(spec.location.split(":", 1)[0])
        if base is None:
            return False
        spec = base
    return spec.scheme == RANDOM_SCHEME


# (bounds, where they came from) or (None, why there are none)
Automatic = Callable[[], "tuple[dict[str, float] | None, str]"]


def resolve(settings: Settings, suite: str, param: str, declared: Any,
            calibration: Calibration | None, *, model: str | None = None,
            runtime: str | None = None, quant: str | None = None, prompt: str | None = None,
            automatic: Automatic | None = None,
            artifact: Callable[[], str] = lambda: BUILT) -> Bound:
    """The case's bound on ``param`` of ``suite`` and where it came from (module
    docstring). ``declared``: the suite's own default for parameters no file calibrates;
    ``artifact``: which artifact is judged (a supplied file's SHA-256, or :data:`BUILT`):
    a committed entry applies to the artifact its reference conversions were matched to
    (another file may store other tensor types)."""
    rule = settings.rule(suite, param, model=model, runtime=runtime, quantization=quant,
                         prompt=prompt)
    if rule is not None:
        return rule
    if calibration is None or param not in calibration.params:
        return Bound(declared, "default")
    again = recalibrate_command(model or "<model>")
    mine = committed(settings, model) if model is not None else None
    if mine is not None:
        value = lookup(mine.suites.get(suite, {}), param, quant, runtime)
        matched = (mine.artifacts.get(f"{runtime}:{quant}") or mine.artifacts.get(quant or "*")
                   or BUILT)
        if value is not None and matched == artifact():
            how = (mine.references.get(f"{runtime}:{quant}")
                   or mine.references.get(quant or "*", ""))
            return Bound(value, f"committed file {mine.path}"
                         + (f" (calibrated on {how})" if how else "")
                         + f"; recalibrate: `{again}`")
    defaults = package_file(calibration.file)
    if model is not None and random_weights(settings, model) and defaults.random_bounds:
        value = lookup(defaults.random_bounds, param, quant, runtime)
        if value is not None:
            return Bound(value, "package default calibrated on the tiny random-weight models "
                         f"({', '.join(defaults.random_models)}; docs/calibration.md)")
    why = ""
    if automatic is not None:
        found, how = automatic()
        if found is not None and param in found:
            return Bound(found[param], f"automatic: {how}; to commit it: `{again}`")
        why = f" (no automatic calibration: {how})" if how else ""
    value = lookup(defaults.bounds, param, quant, runtime)
    if value is None:
        return Bound(None, f"no calibrated bound for {quant or 'any quantization'}{why}: "
                     f"run `{again}` or set one in a [[tool.groundtruth.bounds]] rule")
    return Bound(value, f"package default calibrated on {defaults.model} "
                 f"(pytest_groundtruth/data/{calibration.file}){why}; for this model: "
                 f"`{again}`")
