"""A derived model is identified by the weights it was built with, not by tool versions.

Real files throughout: safetensors written with the ``safetensors`` package, and real
rebuilds of the tiny LoRA model under another (pretended) peft version.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from pytest_groundtruth.config.roster import BUILTIN
from pytest_groundtruth.config.settings import load_settings
from pytest_groundtruth.context.inputs import Inputs
from pytest_groundtruth.core import plugins
from pytest_groundtruth.models import content, lora
from pytest_groundtruth.models.sources import ResolvedModel, resolve
from pytest_groundtruth.oracle.files import OracleChange
from pytest_groundtruth.oracle.format import StaleOracle
from pytest_groundtruth.oracle.generation.oracles import WeightsChange

ROOT = Path(__file__).parents[2]


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"model.embed.weight": rng.standard_normal((8, 4)).astype(np.float32),
            "model.layers.0.q_proj.weight": rng.standard_normal((4, 4)).astype(np.float32),
            "model.norm.weight": np.ones(4, dtype=np.float32)}


def _model(folder: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata=metadata)
    return folder


def test_same_tensors_same_fingerprint_whatever_the_file_says(tmp_path: Path) -> None:
    """Header metadata (a library's name and version) and tensor order are not content."""
    weights = _weights()
    a = _model(tmp_path / "a", weights, {"format": "pt"})
    b = _model(tmp_path / "b", dict(reversed(weights.items())),
               {"format": "pt", "written_by": "peft 0.22.0"})
    assert (a / "model.safetensors").read_bytes() != (b / "model.safetensors").read_bytes()
    assert content.tensor_hashes(a) == content.tensor_hashes(b)
    assert content.fingerprint("tiny v2", {"base": "x"}, content.tensor_hashes(a)) == \
        content.fingerprint("tiny v2", {"base": "x"}, content.tensor_hashes(b))


def test_other_bytes_dtype_or_builder_give_another_fingerprint(tmp_path: Path) -> None:
    weights = _weights()
    base = content.fingerprint("b v1", {}, content.tensor_hashes(
        _model(tmp_path / "a", weights, {})))
    nudged = dict(weights)
    nudged["model.norm.weight"] = np.nextafter(weights["model.norm.weight"], 2, dtype=np.float32)
    half = {**weights, "model.norm.weight": weights["model.norm.weight"].astype(np.float16)}
    for name, tensors in (("nudged", nudged), ("half", half)):
        hashes = content.tensor_hashes(_model(tmp_path / name, tensors, {}))
        assert content.fingerprint("b v1", {}, hashes) != base
    same = content.tensor_hashes(tmp_path / "a")
    assert content.fingerprint("b v2", {}, same) != base  # the builder's own version counts


def test_the_change_names_the_tensors_with_their_largest_difference(tmp_path: Path) -> None:
    models = tmp_path / "models"
    weights = _weights()
    old = _model(models / "m-old", weights, {})
    old_fp = content.record(old, "b v1", {})
    moved = {**weights, "model.layers.0.q_proj.weight":
             weights["model.layers.0.q_proj.weight"] + np.float32(0.25)}
    new = _model(models / "m-new", moved, {})
    assert content.record(new, "b v1", {}) != old_fp
    said = content.weights_change(models, old_fp, new)
    assert said.startswith("1 of 3 tensors differ from ")
    assert "model.layers.0.q_proj.weight (max |diff| 0.25)" in said
    assert "embed" not in said
    shutil.rmtree(old)  # the old build is gone: the hash is all there is to say
    assert content.weights_change(models, old_fp, new).startswith(
        "the weights' content hash differs")


def test_a_truncated_file_is_named(tmp_path: Path) -> None:
    folder = _model(tmp_path / "m", _weights(), {})
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-10])
    with pytest.raises(content.ContentError, match=r"model\.safetensors: tensor .* cut short"):
        content.tensor_hashes(folder)


# --------------------------------------------------------------------------- derived models


@pytest.fixture
def cache(tiny: Callable[[str], ResolvedModel], tmp_path: Path) -> Path:
    """A cache of its own for the LoRA builds, sharing the tiny llama (and the embedded
    model its tokenizer comes from) with the tests' cache: hard links where it can."""
    base = tiny("llama")
    embedded = resolve(BUILTIN["smollm2-135m"], base.path.parents[1])
    root = tmp_path / "cache"
    for folder in (base.path, embedded.path):
        try:
            shutil.copytree(folder, root / "models" / folder.name, copy_function=os.link)
        except OSError:
            shutil.copytree(folder, root / "models" / folder.name)
    return root


def _of_weights(committed: Path, copy: Path, fingerprint: str) -> None:
    """A copy of a committed oracle as generated from the weights of ``fingerprint``."""
    data = json.loads(committed.read_text())
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(json.dumps({**data, "model_fingerprint": fingerprint}, indent=2) + "\n")


