"""Speculative decoding: acceptance counting, drafts, and the engines' speculative paths.

The engines run for real: transformers' assisted generation on the tiny llama with its
1-layer draft and with itself, llama-cpp-python's prompt-lookup draft on its GGUF. The
suite is then run as users run it (pytester), including with a deliberately broken
verifier, which it must catch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_groundtruth.config.roster import BUILTIN
from pytest_groundtruth.measures.acceptance import Acceptance, Proposal, acceptance
from pytest_groundtruth.models import content, drafts
from pytest_groundtruth.models.sources import ResolvedModel, resolve
from pytest_groundtruth.oracle.format import load_oracle
from pytest_groundtruth.runtimes.base import Artifact
from pytest_groundtruth.runtimes.hf import TransformersRunner
from pytest_groundtruth.runtimes.llamacpp import LlamaCppRunner, LlamaCppRuntime
from pytest_groundtruth.runtimes.speculative import (
    SpeculativeGeneration,
    assisted_generate,
    prompt_lookup_generate,
)
from pytest_groundtruth.store.artifacts import ArtifactCache, prepare

ROOT = Path(__file__).parents[2]
Project = Callable[..., pytest.Pytester]
# Tiny random-weight models have near-flat logits, so their first flips are near ties that
# the default rule forgives; these projects exercise failures, so they count every position.
TOOL = ('models = ["tiny-llama"]\nruntimes = ["transformers", "llamacpp"]\nnear_ties = "count"\n'
        'quantizations = ["int8"]\nsuites = ["speculative"]\n'
        'prompts = ["arithmetic", "code", "completion", "greeting"]\n')
DRAFT_IDS = [f"speculative[tiny-llama-transformers-tiny-llama-draft-float32-{p}]"
             for p in ("arithmetic", "code", "completion", "greeting")]


# --------------------------------------------------------------------------- counting


def test_acceptance_is_the_matched_prefix_of_each_proposal() -> None:
    tokens = [1, 2, 3, 4, 5, 6]
    proposals = [
        Proposal(0, (1, 2, 9)),  # 2 of 3 accepted, then the target's own token (3)
        Proposal(3, (4, 5, 6, 7, 8)),  # 3 accepted; 7, 8 lie past the end: not counted
        Proposal(6, (1, 2)),  # entirely past the end: not a drafting step
        Proposal(2, ()),  # prompt lookup found nothing
    ]
    stats = acceptance(proposals, tokens)
    assert stats == Acceptance(drafted=6, accepted=5, steps=2)
    assert stats.rate == pytest.approx(5 / 6)
    assert stats.mean_length == pytest.approx(1 + 5 / 2)
    assert "acceptance rate 0.833 (5/6 drafted tokens), mean acceptance length 3.50" in \
        stats.describe()


def test_nothing_drafted_has_no_rate() -> None:
    stats = acceptance([Proposal(0, ())], [1, 2])
    assert stats.rate is None
    assert stats.mean_length is None
    assert stats.describe() == "nothing drafted"
    with pytest.raises(ValueError, match="starts at generated position -1"):
        acceptance([Proposal(-1, (1,))], [1])


# --------------------------------------------------------------------------- drafts


def test_the_draft_is_the_targets_first_layers_byte_for_byte(
        tiny: Callable[[str], ResolvedModel], gt_cache: Path) -> None:
    from safetensors.torch import load_file

    target = tiny("llama")
    draft = resolve(BUILTIN["tiny-llama-draft"], gt_cache)
    config = json.loads((draft.path / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    kept = load_file(str(draft.path / "model.safetensors"))
    full = load_file(str(target.path / "model.safetensors"))
    assert set(kept) == {n for n in full if drafts.block_of(n) in (None, 0)}
    assert all(kept[n].equal(full[n]) for n in kept)
    assert (draft.path / "tokenizer.json").read_bytes() == \
        (target.path / "tokenizer.json").read_bytes()
    assert drafts.vocabulary_mismatch(target.path, draft.path) is None
    assert draft.fingerprint == content.fingerprint(
        f"truncate v{drafts.BUILDER_VERSION}", {"target": target.fingerprint, "layers": 1},
        content.tensor_hashes(draft.path))


def test_a_draft_must_drop_at_least_one_layer(tiny: Callable[[str], ResolvedModel],
                                              tmp_path: Path) -> None:
    with pytest.raises(drafts.DraftError, match=r"must keep 1\.\.1 of the target's 2 layers"):
        drafts.truncate(tiny("llama").path, 2, tmp_path / "draft")


def other_vocabulary_model(path: Path) -> Path:
    """A 2-layer llama with a 512-word word-level tokenizer of its own."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 512)}}
    words = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def test_another_vocabulary_names_both_tokenizers(tiny: Callable[[str], ResolvedModel],
                                                  tmp_path: Path) -> None:
    target = tiny("llama").path
    other = other_vocabulary_model(tmp_path / "other")
    problem = drafts.vocabulary_mismatch(target, other)
    assert problem is not None
    assert f"{other / 'tokenizer.json'}, 512 tokens" in problem
    assert f"{target / 'tokenizer.json'}, 49152 tokens" in problem
    assert "first difference: id 0 is '<|endoftext|>' in the target and '<unk>'" in problem


