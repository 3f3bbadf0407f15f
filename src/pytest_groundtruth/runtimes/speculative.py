"""Speculative decoding through the engines' own code paths, with what each draft proposed.

* transformers: ``model.generate(..., assistant_model=draft)`` (assisted generation), greedy,
  the draft proposing a constant :data:`draft_tokens` per step (``num_assistant_tokens``,
  ``num_assistant_tokens_schedule="constant"``, no confidence cut-off, set on the draft's
  generation config as transformers reads them). What the draft proposed is recorded by
  wrapping the draft model's ``generate`` for the duration of the call (the candidate
  generator calls it once per step); transformers' own verification is untouched.
* llama.cpp: llama-cpp-python's ``Llama.generate`` with ``LlamaPromptLookupDecoding`` as
  its ``draft_model``. Driven greedily so that it is comparable with the in-process greedy
  loop of :mod:`~pytest_groundtruth.runtimes.llamacpp`: ``temp=0.0`` makes llama.cpp's
  sampler chain the greedy sampler (argmax, the first maximum on ties: the lowest id, as
  our loop), ``repeat_penalty=1.0`` with zero frequency and presence penalties makes the
  penalty stage a no-op, no grammar, no logits processors; the tokens are taken from the
  generator one by one and the stop rule is ours (after the GGUF's end-of-sequence token,
  or after ``max_new_tokens``), not ``create_completion``'s (which stops at llama.cpp's
  text-matched end-of-generation set). The draft model is wrapped to record its
  proposals; llama-cpp-python's verification (sample at every drafted position, keep the
  draft while it equals the sample, roll the KV cache back at the first difference) is
  untouched.

Acceptance is then counted from the proposals and the generated tokens
(:mod:`pytest_groundtruth.measures.acceptance`).

``trust_draft=True`` (tests only) breaks transformers' verification on purpose: a logits
processor replaces the target's scores at every drafted position with the draft's own
token, so every draft is "accepted without checking". The speculative suite must fail
on it (tests/engines/test_speculative.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pytest_groundtruth.core.failures import EngineFailure, FailureKind
from pytest_groundtruth.measures.acceptance import Acceptance, Proposal, acceptance
from pytest_groundtruth.runtimes.base import Generation

if TYPE_CHECKING:
    from pytest_groundtruth.runtimes.hf import TransformersRunner
    from pytest_groundtruth.runtimes.llamacpp import LlamaCppRunner


@dataclass(frozen=True)
class SpeculativeGeneration:
    """A greedy generation made with a draft, and what the draft proposed at each step."""

    generation: Generation
    proposals: tuple[Proposal, ...]
    method: str  # the draft and its settings, in words

    @property
    def acceptance(self) -> Acceptance:
        return acceptance(self.proposals, self.generation.tokens)

    def to_json(self) -> dict[str, Any]:
        return {"generation": self.generation.to_json(), "method": self.method,
                "proposals": [asdict(p) for p in self.proposals]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SpeculativeGeneration:
        return cls(Generation.from_json(data["generation"]),
                   tuple(Proposal(int(p["start"]), tuple(p["tokens"]))
                         for p in data["proposals"]),
                   str(data["method"]))


# --------------------------------------------------------------------------- transformers


class _Recorder:
    """Wraps a draft model's ``generate``: records each proposal the candidate generator
    asks for (calls without ``assistant_model``; the outer call, when the draft is the
    target itself, has one and is passed through)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.calls: list[tuple[int, list[int]]] = []  # (input length, full output sequence)
        self.drafting = False

    @contextmanager
    def installed(self) -> Iterator[None]:
        original = self.model.generate

        def generate(*args: Any, **kwargs: Any) -> Any:
            if "assistant_model" in kwargs:
                return original(*args, **kwargs)
            ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
            self.drafting = True
            try:
                out = original(*args, **kwargs)
            finally:
                self.drafting = False
            sequences = out.sequences if hasattr(out, "sequences") else out
            self.calls.append((int(ids.shape[1]), [int(t) for t in sequences[0].tolist()]))
            return out

        self.model.generate = generate
        try:
            yield
        finally:
            del self.model.generate  # the class's method again

    def proposals(self, prompt_len: int) -> tuple[Proposal, ...]:
        return tuple(Proposal(start - prompt_len, tuple(seq[start:]))
                     for start, seq in self.calls)


