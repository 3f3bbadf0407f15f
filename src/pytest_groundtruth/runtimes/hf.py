"""The transformers runtime: the float32 reference (the oracle), other dtypes, GGUF reimport.

At ``float32`` on CPU this runner *is* the oracle generator. At ``bfloat16`` and
``float16`` it is the reference at lower precision (the CUDA precision ladder). Opened
on a ``.gguf`` artifact it reads the file through transformers' GGUF loader
(dequantizing to float32): the reimport half of the roundtrip suite.

Memory (docs/memory.md): a model whose weights do not fit the process's memory budget
(:mod:`~pytest_groundtruth.core.budget`) beside what it holds already is loaded with
accelerate (``device_map="auto"``, ``max_memory``, ``offload_folder``): the layers that
fit stay in memory, the others are read from the safetensors files at each forward
pass. The arithmetic is the same float32 arithmetic on the same values, so tokens and
log-probabilities are identical to the whole load (``tests/engines/test_offload.py``), only
slower.

Greedy decoding uses an explicit ``GenerationConfig`` (no sampling, one beam, no
repetition penalty), so a model's own generation_config.json cannot turn on processors
that the engines under test do not apply.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_groundtruth.config.prompts import Message
from pytest_groundtruth.core.budget import LoadPlan, format_size, load_plan, weights_bytes
from pytest_groundtruth.core.failures import RuntimeUnavailable
from pytest_groundtruth.core.memory import release_memory
from pytest_groundtruth.core.plugins import package_version
from pytest_groundtruth.measures import logprobs as lp
from pytest_groundtruth.measures.timing import intervals
from pytest_groundtruth.runtimes.base import (
    Artifact,
    Capability,
    Generation,
    Runtime,
    read_options,
)
from pytest_groundtruth.runtimes.logits import LogitsRunner
from pytest_groundtruth.runtimes.threads import torch_threads, xdist_workers

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from pytest_groundtruth.config.settings import Settings
    from pytest_groundtruth.models.sources import ResolvedModel

DTYPES = ("float32", "bfloat16", "float16")
SEED = 42  # the original oracle's seed; greedy decoding does not depend on it
# Working memory beside the weights: the logits of this many positions, as float32 and
# as the float64 log-probabilities computed from them (12 bytes a value), at least 256 MiB.
WORK_POSITIONS = 256
WORK_MIN = 256 * 2**20


@dataclass(frozen=True)
class MemoryBudget:
    """What a runner may hold (bytes, this process's share of ``max_memory``) and where
    accelerate puts what it cannot keep in memory."""

    limit: int
    offload_dir: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> MemoryBudget:
        return cls(settings.memory_budget(xdist_workers()), settings.cache_root() / "offload")


def working_bytes(model_dir: Path) -> int:
    """The memory a forward pass over :data:`WORK_POSITIONS` positions needs beside the
    weights (from ``config.json``'s vocabulary size)."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    vocab = config.get("vocab_size") or (text or {}).get("vocab_size") or 0
    return max(WORK_MIN, int(vocab) * WORK_POSITIONS * 12)


def plan_load(model_dir: Path, budget: int) -> LoadPlan:
    """Whether a float32 transformers model directory fits ``budget`` beside what this
    process holds now."""
    return load_plan(weights_bytes(model_dir), budget, working_bytes(model_dir))


def library_versions() -> dict[str, str]:
    """The installed transformers and torch versions (from their package metadata, which
    is what ``__version__`` reports, without importing them: a warm run imports no torch)."""
    return {name: package_version(name) or "not installed" for name in ("transformers", "torch")}


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """The end-of-sequence ids the model stops at (generation config, config, tokenizer)."""
    for source in (model.generation_config, model.config):
        value = getattr(source, "eos_token_id", None)
        if value is not None:
            return [value] if isinstance(value, int) else list(value)
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


class TokenClock:
    """A ``generate()`` streamer that notes when each new token arrives (the first
    ``put`` is the prompt): time to first token and per-token latency."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if self._prompt_seen:
            self.stamps.append(time.perf_counter())
        self._prompt_seen = True

    def end(self) -> None:
        """Nothing to flush."""


class TransformersRuntime(Runtime):
    name = "transformers"
    quantizations: tuple[str, ...] = DTYPES
    capabilities: frozenset[Capability] = frozenset(
        {Capability.GENERATE, Capability.CHAT, Capability.TOPK, Capability.PERPLEXITY,
         Capability.SCORE, Capability.ASSISTED, Capability.LORA_UNMERGED}
    )

    def __init__(self, device: str = "cpu", n_threads: int | None = None,
                 budget: MemoryBudget | None = None) -> None:
        """``n_threads``: torch's CPU threads while a runner of this runtime is open
        (default: the CPUs shared out among xdist workers, unless ``OMP_NUM_THREADS`` is
        set: :func:`~.threads.torch_threads`). ``budget``: the memory a runner may hold
        (None: no limit; :meth:`from_config` takes the settings' ``max_memory``)."""
        self.device = device
        self.n_threads = n_threads
        self.budget = budget

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any], settings: Settings,
                    device: str = "cpu") -> Runtime:
        """Options: ``n_threads`` (torch's CPU threads)."""
        values = read_options(name, options, {"n_threads": int})
        runtime = cls(device=device, budget=MemoryBudget.from_settings(settings), **values)
        runtime.name = name
        return runtime

    def unavailable(self) -> str | None:
        if self.device.startswith("cuda"):
            torch_version = library_versions()["torch"]
            if torch_version.endswith("+cpu"):  # known without importing torch (seconds)
                return (f"CUDA is not available: torch {torch_version} is a CPU-only build; "
                        "run on a machine with an NVIDIA GPU and a CUDA build of torch")
            import torch

            if not torch.cuda.is_available():
                return (
                    "CUDA is not available (torch.cuda.is_available() is False): run on a "
                    "machine with an NVIDIA GPU and a CUDA build of torch"
                )
        return None

    def version(self) -> str:
        versions = library_versions()
        return f"transformers {versions['transformers']} / torch {versions['torch']}"

    def key_parts(self, quant: str) -> dict[str, str]:
        return {**super().key_parts(quant), "device": self.device}

    def artifact_suffix(self, quant: str) -> str:
        return ""

    builds_artifacts = False

    def describe(self, model_path: Path, quant: str) -> str:
        """The float32 model directory is the artifact: dtypes are applied at load time."""
        return f"AutoModelForCausalLM.from_pretrained({str(model_path)!r}, dtype=torch.{quant})"

    def build(self, model: ResolvedModel, quant: str, out: Path) -> str:
        raise NotImplementedError(f"{self.name} loads the model directory itself")

    def open(self, artifact: Artifact, model: ResolvedModel) -> TransformersRunner:
        reason = self.unavailable()
        if reason:
            raise RuntimeUnavailable(reason)
        return TransformersRunner(artifact, self.device, model.spec.trust_remote_code,
                                  self.n_threads, self.budget)


class TransformersRunner(LogitsRunner):
    def __init__(self, artifact: Artifact, device: str = "cpu", trust_remote_code: bool = False,
                 n_threads: int | None = None, budget: MemoryBudget | None = None):
        """``budget``: load with disk offload when the model does not fit it (float32 on
        CPU from a safetensors directory: the reference; accelerate would keep offloaded
        weights in the file's dtype, not a lower one, and a GGUF is dequantized whole by
        transformers)."""
        super().__init__(artifact)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        threads = torch_threads(n_threads)
        if threads is not None:  # process-wide: every runner of a process follows one rule
            torch.set_num_threads(threads)
        self.n_threads = torch.get_num_threads()

        path = artifact.path
        dtype = getattr(torch, artifact.quant) if artifact.quant in DTYPES else torch.float32
        if path.suffix == ".gguf":
            kwargs: dict[str, Any] = {"gguf_file": path.name}
            directory = path.parent
            self.load_call = (
                f"AutoModelForCausalLM.from_pretrained({str(directory)!r}, "
                f"gguf_file={path.name!r}, dtype=torch.float32)"
            )
        else:
            kwargs = {"use_safetensors": True}
            directory = path
            self.load_call = (
                f"AutoModelForCausalLM.from_pretrained({str(path)!r}, "
                f"dtype=torch.{artifact.quant})"
            )
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(
            directory, trust_remote_code=trust_remote_code, **kwargs
        )
        self.plan: LoadPlan | None = None
        self._offload_dir: tempfile.TemporaryDirectory[str] | None = None
        if (budget is not None and device == "cpu" and path.suffix != ".gguf"
                and artifact.quant == "float32"):
            self.plan = plan_load(path, budget.limit)
            if self.plan.offload:
                budget.offload_dir.mkdir(parents=True, exist_ok=True)
                self._offload_dir = tempfile.TemporaryDirectory(dir=budget.offload_dir)
                kwargs.update(device_map="auto", max_memory={"cpu": self.plan.in_memory},
                              offload_folder=self._offload_dir.name)
                self.load_call = (self.load_call[:-1] + ", device_map='auto', max_memory="
                                  f"{{'cpu': {format_size(self.plan.in_memory)!r}}}, "
                                  "offload_folder=...)")
        model: Any = AutoModelForCausalLM.from_pretrained(
            directory, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs
        )
        if not self.offloaded:
            model.to(device)  # in place
        self.model: Any = model
        self.model.eval()
        self.eos = eos_ids(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad = pad if pad is not None else (self.eos[0] if self.eos else 0)

    @property
    def offloaded(self) -> bool:
        """Loaded with disk offload (the weights did not fit the budget)."""
        return self.plan is not None and self.plan.offload

    def close(self) -> None:
        """Drop the model, collect the cycles that hold its tensors and give the freed
        heap back to the OS (:func:`~pytest_groundtruth.core.memory.release_memory`);
        remove what the offload wrote."""
        if hasattr(self, "model"):
            del self.model
        release_memory()
        folder = getattr(self, "_offload_dir", None)
        if folder is not None:
            folder.cleanup()
            self._offload_dir = None

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    @property
    def context_length(self) -> int | None:
        """The positions the model was trained on (``max_position_embeddings``), if known."""
        for key in ("max_position_embeddings", "n_positions"):
            value = getattr(self.model.config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def generate(self, prompt: str, max_new_tokens: int, top_k: int = 0) -> Generation:
        inputs = self.tokenizer(prompt, return_tensors="pt").to(self.device)
        return self._greedy(inputs, max_new_tokens, top_k, f"<{prompt!r}>")

    def render_chat(self, messages: Sequence[Message]) -> tuple[str, list[int]]:
        """The conversation rendered with the tokenizer's chat template (generation prompt
        added) and its token ids, as ``apply_chat_template(..., tokenize=True)`` makes them."""
        chat = [{"role": m.role, "content": m.content} for m in messages]
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"{self.artifact.path}: the tokenizer has no chat template, so "
                             "chat prompts cannot be rendered for this model")
        text = str(self.tokenizer.apply_chat_template(chat, add_generation_prompt=True,
                                                      tokenize=False))
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text, [int(t) for t in ids]

    def chat(self, messages: Sequence[Message], max_new_tokens: int,
             top_k: int = 0) -> Generation:
        import torch

        text, ids = self.render_chat(messages)
        input_ids = torch.tensor([ids], device=self.device)
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        return self._greedy(inputs, max_new_tokens, top_k,
                            f"<apply_chat_template(add_generation_prompt=True): {text!r}>")

    def _greedy(self, inputs: Any, max_new_tokens: int, top_k: int, shown: str) -> Generation:
        """Greedy generation from tokenized ``inputs`` (``input_ids`` and friends)."""
        import torch
        from transformers import GenerationConfig

        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            repetition_penalty=1.0,
            eos_token_id=self.eos,
            pad_token_id=self.pad,
            output_logits=True,
            return_dict_in_generate=True,
        )
        prompt_len = inputs["input_ids"].shape[1]
        torch.manual_seed(SEED)
        clock = TokenClock()
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**inputs, generation_config=config, streamer=clock)
        seconds = time.perf_counter() - start
        first_token, steps = intervals(start, clock.stamps)
        tokens = [int(t) for t in out.sequences[0, prompt_len:].tolist()]
        logits = torch.stack(out.logits)[:, 0, :].float().cpu().numpy()
        logprobs = lp.log_softmax(logits)  # also rejects NaN/Inf
        topk = tuple(lp.top_k(row, top_k) for row in logprobs) if top_k else None
        return Generation(
            tokens=tuple(tokens),
            text=str(self.tokenizer.decode(tokens, skip_special_tokens=True)),
            prompt_tokens=tuple(int(t) for t in inputs["input_ids"][0].tolist()),
            stop_reason="eos" if tokens and tokens[-1] in self.eos else "length",
            seconds=seconds,
            call=f"{self.load_call}.generate({shown}, max_new_tokens={max_new_tokens}, "
            "do_sample=False)",
            topk=topk,
            first_token_seconds=first_token,
            step_seconds=steps,
        )

    def sequence_logprobs(self, ids: Sequence[int]) -> npt.NDArray[np.float64]:
        import torch

        tensor = torch.tensor([list(ids)], device=self.device)
        with torch.inference_mode():
            logits = self.model(tensor).logits[0].float().cpu().numpy()
        return lp.log_softmax(logits)

    def sequence_call(self, n_tokens: int) -> str:
        return f"{self.load_call}(<{n_tokens} tokens>).logits"
