"""Under a memory budget the float32 reference opens alone: the runner of the artifact
under test (llama.cpp maps its whole GGUF) is closed first when the reference does not
fit beside it, and both stay open when it does (docs/memory.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.core.budget import GIB, MIB
from pytest_groundtruth.oracle.format import REFERENCE

pytestmark = [pytest.mark.slow, pytest.mark.requires_llamacpp]
MODEL = "tiny-llama"


def open_runners(max_memory: int, root: Path, cache: Path) -> tuple[int, int]:
    """How many runners are open after the artifact's runner and then the reference's
    (opened ``alone``, as rescore and agreement open it)."""
    settings = Settings(root=root, models=(MODEL,), runtimes=("llamacpp",),
                        quantizations=("int8",), cache_dir=cache, max_memory=max_memory)
    ctx = Context.open(settings)
    try:
        ctx.engines.runner(ctx.engines.artifact(MODEL, "llamacpp", "int8"))
        before = len(ctx.engines.pool)
        reference = ctx.engines.runner(ctx.engines.artifact(MODEL, *REFERENCE), alone=True)
        assert reference.generate("def fibonacci(n):", 4).tokens  # it works, opened alone
        return before, len(ctx.engines.pool)
    finally:
        ctx.close()


def test_the_reference_opens_alone_only_when_it_does_not_fit(tmp_path: Path,
                                                               gt_cache: Path) -> None:
    assert open_runners(64 * GIB, tmp_path, gt_cache) == (1, 2)  # fits: both stay open
    assert open_runners(64 * MIB, tmp_path, gt_cache) == (1, 1)  # below the process alone
