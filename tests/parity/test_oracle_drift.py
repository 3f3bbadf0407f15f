"""The oracle drift check: regenerating every committed oracle reproduces it.

Tokens, prompt tokens and top-k ids must be identical. Log-probabilities and the
perplexity record may move by float32 kernel noise when this runs on another CPU than
the one that wrote them, within ``oracle_diff.CROSS_MACHINE_TOLERANCE`` (its comment has
the measurement). On the machine that wrote them the files regenerate byte for byte
(tests/unit/test_oracle_cli.py).

If this fails, the reference changed under us (a transformers or torch upgrade, a
different embedded model file, a changed tiny-model builder). `groundtruth oracle
--check --all` says which file changed and where the tokens first differ; regenerate
with `--force` only once the change is understood.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_groundtruth.tools.cli import main

ROOT = Path(__file__).parents[2]
COMMITTED = sorted(p.name for p in (ROOT / "oracle").iterdir() if p.is_dir())


@pytest.mark.slow
@pytest.mark.parametrize("slug", COMMITTED)
def test_committed_oracles_regenerate(
    slug: str, gt_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["oracle", "--root", str(ROOT), "--model", slug, "--check", "--quiet",
                 "--tolerance", "--cache-dir", str(gt_cache)])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
