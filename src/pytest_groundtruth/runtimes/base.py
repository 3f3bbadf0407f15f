"""The one interface every runtime implements, and the result types it returns.

A :class:`Runtime` knows how to turn a resolved float32 model into an
:class:`Artifact` at a quantization (a GGUF file, an .apr file, a model directory) and
how to open an artifact as a :class:`Runner`. A runner is a context manager holding
the loaded engine (the vLLM HfRunner/VllmRunner pattern): it greedy-generates, measures
perplexity and, where the engine can, scores a token sequence (teacher forcing) and
exports GGUF. Every runner returns the same result types, so any two runtimes are
compared by the same code.

Capabilities are declared on the class (or set per instance, for runtimes configured
from data such as the command runtime); a suite that needs one the runtime lacks skips
with :meth:`Runtime.missing`'s reason.

Runtimes are registered by entry point (group ``pytest_groundtruth.runtimes``, name ->
``module:Class``); the built-in ones register the same way, in this package's
pyproject.toml. A configured runtime (``[tool.groundtruth.runtime.<name>]`` with a
``kind``) is built by :meth:`Runtime.from_config`. Constructing a runtime must stay
cheap: the engine is imported when an artifact is built or opened, never before.

Stop rule (the same for the oracle and every runtime): greedy decoding stops after the
model's end-of-sequence token, which is included in ``tokens``, with
``stop_reason="eos"``; otherwise after ``max_new_tokens`` with ``stop_reason="length"``.
"""

from __future__ import annotations

import abc
import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from pytest_groundtruth.config.prompts import Message, Prompt
from pytest_groundtruth.config.settings import ConfigError, Settings
from pytest_groundtruth.measures.logprobs import TopK

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from pytest_groundtruth.models.sources import ResolvedModel


class Capability(enum.Enum):
    GENERATE = "generate"
    CHAT = "chat prompts (a conversation rendered with the model's chat template)"
    TOPK = "top-k log-probabilities per generated step"
    PERPLEXITY = "perplexity"
    SCORE = "teacher-forced scoring"
    EXPORT_GGUF = "GGUF export"
    REIMPORT = "GGUF reimport"
    # What the speculative and lora suites need beyond plain generation: each names the
    # engine feature, so a runtime that has it (whatever its class) declares it.
    ASSISTED = "assisted generation with a draft model (transformers generate)"
    PROMPT_LOOKUP = "prompt-lookup speculative decoding (llama-cpp-python)"
    LORA_UNMERGED = "a LoRA adapter applied unmerged to the base model (PEFT)"
    LORA_HOT = "a LoRA adapter GGUF hot-applied to the base GGUF at load (llama.cpp)"


@dataclass(frozen=True)
class Generation:
    """What a greedy generation returned."""

    tokens: tuple[int, ...]
    text: str
    prompt_tokens: tuple[int, ...]
    stop_reason: str  # "eos" | "length"
    seconds: float
    call: str  # the exact command line or Python call that produced it
    topk: tuple[TopK, ...] | None = None
    # Timings where the engine gives them (never part of a default check): seconds to
    # the first generated token, and per generated token after the first.
    first_token_seconds: float | None = None
    step_seconds: tuple[float, ...] = ()
    notes: tuple[str, ...] = ()  # how the result was obtained, when it matters
    # The prompt's token count where the engine reports it but not the ids (a server's
    # ``usage.prompt_tokens``): a chat prompt is then compared by length only.
    prompt_length: int | None = None

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else float("inf")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Generation:
        topk = data.get("topk")
        return cls(
            tokens=tuple(data["tokens"]),
            text=data["text"],
            prompt_tokens=tuple(data["prompt_tokens"]),
            stop_reason=data["stop_reason"],
            seconds=float(data["seconds"]),
            call=data["call"],
            topk=None if topk is None else tuple(
                TopK(tuple(t["ids"]), tuple(t["logprobs"])) for t in topk),
            first_token_seconds=data.get("first_token_seconds"),
            step_seconds=tuple(data.get("step_seconds", ())),
            notes=tuple(data.get("notes", ())),
            prompt_length=data.get("prompt_length"),
        )


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    cross_entropy: float  # mean negative log-likelihood, nats per token
    tokens_evaluated: int
    seconds: float
    call: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PerplexityResult:
        return cls(**data)


@dataclass(frozen=True)
class Artifact:
    """A converted model as one runtime consumes it."""

    runtime: str
    model: str  # roster slug
    quant: str
    path: Path
    key: str  # content address: source fingerprint, runtime, quant, versions
    recipe: str  # how it was produced: a command line or a Python call
    external: bool = False  # supplied by the user rather than built here
    details: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


R = TypeVar("R", bound="Runner")


