"""The openai runtime: any OpenAI-compatible server, the serve modality.

Two ways to bring a server in (docs/extending.md, "Serving")::

    [tool.groundtruth.runtime.myserver]      # a server you run: vLLM, llama.cpp's
    kind = "openai"                          # llama-server, TGI, Ollama, ...
    base_url = "http://127.0.0.1:8000"
    model = "my-org/my-model"
    api_key_env = "MY_SERVER_KEY"            # the key is read from this variable only
    quantizations = ["int8"]                 # what the server serves (labels)
    version = "vllm 0.11 / my-model int8"    # goes into cache keys: change it when the server does

    [tool.groundtruth.runtime.llamaserver]   # the plugin converts the model to GGUF with
    kind = "openai"                          # its exporter and starts llama-cpp-python's
    serve = "llama-cpp-python"               # server for that file (runtimes/server.py)

Requests are greedy (``temperature 0``, ``top_p 1``, fixed ``seed``, no penalties,
``max_tokens``) to ``/v1/completions`` for text prompts and ``/v1/chat/completions`` for
chat prompts, with ``logprobs`` (top-k where the runtime has TOPK; at least 1, for the
per-token pieces). Perplexity, where enabled (``capabilities = [..., "perplexity"]``), is
``/v1/completions`` with ``echo`` and ``logprobs`` (the prompt's own log-probabilities);
it is off by default, because llama-cpp-python's server (0.3.36) scores each echoed token
with the distribution that *follows* it (``all_logprobs[token_offset:]`` with offset 0),
a shift by one position that makes its perplexity wrong.

Token ids: from the answer where the server gives them (``choices[0].token_ids``, or
logprob tokens spelled ``token_id:N`` as vLLM's ``return_tokens_as_token_ids`` does);
otherwise the per-token pieces are mapped through the model's vocabulary; otherwise the
returned text is re-tokenized with the model's tokenizer. Both fallbacks say so in
:attr:`Generation.notes`. A server ends at any end-of-generation token and does not
return it: when it stops (``finish_reason: "stop"``, no stop strings were sent) short of
``max_tokens`` the model's EOS id is appended (``stop_reason: "eos"``), with a note.

Failures are never parity verdicts: an error status is CRASHED with the status and a body
excerpt; no answer within ``timeout`` is TIMEOUT; a refused connection is retried
(``retries``, connection errors only) and then CRASHED; a body that is not the documented
JSON is GARBAGE with an excerpt; an answer over ``max_response_bytes`` (default 4 MiB
plus 64 KiB per requested token) is GARBAGE, read in chunks and abandoned at the limit;
``timeout`` bounds each whole request (a server that trickles is cut at it). Token ids
and log-probabilities go through the checks the command runtime uses
(:mod:`pytest_groundtruth.runtimes.answers`): an id outside the vocabulary is GARBAGE,
a NaN or infinite log-probability is NaN/Inf. With a plugin-started server every failure
carries the server's log tail. The API key is sent in a header only, and its value is
replaced by ``<$VAR>`` (the variable's name) in every message, call, note, log tail and
text this runtime returns, so a server that echoes it (``Incorrect API key provided:
...``) does not put it into a report.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_groundtruth.config.prompts import Message
from pytest_groundtruth.config.settings import ConfigError, Settings
from pytest_groundtruth.core.atomic import atomic_path
from pytest_groundtruth.core.failures import EngineFailure, FailureKind, RuntimeUnavailable
from pytest_groundtruth.core.plugins import package_version
from pytest_groundtruth.core.process import excerpt
from pytest_groundtruth.ggufio.reader import scan_gguf
from pytest_groundtruth.measures.logprobs import TopK
from pytest_groundtruth.runtimes.answers import logprobs_problem, token_ids_problem
from pytest_groundtruth.runtimes.base import (
    Artifact,
    Capability,
    Generation,
    PerplexityResult,
    Runner,
    Runtime,
    read_options,
)
from pytest_groundtruth.runtimes.http import post_json
from pytest_groundtruth.runtimes.llamacpp import (
    KV_CACHE_TYPES,
    kv_cache_type,
    llama_cpp_version,
)
from pytest_groundtruth.runtimes.server import (
    LlamaServer,
    ServerConfig,
    server_unavailable,
    shared_server,
    stop_server,
)
from pytest_groundtruth.runtimes.steps import model_eos_ids
from pytest_groundtruth.runtimes.threads import default_threads
from pytest_groundtruth.runtimes.toolchain import QUANTIZATIONS, Toolchain

if TYPE_CHECKING:
    from pytest_groundtruth.models.sources import ResolvedModel

SERVERS = ("llama-cpp-python",)
FEATURES = {"generate": Capability.GENERATE, "chat": Capability.CHAT,
            "topk": Capability.TOPK, "perplexity": Capability.PERPLEXITY}
SEED = 42
BASE_RESPONSE_BYTES = 4 << 20  # an answer's size limit: this, plus per requested token
PER_TOKEN_BYTES = 64 << 10


class OpenAIRuntime(Runtime):
    name = "openai"
    quantizations: tuple[str, ...] = ()
    capabilities: frozenset[Capability] = frozenset()

    def __init__(self, name: str, *, base_url: str = "", serve: str = "", model: str = "",
                 api_key_env: str = "", timeout: float = 300.0, retries: int = 3,
                 quantizations: Sequence[str] = (), features: Sequence[str] = (),
                 max_logprobs: int = 20, extra: Mapping[str, Any] | None = None,
                 version: str = "", n_ctx: int = 1024, n_threads: int | None = None,
                 kv_cache: str = "auto", startup_timeout: float = 120.0,
                 max_response_bytes: int = 0) -> None:
        if bool(base_url) == bool(serve):
            raise ConfigError(f"runtime {name!r}: set exactly one of 'base_url' (a server you "
                              f"run) or 'serve' (one of {', '.join(SERVERS)})")
        if serve and serve not in SERVERS:
            raise ConfigError(f"runtime {name!r}: serve = {serve!r} is not one of "
                              f"{', '.join(SERVERS)}")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.serve = serve
        self.model = model or (name if serve else "")
        if not self.model:
            raise ConfigError(f"runtime {name!r}: option 'model' (the name the server knows "
                              "the model by) is required with base_url")
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.retries = retries
        self.max_response_bytes = max_response_bytes
        self.max_logprobs = max_logprobs
        self.fixed_version = version
        if kv_cache not in KV_CACHE_TYPES:
            raise ValueError(f"kv_cache must be one of {KV_CACHE_TYPES}, got {kv_cache!r}")
        # Served artifacts are llama.cpp GGUFs: built by its toolchain, run with its
        # context, threads and KV cache rule.
        self.n_ctx = n_ctx
        self.n_threads = n_threads if n_threads is not None else default_threads()
        self.kv_cache = kv_cache
        self.toolchain = Toolchain(n_threads=self.n_threads)
        self.startup_timeout = startup_timeout
        self.extra = dict(extra if extra is not None else
                          ({"repeat_penalty": 1.0} if serve else {}))
        self.quantizations = tuple(quantizations) or (QUANTIZATIONS if serve else ())
        if not self.quantizations:
            raise ConfigError(f"runtime {name!r}: option 'quantizations' (labels of what the "
                              "server serves, e.g. [\"int8\"]) is required with base_url")
        # Not perplexity by default: llama-cpp-python 0.3.36 shifts echo log-probabilities
        # by one position (docs/extending.md, "Serving"), and many servers lack echo.
        names = tuple(features) or ("generate", "chat", "topk")
        unknown = sorted(set(names) - set(FEATURES))
        if unknown:
            raise ConfigError(f"runtime {name!r}: option 'capabilities' has {unknown}; "
                              f"known: {', '.join(FEATURES)}")
        caps = {FEATURES[n] for n in names}
        if serve:  # the artifact is our GGUF: exported and reimported like llama.cpp's
            caps |= {Capability.EXPORT_GGUF, Capability.REIMPORT}
        self.capabilities = frozenset(caps)
        self.builds_artifacts = bool(serve)
        self._servers: set[ServerConfig] = set()

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any], settings: Settings,
                    device: str = "cpu") -> Runtime:
        """The options of the module docstring (see docs/extending.md for each)."""
        values = read_options(name, options, {
            "base_url": str, "serve": str, "model": str, "api_key_env": str,
            "timeout": (int, float), "retries": int, "quantizations": list,
            "capabilities": list, "max_logprobs": int, "extra": dict, "version": str,
            "n_ctx": int, "n_threads": int, "kv_cache": str, "startup_timeout": (int, float),
            "max_response_bytes": int,
        })
        for key in ("timeout", "startup_timeout"):
            if key in values and not (math.isfinite(values[key]) and values[key] > 0):
                raise ConfigError(f"runtime {name!r}: option {key!r} must be a positive number")
        if values.get("retries", 0) < 0 or values.get("max_logprobs", 1) < 1:
            raise ConfigError(f"runtime {name!r}: 'retries' >= 0 and 'max_logprobs' >= 1")
        if values.get("max_response_bytes", 1) < 1:
            raise ConfigError(f"runtime {name!r}: option 'max_response_bytes' must be a "
                              "positive number of bytes")
        for key in ("quantizations", "capabilities"):
            if not all(isinstance(v, str) for v in values.get(key, [])):
                raise ConfigError(f"runtime {name!r}: option {key!r} is a list of strings")
        features = values.pop("capabilities", ())
        values.setdefault("timeout", settings.timeout)
        try:
            return cls(name, features=features, **values)
        except ValueError as exc:  # kv_cache
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"runtime {name!r}: {exc}") from None

    # -- the Runtime interface

    def unavailable(self) -> str | None:
        return server_unavailable() if self.serve else None

    def version(self) -> str:
        if self.serve:
            engine = llama_cpp_version() or "not installed"
            return (f"llama-cpp-python {llama_cpp_version()} server / llama-cpp-python "
                    f"{engine} / {self.toolchain.describe(engine)} / "
                    f"gguf {package_version('gguf')}")
        return self.fixed_version or f"OpenAI-compatible server at {self.base_url}"

    def key_parts(self, quant: str) -> dict[str, str]:
        parts = {**super().key_parts(quant), "model_name": self.model,
                 "request": json.dumps(self.extra, sort_keys=True)}
        if self.serve:
            return {**parts, "kv_cache": kv_cache_type(self.kv_cache, quant),
                    "converter": self.toolchain.converter, "served": self.serve}
        return {**parts, "base_url": self.base_url}

    def artifact_suffix(self, quant: str) -> str:
        return ".gguf" if self.serve else ""

    def describe(self, model_path: Path, quant: str) -> str:
        return f"served by {self.base_url} as model {self.model!r} ({quant})"

    def build(self, model: ResolvedModel, quant: str, out: Path) -> str:
        return self.toolchain.build(model, quant, out)

    def validate(self, artifact_path: Path) -> str | None:
        return self.toolchain.validate(artifact_path) if self.serve else None

    def reimport(self, gguf: Path, model: ResolvedModel, quant: str, out: Path) -> str:
        if not self.serve:
            raise NotImplementedError(f"{self.name} cannot reimport GGUF")
        return self.toolchain.reimport(gguf, model, quant, out)

    def open(self, artifact: Artifact, model: ResolvedModel) -> OpenAIRunner:
        reason = self.unavailable()
        if reason:
            raise RuntimeUnavailable(reason)
        server = None
        eos = model_eos_ids(model.path)
        if self.serve:
            config = ServerConfig(artifact.path, self.model, self.n_ctx,
                                  self.n_threads or default_threads(),
                                  kv_cache_type(self.kv_cache, artifact.quant),
                                  startup_timeout=self.startup_timeout)
            self._servers.add(config)
            server = shared_server(config)
            gguf_eos = scan_gguf(artifact.path).scalars.get("tokenizer.ggml.eos_token_id")
            eos = (gguf_eos,) if isinstance(gguf_eos, int) else eos  # as llama.cpp stops
        return OpenAIRunner(self, artifact, model, eos, server)

    def close(self) -> None:
        """Stop the servers this runtime started."""
        for config in self._servers:
            stop_server(config)
        self._servers.clear()


class Vocabulary:
    """The model's tokens by their text (``tokenizer.json``), to map a server's pieces."""

    def __init__(self, model_dir: Path) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        texts = self.tokenizer.decode_batch([[i] for i in range(size)],
                                            skip_special_tokens=False)
        self.by_text: dict[str, list[int]] = defaultdict(list)
        for i, text in enumerate(texts):
            self.by_text[text].append(i)

    def id_of(self, piece: str) -> int | None:
        """The one token whose text is ``piece``, or None (unknown or ambiguous)."""
        ids = self.by_text.get(piece, [])
        return ids[0] if len(ids) == 1 else None

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)


class OpenAIRunner(Runner):
    """One model on an OpenAI-compatible server; every call is one HTTP request."""

    def __init__(self, runtime: OpenAIRuntime, artifact: Artifact, model: ResolvedModel,
                 eos: Sequence[int], server: LlamaServer | None) -> None:
        super().__init__(artifact)
        self.runtime = runtime
        self.model = model
        self.eos = tuple(eos)
        self.server = server
        self.base_url = server.base_url if server is not None else runtime.base_url
        self._vocab: Vocabulary | None = None
        self.vocab_size: int | None = model.spec.vocab

    @property
    def vocab(self) -> Vocabulary:
        if self._vocab is None:
            self._vocab = Vocabulary(self.model.path)
        return self._vocab

    # -- HTTP

    def _key(self) -> str:
        """The API key's value ("" without ``api_key_env``); unavailable when unset."""
        if not self.runtime.api_key_env:
            return ""
        key = os.environ.get(self.runtime.api_key_env)
        if not key:
            raise RuntimeUnavailable(f"runtime {self.runtime.name!r}: the environment "
                                     f"variable {self.runtime.api_key_env} (its API key) "
                                     "is not set")
        return key

    def redact(self, text: str) -> str:
        """``text`` with the API key's value (also JSON-escaped) replaced by ``<$VAR>``."""
        key = os.environ.get(self.runtime.api_key_env) if self.runtime.api_key_env else ""
        if not key:
            return text
        mark = f"<${self.runtime.api_key_env}>"
        for spelling in dict.fromkeys((key, json.dumps(key)[1:-1],
                                       json.dumps(key, ensure_ascii=False)[1:-1])):
            text = text.replace(spelling, mark)
        return text

    def _log(self) -> str:
        return self.redact(self.server.log_tail()) if self.server is not None else ""

    def _fail(self, kind: FailureKind, message: str, call: str) -> EngineFailure:
        return EngineFailure(kind, self.redact(message), call=self.redact(call),
                             stderr=self._log())

    def _hint(self, status: int) -> str:
        if status == 404 and self.base_url.rstrip("/").endswith("/v1"):
            return (f"base_url {self.base_url!r} ends in /v1, and the runtime adds "
                    "/v1/completions itself: leave /v1 out of base_url")
        return ""

    def max_bytes(self, max_tokens: int) -> int:
        return self.runtime.max_response_bytes or (
            BASE_RESPONSE_BYTES + PER_TOKEN_BYTES * max(max_tokens, 1))

    def post(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """POST ``body`` as JSON; the answer's JSON object and the call (no API key)."""
        url = f"{self.base_url}{path}"
        call = self.redact(f"POST {url} {json.dumps(body, ensure_ascii=False)}")
        headers = {}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        if self.server is not None and not self.server.alive():
            code = self.server.proc.poll() if self.server.proc is not None else None
            raise self._fail(FailureKind.CRASHED, f"llama-cpp-python's server is not running "
                             f"(exit status {code})", call)
        tokens = body.get("max_tokens", 1)
        echoed = len(str(body.get("prompt", ""))) if body.get("echo") else 0
        return post_json(url, body, timeout=self.runtime.timeout, retries=self.runtime.retries,
                         headers=headers, log=self._log, redact=self.redact, hint=self._hint,
                         max_bytes=self.max_bytes((tokens if isinstance(tokens, int) else 1)
                                                  + echoed))

    def request(self, max_new_tokens: int) -> dict[str, Any]:
        return {"model": self.runtime.model, "max_tokens": max_new_tokens, "temperature": 0.0,
                "top_p": 1.0, "seed": SEED, "n": 1, "stream": False,
                "frequency_penalty": 0.0, "presence_penalty": 0.0, **self.runtime.extra}

    def _k(self, top_k: int) -> int:
        if top_k and Capability.TOPK not in self.runtime.capabilities:
            raise NotImplementedError(f"runtime {self.runtime.name!r} asks for no logprobs")
        return min(top_k, self.runtime.max_logprobs)

    # -- the Runner interface

    def generate(self, prompt: str, max_new_tokens: int, top_k: int = 0) -> Generation:
        k = self._k(top_k)
        body = {**self.request(max_new_tokens), "prompt": prompt, "logprobs": max(k, 1)}
        start = time.perf_counter()
        data, call = self.post("/v1/completions", body)
        seconds = time.perf_counter() - start
        choice = self._first_choice(data, call)
        logprobs = choice.get("logprobs") or {}
        pieces = logprobs.get("tokens") if isinstance(logprobs, dict) else None
        tops = logprobs.get("top_logprobs") if isinstance(logprobs, dict) else None
        top_lists = ([sorted(t.items(), key=lambda kv: -kv[1]) if isinstance(t, dict) else []
                      for t in tops] if isinstance(tops, list) else None)
        return self._generation(data, choice, choice.get("text"), pieces, top_lists, k,
                                max_new_tokens, seconds, call)

    def chat(self, messages: Sequence[Message], max_new_tokens: int,
             top_k: int = 0) -> Generation:
        if Capability.CHAT not in self.runtime.capabilities:
            raise NotImplementedError(f"runtime {self.runtime.name!r} has no chat endpoint")
        k = self._k(top_k)
        body = {**self.request(max_new_tokens), "logprobs": True, "top_logprobs": k,
                "messages": [{"role": m.role, "content": m.content} for m in messages]}
        start = time.perf_counter()
        data, call = self.post("/v1/chat/completions", body)
        seconds = time.perf_counter() - start
        choice = self._first_choice(data, call)
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else None
        content = (choice.get("logprobs") or {}).get("content") \
            if isinstance(choice.get("logprobs") or {}, dict) else None
        pieces = top_lists = None
        if isinstance(content, list) and all(isinstance(c, dict) for c in content):
            pieces = [c.get("token") for c in content]
            top_lists = [[(t.get("token"), t.get("logprob")) for t in c.get("top_logprobs") or []
                          if isinstance(t, dict)] for c in content]
        return self._generation(data, choice, text, pieces, top_lists, k, max_new_tokens,
                                seconds, call)

    def _generation(self, data: dict[str, Any], choice: dict[str, Any], text: Any,
                    pieces: Any, top_lists: list[list[tuple[Any, Any]]] | None, k: int,
                    max_new_tokens: int, seconds: float, call: str) -> Generation:
        if not isinstance(text, str):
            raise self._fail(FailureKind.GARBAGE, f"the answer has no text: "
                             f"{excerpt(json.dumps(data), 500)}", call)
        finish = choice.get("finish_reason")
        notes: list[str] = []
        given = choice.get("token_ids")
        problem = None if given is None else token_ids_problem(
            given, "the answer's token id", self.vocab_size)
        if problem:
            raise self._fail(problem[0], problem[1], call)
        ids = self._token_ids(choice, pieces, text, notes)
        problem = token_ids_problem(ids, "the answer's token id", self.vocab_size)
        if problem:
            raise self._fail(problem[0], problem[1], call)
        if len(ids) > max_new_tokens:
            raise self._fail(FailureKind.GARBAGE, f"the server returned {len(ids)} tokens for "
                             f"max_tokens {max_new_tokens}", call)
        stop = "length"
        if finish == "stop" and ids and ids[-1] in self.eos:
            stop = "eos"
        elif finish == "stop" and len(ids) < max_new_tokens and self.eos:
            ids.append(self.eos[0])  # the server ended at an end-of-generation token
            stop = "eos"
            notes.append(f"the server stopped at an end-of-generation token without returning "
                         f"it; the model's EOS id {self.eos[0]} was appended")
        elif finish not in ("stop", "length"):
            raise self._fail(FailureKind.GARBAGE, f"finish_reason {finish!r} is neither 'stop' "
                             "nor 'length'", call)
        topk = self._topk(top_lists, k, notes, call) if k else None
        usage = data.get("usage")
        prompt_length = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        prompt_ids = choice.get("prompt_token_ids") or data.get("prompt_token_ids") or []
        problem = token_ids_problem(prompt_ids, "the answer's prompt token id", self.vocab_size)
        if problem:
            raise self._fail(problem[0], problem[1], call)
        return Generation(
            tokens=tuple(ids),
            text=self.redact(text),
            prompt_tokens=tuple(prompt_ids),
            stop_reason=stop,
            seconds=seconds,
            call=self.redact(call),
            topk=topk,
            notes=tuple(self.redact(n) for n in notes),
            prompt_length=prompt_length if isinstance(prompt_length, int) else None,
        )

    def _token_ids(self, choice: dict[str, Any], pieces: Any, text: str,
                   notes: list[str]) -> list[int]:
        given = choice.get("token_ids")
        if isinstance(given, list) and all(isinstance(t, int) for t in given):
            return list(given)
        if isinstance(pieces, list) and pieces and all(
                isinstance(p, str) and p.startswith("token_id:") and p[9:].isdigit()
                for p in pieces):
            return [int(p[9:]) for p in pieces]
        if isinstance(pieces, list) and all(isinstance(p, str) for p in pieces) \
                and "".join(pieces) == text:
            mapped = [self.vocab.id_of(p) for p in pieces]
            if all(t is not None for t in mapped):
                notes.append("token ids: the server returns none; its per-token pieces "
                             "(logprobs.tokens) were mapped through the model's vocabulary")
                return [t for t in mapped if t is not None]
        notes.append("token ids: the server returns none (and no unambiguous per-token "
                     "pieces); the returned text was re-tokenized with the model's tokenizer")
        return self.vocab.encode(text)

    def _topk(self, top_lists: list[list[tuple[Any, Any]]] | None, k: int,
              notes: list[str], call: str) -> tuple[TopK, ...]:
        steps = []
        dropped = empty = 0
        for i, entries in enumerate(top_lists or []):
            problem = logprobs_problem([x for _, x in entries if isinstance(x, int | float)],
                                       f"top_logprobs[{i}] log-probability")
            if problem:
                raise self._fail(problem[0], problem[1], call)
            pairs = []
            for piece, logprob in entries:
                token = self.vocab.id_of(piece) if isinstance(piece, str) else None
                if piece == "" and token is None and self.eos:
                    # A control token: llama-cpp-python answers them without text (and
                    # keeps one of them per step). The one a greedy check needs is EOS.
                    token, empty = self.eos[0], empty + 1
                if token is None or not isinstance(logprob, (int, float)):
                    dropped += 1
                    continue
                pairs.append((token, float(logprob)))
            pairs.sort(key=lambda p: (-p[1], p[0]))
            steps.append(TopK(tuple(t for t, _ in pairs[:k]), tuple(x for _, x in pairs[:k])))
        if empty:
            notes.append(f"top-k: {empty} entr(y/ies) with an empty text (a control token) "
                         f"taken as the EOS id {self.eos[0]}")
        if dropped:
            notes.append(f"top-k: {dropped} entr(y/ies) named by a text that no single token "
                         "of the model's vocabulary has were left out")
        return tuple(steps)

    def perplexity(self, text: str) -> PerplexityResult:
        if Capability.PERPLEXITY not in self.runtime.capabilities:
            raise NotImplementedError(f"runtime {self.runtime.name!r}: perplexity not enabled")
        body = {**self.request(1), "prompt": text, "echo": True, "logprobs": 1}
        start = time.perf_counter()
        data, call = self.post("/v1/completions", body)
        seconds = time.perf_counter() - start
        choice = self._first_choice(data, call)
        usage = data.get("usage")
        n = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        logprobs = choice.get("logprobs")
        values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
        if not isinstance(n, int) or not isinstance(values, list) or len(values) < n or n < 2:
            raise self._fail(FailureKind.GARBAGE, "an echo request gave no prompt "
                             f"log-probabilities: {excerpt(json.dumps(data), 500)}", call)
        picked = values[1:n]
        if not all(isinstance(x, (int, float)) for x in picked):
            raise self._fail(FailureKind.GARBAGE, f"prompt log-probabilities are not numbers: "
                             f"{excerpt(repr(picked))}", call)
        problem = logprobs_problem(picked, "prompt log-probability")
        if problem:
            raise self._fail(problem[0], problem[1], call)
        nll = -sum(picked) / len(picked)
        return PerplexityResult(perplexity=math.exp(nll), cross_entropy=nll,
                                tokens_evaluated=len(picked), seconds=seconds, call=call)

    def export_gguf(self, out: Path) -> str:
        if not self.runtime.serve:
            raise NotImplementedError(f"{self.runtime.name} serves no file it could export")
        with atomic_path(out) as tmp:
            shutil.copyfile(self.artifact.path, tmp)
        return f"shutil.copyfile({str(self.artifact.path)!r}, {str(out)!r})  # the served GGUF"

    def _first_choice(self, data: dict[str, Any], call: str) -> dict[str, Any]:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self._fail(FailureKind.GARBAGE, f"the answer has no choices: "
                             f"{excerpt(json.dumps(data), 500)}", call)
        choice: dict[str, Any] = choices[0]
        return choice
