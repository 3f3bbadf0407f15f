"""The oracle file: the original workflow's fields under their original names, then ours.

``oracle/<slug>/<prompt>.json`` (CPU float32) or
``oracle-gpu/<slug>/<precision>/<prompt>.json`` (GPU precisions). JSON with indent 2,
``ensure_ascii=False`` and a trailing newline, as the original workflow writes it.

The file opens with the original workflow's fields, in its order and with its meanings
(:data:`ORIGINAL_FIELDS`; GPU oracles add :data:`GPU_FIELDS`), so a script written for
its files reads ours unchanged. This project's additions follow (:data:`ADDED_FIELDS`):
the schema version, where the weights came from and their fingerprint, the prompt's token
ids, the stop reason, and for every generated position the oracle's top-k token ids with
log-probabilities (rounded to :data:`LOGPROB_DECIMALS` decimals, so that files are
reproducible byte for byte and small enough to review). docs/oracle-format.md describes
every field.

Three kinds of file are read:

* schema ``pytest-groundtruth/oracle/2`` (:data:`SCHEMA`), written now;
* schema ``.../1``, this project's first format (``slug``, ``dtype``, the source URI in
  ``model``, no ``token_count``);
* files written by the original generator (no ``schema``): accepted as oracles. What they
  lack is ``None`` on the :class:`Oracle`; reading it (``oracle.steps``,
  ``oracle.prompt_tokens``, ...) raises :class:`OracleIncomplete`, which the plugin turns
  into a skip naming the file, the field and the command that adds it. Checks that need
  only the original fields (tokens, text) run.

A file that is not valid JSON, lacks a field or holds a value of the wrong type or an
inconsistent one raises :class:`OracleError` naming the file and the field.

Schema-2 files end with a ``seal``: the SHA-256 of what the reference generated
(:data:`SEALED_FIELDS`: the prompt and its tokens, the tokens, text, stop reason and
top-k), checked on load. A hand edit that keeps the file self-consistent (tokens and
top-k ids swapped together) breaks the seal and raises :class:`OracleEdited` naming the
file and the command that regenerates it. The provenance fields (model, fingerprint,
versions, seed) are not sealed: the provenance check judges them. A file without a seal
(written by the original generator, or by this project before seals) loads as before;
``groundtruth oracle`` adds the seal to such a file when its content is what the
reference generates (within ``--tolerance``), keeping every other byte.

Adding a field (a chat prompt's messages, say): an ``Oracle`` field defaulting to None
(old files lack it), a line in :meth:`Oracle._additions` and in :func:`_read_additions`,
and a row in docs/oracle-format.md (tests/unit/test_oracle_format.py checks that every
written field is documented). Bump :data:`SCHEMA` when a field changes meaning.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_groundtruth.core.failures import InputError
from pytest_groundtruth.core.paths import inside
from pytest_groundtruth.measures.logprobs import TopK
from pytest_groundtruth.measures.sequences import TokenComparison, compare

#: Chat prompts live in ``<prompts_dir>/chat/*.json``; a chat oracle's ``prompt_file`` says so.
CHAT_DIR = "chat"
SCHEMA = "pytest-groundtruth/oracle/2"
SCHEMA_V1 = "pytest-groundtruth/oracle/1"
ORIGINAL = "original"  # what :attr:`Oracle.schema` says of a file the original generator wrote
PPL_SCHEMA = "pytest-groundtruth/oracle-perplexity/2"
PPL_SCHEMA_V1 = "pytest-groundtruth/oracle-perplexity/1"
LOGPROB_DECIMALS = 6
DEFAULT_TOP_K = 10
# Positions where the oracle's top-1 and top-2 log-probabilities differ by less than this
# are near ties: a correct engine may flip them (see docs/suites.md).
NEAR_TIE_MARGIN = 0.1
# The oracle's runtime and precision: the reference that suites run in-process.
REFERENCE = ("transformers", "float32")

# The original workflow's fields, in its order (never renamed, never reordered).
ORIGINAL_FIELDS = ("model", "model_slug", "prompt", "prompt_file", "runtime", "format",
                   "transformers_version", "torch_version", "tokens", "text", "token_count",
                   "max_new_tokens", "do_sample")
# What its GPU oracles add.
GPU_FIELDS = ("device", "precision", "cuda_version", "gpu_name")
# This project's additions, after the original fields (``device`` here only on CPU oracles).
ADDED_FIELDS = ("schema", "source", "model_fingerprint", "device", "seed", "prompt_tokens",
                "stop_reason", "eos_token_ids", "top_k", "near_tie_margin", "near_ties", "topk",
                "seal")
# What the seal covers: the reference's output and what it was generated from, not the
# provenance (model, fingerprint, versions, seed), which the provenance check judges.
SEALED_FIELDS = ("prompt", "messages", "prompt_tokens", "tokens", "text", "token_count",
                 "max_new_tokens", "do_sample", "stop_reason", "eos_token_ids", "top_k",
                 "near_tie_margin", "near_ties", "topk")
SEAL_PREFIX = "sha256:"
VERSION_KEYS = ("transformers_version", "torch_version")
GPU_KEYS = ("precision", "cuda_version", "gpu_name")
# Additions an original-format file lacks, with what each one is (for skip reasons).
MEANINGS = {
    "source": "the source URI of the weights",
    "model_fingerprint": "the fingerprint of the weights",
    "seed": "the seed",
    "prompt_tokens": "the prompt's token ids",
    "stop_reason": "why generation stopped",
    "eos_token_ids": "the end-of-sequence ids",
    "topk": "the oracle's top-k log-probabilities per position",
}


class OracleError(InputError, ValueError):
    """An oracle file is missing, corrupt or inconsistent; names the file and the field."""


class OracleIncomplete(Exception):
    """An oracle lacks a field a check needs (a file written by the original generator has
    no top-k and no prompt tokens). Not a failure: the check skips with this message."""

    def __init__(self, path: Path | None, name: str) -> None:
        self.path = path
        self.field = name
        where = f"--model {path.parent.name} " if path is not None else ""
        super().__init__(
            f"{path or 'the oracle'} has no {name!r} ({MEANINGS.get(name, name)}): it is in "
            "the original workflow's format, which does not record it, and this check needs "
            f"it; `groundtruth oracle --force {where}`rewrites it in this project's format "
            "(the original fields stay)"
        )


class StaleOracle(OracleError):
    """An oracle file is sound but was generated for another model, prompt or length."""


class OracleEdited(OracleError):
    """An oracle file's content does not match its seal: it was edited by hand."""


