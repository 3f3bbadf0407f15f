"""The llama.cpp runtime: GGUF conversions run by llama-cpp-python.

Artifacts are GGUF files. ``float32``, ``float16``, ``int8`` (Q8_0) and ``int4`` (Q4_0, the
original workflow's names) are written by the converter directly; every type of
llama.cpp's quantizer (``q8_0``, ``q6_k``, ``q5_k_m``, ``q4_k_m``, ``q4_0``, ``q4_1``,
``iq4_xs``, ``q3_k_m``, ``q2_k``, ... :data:`~pytest_groundtruth.ggufio.quants.CATALOG`)
is made by ``llama_model_quantize`` from the converter's F32 file, so its tensor mix is
llama.cpp's own.

The converter is an option of the runtime (``converter``), so that two converters of the
same model can be compared side by side under two runtime names::

    [tool.groundtruth.runtime.llamacpp-hfconv]
    kind = "llamacpp"
    converter = "llama.cpp"

``"ours"``: :func:`pytest_groundtruth.ggufio.export_gguf` (the architectures of
:data:`~pytest_groundtruth.ggufio.names.EXPORTED`); ``"llama.cpp"``: llama.cpp's own
``convert_hf_to_gguf.py`` from llama-cpp-python's sdist
(:mod:`~pytest_groundtruth.ggufio.hfconvert`); ``"auto"`` (the default): ours where it
writes the architecture, llama.cpp's otherwise. The converter used is in every artifact's
recipe and cache key, and in :meth:`LlamaCppRuntime.version`.
The runner loads one with ``llama_cpp.Llama(..., logits_all=True)`` and does greedy
decoding itself on ``eval()`` + ``scores`` rather than through llama.cpp's sampler, so
the rule is exactly the oracle's (:mod:`pytest_groundtruth.measures.logprobs`): argmax of the
float32 logits, ties to the lowest id, stop after an end-of-sequence token.

End of sequence: the stop set is what the file under test declares,
``tokenizer.ggml.eos_token_id``, so a conversion that writes the wrong EOS shows up as a
generation that does not stop where the oracle's does; never llama.cpp's own
end-of-generation set, which also contains every token whose text looks like one
(SmolLM2's ``<|endoftext|>``, id 0), and which the oracle does not stop at.

Tokenization is llama.cpp's own (``Llama.tokenize``), BOS only where the GGUF's
``add_bos_token`` says so, special-token text parsed as transformers does.
Text is the detokenized bytes with control tokens left out, decoded as UTF-8 with
replacement, which is transformers' ``decode(skip_special_tokens=True)``.
KV cache: llama.cpp stores keys and values in F16 by default, which alone moves the
logits of an F32 model by about 1e-2 (measured on tiny-llama: 1.2e-2 with F16, 1.3e-5
with an F32 cache). ``kv_cache="auto"`` (the default) therefore uses an F32 cache for
the ``float32`` artifact, so that "float32" is float32 end to end, and llama.cpp's
default F16 cache for the others, as people run quantized models; ``"f16"`` or
``"f32"`` force one for all. The choice is part of :meth:`LlamaCppRuntime.key_parts`.

Building, validating and reimporting artifacts is the llama.cpp toolchain's
(:class:`~pytest_groundtruth.runtimes.toolchain.Toolchain`), which the served runtime
(:mod:`~pytest_groundtruth.runtimes.openai`) shares: reimport reads a GGUF through
transformers' GGUF loader (dequantizing) and exports it again with our exporter, every
tensor at its own type in the original (``like=``), so the roundtrip GGUF -> HF -> GGUF
keeps a mixed file mixed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_groundtruth.config.prompts import Message
from pytest_groundtruth.config.settings import ConfigError, Settings
from pytest_groundtruth.core.atomic import atomic_path
from pytest_groundtruth.core.failures import (
    EngineFailure,
    FailureKind,
    InputError,
    RuntimeUnavailable,
)
from pytest_groundtruth.core.memory import trim_heap
from pytest_groundtruth.core.plugins import package_version
from pytest_groundtruth.ggufio import (
    GGUFFormatError,
)
from pytest_groundtruth.ggufio.reader import scan_gguf
from pytest_groundtruth.measures import logprobs as lp
from pytest_groundtruth.measures.logprobs import TopK
from pytest_groundtruth.measures.timing import intervals
from pytest_groundtruth.runtimes.base import (
    Artifact,
    Capability,
    Generation,
    Runtime,
    read_options,
)
from pytest_groundtruth.runtimes.logits import LogitsRunner
from pytest_groundtruth.runtimes.threads import default_threads, xdist_workers
from pytest_groundtruth.runtimes.toolchain import QUANTIZATIONS, Toolchain

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from pytest_groundtruth.models.sources import ResolvedModel

INSTALL = (
    "pip install llama-cpp-python (builds llama.cpp from source, 7-10 min; "
    "CMAKE_ARGS=-DGGML_NATIVE=OFF for a portable build), or pip install "
    "'pytest-groundtruth[llamacpp]'"
)
SEED = 42  # greedy decoding does not depend on it; fixed for the record
KV_CACHE_TYPES = ("auto", "f16", "f32")


def llama_cpp_version() -> str | None:
    return package_version("llama-cpp-python")


def kv_cache_type(setting: str, quant: str) -> str:
    """The KV cache type llama.cpp uses for ``quant`` under ``setting`` (``auto``: F32 for
    the float32 artifact, llama.cpp's default F16 for the others)."""
    if setting == "auto":
        return "f32" if quant == "float32" else "f16"
    return setting


class ContextTooSmall(InputError):
    """A prompt or text does not fit the llama.cpp context; says which option raises it."""


DEFAULT_BATCH = 512  # llama-cpp-python's n_batch (and n_ubatch)
MIN_BATCH = 32
LOGITS_SHARE = 8  # the logits buffers may take this part of the process's budget


def logits_batch(budget: int | None, n_vocab: int) -> int | None:
    """``n_batch`` for a process budget of ``budget`` bytes, None for llama.cpp's own.

    With ``logits_all`` llama.cpp keeps a batch's logits twice while it evaluates
    (``n_batch x n_vocab`` float32 in its output buffer and in the compute graph's
    result), 384 KiB a position for SmolLM2 and 2 MiB for Gemma 3's 262k tokens. When
    the default batch would take more than an eighth of the budget, the largest power
    of two that does not (at least 32). Prompts longer than the batch are evaluated in
    several batches: the logits are the same bit for bit
    (``tests/unit/test_llamacpp_budget.py``)."""
    per_position = 2 * n_vocab * 4
    room = (budget or 0) // LOGITS_SHARE
    if budget is None or DEFAULT_BATCH * per_position <= room:
        return None
    n = DEFAULT_BATCH
    while n > MIN_BATCH and n * per_position > room:
        n //= 2
    return n


def _ctx_for(n: int) -> int:
    """The next power of two that holds ``n`` positions (a suggestion for n_ctx)."""
    size = 1024
    while size < n:
        size *= 2
    return size


class LlamaCppRuntime(Runtime):
    name = "llamacpp"
    quantizations: tuple[str, ...] = QUANTIZATIONS
    capabilities: frozenset[Capability] = frozenset(
        {
            Capability.GENERATE,
            Capability.CHAT,
            Capability.TOPK,
            Capability.PERPLEXITY,
            Capability.SCORE,
            Capability.EXPORT_GGUF,
            Capability.REIMPORT,
            Capability.PROMPT_LOOKUP,
            Capability.LORA_HOT,
        }
    )

    def __init__(
        self,
        n_threads: int | None = None,
        n_ctx: int = 1024,
        seed: int = SEED,
        kv_cache: str = "auto",
        converter: str = "auto",
        cache_dir: Path | None = None,
    ) -> None:
        """``n_threads``: llama.cpp threads (default: the CPUs shared out among xdist
        workers, :func:`~.threads.default_threads`), fixed so that runs repeat. ``n_ctx``:
        context size (capped at the model's); ``logits_all`` keeps ``n_ctx x vocab``
        float32 logits, so it is kept moderate. ``kv_cache``: ``auto`` (F32 for float32,
        F16 otherwise), ``f16`` or ``f32``. ``converter``: ``auto``, ``ours`` or
        ``llama.cpp`` (module docstring); ``cache_dir``: where llama.cpp's converter is
        looked for and unpacked."""
        if kv_cache not in KV_CACHE_TYPES:
            raise ValueError(f"kv_cache must be one of {KV_CACHE_TYPES}, got {kv_cache!r}")
        self.n_threads = n_threads if n_threads is not None else default_threads()
        self.n_ctx = n_ctx
        self.seed = seed
        self.kv_cache = kv_cache
        self.converter = converter
        self.cache_dir = cache_dir
        self.toolchain = Toolchain(converter, self.n_threads, cache_dir)  # checks converter
        self.memory_budget: int | None = None  # the process's (from_config): sizes n_batch

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any], settings: Settings,
                    device: str = "cpu") -> Runtime:
        """Options: ``n_ctx``, ``n_threads``, ``kv_cache`` (``auto`` | ``f16`` | ``f32``),
        ``converter`` (``auto`` | ``ours`` | ``llama.cpp``)."""
        values = read_options(name, options, {"n_ctx": int, "n_threads": int, "kv_cache": str,
                                              "converter": str})
        try:
            runtime = cls(**values, cache_dir=settings.cache_root())
        except ValueError as exc:
            raise ConfigError(f"runtime {name!r}: {exc}") from None
        runtime.name = name
        runtime.memory_budget = settings.memory_budget(xdist_workers())
        return runtime

    def kv_cache_type(self, quant: str) -> str:
        """The KV cache type a runner of ``quant`` uses (``f16`` or ``f32``)."""
        return kv_cache_type(self.kv_cache, quant)

    def key_parts(self, quant: str) -> dict[str, str]:
        # The KV cache type changes generations (cached under the artifact key); the
        # converter changes the bytes.
        return {**super().key_parts(quant), "kv_cache": self.kv_cache_type(quant),
                "converter": self.converter}

    def unavailable(self) -> str | None:
        try:
            import llama_cpp  # noqa: F401
        except Exception as exc:  # ImportError, or OSError when the shared library is broken
            return f"llama-cpp-python cannot be imported ({type(exc).__name__}: {exc}): {INSTALL}"
        return self.toolchain.unavailable()

    def version(self) -> str:
        engine = llama_cpp_version() or "not installed"
        return (f"llama-cpp-python {engine} / {self.toolchain.describe(engine)} / "
                f"gguf {package_version('gguf')}")

    def artifact_suffix(self, quant: str) -> str:
        return ".gguf"

    def qtype(self, quant: str) -> str:
        """The GGUF file type of ``quant`` (``Q4_K_M`` for a mix)."""
        self.check_quant(quant)
        return self.toolchain.qtype(quant)

    def converter_for(self, model: ResolvedModel) -> str:
        """``ours`` or ``llama.cpp``: the converter that makes ``model``'s artifacts."""
        return self.toolchain.converter_for(model)

    def tokenizer_pre(self, model: ResolvedModel) -> str:
        return self.toolchain.tokenizer_pre(model)

    def build(self, model: ResolvedModel, quant: str, out: Path) -> str:
        self.check_quant(quant)
        return self.toolchain.build(model, quant, out)

    def validate(self, artifact_path: Path) -> str | None:
        return self.toolchain.validate(artifact_path)

    def reimport_problem(self, model: ResolvedModel) -> str | None:
        return self.toolchain.reimport_problem(model)

    def reimport(self, gguf: Path, model: ResolvedModel, quant: str, out: Path) -> str:
        self.check_quant(quant)
        return self.toolchain.reimport(gguf, model, quant, out)

    def open(self, artifact: Artifact, model: ResolvedModel) -> LlamaCppRunner:
        reason = self.unavailable()
        if reason:
            raise RuntimeUnavailable(reason)
        return LlamaCppRunner(
            artifact,
            n_threads=self.n_threads,
            n_ctx=self.n_ctx,
            seed=self.seed,
            kv_cache=self.kv_cache_type(artifact.quant),
            memory_budget=self.memory_budget,
        )