def read_options(runtime: str, options: Mapping[str, Any],
                 kinds: Mapping[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """``options`` checked against ``kinds`` (option -> accepted type): an unknown option or
    a value of the wrong type is a :class:`ConfigError` naming the runtime and the option."""
    unknown = sorted(set(options) - set(kinds))
    if unknown:
        raise ConfigError(
            f"runtime {runtime!r}: unknown option(s) {', '.join(map(repr, unknown))} "
            f"(it takes: {', '.join(kinds) or 'none'})"
        )
    for key, value in options.items():
        kind = kinds[key]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise ConfigError(f"runtime {runtime!r}: option {key!r} = {value!r} has the wrong type")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"runtime {runtime!r}: option {key!r} = {value!r} must be finite")
    return dict(options)


class Runner(abc.ABC):
    """A loaded artifact. Use as a context manager; leaving it frees the engine."""

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact

    def __enter__(self: R) -> R:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the engine's memory."""

    @abc.abstractmethod
    def generate(self, prompt: str, max_new_tokens: int, top_k: int = 0) -> Generation:
        """Greedy-generate; with ``top_k`` > 0 also return per-step top-k log-probabilities."""

    @abc.abstractmethod
    def perplexity(self, text: str) -> PerplexityResult:
        """Perplexity of ``text``: its own tokenization (BOS only where the model adds one),
        one pass, every position after the first predicted."""

    def score(self, token_ids: Sequence[int], start: int) -> npt.NDArray[np.float32]:
        """Log-probabilities ``[len(token_ids) - start, vocab]`` of the next token at each
        position ``start .. len - 1``, given the preceding ``token_ids`` (teacher forcing)."""
        raise NotImplementedError(f"{self.artifact.runtime} cannot score token sequences")

    def chat(self, messages: Sequence[Message], max_new_tokens: int,
             top_k: int = 0) -> Generation:
        """Greedy-generate the reply to a conversation rendered with the chat template the
        engine has for the model (``prompt_tokens`` are the rendered prompt's ids)."""
        raise NotImplementedError(f"{self.artifact.runtime} cannot run chat prompts")

    def tokenize(self, text: str) -> list[int]:
        """The engine's own tokenization of ``text`` (as used for generation)."""
        raise NotImplementedError(f"{self.artifact.runtime} does not expose its tokenizer")

    def export_gguf(self, out: Path) -> str:
        """Write this artifact as GGUF at ``out``; return the call that did it."""
        raise NotImplementedError(f"{self.artifact.runtime} cannot export GGUF")


def respond(runner: Runner, prompt: Prompt, max_new_tokens: int, top_k: int = 0) -> Generation:
    """``runner``'s greedy answer to ``prompt``: :meth:`Runner.chat` for a conversation,
    :meth:`Runner.generate` for plain text."""
    if prompt.is_chat:
        return runner.chat(prompt.messages, max_new_tokens, top_k=top_k)
    return runner.generate(prompt.text, max_new_tokens, top_k=top_k)


class Runtime(abc.ABC):
    """A runtime engine under test (stateless; holds only its settings)."""

    name: str
    quantizations: tuple[str, ...]
    capabilities: frozenset[Capability]
    #: False when the source model directory itself is the artifact (the engine converts
    #: at load time: transformers, torchao); :meth:`describe` then says how.
    builds_artifacts: bool = True

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any], settings: Settings,
                    device: str = "cpu") -> Runtime:
        """The runtime ``name`` configured by ``options`` (its
        ``[tool.groundtruth.runtime.<name>]`` table without ``kind``). Raise
        :class:`~pytest_groundtruth.config.settings.ConfigError` naming the option on bad
        input. The default takes no options."""
        read_options(name, options, {})
        runtime = cls()
        runtime.name = name
        return runtime

    def unavailable(self) -> str | None:
        """Why this runtime cannot run here (with how to fix it), or None when it can."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free what the runtime holds beyond its runners (a server it started); called
        when the plugin's context closes."""

    def missing(self, *needed: Capability) -> str | None:
        """The skip reason when this runtime lacks one of ``needed``, else None."""
        lacking = [c for c in needed if c not in self.capabilities]
        if not lacking:
            return None
        return f"runtime {self.name!r} has no {', '.join(c.value for c in lacking)}"

    @abc.abstractmethod
    def version(self) -> str:
        """The engine's version (goes into artifact keys and reports)."""

    def describe(self, model_path: Path, quant: str) -> str:
        """For a runtime that builds no artifact: how it makes ``model_path`` ready at
        ``quant`` when it loads it (the artifact's recipe)."""
        raise NotImplementedError(f"{self.name} builds its artifacts")

    def key_parts(self, quant: str) -> dict[str, str]:
        """What besides the source model decides the artifact's bytes (versions, settings)."""
        return {"runtime": self.name, "quant": quant, "version": self.version()}

    @abc.abstractmethod
    def artifact_suffix(self, quant: str) -> str:
        """File suffix of a built artifact (``.gguf``, ``.apr``), or ``""`` for a directory."""

    @abc.abstractmethod
    def build(self, model: ResolvedModel, quant: str, out: Path) -> str:
        """Convert ``model`` at ``quant`` into ``out`` (a file or directory the caller
        then moves into place atomically); return the recipe (command or call)."""

    def validate(self, artifact_path: Path) -> str | None:
        """A reason ``artifact_path`` is corrupt or incomplete, or None when it looks sound."""
        return None

    def reimport(self, gguf: Path, model: ResolvedModel, quant: str, out: Path) -> str:
        """Build an artifact of this runtime at ``out`` from a GGUF file; return the recipe."""
        raise NotImplementedError(f"{self.name} cannot reimport GGUF")

    @abc.abstractmethod
    def open(self, artifact: Artifact, model: ResolvedModel) -> Runner:
        """Load ``artifact`` (built from ``model``) and return a runner."""

    def check_quant(self, quant: str) -> None:
        if quant not in self.quantizations:
            raise ValueError(
                f"runtime {self.name!r} has no quantization {quant!r} "
                f"(it has: {', '.join(self.quantizations)})"
            )