def seal_of(data: dict[str, Any]) -> str:
    """The seal of an oracle file's parsed JSON: SHA-256 of its :data:`SEALED_FIELDS`."""
    sealed = {k: data[k] for k in SEALED_FIELDS if k in data}
    text = json.dumps(sealed, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return SEAL_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()


def with_seal(text: str) -> str:
    """An oracle file's text with its seal added (schema 2 without one), else unchanged."""
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or "seal" in data:
        return text
    data["seal"] = seal_of(data)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class Oracle:
    slug: str  # "model_slug"
    model: str  # the Hugging Face id; the source URI where the model has none
    prompt_name: str
    prompt: str
    tokens: tuple[int, ...]
    text: str
    max_new_tokens: int
    dtype: str = "float32"  # "format"
    device: str = "cpu"
    versions: dict[str, str] = field(default_factory=dict)
    gpu: dict[str, str] = field(default_factory=dict)  # precision, cuda_version, gpu_name
    # This project's additions: None when the file came from the original generator.
    source: str | None = None  # roster source URI (hf:, pkg:, path:, tiny:)
    model_fingerprint: str | None = None
    seed: int | None = None
    prompt_ids: tuple[int, ...] | None = None  # "prompt_tokens"
    stop_reason: str | None = None
    eos_token_ids: tuple[int, ...] | None = None
    topk: tuple[TopK, ...] | None = None  # per generated position, most likely first
    near_tie_margin: float = NEAR_TIE_MARGIN
    schema: str = SCHEMA  # of the file it was read from (:data:`ORIGINAL` for theirs)
    # A chat prompt's messages, (role, content); ``prompt`` is then the rendered text and
    # ``prompt_tokens`` its ids (the model's chat template, generation prompt added).
    messages: tuple[tuple[str, str], ...] = ()
    path: Path | None = field(default=None, compare=False)

    # ------------------------------------------------------------------ what it lacks
    @property
    def lacks(self) -> tuple[str, ...]:
        """The additions this oracle does not have (all of them for an original file)."""
        values = {"source": self.source, "model_fingerprint": self.model_fingerprint,
                  "seed": self.seed, "prompt_tokens": self.prompt_ids,
                  "stop_reason": self.stop_reason, "eos_token_ids": self.eos_token_ids,
                  "topk": self.topk}
        return tuple(name for name, value in values.items() if value is None)

    def require(self, *names: str) -> None:
        """Raise :class:`OracleIncomplete` for the first of ``names`` this oracle lacks."""
        for name in names:
            if name in self.lacks:
                raise OracleIncomplete(self.path, name)

    @property
    def steps(self) -> tuple[TopK, ...]:
        """Top-k per generated position; :class:`OracleIncomplete` when not recorded."""
        if self.topk is None:
            raise OracleIncomplete(self.path, "topk")
        return self.topk

    @property
    def prompt_tokens(self) -> tuple[int, ...]:
        if self.prompt_ids is None:
            raise OracleIncomplete(self.path, "prompt_tokens")
        return self.prompt_ids

    @property
    def top_k(self) -> int:
        return len(self.steps[0].ids)

    @property
    def near_ties(self) -> tuple[int, ...]:
        return tuple(i for i, s in enumerate(self.steps) if s.margin < self.near_tie_margin)

    def compare(self, tokens: Sequence[int], near_ties: str = "count") -> TokenComparison:
        """``tokens`` against the oracle's, near ties per ``near_ties`` (count | exempt;
        exempting needs the top-k)."""
        steps = self.steps if near_ties == "exempt" else (self.topk or ())
        return compare(self.tokens, tokens, near_ties, steps, self.near_tie_margin)

    # ------------------------------------------------------------------ writing
    def to_json(self) -> str:
        """The file: the original fields, then (when it has them) this project's additions.

        An oracle read from an original-format file writes that format back unchanged.
        """
        data: dict[str, Any] = {
            "model": self.model,
            "model_slug": self.slug,
            "prompt": self.prompt,
            "prompt_file": f"{CHAT_DIR}/{self.prompt_name}.json" if self.messages
            else f"{self.prompt_name}.txt",
            "runtime": "transformers",
            "format": self.dtype,
            **{k: self.versions[k] for k in VERSION_KEYS},
            "tokens": list(self.tokens),
            "text": self.text,
            "token_count": len(self.tokens),
            "max_new_tokens": self.max_new_tokens,
            "do_sample": False,
        }
        if self.gpu:
            data.update(device=self.device, **self.gpu)
        lacks = self.lacks
        if not lacks:
            data.update({k: v for k, v in self._additions().items() if k not in data})
            data["seal"] = seal_of(data)
        elif len(lacks) != len(MEANINGS):
            raise ValueError(f"oracle {self.slug}/{self.prompt_name}: has some of this "
                             f"project's fields but not {', '.join(lacks)}")
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    def _additions(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "source": self.source,
            "model_fingerprint": self.model_fingerprint,
            "device": self.device,
            "seed": self.seed,
            **({"messages": [{"role": r, "content": c} for r, c in self.messages]}
               if self.messages else {}),
            "prompt_tokens": list(self.prompt_tokens),
            "stop_reason": self.stop_reason,
            "eos_token_ids": list(self.eos_token_ids or ()),
            "top_k": self.top_k,
            "near_tie_margin": self.near_tie_margin,
            "near_ties": list(self.near_ties),
            "topk": [
                {"ids": list(s.ids), "logprobs": [round(x, LOGPROB_DECIMALS) for x in s.logprobs]}
                for s in self.steps
            ],
        }


def oracle_path(root: Path, slug: str, prompt: str, precision: str = "float32",
                device: str = "cpu") -> Path:
    """Where the oracle of ``slug`` on ``prompt`` lives; never outside its folder."""
    if device == "cpu" and precision == "float32":
        return inside(root, slug, f"{prompt}.json")
    return inside(root.parent / f"{root.name}-gpu", slug, precision, f"{prompt}.json")


def regenerate_command(slug: str, prompt: str | None = None, precision: str = "float32",
                       device: str = "cpu") -> str:
    """The command that rewrites an oracle file."""
    where = "" if device == "cpu" else f" --device {device} --precision {precision}"
    which = f" --prompt {prompt}" if prompt else ""
    return f"groundtruth oracle --model {slug}{which}{where} --force"


def provenance_problem(oracle: Oracle, slug: str, fingerprint: str, prompt: str,
                       max_new_tokens: int, messages: tuple[tuple[str, str], ...] = ()
                       ) -> str | None:
    """Why ``oracle`` is not the reference for this test (None when it is): another
    model, other weights, an edited prompt (a chat prompt's ``messages``: the oracle's
    ``prompt`` is then their rendering), another generation length."""
    if oracle.slug != slug:
        return f"it was generated for model {oracle.slug!r}, not {slug!r}"
    if oracle.model_fingerprint is not None and oracle.model_fingerprint != fingerprint:
        return (f"it was generated from other weights (fingerprint "
                f"{oracle.model_fingerprint[:12]}..., the model is now {fingerprint[:12]}...)")
    if messages:
        if oracle.messages != messages:
            return (f"its messages {_short(str(oracle.messages))} are not the chat prompt "
                    f"file's {_short(str(messages))} (the prompt was edited)")
    elif oracle.prompt != prompt:
        return (f"its prompt {_short(oracle.prompt)} is not the prompt file's "
                f"{_short(prompt)} (the prompt was edited)")
    if oracle.max_new_tokens != max_new_tokens:
        return (f"it holds {oracle.max_new_tokens} new tokens at most; the run generates "
                f"max_new_tokens = {max_new_tokens}")
    return None


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


# --------------------------------------------------------------------------- reading


class _Reader:
    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    def fail(self, name: str, problem: str) -> OracleError:
        return OracleError(f"{self.path}: field {name!r}: {problem}")

    def get(self, name: str, kind: type | tuple[type, ...]) -> Any:
        if name not in self.data:
            raise self.fail(name, "missing")
        value = self.data[name]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(name, f"expected {names}, got {type(value).__name__}")
        return value

    def ids(self, name: str, value: Any = None) -> tuple[int, ...]:
        value = self.get(name, list) if value is None else value
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            raise self.fail(name, "expected a list of non-negative integer token ids")
        return tuple(value)


def _read_json(path: Path, hint: str) -> dict[str, Any]:
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OracleError(f"{path}: oracle file missing; {hint}") from None
    except UnicodeDecodeError as exc:
        raise OracleError(f"{path}: not UTF-8 text ({exc}); regenerate it with "
                          "`groundtruth oracle --force`") from None
    except OSError as exc:
        raise OracleError(f"{path}: cannot be read ({exc})") from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise OracleError(f"{path}: not valid JSON ({exc}); regenerate it with "
                          "`groundtruth oracle --force`") from exc
    if not isinstance(data, dict):
        raise OracleError(f"{path}: expected a JSON object at the top level")
    return data


# Field names per schema: (slug, format, whether token_count is written)
_NAMES = {SCHEMA: ("model_slug", "format", True), SCHEMA_V1: ("slug", "dtype", False),
          ORIGINAL: ("model_slug", "format", True)}
_OURS_ONLY = frozenset(ADDED_FIELDS) - {"device"}


def load_oracle(path: Path) -> Oracle:
    """Read and validate one oracle file (schema 2, schema 1 or the original format)."""
    data = _read_json(path, "generate it with `groundtruth oracle`")
    r = _Reader(path, data)
    if "schema" in data:
        schema = r.get("schema", str)
        if schema not in (SCHEMA, SCHEMA_V1):
            raise r.fail("schema", f"{schema!r} is not {SCHEMA!r} (or the older {SCHEMA_V1!r};"
                         " files of the original workflow have no 'schema')")
    else:
        schema = ORIGINAL
        ours = sorted(_OURS_ONLY & data.keys())
        if ours:
            raise r.fail("schema", f"missing, yet the file has this project's field(s) "
                         f"{', '.join(ours)}: neither the original format nor ours")
    slug_key, format_key, counted = _NAMES[schema]
    if r.get("runtime", str) != "transformers":
        raise r.fail("runtime", f"{data['runtime']!r}: an oracle is made by 'transformers'")
    if r.get("do_sample", bool):
        raise r.fail("do_sample", "true: an oracle is a greedy (do_sample false) generation")
    tokens = r.ids("tokens")
    max_new = r.get("max_new_tokens", int)
    if not 0 < len(tokens) <= max_new:
        raise r.fail("tokens", f"{len(tokens)} tokens, expected 1..max_new_tokens ({max_new})")
    if counted and r.get("token_count", int) != len(tokens):
        raise r.fail("token_count", f"{data['token_count']} but 'tokens' holds {len(tokens)}")
    device = r.get("device", str) if schema != ORIGINAL or "device" in data else "cpu"
    oracle = Oracle(
        slug=r.get(slug_key, str),
        model=r.get("model", str),
        prompt_name=Path(r.get("prompt_file", str)).stem,
        prompt=r.get("prompt", str),
        tokens=tokens,
        text=r.get("text", str),
        max_new_tokens=max_new,
        dtype=r.get(format_key, str),
        device=device,
        versions={k: r.get(k, str) for k in VERSION_KEYS},
        gpu={k: r.get(k, str) for k in GPU_KEYS if k in data},
        schema=schema,
        path=path,
    )
    if schema == ORIGINAL:
        return oracle
    oracle = _read_additions(r, oracle)
    if list(oracle.near_ties) != r.get("near_ties", list):
        raise r.fail("near_ties", "does not match the margins in 'topk'")
    if "seal" in data and schema == SCHEMA:  # after the fields: a broken one is named
        _check_seal(path, data)
    return oracle


def _check_seal(path: Path, data: dict[str, Any]) -> None:
    found = data["seal"]
    if found == seal_of(data):
        return
    slug = data.get("model_slug")
    prompt = Path(str(data.get("prompt_file", ""))).stem or None
    command = regenerate_command(str(slug), prompt, str(data.get("precision", "float32")),
                                 str(data.get("device", "cpu")))
    raise OracleEdited(
        f"{path}: its content does not match its seal (field 'seal' {str(found)[:19]}...): "
        "the tokens, text or top-k were edited after `groundtruth oracle` wrote it, and an "
        f"edited oracle is no reference; regenerate it: `{command}`")


def _read_additions(r: _Reader, oracle: Oracle) -> Oracle:
    tokens = oracle.tokens
    stop = r.get("stop_reason", str)
    eos = r.ids("eos_token_ids")
    if stop not in ("eos", "length"):
        raise r.fail("stop_reason", f"{stop!r} is not 'eos' or 'length'")
    if stop == "eos" and tokens[-1] not in eos:
        raise r.fail("stop_reason", "'eos' but the last token is not an eos_token_id")
    if stop == "length" and len(tokens) != oracle.max_new_tokens:
        raise r.fail("stop_reason", f"'length' but {len(tokens)} != max_new_tokens")
    if oracle.schema == SCHEMA_V1:
        # Schema 1 wrote the hub id for hf: sources and the source URI for the others.
        written = oracle.model
        source = written if ":" in written else f"hf:{written}"
    else:
        source = r.get("source", str)
    return replace(
        oracle,
        source=source,
        model_fingerprint=r.get("model_fingerprint", str),
        seed=r.get("seed", int),
        prompt_ids=r.ids("prompt_tokens"),
        stop_reason=stop,
        eos_token_ids=eos,
        topk=_steps(r, tokens, r.get("top_k", int)),
        near_tie_margin=float(r.get("near_tie_margin", (int, float))),
        messages=_messages(r) if "messages" in r.data else (),
    )


def _messages(r: _Reader) -> tuple[tuple[str, str], ...]:
    raw = r.get("messages", list)
    if not raw or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                          and isinstance(m.get("content"), str) for m in raw):
        raise r.fail("messages", "expected a non-empty list of {role, content} strings")
    return tuple((m["role"], m["content"]) for m in raw)