def _trust_draft(recorder: _Recorder) -> Any:
    """The broken verifier: at a drafted position the target's scores become the draft's
    token (no check); the bonus position after the draft is left alone."""
    import torch
    from transformers import LogitsProcessor

    class TrustDraft(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            if recorder.drafting or not recorder.calls:
                return scores
            start, sequence = recorder.calls[-1]
            position = int(input_ids.shape[1])
            if start <= position < len(sequence):
                forced = torch.full_like(scores, float("-inf"))
                forced[:, sequence[position]] = 0.0
                return forced
            return scores

    return TrustDraft()


@contextmanager
def _draft_settings(model: Any, draft_tokens: int) -> Iterator[None]:
    """A constant number of drafted tokens per step: transformers reads these from the
    *draft's* generation config. Restored afterwards (the draft may be the target)."""
    config = model.generation_config
    keys = ("num_assistant_tokens", "num_assistant_tokens_schedule",
            "assistant_confidence_threshold")
    saved = {k: getattr(config, k, None) for k in keys}
    config.num_assistant_tokens = draft_tokens
    config.num_assistant_tokens_schedule = "constant"
    config.assistant_confidence_threshold = 0.0  # falsy: no early stop of the draft
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(config, key, value)


def assisted_generate(target: TransformersRunner, draft: TransformersRunner, prompt: str,
                      max_new_tokens: int, draft_tokens: int, trust_draft: bool = False
                      ) -> SpeculativeGeneration:
    """Greedy assisted generation of ``target`` with ``draft`` (which may be ``target``)."""
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        repetition_penalty=1.0,
        eos_token_id=target.eos,
        pad_token_id=target.pad,
    )
    recorder = _Recorder(draft.model)
    processors = LogitsProcessorList([_trust_draft(recorder)] if trust_draft else [])
    inputs = target.tokenizer(prompt, return_tensors="pt").to(target.device)
    prompt_len = int(inputs["input_ids"].shape[1])
    same = draft.model is target.model
    with _draft_settings(draft.model, draft_tokens), recorder.installed():
        start = time.perf_counter()
        with torch.inference_mode():
            out = target.model.generate(**inputs, generation_config=config,
                                        assistant_model=draft.model,
                                        logits_processor=processors)
        seconds = time.perf_counter() - start
    tokens = [int(t) for t in out[0, prompt_len:].tolist()]
    draft_name = "the target itself" if same else draft.load_call
    method = (f"transformers assisted generation, draft {draft_name}, {draft_tokens} tokens "
              "per step (constant schedule, no confidence cut-off)"
              + ("; BROKEN verifier: drafts accepted unchecked" if trust_draft else ""))
    generation = Generation(
        tokens=tuple(tokens),
        text=str(target.tokenizer.decode(tokens, skip_special_tokens=True)),
        prompt_tokens=tuple(int(t) for t in inputs["input_ids"][0].tolist()),
        stop_reason="eos" if tokens and tokens[-1] in target.eos else "length",
        seconds=seconds,
        call=(f"{target.load_call}.generate(<{prompt!r}>, max_new_tokens={max_new_tokens}, "
              f"do_sample=False, assistant_model=<{'target' if same else 'draft'}>)"),
    )
    return SpeculativeGeneration(generation, recorder.proposals(prompt_len), method)


# --------------------------------------------------------------------------- llama.cpp


def prompt_lookup_generate(runner: LlamaCppRunner, prompt: str, max_new_tokens: int,
                           num_pred_tokens: int = 10, max_ngram_size: int = 2
                           ) -> SpeculativeGeneration:
    """Greedy generation of the runner's model with llama-cpp-python's prompt-lookup draft."""
    from llama_cpp.llama_speculative import LlamaDraftModel, LlamaPromptLookupDecoding

    ids = runner.tokenize(prompt)
    if not ids:
        raise ValueError(f"prompt {prompt!r} tokenizes to no tokens")
    needed = len(ids) + max_new_tokens + num_pred_tokens  # drafts past the end are evaluated
    if needed > runner.n_ctx:
        raise ValueError(f"prompt ({len(ids)} tokens) + {max_new_tokens} + a draft of "
                         f"{num_pred_tokens} need {needed} positions; the llama.cpp context "
                         f"holds {runner.n_ctx}")
    lookup = LlamaPromptLookupDecoding(max_ngram_size=max_ngram_size,
                                       num_pred_tokens=num_pred_tokens)
    proposals: list[Proposal] = []

    class Recording(LlamaDraftModel):
        def __call__(self, input_ids: Any, /, **kwargs: Any) -> Any:
            drafted = lookup(input_ids, **kwargs)
            proposals.append(Proposal(len(input_ids) - len(ids),
                                      tuple(int(t) for t in drafted)))
            return drafted

    drafter = (f"LlamaPromptLookupDecoding(max_ngram_size={max_ngram_size}, "
               f"num_pred_tokens={num_pred_tokens})")
    call = (f"{runner.load_call} with draft_model={drafter}: "
            f"Llama.generate(<ids of {prompt!r}>, temp=0.0, repeat_penalty=1.0, "
            f"frequency_penalty=0.0, presence_penalty=0.0), stop after eos {runner.eos} or "
            f"{max_new_tokens} tokens")
    llm = runner.llm
    tokens: list[int] = []
    previous = llm.draft_model
    llm.draft_model = Recording()
    llm.reset()  # no KV-cache prefix reuse from an earlier call
    stream = llm.generate(ids, temp=0.0, repeat_penalty=1.0, frequency_penalty=0.0,
                          presence_penalty=0.0, reset=True)
    start = time.perf_counter()
    try:
        for token in stream:
            tokens.append(int(token))
            if token in runner.eos or len(tokens) >= max_new_tokens:
                break
    except Exception as exc:  # llama_decode failures surface as RuntimeError
        raise EngineFailure(FailureKind.CRASHED, f"llama.cpp speculative generation failed: "
                            f"{exc}", call=call) from exc
    finally:
        stream.close()
        llm.draft_model = previous
        llm.reset()
    seconds = time.perf_counter() - start
    generation = Generation(
        tokens=tuple(tokens),
        text=runner.decode(tokens),
        prompt_tokens=tuple(ids),
        stop_reason="eos" if tokens and tokens[-1] in runner.eos else "length",
        seconds=seconds,
        call=call,
    )
    return SpeculativeGeneration(generation, tuple(proposals),
                                 f"llama.cpp prompt lookup ({drafter}), greedy sampler")
