"""The one interface every runtime implements, and the result types it returns.

A :class:`Runtime` knows how to turn a resolved float32 model into an
:class:`Artifact` at a quantization (a GGUF file, an .apr file, a model directory) and
how to open an artifact as a :class:`Runner`. A runner is a context manager holding
the loaded engine (the vLLM HfRunner/VllmRunner pattern): it greedy-generates, measures
perplexity and, where the engine can, scores a token sequence (teacher forcing) and
exports GGUF. Every runner returns the same result types, so any two runtimes are
compared by the same code.

Capabilities are declared on the class; a suite that needs one the runtime lacks skips
with :meth:`Runtime.missing`'s reason.

Stop rule (the same for the oracle and every runtime): greedy decoding stops after the
model's end-of-sequence token, which is included in ``tokens``, with
``stop_reason="eos"``; otherwise after ``max_new_tokens`` with ``stop_reason="length"``.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, TypeVar

from pytest_groundtruth.measures.logprobs import TopK

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from pytest_groundtruth.models.sources import ResolvedModel
    from pytest_groundtruth.store.cache import ArtifactCache


class Capability(enum.Enum):
    GENERATE = "generate"
    TOPK = "top-k log-probabilities per generated step"
    PERPLEXITY = "perplexity"
    SCORE = "teacher-forced scoring"
    EXPORT_GGUF = "GGUF export"
    REIMPORT = "GGUF reimport"


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

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    cross_entropy: float  # mean negative log-likelihood, nats per token
    tokens_evaluated: int
    seconds: float
    call: str


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

    def tokenize(self, text: str) -> list[int]:
        """The engine's own tokenization of ``text`` (as used for generation)."""
        raise NotImplementedError(f"{self.artifact.runtime} does not expose its tokenizer")

    def export_gguf(self, out: Path) -> str:
        """Write this artifact as GGUF at ``out``; return the call that did it."""
        raise NotImplementedError(f"{self.artifact.runtime} cannot export GGUF")


class Runtime(abc.ABC):
    """A runtime engine under test (stateless; holds only its settings)."""

    name: ClassVar[str]
    quantizations: ClassVar[tuple[str, ...]]
    capabilities: ClassVar[frozenset[Capability]]

    def unavailable(self) -> str | None:
        """Why this runtime cannot run here (with how to fix it), or None when it can."""
        return None

    def missing(self, *needed: Capability) -> str | None:
        """The skip reason when this runtime lacks one of ``needed``, else None."""
        lacking = [c for c in needed if c not in self.capabilities]
        if not lacking:
            return None
        return f"runtime {self.name!r} has no {', '.join(c.value for c in lacking)}"

    @abc.abstractmethod
    def version(self) -> str:
        """The engine's version (goes into artifact keys and reports)."""

    def prepare(self, model: ResolvedModel, quant: str, cache: ArtifactCache) -> Artifact:
        """The artifact of ``model`` at ``quant``: from the cache, or built once into it."""
        self.check_quant(quant)
        return cache.artifact(self, model, quant)

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
