"""The oracle file: one schema, validated on every load.

``oracle/<slug>/<prompt>.json`` (CPU float32) or
``oracle-gpu/<slug>/<precision>/<prompt>.json`` (GPU precisions). JSON with indent 2,
``ensure_ascii=False`` and a trailing newline (the original workflow's format), holding
every original field plus what the later suites need: the prompt's token ids, the stop
reason, and for every generated position the oracle's top-k token ids with
log-probabilities (rounded to :data:`LOGPROB_DECIMALS` decimals, so that files are
reproducible byte for byte and small enough to review).

A file that is not valid JSON, lacks a field or holds a value of the wrong type or an
inconsistent one raises :class:`OracleError` naming the file and the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_groundtruth.measures.logprobs import TopK
from pytest_groundtruth.measures.sequences import TokenComparison, compare

SCHEMA = "pytest-groundtruth/oracle/1"
PPL_SCHEMA = "pytest-groundtruth/oracle-perplexity/1"
LOGPROB_DECIMALS = 6
DEFAULT_TOP_K = 10
# Positions where the oracle's top-1 and top-2 log-probabilities differ by less than this
# are near ties: a correct engine may flip them (see docs/suites.md).
NEAR_TIE_MARGIN = 0.1


class OracleError(ValueError):
    """An oracle file is missing, corrupt or inconsistent; names the file and the field."""


@dataclass(frozen=True)
class Oracle:
    slug: str
    model: str  # the source it was generated from (hub id, package file, ...)
    prompt_name: str
    prompt: str
    prompt_tokens: tuple[int, ...]
    tokens: tuple[int, ...]
    text: str
    stop_reason: str
    eos_token_ids: tuple[int, ...]
    max_new_tokens: int
    top_k: int
    steps: tuple[TopK, ...]
    model_fingerprint: str
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = 42
    near_tie_margin: float = NEAR_TIE_MARGIN
    versions: dict[str, str] = field(default_factory=dict)
    gpu: dict[str, str] = field(default_factory=dict)  # device, cuda_version, gpu_name
    # A chat prompt's messages, (role, content); ``prompt`` is then the rendered text and
    # ``prompt_tokens`` its ids (the model's chat template, generation prompt added).
    messages: tuple[tuple[str, str], ...] = ()
    path: Path | None = field(default=None, compare=False)

    @property
    def near_ties(self) -> tuple[int, ...]:
        return tuple(i for i, s in enumerate(self.steps) if s.margin < self.near_tie_margin)

    def compare(self, tokens: Sequence[int], near_ties: str = "count") -> TokenComparison:
        """``tokens`` against the oracle's, near ties per ``near_ties`` (count | exempt)."""
        return compare(self.tokens, tokens, near_ties, self.steps, self.near_tie_margin)

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "schema": SCHEMA,
            "slug": self.slug,
            "model": self.model,
            "model_fingerprint": self.model_fingerprint,
            "runtime": "transformers",
            "dtype": self.dtype,
            "device": self.device,
            "seed": self.seed,
            "do_sample": False,
            "max_new_tokens": self.max_new_tokens,
            "prompt_file": f"chat/{self.prompt_name}.json" if self.messages
            else f"{self.prompt_name}.txt",
            "prompt": self.prompt,
            **({"messages": [{"role": r, "content": c} for r, c in self.messages]}
               if self.messages else {}),
            "prompt_tokens": list(self.prompt_tokens),
            "tokens": list(self.tokens),
            "text": self.text,
            "stop_reason": self.stop_reason,
            "eos_token_ids": list(self.eos_token_ids),
            "top_k": self.top_k,
            "near_tie_margin": self.near_tie_margin,
            "near_ties": list(self.near_ties),
            "topk": [
                {"ids": list(s.ids), "logprobs": [round(x, LOGPROB_DECIMALS) for x in s.logprobs]}
                for s in self.steps
            ],
            **self.versions,
            **self.gpu,
        }
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


