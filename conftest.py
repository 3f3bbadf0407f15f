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
  ``<cache>/sdist/llama_cpp_python-<version>.tar.gz``, which ``nox`` downloads), to check our
  exporter and integrity checks against the reference converter.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest

from pytest_groundtruth.config.roster import BUILTIN
from pytest_groundtruth.core.paths import default_cache_dir
from pytest_groundtruth.models.sources import ResolvedModel, resolve

ROOT = Path(__file__).parent

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = {name: check() for name, check in REQUIREMENTS.items()}
    for item in items:
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


def llama_cpp_sdist(cache: Path) -> Path | None:
    """The llama-cpp-python sdist matching the installed wheel, where one is at hand."""
    explicit = os.environ.get("GROUNDTRUTH_LLAMACPP_SDIST")
    if explicit:
        return Path(explicit)
    try:
        version = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return None
    path = cache / "sdist" / f"llama_cpp_python-{version}.tar.gz"
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def llama_cpp_convert(
    tmp_path_factory: pytest.TempPathFactory, gt_cache: Path
) -> Callable[[Path, str, Path], Path]:
    """Run llama.cpp's converter on a model directory: ``convert(model, outtype, outfile)``."""
    sdist = llama_cpp_sdist(gt_cache)
    if sdist is None:
        pytest.skip(
            "llama.cpp's convert_hf_to_gguf.py is not at hand: run `nox -s tests` (it downloads "
            "the sdist), or `pip download --no-deps --no-binary :all: llama-cpp-python==<installed "
            f"version> -d {gt_cache / 'sdist'}`, or set GROUNDTRUTH_LLAMACPP_SDIST to the sdist"
        )
    if not sdist.is_file():
        raise FileNotFoundError(f"GROUNDTRUTH_LLAMACPP_SDIST={sdist}: no such file")
    root = tmp_path_factory.mktemp("llama.cpp")
    parts = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    with tarfile.open(sdist) as tar:
        wanted = [
            m for m in tar.getmembers()
            if any(f"/vendor/llama.cpp/{part}" in m.name for part in parts)
        ]
        tar.extractall(root, members=wanted, filter="data")
    (script,) = root.glob("*/vendor/llama.cpp/convert_hf_to_gguf.py")

    def convert(model: Path, outtype: str, outfile: Path) -> Path:
        done = subprocess.run(
            [sys.executable, str(script), str(model), "--outtype", outtype,
             "--outfile", str(outfile)],
            capture_output=True, text=True, timeout=600,
        )
        if done.returncode != 0:
            pytest.fail(f"{script.name} {model} --outtype {outtype} exited "
                        f"{done.returncode}:\n{done.stderr[-4000:]}")
        return outfile

    return convert
