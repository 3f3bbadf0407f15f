"""The oracle drift check: regenerating every committed oracle reproduces it byte for byte.

If this fails, the reference changed under us (a transformers or torch upgrade, a
different embedded model file, a changed tiny-model builder). `groundtruth oracle
--check --all` says which file changed and where the tokens first differ; regenerate
with `--force` only once the change is understood.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_groundtruth.cli import main

ROOT = Path(__file__).parents[2]
COMMITTED = sorted(p.name for p in (ROOT / "oracle").iterdir() if p.is_dir())


@pytest.mark.slow
@pytest.mark.parametrize("slug", COMMITTED)
def test_committed_oracles_regenerate_byte_for_byte(
    slug: str, gt_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["oracle", "--root", str(ROOT), "--model", slug, "--check", "--quiet",
                 "--cache-dir", str(gt_cache)])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
