"""A real model of another family, end to end: what the matrix collects, which prompts
apply to a model without a chat template, and what our exporter can write."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.ggufio.tokenizer_meta import tokenizer_problem
from pytest_groundtruth.models.chat_template import chat_template_problem, has_chat_template
from pytest_groundtruth.suites.matrix import build_cases


def test_the_matrix_holds_only_the_configured_runtimes(tmp_path: Path) -> None:
    llamacpp = Settings(root=tmp_path, runtimes=("llamacpp",))
    cases = build_cases(llamacpp, ["code", "greeting"])
    assert cases
    assert {c.runtime for c in cases} == {"llamacpp"}
    assert not [c for c in cases if c.suite == "cuda"]
    with_reference = Settings(root=tmp_path, runtimes=("llamacpp", "transformers"))
    assert [c for c in build_cases(with_reference, ["code"]) if c.suite == "cuda"]


def test_a_model_without_a_chat_template_says_so(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<bos>"}))
    assert not has_chat_template(tmp_path)
    problem = chat_template_problem(tmp_path, "gemma", "capital")
    assert problem is not None
    assert "model 'gemma' has no chat template" in problem
    assert "'capital'" in problem
    (tmp_path / "chat_template.jinja").write_text("{{ messages }}")
    assert chat_template_problem(tmp_path, "gemma", "capital") is None


def test_the_exporter_names_a_tokenizer_it_cannot_write(tmp_path: Path) -> None:
    assert "missing" in str(tokenizer_problem(tmp_path))
    (tmp_path / "tokenizer.json").write_text(json.dumps(
        {"model": {"type": "BPE", "byte_fallback": True, "vocab": {}, "merges": []}}))
    assert "byte-fallback (SentencePiece) BPE" in str(tokenizer_problem(tmp_path))
    (tmp_path / "tokenizer.json").write_text(json.dumps(
        {"model": {"type": "BPE", "byte_fallback": False, "vocab": {}, "merges": []}}))
    assert tokenizer_problem(tmp_path) is None
