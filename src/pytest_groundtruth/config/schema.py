"""The configuration's declaration: every table and key of ``[tool.groundtruth]`` (and of a
``groundtruth.toml``), its type and what it means, validated by pydantic and exported as
JSON Schema (``groundtruth schema``, ``docs/schema.json``: editors and validate-pyproject
read it).

Why pydantic 2: it is already in the development lock (llama-cpp-python's server needs it),
so no relock; its error locations name the table and the key, and its JSON Schema is
generated from the same classes that validate, so the published schema cannot drift
from what the loader accepts (``tests/unit/test_config_schema.py`` keeps the committed
file equal). msgspec would validate as well and faster, but needs a new locked
dependency. The cost, measured on 2 shared cores: importing pydantic and building these
classes takes about 0.19 s once per process; loading the parity configuration, 4.9 ms
against 2.4 ms with the hand-made checks.

What this module checks is each value's shape: types (``strict``: ``true`` is not a
number, ``"3"`` not an integer), unknown keys, positive counts, finite numbers. What
needs the registries or the whole configuration (a model in the roster, a runtime that
is registered or configured, a bound a suite takes) stays in
:func:`pytest_groundtruth.config.settings.validate`; a roster entry's own rules (its
source scheme, heads a multiple of kv_heads) in :func:`~.roster.validate_spec`.

Every error becomes one :class:`~.settings.ConfigError` line naming the file, the table
and the key, built from the field's ``description``, which is written to follow "must"
(:func:`explain`).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    create_model,
)

from pytest_groundtruth.config.qualification import THRESHOLD_KEYS, threshold_table
from pytest_groundtruth.config.roster import SPEC_FIELDS, ModelSpec

SCHEMA_ID = "https://pytest-groundtruth.dev/schema/tool.groundtruth.json"


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("not finite")
    return value


Names = list[StrictStr]
NonEmpty = Annotated[StrictStr, Field(min_length=1)]
Count = Annotated[StrictInt, Field(gt=0)]
Finite = StrictInt | Annotated[StrictFloat, AfterValidator(_finite)]
Size = StrictStr | Annotated[StrictInt, Field(ge=0)]
# min_throughput, max_p99_ms: parsed by config/qualification.py's threshold_table, whose
# messages name the runtime; the declaration says the shape.
Threshold = Annotated[
    Finite | dict[str, Finite],
    Field(json_schema_extra={"examples": [50, {"llamacpp": 50, "*": 10}]}),
]


class Table(BaseModel):
    """A TOML table: unknown keys are errors; values are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    # For a nested table whose errors read best as one sentence (``[adapters.NAME]``):
    # what it must be, said before the particular error.
    MUST: ClassVar[str] = ""


class Speculative(Table):
    """``[tool.groundtruth.speculative]``: which drafts assist which target, and how many
    tokens a draft proposes per step (docs/speculative.md)."""

    drafts: dict[StrictStr, Annotated[tuple[StrictStr, ...], Field(min_length=1)]] = Field(
        default_factory=dict,
        description="map a target model to a non-empty list of draft models, e.g. drafts = "
                    "{ smollm2-135m = ['smollm2-135m-draft', 'smollm2-135m'] } (default: the "
                    "target's <target>-draft roster entry, when there is one, and the target "
                    "itself)")
    draft_tokens: Count = Field(
        5, description="be a positive integer: tokens a transformers draft proposes per "
                       "step (num_assistant_tokens)")
    lookup_tokens: Count = Field(
        10, description="be a positive integer: tokens llama.cpp's prompt lookup proposes "
                        "(num_pred_tokens)")
    lookup_ngram: Count = Field(
        2, description="be a positive integer: llama.cpp's prompt lookup n-gram size "
                       "(max_ngram_size)")

    # TOML arrays arrive as lists: the tuples are this class's own
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)

    def drafts_for(self, target: str, roster: Mapping[str, ModelSpec]) -> tuple[str, ...]:
        """The configured drafts of ``target``, else its ``<target>-draft`` roster entry
        (when there is one) and the target itself."""
        if target in self.drafts:
            return self.drafts[target]
        return (*(d for d in (f"{target}-draft",) if d in roster), target)


