"""Where a calibrated bound comes from: one reader, the resolution order, the provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_groundtruth.cli.main import main
from pytest_groundtruth.config.settings import Bound, Settings, load_settings
from pytest_groundtruth.framework import bounds
from pytest_groundtruth.framework.bounds import BoundsFileError, lookup, model_document, resolve
from pytest_groundtruth.suites.spec import get_suite, suite_names

CALIBRATED = ("agreement", "ppl", "rescore", "consistency")


def test_every_calibrated_suite_declares_its_file_and_one_reader_reads_it() -> None:
    found = {n for n in suite_names() if get_suite(n).calibration is not None}
    assert set(CALIBRATED) <= found
    for name in CALIBRATED:
        calibration = get_suite(name).calibration
        assert calibration is not None
        table = bounds.package_file(calibration.file)
        assert table.model == "smollm2-135m"
        assert table.bounds["int8"], name
        assert set(calibration.params) <= set(get_suite(name).params)


def test_lookup_prefers_the_runtime_scheme_then_the_name_then_any() -> None:
    table = {"llamacpp:int4": {"x": 1.0}, "int4": {"x": 2.0}, "*": {"x": 3.0}}
    assert lookup(table, "x", "int4", "llamacpp") == 1.0
    assert lookup(table, "x", "int4", "torchao") == 2.0
    assert lookup(table, "x", "q2_k", "llamacpp") == 3.0
    assert lookup(table, "y", "int4") is None


def _agreement(settings: Settings, param: str, model: str = "smollm2-135m",
               automatic: bounds.Automatic | None = None) -> Bound:
    suite = get_suite("agreement")
    return resolve(settings, "agreement", param, None, suite.calibration, model=model,
                   runtime="llamacpp", quant="int4", automatic=automatic)


def test_a_package_default_names_its_model_and_the_command_for_this_one(tmp_path: Path
                                                                         ) -> None:
    found = _agreement(Settings(root=tmp_path), "max_kl")
    assert found.value == get_suite("agreement").default("max_kl", "int4", "llamacpp")
    assert "package default calibrated on smollm2-135m" in found.origin
    assert "agreement_bounds.json" in found.origin
    assert "`groundtruth calibrate --model smollm2-135m`" in found.origin


def test_random_weight_models_get_their_own_calibration(tmp_path: Path) -> None:
    found = _agreement(Settings(root=tmp_path), "max_kl", model="tiny-llama")
    table = bounds.package_file("agreement_bounds.json")
    assert found.value == lookup(table.random_bounds, "max_kl", "int4", "llamacpp")
    assert "tiny random-weight models" in found.origin


def test_committed_file_beats_automatic_which_beats_the_default(tmp_path: Path) -> None:
    settings = Settings(root=tmp_path)
    auto = _agreement(settings, "max_kl", automatic=lambda: ({"max_kl": 0.123}, "made so"))
    assert auto.value == 0.123
    assert auto.origin.startswith("automatic: made so")
    path = bounds.model_file(settings, "smollm2-135m")
    path.parent.mkdir(parents=True)
    path.write_text(model_document("smollm2-135m", "f" * 64,
                                   {"agreement": {"llamacpp:int4": {"max_kl": 0.2}}},
                                   {"llamacpp:int4": "llama.cpp Q4_0 (recipe-matched)"}))
    mine = _agreement(settings, "max_kl", automatic=lambda: ({"max_kl": 0.123}, "made so"))
    assert mine.value == 0.2
    assert str(path) in mine.origin
    assert "llama.cpp Q4_0 (recipe-matched)" in mine.origin
    assert "`groundtruth calibrate --model smollm2-135m`" in mine.origin
    # a parameter the committed file lacks falls through to the next source
    assert _agreement(settings, "min_top1").origin.startswith("package default")


def test_a_rule_beats_every_file_and_its_key_is_the_name_failures_print(tmp_path: Path
                                                                          ) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[[tool.groundtruth.bounds]]\nsuite = 'agreement'\ntext_max_kl = 0.5\n"
        "reason = 'measured 0.26 on an all-Q4_0 file'\n")
    settings = load_settings(tmp_path)
    found = _agreement(settings, "text_max_kl",
                       automatic=lambda: ({"text_max_kl": 0.1}, "made so"))
    assert found.value == 0.5
    assert found.origin.endswith("measured 0.26 on an all-Q4_0 file")


def test_an_unreadable_model_file_names_the_file(tmp_path: Path) -> None:
    settings = Settings(root=tmp_path)
    path = bounds.model_file(settings, "smollm2-135m")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"suites": {"agreement": {"int4": {"max_kl": "high"}}}}))
    with pytest.raises(BoundsFileError, match=str(path)):
        _agreement(settings, "max_kl")
    path.write_text("{")
    with pytest.raises(BoundsFileError, match="not a readable bounds file"):
        _agreement(settings, "max_kl")


def test_without_any_bound_the_reason_says_what_to_run(tmp_path: Path) -> None:
    suite = get_suite("agreement")
    data = bounds.package_file("agreement_bounds.json")
    assert "*" in data.bounds  # every quantization has a default today; a file without one:
    found = resolve(Settings(root=tmp_path), "agreement", "max_kl", None,
                    bounds.Calibration("no_such_bounds.json", ("max_kl",),
                                       suite.calibration.measure, suite.calibration.derive)
                    if suite.calibration else None,
                    model="qwen2-0.5b", runtime="llamacpp", quant="int4",
                    automatic=lambda: (None, "llama.cpp's converter is not at hand"))
    assert found.value is None
    assert "llama.cpp's converter is not at hand" in found.origin
    assert "groundtruth calibrate --model qwen2-0.5b" in found.origin


def test_a_committed_entry_applies_to_the_artifact_it_was_matched_to(tmp_path: Path) -> None:
    settings = Settings(root=tmp_path)
    path = bounds.model_file(settings, "smollm2-135m")
    path.parent.mkdir(parents=True)
    path.write_text(model_document("smollm2-135m", "f" * 64,
                                   {"agreement": {"llamacpp:int4": {"max_kl": 0.2}}},
                                   {"llamacpp:int4": "llama.cpp Q4_0 (recipe-matched)"},
                                   {"llamacpp:int4": bounds.BUILT}))
    suite = get_suite("agreement")

    def judged(artifact: str) -> Bound:
        return resolve(settings, "agreement", "max_kl", None, suite.calibration,
                       model="smollm2-135m", runtime="llamacpp", quant="int4",
                       automatic=lambda: ({"max_kl": 0.3}, "type-matched"),
                       artifact=lambda: artifact)

    assert judged(bounds.BUILT).value == 0.2
    # a supplied file (other tensor types, maybe) is calibrated on its own references
    assert judged("ab" * 32).value == 0.3


def test_calibrate_model_without_a_gguf_runtime_says_why_and_writes_nothing(
        tmp_path: Path, gt_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.groundtruth]\nmodels = ["tiny-llama"]\nruntimes = ["transformers"]\n'
        f'quantizations = ["float32"]\ncache_dir = {str(gt_cache)!r}\n')
    code = main(["calibrate", "--root", str(tmp_path), "--model", "tiny-llama"])
    out, err = capsys.readouterr()
    assert code == 3
    assert "does not run GGUF files" in out
    assert "no bounds could be calibrated for tiny-llama" in err
    assert not bounds.model_file(load_settings(tmp_path), "tiny-llama").exists()