# --------------------------------------------------------------------------- engines


def _runner(model: ResolvedModel) -> TransformersRunner:
    return TransformersRunner(Artifact("transformers", model.slug, "float32", model.path,
                                       model.fingerprint, "test"))


@pytest.mark.slow
def test_assisted_generation_gives_the_oracle_and_the_target_accepts_itself(
        tiny: Callable[[str], ResolvedModel], gt_cache: Path) -> None:
    target = _runner(tiny("llama"))
    draft = _runner(resolve(BUILTIN["tiny-llama-draft"], gt_cache))
    oracle = load_oracle(ROOT / "oracle" / "tiny-llama" / "code.json")
    weak = assisted_generate(target, draft, oracle.prompt, 32, draft_tokens=5)
    same = assisted_generate(target, target, oracle.prompt, 32, draft_tokens=5)
    assert weak.generation.tokens == same.generation.tokens == oracle.tokens
    # The 1-layer draft proposes 5 tokens at every step and the target rejects most.
    assert weak.acceptance.steps >= 20
    assert all(len(p.tokens) <= 5 for p in weak.proposals)
    assert weak.acceptance.rate is not None
    assert weak.acceptance.rate < 0.2
    # The target drafting for itself: every drafted token accepted, 6 tokens per pass.
    assert same.acceptance.rate == 1.0
    assert same.acceptance.steps == 6
    assert same.acceptance.drafted == 26
    # transformers' generate is the class's own again
    assert "generate" not in vars(draft.model)
    assert "generate" not in vars(target.model)


@pytest.mark.slow
def test_a_verifier_that_trusts_the_draft_gives_the_drafts_tokens(
        tiny: Callable[[str], ResolvedModel], gt_cache: Path) -> None:
    target = _runner(tiny("llama"))
    draft = _runner(resolve(BUILTIN["tiny-llama-draft"], gt_cache))
    oracle = load_oracle(ROOT / "oracle" / "tiny-llama" / "code.json")
    broken = assisted_generate(target, draft, oracle.prompt, 32, draft_tokens=5,
                               trust_draft=True)
    assert broken.generation.tokens != oracle.tokens
    assert broken.acceptance.rate == 1.0
    assert "BROKEN verifier" in broken.method


def _lookup(model: ResolvedModel, cache: Path, prompt: str, n_threads: int = 1
            ) -> tuple[tuple[int, ...], SpeculativeGeneration, tuple[int, ...]]:
    """(own greedy, prompt lookup, own greedy again) on the model's int8 GGUF."""
    artifact = prepare(LlamaCppRuntime(), model, "int8", ArtifactCache(cache))
    with LlamaCppRunner(artifact, n_threads=n_threads) as runner:
        own = runner.generate(prompt, 32).tokens
        looked_up = prompt_lookup_generate(runner, prompt, 32, num_pred_tokens=10)
        again = runner.generate(prompt, 32).tokens  # the runner is left as it was
    return own, looked_up, again


@pytest.mark.requires_llamacpp
def test_prompt_lookup_reproduces_llamacpps_own_greedy(
        tiny: Callable[[str], ResolvedModel], gt_cache: Path) -> None:
    own, looked_up, again = _lookup(tiny("llama"), gt_cache, "a a a a a a a a a a")
    assert looked_up.generation.tokens == own == again
    assert looked_up.proposals  # the draft is consulted at every verification step
    assert "Llama.generate(<ids of" in looked_up.generation.call
    assert "temp=0.0, repeat_penalty=1.0" in looked_up.generation.call


@pytest.mark.slow
@pytest.mark.requires_llamacpp
def test_prompt_lookup_drafts_and_accepts_on_the_embedded_model(gt_cache: Path) -> None:
    # The instruct model repeats itself ("12:12:53."): the lookup finds n-grams to draft.
    prompt = "The capital of France is"
    own, looked_up, again = _lookup(resolve(BUILTIN["smollm2-135m"], gt_cache), gt_cache,
                                    prompt, n_threads=2)
    assert looked_up.generation.tokens == own == again
    stats = looked_up.acceptance
    assert stats.drafted > 0
    assert stats.accepted > 0


# --------------------------------------------------------------------------- the suite


def _results(pytester: pytest.Pytester) -> dict[str, dict[str, object]]:
    data = json.loads((pytester.path / "r.json").read_text())
    return {r["name"]: r for r in data["results"]}


