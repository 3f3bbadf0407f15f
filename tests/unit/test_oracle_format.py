"""Oracle files: the schema round-trips byte for byte; corrupt files name file and field."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_groundtruth.oracle.format import OracleError, load_oracle, oracle_path

ROOT = Path(__file__).parents[2]
COMMITTED = sorted((ROOT / "oracle").glob("*/*.json"))


def test_there_are_committed_oracles_for_the_embedded_and_tiny_models() -> None:
    slugs = {p.parent.name for p in COMMITTED}
    assert slugs == {"smollm2-135m", "tiny-llama", "tiny-qwen2", "tiny-gpt2",
                     "tiny-qwen3", "tiny-gemma3", "tiny-phi3",
                     "smollm2-135m-lora", "tiny-llama-lora"}  # merged LoRA adapters
    assert len(COMMITTED) == 9 * 7  # 5 prompts and 2 chat prompts each


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_committed_oracles_validate_and_reserialise_identically(path: Path) -> None:
    oracle = load_oracle(path)
    assert oracle.to_json() == path.read_text(encoding="utf-8")
    if oracle.messages:  # a chat prompt: the rendered text, and the messages of its file
        chat = json.loads((ROOT / "prompts" / "chat" / f"{oracle.prompt_name}.json").read_text())
        assert [{"role": r, "content": c} for r, c in oracle.messages] == chat
        assert oracle.prompt.endswith("<|im_start|>assistant\n")  # generation prompt added
        return
    assert oracle.prompt == (ROOT / "prompts" / f"{oracle.prompt_name}.txt").read_text().strip()


def test_embedded_model_oracle_matches_the_environment_measurement() -> None:
    completion = load_oracle(ROOT / "oracle" / "smollm2-135m" / "completion.json")
    assert completion.tokens[:6] == (7042, 30, 198, 198, 504, 2988)
    assert completion.text.startswith(" Paris.\n\nThe answer is")
    arithmetic = load_oracle(ROOT / "oracle" / "smollm2-135m" / "arithmetic.json")
    assert (arithmetic.tokens, arithmetic.stop_reason, arithmetic.text) == ((2,), "eos", "")


def test_original_format_details() -> None:
    path = ROOT / "oracle" / "smollm2-135m" / "completion.json"
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    assert text.endswith("}\n")
    assert text.startswith('{\n  "')
    for key in ("model", "prompt", "tokens", "text", "max_new_tokens", "seed", "do_sample",
                "transformers_version", "torch_version", "prompt_tokens", "topk"):
        assert key in data
    assert len(data["topk"][0]["ids"]) >= 5


def test_gpu_oracle_location(tmp_path: Path) -> None:
    root = tmp_path / "oracle"
    assert oracle_path(root, "m", "p") == root / "m" / "p.json"
    assert oracle_path(root, "m", "p", "bfloat16", "cuda") == (
        tmp_path / "oracle-gpu" / "m" / "bfloat16" / "p.json")


def _mutate(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    data = json.loads((ROOT / "oracle" / "smollm2-135m" / "code.json").read_text())
    change(data)
    path = tmp_path / "code.json"
    path.write_text(json.dumps(data))
    return path


CORRUPTIONS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("missing tokens", lambda d: d.pop("tokens"), "field 'tokens': missing"),
    ("tokens wrong type", lambda d: d.update(tokens="1 2 3"), "field 'tokens': expected list"),
    ("negative token", lambda d: d["tokens"].__setitem__(0, -1), "field 'tokens'"),
    ("bool seed", lambda d: d.update(seed=True), "field 'seed': expected int"),
    ("schema", lambda d: d.update(schema="other/1"), "field 'schema'"),
    ("truncated topk", lambda d: d["topk"].pop(), "field 'topk': 31 positions for 32"),
    ("topk not sorted", lambda d: d["topk"][3]["logprobs"].reverse(), "topk[3].logprobs"),
    ("token not greedy", lambda d: d["tokens"].__setitem__(4, 12345), "topk[4]"),
    ("stop reason", lambda d: d.update(stop_reason="eos"), "field 'stop_reason'"),
    ("near ties", lambda d: d.update(near_ties=[0]), "field 'near_ties'"),
    ("positive logprob", lambda d: d["topk"][0]["logprobs"].__setitem__(0, 0.5),
     "topk[0].logprobs"),
]


@pytest.mark.parametrize(("change", "message"), [c[1:] for c in CORRUPTIONS],
                         ids=[c[0] for c in CORRUPTIONS])
def test_corrupt_oracle_names_file_and_field(tmp_path: Path,
                                             change: Callable[[dict[str, Any]], None],
                                             message: str) -> None:
    path = _mutate(tmp_path, change)
    with pytest.raises(OracleError) as info:
        load_oracle(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    truncated = tmp_path / "t.json"
    text = (ROOT / "oracle" / "smollm2-135m" / "code.json").read_text()
    truncated.write_text(text[: len(text) // 2])
    with pytest.raises(OracleError, match="not valid JSON"):
        load_oracle(truncated)
    with pytest.raises(OracleError, match="oracle file missing; generate it"):
        load_oracle(tmp_path / "absent.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(OracleError, match="expected a JSON object"):
        load_oracle(tmp_path / "list.json")