class Runtime(Table):
    """``[tool.groundtruth.runtime.NAME]``: a runtime configured from a registered kind;
    the other keys are that kind's options, which the kind validates (docs/runtimes.md)."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    MUST: ClassVar[str] = ("must be a table with a string key 'kind' (a registered runtime "
                           "kind, e.g. 'command')")
    kind: StrictStr = Field(description="be a registered runtime kind (command, openai, "
                                        "llamacpp, ...)")


class Bound(Table):
    """``[[tool.groundtruth.bounds]]``: one rule that sets bounds of one suite, where it
    matches; its other keys are the suite's bound parameters (docs/calibration.md)."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    EXTRA_MUST: ClassVar[str] = "must be a finite number"
    __pydantic_extra__: dict[str, Finite] = Field(init=False)
    suite: StrictStr = Field(description="be a registered suite (token, drift, ...)")
    reason: Annotated[StrictStr, Field(pattern=r"\S")] = Field(
        description="say which measurement justifies the bound")
    model: StrictStr | None = Field(None, description="be a roster model: the rule applies "
                                                      "to it only")
    runtime: StrictStr | None = Field(None, description="be a runtime: the rule applies to "
                                                        "it only")
    quantization: StrictStr | None = Field(None, description="be a quantization: the rule "
                                                             "applies to it only")
    prompt: StrictStr | None = Field(None, description="be a prompt name: the rule applies "
                                                       "to it only")


class Artifact(Table):
    """``[[tool.groundtruth.artifacts]]``: a file someone else produced, tested in place of
    a conversion."""

    model: StrictStr = Field(description="be a roster model")
    runtime: StrictStr = Field(description="be a runtime")
    quantization: StrictStr = Field(description="be a quantization")
    path: NonEmpty = Field(description="be the file's path (relative to the rootdir)")


class Adapter(Table):
    """``[tool.groundtruth.adapters.NAME]``: the roster model NAME, ``base`` with a LoRA
    adapter merged (docs/lora.md)."""

    MUST: ClassVar[str] = ("must be a table with a string key 'base' (a roster model) and "
                           "optionally 'path' (a peft LoRA adapter directory; default: the "
                           "built-in deterministic adapter)")
    base: StrictStr = Field(description="be a roster model")
    path: StrictStr = Field("", description="be a peft LoRA adapter directory (default: the "
                                            "built-in deterministic adapter)")


ROSTER_HELP = {
    "source": "be where the weights come from: hf:ORG/NAME, pkg:DIST/PATH, path:PATH, "
              "tiny:ARCH, truncate:BASE or lora:BASE[:ADAPTER_DIR] (required for a new "
              "model)",
    "architecture": "be config.json's model_type (checked against the model)",
    "layers": "be a positive integer (checked against the model)",
    "heads": "be a positive integer (checked against the model)",
    "kv_heads": "be a positive integer (checked against the model)",
    "hidden": "be a positive integer (checked against the model)",
    "vocab": "be a positive integer (checked against the model)",
    "ppl_ceiling": "be a finite number > 1: an absolute perplexity ceiling",
    "revision": "be a hub revision",
    "trust_remote_code": "be a boolean",
    "tokenizer_pre": "be llama.cpp's tokenizer.ggml.pre for our GGUF export",
    "description": "be a string",
    "hf_id": "be a Hugging Face id ORG/NAME",
}


def _roster_entry() -> type[Table]:
    """``[tool.groundtruth.roster.SLUG]``, declared by :class:`ModelSpec`'s fields: every
    key optional (an entry of a built-in model overrides some of its fields)."""
    hints = typing.get_type_hints(ModelSpec)
    fields: dict[str, Any] = {
        f.name: (hints[f.name] | None, Field(None, description=ROSTER_HELP[f.name]))
        for f in dataclasses.fields(ModelSpec) if f.name in SPEC_FIELDS}
    model: type[Table] = create_model("RosterEntry", __base__=Table, **fields)
    model.__doc__ = ("[tool.groundtruth.roster.SLUG]: a model of the roster; `source` is "
                     "enough (docs/models.md)")
    return model


RosterEntry = _roster_entry()