class LlamaCppRunner(LogitsRunner):
    def __init__(
        self,
        artifact: Artifact,
        eos_ids: Sequence[int] = (),
        n_threads: int | None = None,
        n_ctx: int = 1024,
        seed: int = SEED,
        kv_cache: str = "f16",
        lora_path: Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        memory_budget: int | None = None,
    ) -> None:
        """Load ``artifact`` (a GGUF). ``eos_ids``: the stop set (default: the GGUF's
        eos_token_id); ``kv_cache``: ``f16`` (llama.cpp's default) or ``f32``;
        ``lora_path``: a GGUF LoRA adapter applied at load time (scale 1);
        ``overrides``: further ``llama_cpp.Llama`` arguments (shown in every call);
        ``memory_budget``: the process's, which sizes ``n_batch`` (:func:`logits_batch`)."""
        super().__init__(artifact)
        import llama_cpp

        path = artifact.path
        try:
            scan = scan_gguf(path)
        except GGUFFormatError as exc:
            raise EngineFailure(FailureKind.CRASHED, str(exc)) from exc
        arch = scan.scalars.get("general.architecture")
        trained = scan.scalars.get(f"{arch}.context_length")
        self.trained_ctx = trained if isinstance(trained, int) and trained > 0 else None
        self.n_ctx = min(n_ctx, self.trained_ctx) if self.trained_ctx else n_ctx
        self.n_threads = n_threads if n_threads is not None else default_threads()
        if kv_cache not in ("f16", "f32"):
            raise ValueError(f"kv_cache must be 'f16' or 'f32', got {kv_cache!r}")
        kv_type = llama_cpp.GGML_TYPE_F32 if kv_cache == "f32" else llama_cpp.GGML_TYPE_F16
        embd = scan.tensors.get("token_embd.weight")
        n_batch = logits_batch(memory_budget, embd.dims[-1]) if embd and embd.dims else None
        overrides = {**({"n_batch": n_batch} if n_batch else {}), **(overrides or {})}
        self.load_call = (
            f"llama_cpp.Llama({str(path)!r}, n_ctx={self.n_ctx}, n_threads={self.n_threads}, "
            f"n_threads_batch={self.n_threads}, logits_all=True, seed={seed}, "
            f"type_k=llama_cpp.GGML_TYPE_{kv_cache.upper()}, "
            f"type_v=llama_cpp.GGML_TYPE_{kv_cache.upper()}, "
            + (f"lora_path={str(lora_path)!r}, " if lora_path else "")
            + "".join(f"{k}={v!r}, " for k, v in (overrides or {}).items())
            + "verbose=False)"
        )
        try:
            self.llm: Any = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                logits_all=True,
                seed=seed,
                type_k=kv_type,
                type_v=kv_type,
                lora_path=str(lora_path) if lora_path else None,
                verbose=False,
                **(overrides or {}),
            )
        except Exception as exc:  # llama-cpp-python raises ValueError on a bad model file
            raise EngineFailure(
                FailureKind.CRASHED, f"llama.cpp could not load {path}: {exc}", call=self.load_call
            ) from exc
        gguf_eos = scan.scalars.get("tokenizer.ggml.eos_token_id")
        fallback = [gguf_eos] if isinstance(gguf_eos, int) else []
        self.eos = list(eos_ids) or fallback
        self._vocab = self.llm._model.vocab
        self.n_vocab = int(self.llm.n_vocab())

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None
            trim_heap()  # llama.cpp's buffers and the scores array go back to the OS

    # ----------------------------------------------------------------- tokens

    def tokenize(self, text: str) -> list[int]:
        # add_bos=True means "add BOS if the GGUF's add_bos_token says so";
        # special=True parses special-token text (<|im_end|>) as transformers does.
        return [int(t) for t in self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)]

    def _piece(self, token: int) -> bytes:
        import ctypes

        import llama_cpp

        size = 64
        while True:
            buffer = (ctypes.c_char * size)()
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, size, 0, False)
            if n >= 0:
                return buffer.raw[:n]
            size = -n  # too small: llama.cpp returns minus the size it needs

    def decode(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens`` without control tokens (``skip_special_tokens=True``)."""
        return b"".join(self._piece(t) for t in tokens).decode("utf-8", errors="replace")

    # ----------------------------------------------------------------- evaluation

    def _eval(self, ids: Sequence[int], call: str) -> None:
        try:
            self.llm.eval(list(ids))
        except Exception as exc:  # llama_decode failures surface as RuntimeError
            raise EngineFailure(
                FailureKind.CRASHED, f"llama.cpp eval failed: {exc}", call=call
            ) from exc

    def _check_fits(self, n: int, what: str) -> None:
        if n <= self.n_ctx:
            return
        message = f"{what} needs {n} positions but the llama.cpp context holds {self.n_ctx}"
        if self.trained_ctx is not None and n > self.trained_ctx:
            raise ContextTooSmall(
                f"{message}, and the model was trained on {self.trained_ctx} "
                f"({self.artifact.path}): use a shorter prompt or text"
            )
        name = self.artifact.runtime
        raise ContextTooSmall(
            f"{message} (n_ctx); raise it in pyproject.toml: [tool.groundtruth.runtime."
            f'{name}] with kind = "llamacpp" and n_ctx = {_ctx_for(n)}'
        )

    def _logits(self, start: int, stop: int) -> npt.NDArray[np.float32]:
        import numpy as np

        return np.array(self.llm.scores[start:stop, : self.n_vocab], dtype=np.float32)

    def generate(self, prompt: str, max_new_tokens: int, top_k: int = 0) -> Generation:
        ids = self.tokenize(prompt)
        if not ids:
            raise ValueError(f"prompt {prompt!r} tokenizes to no tokens")
        call = (
            f"{self.load_call}: greedy argmax over eval()/scores, prompt={prompt!r}, "
            f"max_new_tokens={max_new_tokens}, eos={self.eos}"
        )
        return self._greedy(ids, max_new_tokens, top_k, call)

    # ----------------------------------------------------------------- chat (issue 15)

    def render_chat(self, messages: Sequence[Message]) -> tuple[str, list[int], tuple[str, ...]]:
        """The conversation as this GGUF renders it: (text, token ids, notes).

        The template is the file's own ``tokenizer.chat_template``, rendered by
        llama-cpp-python's ``Jinja2ChatFormatter`` with the generation prompt added, exactly
        as its server does; the text is tokenized with special tokens parsed and no BOS
        added (the template writes its own). A GGUF without a template gets
        llama-cpp-python's fallback format (``llama-2``), as its server would, and a note
        says so: the prompt-token comparison then names where it departs from the oracle.
        """
        from llama_cpp import llama_chat_format

        chat: Any = [{"role": m.role, "content": m.content} for m in messages]
        template = self.llm.metadata.get("tokenizer.chat_template")
        notes: tuple[str, ...] = ()
        if template:
            model = self.llm._model
            bos, eos = self.llm.token_bos(), self.llm.token_eos()
            result = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "",
            )(messages=chat)
        else:
            result = llama_chat_format.format_llama2(messages=chat)
            notes = ("the GGUF has no tokenizer.chat_template: rendered with llama-cpp-python's "
                     "fallback chat format 'llama-2'",)
        add_bos = not result.added_special
        ids = self.llm.tokenize(result.prompt.encode("utf-8"), add_bos=add_bos, special=True)
        return result.prompt, [int(t) for t in ids], notes

    def chat(self, messages: Sequence[Message], max_new_tokens: int,
             top_k: int = 0) -> Generation:
        text, ids, notes = self.render_chat(messages)
        call = (
            f"{self.load_call}: tokenizer.chat_template rendered (Jinja2ChatFormatter, "
            f"add_generation_prompt=True) to {text!r}; greedy argmax over eval()/scores, "
            f"max_new_tokens={max_new_tokens}, eos={self.eos}"
        )
        gen = self._greedy(ids, max_new_tokens, top_k, call)
        return replace(gen, notes=gen.notes + notes)

    # ----------------------------------------------------------------- greedy

    def _greedy(self, ids: list[int], max_new_tokens: int, top_k: int, call: str) -> Generation:
        """Greedy decoding from prompt ids: argmax, stop after an EOS (kept in the tokens)."""
        self._check_fits(
            len(ids) + max_new_tokens, f"prompt ({len(ids)} tokens) + {max_new_tokens}"
        )
        tokens: list[int] = []
        topk: list[TopK] = []
        stop_reason = "length"
        start = time.perf_counter()
        stamps: list[float] = []  # when each token was chosen (time to first token, latency)
        self._start(ids, call)
        for step in range(max_new_tokens):
            logits = self._logits(self.llm.n_tokens - 1, self.llm.n_tokens)
            row = lp.log_softmax(logits)[0]  # raises EngineFailure(NAN) on NaN/Inf
            token = self._choose(step, row)
            if top_k:
                topk.append(lp.top_k(row, top_k))
            tokens.append(token)
            stamps.append(time.perf_counter())
            if token in self.eos:
                stop_reason = "eos"
                break
            if step + 1 < max_new_tokens:
                self._eval([token], call)
        seconds = time.perf_counter() - start
        first_token, steps = intervals(start, stamps)
        return Generation(
            tokens=tuple(tokens),
            text=self.decode(tokens),
            prompt_tokens=tuple(ids),
            stop_reason=stop_reason,
            seconds=seconds,
            call=call,
            topk=tuple(topk) if top_k else None,
            first_token_seconds=first_token,
            step_seconds=steps,
        )

    def _start(self, ids: Sequence[int], call: str) -> None:
        """Evaluate the prompt on an empty context (a hook for the fault harness)."""
        self.llm.reset()
        self._eval(ids, call)

    def _choose(self, step: int, row: npt.NDArray[np.float64]) -> int:
        """The greedy choice at generation ``step`` from its log-probability row."""
        return lp.argmax(row)

    def sequence_logprobs(self, ids: Sequence[int]) -> npt.NDArray[np.float64]:
        self._check_fits(len(ids), f"a sequence of {len(ids)} tokens")
        self.llm.reset()
        self._eval(ids, self.sequence_call(len(ids)))
        return lp.log_softmax(self._logits(0, len(ids)))

    def sequence_call(self, n_tokens: int) -> str:
        return f"{self.load_call}.eval(<{n_tokens} tokens>); scores"

    def export_gguf(self, out: Path) -> str:
        with atomic_path(out) as tmp:
            shutil.copyfile(self.artifact.path, tmp)
        return f"shutil.copyfile({str(self.artifact.path)!r}, {str(out)!r})"