@pytest.mark.slow
@pytest.mark.requires_llamacpp
@pytest.mark.parametrize("args", [[], ["-n", "2"]], ids=["plain", "n2"])
def test_the_suite_passes_with_both_drafts_and_reports_acceptance(
        make_project: Project, args: list[str]) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    result = pytester.runpytest(*args, "--gt-results", "r.json")
    result.assert_outcomes(passed=12)
    seen = _results(pytester)
    selfs = [r for n, r in seen.items() if "-self-" in n]
    assert len(selfs) == 4
    for record in selfs:
        details = record["result"]["details"]  # type: ignore[index]
        assert details["acceptance_rate"] == 1.0
        assert "acceptance rate 1.000" in record["result"]["summary"]  # type: ignore[index]
    for name in DRAFT_IDS:
        details = seen[name]["result"]["details"]  # type: ignore[index]
        assert 0 <= details["acceptance_rate"] < 0.2
        assert details["drafted"] > 100
    assert sum(1 for n in seen if "-llamacpp-lookup-int8-" in n) == 4


@pytest.mark.slow
def test_a_minimum_acceptance_rate_fails_with_the_figure(make_project: Project) -> None:
    pytester = make_project(
        TOOL, models=("tiny-llama",),
        groundtruth_toml="[[bounds]]\nsuite = 'speculative'\nruntime = 'transformers'\n"
                         "min_acceptance = 0.5\nreason = 'a draft worth its cost'\n")
    result = pytester.runpytest("-k", "transformers and code")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "speculative[[]tiny-llama-transformers-tiny-llama-draft-float32-code[]]: tokens "
        "identical to the oracle (32 tokens); acceptance rate 0.0* (*/* drafted tokens), mean "
        "acceptance length 1.* over * drafting steps (< minimum 0.5)",
        "  bound: *'min_acceptance': 0.5* (*min_acceptance: *groundtruth.toml: a draft worth "
        "its cost)",
    ])


BROKEN = """
# A deliberately wrong verification step: the target accepts every draft token unchecked.
import functools
from pytest_groundtruth.context.results import Results
from pytest_groundtruth.runtimes import speculative as engine
from pytest_groundtruth.suites import speculative as suite

suite.assisted_generate = functools.partial(engine.assisted_generate, trust_draft=True)
# The broken engine's results must neither come from nor go to the shared result store.
Results.cached = lambda self, kind, artifact, inputs, make, decode: decode(make())
"""


@pytest.mark.slow
def test_a_broken_verification_step_is_caught(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    pytester.makeconftest(BROKEN)
    result = pytester.runpytest("-k", "transformers")
    # The target drafting for itself passes either way; the 1-layer draft's tokens win.
    result.assert_outcomes(passed=4, failed=4)
    result.stdout.fnmatch_lines([
        "speculative[[]tiny-llama-transformers-tiny-llama-draft-float32-code[]]: */32 tokens "
        "differ from the oracle (> 0), first divergence at position *; acceptance rate 1.000*",
        "  note: method: transformers assisted generation, *BROKEN verifier*",
    ])


@pytest.mark.slow
def test_a_draft_with_another_vocabulary_is_an_error_naming_both(
        make_project: Project, tmp_path: Path) -> None:
    other = other_vocabulary_model(tmp_path / "other")
    pytester = make_project(
        TOOL + "[tool.groundtruth.speculative]\ndrafts = { tiny-llama = ['other'] }\n"
        f"[tool.groundtruth.roster.other]\nsource = 'path:{other}'\narchitecture = 'llama'\n"
        "layers = 2\nheads = 4\nkv_heads = 4\nhidden = 64\nvocab = 512\nppl_ceiling = 1e6\n",
        models=("tiny-llama",))
    result = pytester.runpytest("-k", "transformers and code")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "speculative[[]tiny-llama-transformers-other-float32-code[]]: ModelError: draft "
        "'other' cannot assist 'tiny-llama': the draft's tokenizer (* "
        f"{other}/tokenizer.json, 512 tokens) is not the target's (* 49152 tokens)*",
    ])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("draft_tokens = 0", "*[[]speculative[]] key 'draft_tokens' = 0 must be a positive*"),
        ("drafts = { tiny-llama = ['nope'] }",
         "*[[]speculative[]] drafts: 'nope' is not in the roster*"),
        ("drafts = { tiny-llama = [] }", "*key 'drafts' must map a target model to a non-*"),
        ("lookup = 3", "*[[]speculative[]] unknown key(s) 'lookup'*"),
    ],
)
def test_bad_speculative_config_names_the_key(make_project: Project, table: str,
                                              message: str) -> None:
    pytester = make_project(TOOL + f"[tool.groundtruth.speculative]\n{table}\n")
    result = pytester.runpytest("--collect-only", "-q")
    assert result.ret != 0
    result.stdout.fnmatch_lines([message])