def _steps(r: _Reader, tokens: tuple[int, ...], top_k: int) -> tuple[TopK, ...]:
    raw = r.get("topk", list)
    if len(raw) != len(tokens):
        raise r.fail("topk", f"{len(raw)} positions for {len(tokens)} tokens")
    steps = []
    for i, entry in enumerate(raw):
        name = f"topk[{i}]"
        if not isinstance(entry, dict):
            raise r.fail(name, "expected an object with 'ids' and 'logprobs'")
        ids = r.ids(f"{name}.ids", entry.get("ids"))
        logprobs = entry.get("logprobs")
        if (
            not isinstance(logprobs, list)
            or len(logprobs) != len(ids)
            or len(ids) != top_k
            or not all(isinstance(x, (int, float)) and x <= 0 and math.isfinite(x)
                       for x in logprobs)
        ):
            raise r.fail(f"{name}.logprobs", f"expected {top_k} finite log-probabilities <= 0")
        if sorted(logprobs, reverse=True) != logprobs:
            raise r.fail(f"{name}.logprobs", "not sorted most likely first")
        if tokens[i] not in ids or logprobs[ids.index(tokens[i])] != logprobs[0]:
            raise r.fail(name, f"the generated token {tokens[i]} is not the top-1 (greedy) token")
        steps.append(TopK(ids, tuple(float(x) for x in logprobs)))
    return tuple(steps)


# --------------------------------------------------------------------------- perplexity


def perplexity_path(oracle_root: Path, slug: str) -> Path:
    return inside(oracle_root, slug, "eval", "perplexity.json")


def load_perplexity(path: Path) -> dict[str, Any]:
    """The oracle perplexity record (schema 2 or 1), validated."""
    data = _read_json(path, "generate it with `groundtruth oracle`")
    if data.get("schema") not in (PPL_SCHEMA, PPL_SCHEMA_V1):
        raise OracleError(f"{path}: field 'schema': expected {PPL_SCHEMA!r} "
                          f"(or the older {PPL_SCHEMA_V1!r})")
    for key, kind in (("perplexity", float), ("text_sha256", str), ("tokens_evaluated", int)):
        if not isinstance(data.get(key), kind):
            raise OracleError(f"{path}: field {key!r}: missing or not a {kind.__name__}")
    return data