class Groundtruth(Table):
    """``[tool.groundtruth]`` in pyproject.toml, or a ``groundtruth.toml`` (layered over it,
    in order): what to test, where its inputs are, and the bounds."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True,
                              json_schema_extra={"$id": SCHEMA_ID})
    models: Names | None = Field(None, description="be a list of strings: roster models to test")
    runtimes: Names | None = Field(None, description="be a list of strings: registered or "
                                              "configured runtimes")
    quantizations: Names | None = Field(None, description="be a list of strings: int8, int4, "
                                                   "q4_k_m, ...")
    suites: Names | None = Field(None, description="be a list of strings: registered suites "
                                            "(default: every one)")
    prompts: Names | None = Field(None, description="be a list of strings: prompt file stems "
                                             "(default: every one)")
    cuda_precisions: Names | None = Field(None, description="be a list of strings: bfloat16, "
                                                     "float16")
    oracle_dir: NonEmpty | None = Field(None, description="be a non-empty path string: the oracle "
                                                   "files' folder")
    prompts_dir: NonEmpty | None = Field(None, description="be a non-empty path string: the "
                                                    "prompts' folder")
    eval_text: NonEmpty | None = Field(None, description="be a non-empty path string: the "
                                                  "perplexity text")
    cache_dir: NonEmpty | None = Field(None, description="be a non-empty path string: the artifact "
                                                  "and result cache")
    cache_url: StrictStr | None = Field(None, description="be a string: a shared artifact store "
                                                   "behind cache_dir (an fsspec URL)")
    cache_max_size: Size | None = Field(None, description="be a size (\"20G\", \"500M\") or a "
                                                   "number of bytes")
    max_memory: Size | None = Field(None, description="be a positive memory size (\"12GiB\") or "
                                               "a number of bytes")
    max_new_tokens: Count | None = Field(None, description="be a positive integer: greedy tokens "
                                                    "per prompt")
    top_k: Annotated[StrictInt, Field(ge=2)] | None = Field(
        None, description="be an integer >= 2: log-probabilities stored per position")
    near_ties: StrictStr | None = Field(None, description="be one of rule, count, exempt")
    apr_bin: StrictStr | None = Field(None, description="be a string: the apr executable")
    timeout: Annotated[Finite, Field(gt=0)] | None = Field(
        None, description="be a positive, finite number of seconds")
    min_grade: StrictStr | None = Field(None, description="be a qualification grade (A+, A, B+, "
                                                   "B, C, F)")
    min_throughput: Threshold | None = Field(
        None, description="be a positive number of tokens/s, or a table runtime -> number "
                          "(\"*\": any other)")
    max_p99_ms: Threshold | None = Field(
        None, description="be a positive number of milliseconds, or a table runtime -> "
                          "number (\"*\": any other)")
    roster: dict[StrictStr, RosterEntry] | None = Field(  # type: ignore[valid-type]
        None, description="be a table of models: [tool.groundtruth.roster.SLUG]")
    runtime: dict[StrictStr, Runtime] | None = Field(
        None, description="be a table of runtimes: [tool.groundtruth.runtime.NAME]")
    bounds: list[Bound] | None = Field(None, description="be an array of tables ([[bounds]])")
    artifacts: list[Artifact] | None = Field(None, description="be an array of tables "
                                                        "([[artifacts]])")
    adapters: dict[StrictStr, Adapter] | None = Field(
        None, description="be a table of adapters: [tool.groundtruth.adapters.NAME]")
    speculative: Speculative | None = Field(None, description="be a table ([speculative])")


KNOWN_KEYS = tuple(Groundtruth.model_fields)
MAPS = ("roster", "runtime", "adapters")  # tables of named tables
ARRAYS = ("bounds", "artifacts")  # arrays of tables


def json_schema() -> dict[str, Any]:
    """The JSON Schema of ``[tool.groundtruth]``, draft 7: validate-pyproject refuses a
    tool schema of another draft than its own (``InvalidSchemaVersion``). A key left out
    of a file keeps the value below it (``groundtruth.toml`` over pyproject.toml over the
    defaults), so the declaration's "not given" defaults are not published."""
    found = Groundtruth.model_json_schema(ref_template="#/definitions/{model}")
    schema = {("definitions" if k == "$defs" else k): v for k, v in found.items()}

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            if "anyOf" in node and {"type": "null"} in node["anyOf"]:  # TOML has no null
                kept = [v for v in node["anyOf"] if v != {"type": "null"}]
                rest = {k: v for k, v in node.items() if k != "anyOf"}
                node = {**rest, **kept[0]} if len(kept) == 1 else {**rest, "anyOf": kept}
            return {k: "Must " + v if k == "description" and isinstance(v, str)
                    and v[:1].islower() else clean(v)
                    for k, v in node.items() if not (k == "default" and v is None)}
        if isinstance(node, list):
            return [clean(v) for v in node]
        return node

    return {"$schema": "http://json-schema.org/draft-07/schema#", **clean(schema)}


