"""The reference CI installs is the one the committed oracles record.

pyproject.toml keeps a range of transformers versions for users; noxfile.py pins the
one CI runs, so the oracle drift check (tests/parity/test_oracle_drift.py) compares
like with like. Moving the pin means regenerating the oracles, inside the range that
`nox -s reference` checks.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).parents[2]


def noxfile() -> ModuleType:
    spec = importlib.util.spec_from_file_location("noxfile", ROOT / "noxfile.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_oracles_record_the_pinned_reference() -> None:
    nox = noxfile()
    files = sorted((ROOT / "oracle").glob("*/*.json")) + sorted(
        (ROOT / "oracle").glob("*/eval/*.json"))
    recorded = {(json.loads(p.read_text())["transformers_version"],
                 json.loads(p.read_text())["torch_version"].split("+")[0]) for p in files}
    assert recorded == {(nox.TRANSFORMERS, nox.TORCH.removeprefix("torch=="))}
    assert nox.TRANSFORMERS in nox.REFERENCE_RANGE
