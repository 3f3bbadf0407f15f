"""The oracle drift check: regenerating every committed oracle reproduces it.

Tokens, prompt tokens and top-k ids must be identical. Log-probabilities and the
perplexity record may move by float32 kernel noise when this runs on another CPU than
the one that wrote them, within ``oracle_diff.CROSS_MACHINE_TOLERANCE`` (its comment has
the measurement). On the machine that wrote them the files regenerate byte for byte
(tests/unit/test_oracle_cli.py).

The regeneration runs again only when something it depends on changed (model content,
prompts, evaluation text, the oracle files, library versions, this package's oracle
code, the CPU's kernel family: ``pytest_groundtruth.oracle.generation.oracle_check``); otherwise the
stored verdict of the last check is the verdict, failures included. ``--gt-no-cache``
checks again.

If this fails, the reference changed under us (a transformers or torch upgrade, a
different embedded model file, a changed tiny-model builder). `groundtruth oracle
--check --all` says which file changed and where the tokens first differ; regenerate
with `--force` only once the change is understood.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_groundtruth.context import Context
from pytest_groundtruth.oracle.diff import CROSS_MACHINE_TOLERANCE
from pytest_groundtruth.oracle.generation.oracle_check import check_model

ROOT = Path(__file__).parents[2]
COMMITTED = sorted(p.name for p in (ROOT / "oracle").iterdir() if p.is_dir())


@pytest.mark.slow
@pytest.mark.parametrize("slug", COMMITTED)
def test_committed_oracles_regenerate(slug: str, gt_context: Context) -> None:
    assert gt_context.settings.path(gt_context.settings.oracle_dir) == ROOT / "oracle"
    check = check_model(gt_context, slug, CROSS_MACHINE_TOLERANCE)
    assert check.passed, check.explain()
