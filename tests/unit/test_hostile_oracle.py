"""Sealed oracles: a hand edit that keeps the file self-consistent is its own error naming
the file and the regenerate command; unsealed files (the original generator's, older
ones) still load; a provenance field is not under the seal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_groundtruth.oracle.files import reconcile
from pytest_groundtruth.oracle.format import OracleEdited, load_oracle, seal_of

ROOT = Path(__file__).parents[2]
COMMITTED = ROOT / "oracle" / "tiny-llama" / "code.json"


@pytest.fixture
def oracle_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-llama" / "code.json"
    path.parent.mkdir()
    shutil.copyfile(COMMITTED, path)
    return path


def rewrite(path: Path, data: dict[str, object]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def swapped(data: dict[str, object]) -> dict[str, object]:
    """Positions 3-10: the runner-up becomes the generated token, in tokens and top-k
    (logprobs left sorted): every consistency check still holds."""
    tokens = list(data["tokens"])  # type: ignore[call-overload]
    steps = data["topk"]
    assert isinstance(steps, list)
    for i in range(3, 11):
        ids = steps[i]["ids"]
        ids[0], ids[1] = ids[1], ids[0]
        tokens[i] = ids[0]
    return {**data, "tokens": tokens, "topk": steps}


def test_the_committed_oracles_are_sealed() -> None:
    for path in sorted((ROOT / "oracle").rglob("*.json")):
        data = json.loads(path.read_text())
        if "topk" in data:
            assert data.get("seal") == seal_of(data), path


def test_a_self_consistent_edit_is_its_own_error(oracle_file: Path) -> None:
    data = json.loads(oracle_file.read_text())
    rewrite(oracle_file, swapped(data))
    with pytest.raises(OracleEdited) as info:
        load_oracle(oracle_file)
    text = str(info.value)
    assert str(oracle_file) in text
    assert "does not match its seal" in text
    assert "`groundtruth oracle --model tiny-llama --prompt code --force`" in text


def test_without_a_seal_the_same_edit_loads(oracle_file: Path) -> None:
    data = swapped(json.loads(oracle_file.read_text()))
    del data["seal"]  # a file written before seals: accepted as it was
    rewrite(oracle_file, data)
    assert load_oracle(oracle_file).tokens == tuple(data["tokens"])  # type: ignore[arg-type]


def test_provenance_is_not_under_the_seal(oracle_file: Path) -> None:
    data = json.loads(oracle_file.read_text())
    rewrite(oracle_file, {**data, "model_fingerprint": "0" * 64, "torch_version": "9.9"})
    assert load_oracle(oracle_file).model_fingerprint == "0" * 64


def test_regenerating_an_unsealed_file_adds_only_the_seal(oracle_file: Path) -> None:
    sealed = oracle_file.read_text()
    data = json.loads(sealed)
    del data["seal"]
    rewrite(oracle_file, data)
    change = reconcile(oracle_file, sealed, force=False, check=False)
    assert (change.status, change.written) == ("sealed", True)
    assert oracle_file.read_text() == sealed
    assert reconcile(oracle_file, sealed, force=False, check=True).status == "unchanged"