def _spot(loc: Sequence[int | str]) -> tuple[str, type[BaseModel], int]:
    """Where an error is: a table label, the model holding the key, and the key's index
    in ``loc``."""
    head = str(loc[0]) if loc else ""
    if len(loc) >= 3 and head in MAPS:
        label = f"model {loc[1]!r}:" if head == "roster" else f"[{head}.{loc[1]}]"
        return label, _item(head), 2
    if len(loc) >= 3 and head in ARRAYS:
        return f"{head}[{loc[1]}]:", _item(head), 2
    if len(loc) >= 2 and head == "speculative":
        return "[speculative]", Speculative, 1
    return "", Groundtruth, 0


def tool_schema(tool_name: str) -> dict[str, Any]:
    """validate-pyproject's plugin (entry point ``validate_pyproject.tool_schema``): the
    schema of ``[tool.<tool_name>]``."""
    return json_schema()


def _bare(annotation: Any) -> Any:
    """``T`` of ``T | None`` (a key a file may leave out)."""
    args = typing.get_args(annotation)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def _item(key: str) -> type[BaseModel]:
    """The table type of the items of ``key`` (``dict[str, T] | None``, ``list[T] | None``)."""
    item: type[BaseModel] = typing.get_args(_bare(Groundtruth.model_fields[key].annotation))[-1]
    return item


def _at(table: Any, path: Sequence[int | str]) -> Any:
    for step in path:
        try:
            table = table[step]
        except (KeyError, IndexError, TypeError):
            return None
    return table


def explain(errors: Sequence[Mapping[str, Any]], table: Mapping[str, Any]) -> str:
    """One sentence for pydantic's errors on ``table``: the first key's, and how many
    other keys are wrong."""
    groups: dict[tuple[str, str], tuple[type[BaseModel], Any]] = {}
    found: dict[tuple[str, str], list[str]] = {}
    unknown: dict[str, tuple[type[BaseModel], list[str]]] = {}
    for error in errors:
        loc = error["loc"]
        label, model, at = _spot(loc)
        key = str(loc[at]) if len(loc) > at else ""
        if error["type"] == "extra_forbidden":
            unknown.setdefault(label, (model, []))[1].append(key)
            continue
        groups.setdefault((label, key), (model, _at(table, loc[:at + 1])))
        found.setdefault((label, key), []).append(error["type"])
    sentences = [_unknown(label, model, keys) for label, (model, keys) in unknown.items()]
    sentences += [_sentence(label, key, model, value, found[(label, key)])
                  for (label, key), (model, value) in groups.items()]
    more = f" (and {len(sentences) - 1} more)" if len(sentences) > 1 else ""
    return sentences[0] + more


def _unknown(label: str, model: type[BaseModel], keys: list[str]) -> str:
    names = ", ".join(map(repr, keys))
    must = getattr(model, "MUST", "")
    if must:
        return f"{label}: {must} (unknown key(s) {names})"
    return (f"{label + ' ' if label else ''}unknown key(s) {names}; known keys: "
            f"{', '.join(model.model_fields)}")


def _sentence(label: str, key: str, model: type[BaseModel], value: Any,
              types: list[str]) -> str:
    if model is Groundtruth and key in THRESHOLD_KEYS:
        try:  # its own messages name the runtime
            threshold_table(value, key)
        except ValueError as exc:
            return f"key {exc}"
    word = "field" if label.startswith("model ") else "key"
    field = model.model_fields.get(key)
    must = ("must " + field.description if field is not None and field.description
            else getattr(model, "EXTRA_MUST", "has the wrong type"))
    if "missing" in types:
        text = f"{word} {key!r} is required: it {must}"
    elif isinstance(value, (dict, list)) or (field is not None and typing.get_origin(
            _bare(field.annotation)) in (list, dict, tuple)):
        text = f"{word} {key!r} {must}"
    elif all(t.endswith("_type") for t in types):
        text = f"{word} {key!r} = {value!r} has the wrong type: it {must}"
    else:
        text = f"{word} {key!r} = {value!r} {must}"
    must_be = getattr(model, "MUST", "")
    if must_be:
        return f"{label}: {must_be} ({text})"
    return f"{label} {text}" if label else text