VERSION_KEYS = ("transformers_version", "torch_version")
GPU_KEYS = ("precision", "cuda_version", "gpu_name")


def oracle_path(root: Path, slug: str, prompt: str, precision: str = "float32",
                device: str = "cpu") -> Path:
    if device == "cpu" and precision == "float32":
        return root / slug / f"{prompt}.json"
    return root.parent / f"{root.name}-gpu" / slug / precision / f"{prompt}.json"


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


def load_oracle(path: Path) -> Oracle:
    """Read and validate one oracle file."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OracleError(
            f"{path}: oracle file missing; generate it with `groundtruth oracle`"
        ) from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise OracleError(f"{path}: not valid JSON ({exc}); regenerate it with "
                          "`groundtruth oracle --force`") from exc
    if not isinstance(data, dict):
        raise OracleError(f"{path}: expected a JSON object at the top level")
    r = _Reader(path, data)
    if r.get("schema", str) != SCHEMA:
        raise r.fail("schema", f"{data['schema']!r} is not {SCHEMA!r}")
    tokens = r.ids("tokens")
    max_new = r.get("max_new_tokens", int)
    if not 0 < len(tokens) <= max_new:
        raise r.fail("tokens", f"{len(tokens)} tokens, expected 1..max_new_tokens ({max_new})")
    stop = r.get("stop_reason", str)
    eos = r.ids("eos_token_ids")
    if stop not in ("eos", "length"):
        raise r.fail("stop_reason", f"{stop!r} is not 'eos' or 'length'")
    if stop == "eos" and tokens[-1] not in eos:
        raise r.fail("stop_reason", "'eos' but the last token is not an eos_token_id")
    if stop == "length" and len(tokens) != max_new:
        raise r.fail("stop_reason", f"'length' but {len(tokens)} != max_new_tokens")
    top_k = r.get("top_k", int)
    steps = _steps(r, tokens, top_k)
    margin = float(r.get("near_tie_margin", (int, float)))
    oracle = Oracle(
        slug=r.get("slug", str),
        model=r.get("model", str),
        prompt_name=Path(r.get("prompt_file", str)).stem,
        prompt=r.get("prompt", str),
        prompt_tokens=r.ids("prompt_tokens"),
        tokens=tokens,
        text=r.get("text", str),
        stop_reason=stop,
        eos_token_ids=eos,
        max_new_tokens=max_new,
        top_k=top_k,
        steps=steps,
        model_fingerprint=r.get("model_fingerprint", str),
        dtype=r.get("dtype", str),
        device=r.get("device", str),
        seed=r.get("seed", int),
        near_tie_margin=margin,
        versions={k: r.get(k, str) for k in VERSION_KEYS},
        gpu={k: r.get(k, str) for k in GPU_KEYS if k in data},
        messages=_messages(r) if "messages" in data else (),
        path=path,
    )
    if list(oracle.near_ties) != r.get("near_ties", list):
        raise r.fail("near_ties", "does not match the margins in 'topk'")
    return oracle


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


def load_oracles(root: Path, slug: str, prompts: list[str]) -> dict[str, Oracle]:
    return {p: load_oracle(oracle_path(root, slug, p)) for p in prompts}


def perplexity_path(oracle_root: Path, slug: str) -> Path:
    return oracle_root / slug / "eval" / "perplexity.json"


def load_perplexity(path: Path) -> dict[str, Any]:
    """The oracle perplexity record, validated."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OracleError(f"{path}: missing; generate it with `groundtruth oracle`") from None
    except ValueError as exc:
        raise OracleError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("schema") != PPL_SCHEMA:
        raise OracleError(f"{path}: field 'schema': expected {PPL_SCHEMA!r}")
    for key, kind in (("perplexity", float), ("text_sha256", str), ("tokens_evaluated", int)):
        if not isinstance(data.get(key), kind):
            raise OracleError(f"{path}: field {key!r}: missing or not a {kind.__name__}")
    return data