def _pretend(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    """Another installed version of ``name`` as far as version lookups go (the tool that
    runs is the installed one, so its bytes are the same)."""
    real = plugins.package_version.__wrapped__
    monkeypatch.setattr("pytest_groundtruth.models.sources.package_version",
                        lambda n: value if n == name else real(n))


@pytest.mark.slow
def test_a_new_peft_that_merges_to_the_same_bytes_changes_nothing(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect (issue 21): the merged model's fingerprint hashed peft's version, so a new
    peft release made every committed LoRA oracle stale with identical weights."""
    spec = BUILTIN["tiny-llama-lora"]
    before = resolve(spec, cache)
    _pretend(monkeypatch, "peft", "99.0.0")
    after = resolve(spec, cache)
    assert after.path != before.path  # merged again by the "new" peft ...
    assert after.fingerprint == before.fingerprint  # ... to the same weights
    committed = json.loads((ROOT / "oracle" / "tiny-llama-lora" / "code.json").read_text())
    assert committed["model_fingerprint"] == after.fingerprint


@pytest.mark.slow
def test_a_merge_to_other_bytes_is_another_model_and_says_which_tensors(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = BUILTIN["tiny-llama-lora"]
    before = resolve(spec, cache)
    real_merge = lora.merge

    def other_merge(base: Path, adapter: Path, out: Path) -> None:  # a peft that rounds
        real_merge(base, adapter, out)
        tensors = load_file(str(out / "model.safetensors"))
        name = "model.layers.1.self_attn.v_proj.weight"
        tensors[name] = tensors[name] + np.float32(1e-3)
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})

    monkeypatch.setattr(lora, "merge", other_merge)
    _pretend(monkeypatch, "peft", "98.0.0-rounds")
    after = resolve(spec, cache)
    assert after.fingerprint != before.fingerprint
    said = content.weights_change(after.path.parent, before.fingerprint, after.path)
    assert said.startswith("1 of ")
    assert "model.layers.1.self_attn.v_proj.weight (max |diff| 0.001)" in said

    # The oracle check's line for a committed file of the old weights ...
    oracle = tmp_path / "code.json"
    _of_weights(ROOT / "oracle" / "tiny-llama-lora" / "code.json", oracle, before.fingerprint)
    change = WeightsChange(after).explain(oracle, OracleChange(
        oracle, "changed", "tokens and top-k ids identical; fields changed: model_fingerprint"))
    assert change.detail.startswith("other weights: 1 of ")
    assert "v_proj.weight (max |diff| 0.001)" in change.detail
    assert change.detail.endswith("tokens and top-k ids identical; fields changed: "
                                  "model_fingerprint")

    # ... and the StaleOracle message a parity test shows.
    project = tmp_path / "project"
    shutil.copytree(ROOT / "prompts", project / "prompts")
    _of_weights(ROOT / "oracle" / "tiny-llama-lora" / "code.json",
                project / "oracle" / "tiny-llama-lora" / "code.json", before.fingerprint)
    inputs = Inputs(load_settings(project), lambda slug: after)
    with pytest.raises(StaleOracle) as raised:
        inputs.oracle("tiny-llama-lora", "code")
    message = str(raised.value)
    assert "generated from other weights" in message
    assert "v_proj.weight (max |diff| 0.001)" in message
    assert "whether the tokens moved: `groundtruth oracle --check --tolerance --model " \
           "tiny-llama-lora`" in message


@pytest.mark.slow
def test_the_builtin_adapter_config_holds_our_fields_only(
        tiny: Callable[[str], ResolvedModel], tmp_path: Path) -> None:
    """Defect (issue 21): peft 0.22.0's save_pretrained wrote ``astra_config``, which peft
    0.21.2's LoraConfig refuses, and the cached adapter was shared by both."""
    pytest.importorskip("peft")
    from peft import LoraConfig

    base = tiny("llama").path
    lora.build_adapter(base, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config == lora.adapter_config(base.name)
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]
    made = LoraConfig(**{k: v for k, v in config.items() if k != "peft_type"})
    assert (made.r, made.lora_alpha) == (lora.RANK, lora.ALPHA)


def test_an_adapter_is_identified_by_its_tensors_not_its_header(tmp_path: Path) -> None:
    weights = {"base_model.model.x.lora_A.weight": np.ones((8, 4), dtype=np.float32)}
    for name, meta in (("a", {"format": "pt"}), ("b", {"format": "pt", "by": "peft 1"})):
        _model(tmp_path / name, weights, meta)
        (tmp_path / name / "model.safetensors").rename(
            tmp_path / name / "adapter_model.safetensors")
        (tmp_path / name / "adapter_config.json").write_text(
            json.dumps(lora.adapter_config("base")))
    assert lora.adapter_fingerprint(tmp_path / "a") == lora.adapter_fingerprint(tmp_path / "b")
