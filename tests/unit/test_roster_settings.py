"""The roster and [tool.groundtruth]: validation names the file and the key."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pytest_groundtruth.config.roster import BUILTIN, ModelSpec, RosterError, spec_from_table
from pytest_groundtruth.config.settings import Bound, ConfigError, Settings, load_settings
from pytest_groundtruth.framework.bounds import resolve
from pytest_groundtruth.suites.spec import get_suite

GOOD = {
    "source": "hf:org/model",
    "architecture": "llama",
    "layers": 2,
    "heads": 4,
    "kv_heads": 2,
    "hidden": 64,
    "vocab": 100,
    "ppl_ceiling": 30,
}


def write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "pyproject.toml").write_text("[tool.groundtruth]\n" + body)
    return tmp_path


def test_builtin_roster_matches_the_original_and_the_embedded_model() -> None:
    assert BUILTIN["smollm-135m"].source == "hf:HuggingFaceTB/SmolLM-135M"
    assert BUILTIN["qwen2-0.5b"].source == "hf:Qwen/Qwen2-0.5B"
    assert BUILTIN["gpt2-124m"].source == "hf:openai-community/gpt2"
    original = BUILTIN["smollm-135m"]  # the original roster states its shapes
    assert (original.layers, original.heads, original.kv_heads, original.hidden,
            original.vocab) == (30, 9, 3, 576, 49152)
    embedded = BUILTIN["smollm2-135m"]  # the embedded model is its source (and ceiling)
    assert embedded.declared() == {}
    assert embedded.ppl_ceiling == 20.0
    tiny = {s: spec for s, spec in BUILTIN.items() if spec.scheme == "tiny"}
    assert {spec.source for spec in tiny.values()} == {
        f"tiny:{a}" for a in ("llama", "qwen2", "gpt2", "qwen3", "gemma3", "phi3")}
    assert all(spec.declared() == {} and spec.ppl_ceiling is None for spec in tiny.values())
    assert not any(spec.trust_remote_code for spec in BUILTIN.values())


def test_source_alone_is_an_entry() -> None:
    spec = spec_from_table("mine", {"source": "path:models/mine"})
    assert spec.declared() == {}
    assert spec.ppl_ceiling is None
    assert spec.tokenizer_pre is None
    assert spec_from_table("g", {"source": "tiny:gemma3", "architecture": "gemma3"}
                           ).declared() == {"architecture": "gemma3"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"source": "s3://x"}, "field 'source'"),
        ({"architecture": "not a type"}, "field 'architecture'"),
        ({"layers": 0}, "field 'layers'"),
        ({"heads": 4, "kv_heads": 3}, "not a multiple of kv_heads"),
        ({"ppl_ceiling": 0.5}, "field 'ppl_ceiling'"),
    ],
)
def test_bad_roster_values(change: dict[str, object], message: str) -> None:
    with pytest.raises(RosterError, match=message) as info:
        spec_from_table("mine", {**GOOD, **change})
    assert "'mine'" in str(info.value)


def test_roster_table_unknown_and_missing_keys() -> None:
    with pytest.raises(RosterError, match=r"unknown key.*'layerz'"):
        spec_from_table("mine", {**GOOD, "layerz": 3})
    partial = dict(GOOD)
    del partial["source"]
    with pytest.raises(RosterError, match=r"missing required key.*source"):
        spec_from_table("mine", partial)


def test_settings_add_and_override_models(tmp_path: Path) -> None:
    table = "\n".join(f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}"
                      for k, v in GOOD.items())
    root = write(tmp_path, 'models = ["mine", "gpt2-124m"]\n'
                 f"[tool.groundtruth.roster.mine]\n{table}\n"
                 "[tool.groundtruth.roster.gpt2-124m]\nppl_ceiling = 35\n")
    settings = load_settings(root)
    assert settings.models == ("mine", "gpt2-124m")
    assert settings.spec("mine") == ModelSpec(slug="mine", **GOOD)  # type: ignore[arg-type]
    assert settings.spec("gpt2-124m") == replace(BUILTIN["gpt2-124m"], ppl_ceiling=35)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("modles = []", "unknown key(s) 'modles'"),
        ('models = "smollm2-135m"', "key 'models' must be a list of strings"),
        ('models = ["nope"]', "key 'models' names 'nope', which is not in the roster"),
        ('runtimes = ["vllm"]', "key 'runtimes' has 'vllm'"),
        ('quantizations = ["in t3"]', "key 'quantizations': 'in t3' is not a valid name"),
        ("max_new_tokens = true", "key 'max_new_tokens' = True has the wrong type"),
        ('near_ties = "ignore"', "key 'near_ties'"),
        ("[[tool.groundtruth.bounds]]\nsuite = 'token'\nmax_mismatches = 4",
         "key 'reason' is required"),
        ("[[tool.groundtruth.bounds]]\nsuite = 'tokn'\nreason = 'x'", "key 'suite' = 'tokn'"),
        ("[[tool.groundtruth.bounds]]\nsuite = 'token'\nreason = 'x'\nmax_mismatch = 4",
         "unknown key 'max_mismatch' for suite 'token'"),
        ("[tool.groundtruth.roster.x]\nlayers = 2", "missing required key(s) source"),
    ],
)
def test_invalid_configuration_names_file_and_key(tmp_path: Path, body: str,
                                                  message: str) -> None:
    root = write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_settings(root)
    assert message in str(info.value)
    assert str(root / "pyproject.toml") in str(info.value)


def test_invalid_toml_is_reported_with_the_file(tmp_path: Path) -> None:
    root = write(tmp_path, "models = [")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(root)


def test_bounds_most_specific_rule_wins_and_says_why(tmp_path: Path) -> None:
    root = write(tmp_path, "")
    (tmp_path / "groundtruth.toml").write_text(
        "[[bounds]]\nsuite = 'token'\nquantization = 'int8'\nmax_mismatches = 10\n"
        "reason = 'all int8'\n"
        "[[bounds]]\nsuite = 'token'\nruntime = 'llamacpp'\nquantization = 'int8'\n"
        "prompt = 'code'\nmax_mismatches = 16\nreason = 'measured 13 at 19'\n"
    )
    settings = load_settings(root, [tmp_path / "groundtruth.toml"])
    specific = bound(settings, "token", "max_mismatches", model="smollm2-135m",
                     runtime="llamacpp", quant="int8", prompt="code")
    assert specific.value == 16
    assert "measured 13 at 19" in specific.origin
    assert bound(settings, "token", "max_mismatches", runtime="torchao",
                 quant="int8").value == 10
    default = bound(settings, "token", "max_mismatches", quant="int4")
    assert (default.value, default.origin) == (5, "default")


def test_defaults_without_configuration(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert settings == Settings(root=tmp_path)
    assert bound(settings, "token", "max_mismatches", quant="int8").value == 3
    assert bound(settings, "drift", "slack").value == 1
    assert bound(settings, "ppl", "max_gap").value == 0.5


def bound(settings: Settings, suite: str, param: str, model: str | None = None,
          runtime: str | None = None, quant: str | None = None,
          prompt: str | None = None) -> Bound:
    """A bound as the suites resolve it, without the automatic calibration."""
    declared = get_suite(suite)
    return resolve(settings, suite, param, declared.default(param, quant, runtime),
                   declared.calibration, model=model, runtime=runtime, quant=quant,
                   prompt=prompt)
