"""Shared fixtures for the project's own tests (the plugin itself is loaded by entry point).

* ``gt_cache`` - the artifact/model cache the tests share. The default user cache
  (``$GROUNDTRUTH_CACHE_DIR`` or ``~/.cache/pytest-groundtruth``): content-addressed
  and locked, so parallel workers and later runs reuse converted models.
* ``tiny`` - resolve a tiny model by architecture.
* ``make_project`` - a pytester project with oracles, prompts (chat prompts on request)
  and a groundtruth.toml, for testing the plugin the way users run it.
* markers that act: ``requires_llamacpp`` / ``requires_torchao`` skip (with the install
  command) where the engine cannot be imported, ``requires_apr`` where ``apr`` is not on
  PATH; ``slow`` marks what ``pytest -m "not slow"`` (the fast loop) leaves out.
* ``llama_cpp_convert`` - llama.cpp's own ``convert_hf_to_gguf.py``, taken from the sdist of
  the installed llama-cpp-python (``$GROUNDTRUTH_LLAMACPP_SDIST`` or
  ``<cache>/sdist/llama_cpp_python-<version>.tar.gz``, which ``nox`` downloads) by
  :mod:`pytest_groundtruth.ggufio.hfconvert`, the path users take with
  ``converter = "llama.cpp"``, to check our exporter and integrity checks against the
  reference converter.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_groundtruth.config.roster import BUILTIN
from pytest_groundtruth.core.failures import EngineFailure
from pytest_groundtruth.core.paths import default_cache_dir
from pytest_groundtruth.ggufio import hfconvert
from pytest_groundtruth.models.sources import ResolvedModel, resolve

ROOT = Path(__file__).parents[1]

# marker -> (why it is missing, or None when present)
REQUIREMENTS: dict[str, Callable[[], str | None]] = {
    "requires_llamacpp": lambda: None if importlib.util.find_spec("llama_cpp") else (
        "llama-cpp-python is not installed: pip install 'pytest-groundtruth[llamacpp]' "
        "(builds llama.cpp, 7-10 min)"),
    "requires_torchao": lambda: None if importlib.util.find_spec("torchao") else (
        "torchao is not installed: pip install 'pytest-groundtruth[torchao]'"),
    "requires_apr": lambda: None if shutil.which("apr") else (
        "the real apr binary is not on PATH: cargo install apr-cli"),
}


PARITY = Path(__file__).parent / "parity"  # the matrix on the embedded model
# An `exhaustive` test runs a whole matrix at every quantization type (54 min measured on
# 2 cores): pyproject's per-test `timeout` would end it.
EXHAUSTIVE_TIMEOUT = 4 * 3600


def starts_a_pytest_process(item: pytest.Item) -> bool:
    """Whether ``item`` drives a pytester project: ``--runpytest=subprocess`` (addopts) makes
    every ``runpytest`` a new pytest process, which imports torch and runs engines (seconds
    each). Read from the fixture closure, so a fixture that requests ``pytester``
    (``make_project``) counts too; a test must request it by name, not through
    ``request.getfixturevalue``."""
    return "pytester" in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = {name: check() for name, check in REQUIREMENTS.items()}
    for item in items:
        if item.path.is_relative_to(PARITY) or starts_a_pytest_process(item):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("exhaustive") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(EXHAUSTIVE_TIMEOUT))
        for name, reason in missing.items():
            if reason and item.get_closest_marker(name):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def gt_cache() -> Path:
    return default_cache_dir()


@pytest.fixture(scope="session")
def tiny(gt_cache: Path) -> Callable[[str], ResolvedModel]:
    def get(arch: str) -> ResolvedModel:
        return resolve(BUILTIN[f"tiny-{arch}"], gt_cache)

    return get


@pytest.fixture
def make_project(pytester: pytest.Pytester, gt_cache: Path) -> Callable[..., pytest.Pytester]:
    """Lay out a user project: pyproject [tool.groundtruth], prompts, oracles, groundtruth.toml."""

    def make(
        tool: str, groundtruth_toml: str = "", models: tuple[str, ...] = (), chat: bool = False
    ) -> pytest.Pytester:
        pytester.makefile(
            ".toml",
            pyproject=f"[tool.pytest.ini_options]\naddopts = '-p no:cacheprovider'\n"
            f"[tool.groundtruth]\ncache_dir = {str(gt_cache)!r}\n{tool}",
        )
        # Chat prompts (prompts/chat/) only where a test asks for them.
        shutil.copytree(ROOT / "prompts", pytester.path / "prompts",
                        ignore=None if chat else shutil.ignore_patterns("chat"))
        for slug in models:
            shutil.copytree(ROOT / "oracle" / slug, pytester.path / "oracle" / slug)
        tests = pytester.path / "tests"
        tests.mkdir()
        (tests / "groundtruth.toml").write_text(groundtruth_toml)
        return pytester

    return make


@pytest.fixture(scope="session")
def llama_cpp_convert(gt_cache: Path) -> Callable[[Path, str, Path], Path]:
    """Run llama.cpp's converter on a model directory: ``convert(model, outtype, outfile)``.

    Example::

        def test_theirs(llama_cpp_convert, tiny, tmp_path):
            gguf = llama_cpp_convert(tiny("llama").path, "f32", tmp_path / "theirs.gguf")
    """
    reason = hfconvert.unavailable(gt_cache)
    if reason:
        pytest.skip(reason)

    def convert(model: Path, outtype: str, outfile: Path) -> Path:
        try:
            hfconvert.convert(model, outtype, outfile, gt_cache)
        except EngineFailure as exc:
            pytest.fail(str(exc))
        return outfile

    return convert
