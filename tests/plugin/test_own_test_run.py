"""The project's own test run never hangs silently (issue 26).

* A hung test ends by the per-test ``timeout`` of ``pyproject.toml`` with its stack in the
  log, and the run goes on, with and without xdist.
* A crashed xdist worker ends the run and fails it (the plugin, for every project that
  runs it under xdist, ``plugin/workers.py``): it is not replaced
  (xdist 3.8's loadgroup scheduler mishandles a replacement) and a worker lost during
  collection no longer finishes as "no tests ran", exit status 0.
* The ``slow`` marker reads the same in ``pyproject.toml`` and the README.

The pytester projects take the repository's own settings (the timeout keys), so these
tests check the configuration the project runs with; the crash guard comes with the
plugin, as a user's project gets it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).parents[2]
PYTEST_INI = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"][
    "ini_options"]

HANG = '''
import threading
import time


def helper_waits(event):
    event.wait()


def test_hangs_on_purpose():
    threading.Thread(target=helper_waits, args=(threading.Event(),), name="helper",
                     daemon=True).start()
    time.sleep(3600)


def test_after_the_hang():
    pass
'''


def project_ini(pytester: pytest.Pytester, **override: object) -> None:
    """The repository's timeout settings (``override`` on top) in the project's pyproject."""
    keys = {k: PYTEST_INI[k] for k in ("timeout", "timeout_method", "faulthandler_timeout")}
    keys.update(override)
    lines = "\n".join(f"{k} = {v!r}" for k, v in keys.items())
    pytester.makefile(".toml", pyproject=f"[tool.pytest.ini_options]\n"
                      f"addopts = '-p no:cacheprovider -p no:randomly'\n{lines}\n")


def test_the_repository_sets_a_per_test_timeout() -> None:
    assert 0 < float(PYTEST_INI["timeout"]) < float(PYTEST_INI["faulthandler_timeout"])
    assert PYTEST_INI["timeout_method"] == "signal"


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["no-xdist", "xdist"])
def test_a_hung_test_ends_by_the_timeout_with_its_stack(pytester: pytest.Pytester,
                                                        workers: list[str]) -> None:
    project_ini(pytester, timeout=3)
    pytester.makepyfile(test_hang=HANG)
    result = pytester.runpytest_subprocess(*workers, timeout=300)
    result.assert_outcomes(failed=1, passed=1)  # the run went on after the hang
    out = result.stdout.str()
    assert "Failed: Timeout (>3.0s) from pytest-timeout." in out
    # the hung test's own stack: its frame and the line it waited on
    assert re.search(r"def test_hangs_on_purpose\(\):.*time\.sleep\(3600\)", out, re.S), out
    if not workers:  # the other threads' stacks too (an xdist worker has no terminal)
        assert "Stack of helper" in out
        assert "event.wait()" in out


@pytest.mark.parametrize("when", ["collection", "test"])
def test_a_crashed_worker_ends_and_fails_the_run(pytester: pytest.Pytester, when: str) -> None:
    project_ini(pytester)  # no tests/conftest.py: the plugin alone
    crash = "os.kill(os.getpid(), signal.SIGKILL)"
    at_import = crash if when == "collection" else "pass"  # gw1 dies while collecting
    in_test = crash if when == "test" else "pass"  # the worker running test_dies dies
    pytester.makepyfile(test_crash=f'''
import os
import signal

if os.environ.get("PYTEST_XDIST_WORKER") == "gw1":
    {at_import}


def test_dies():
    {in_test}


def test_ok():
    pass
''')
    result = pytester.runpytest_subprocess("-n", "2", timeout=300)  # loadgroup (the plugin)
    out = result.stdout.str()
    assert "replacing crashed worker" not in out
    assert "crashed xdist workers" in out
    assert re.search(r"worker gw\d: .* \(the run ends at the first crashed worker: "
                     r"--max-worker-restart=0, pytest-groundtruth's default", out), out
    if when == "collection":  # xdist alone: "no tests ran", exit status 0
        assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    else:
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines(
            ["*worker 'gw?' crashed while running 'test_crash.py::test_dies'*"])


def test_the_slow_marker_reads_the_same_in_pyproject_and_readme() -> None:
    (slow,) = [m.split(":", 1)[1].strip() for m in PYTEST_INI["markers"]
               if m.startswith("slow:")]
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f'"{slow}"' in readme


def test_no_restart_is_the_default_only_under_xdist_and_when_unset() -> None:
    from types import SimpleNamespace

    from pytest_groundtruth.plugin.workers import prefer_no_restart

    unset = SimpleNamespace(numprocesses=2, maxworkerrestart=None)
    assert prefer_no_restart(unset)
    assert unset.maxworkerrestart == "0"
    explicit = SimpleNamespace(numprocesses=2, maxworkerrestart="3")
    assert not prefer_no_restart(explicit)
    assert explicit.maxworkerrestart == "3"
    plain = SimpleNamespace(numprocesses=None, maxworkerrestart=None)
    assert not prefer_no_restart(plain)
    assert plain.maxworkerrestart is None


def test_a_crash_fails_only_a_run_that_would_end_green() -> None:
    from pytest_groundtruth.plugin.workers import failed_exit

    crash = ["gw1: Not properly terminated"]
    assert failed_exit(crash, pytest.ExitCode.OK) == pytest.ExitCode.INTERNAL_ERROR
    assert failed_exit(crash, pytest.ExitCode.NO_TESTS_COLLECTED) == pytest.ExitCode.INTERNAL_ERROR
    assert failed_exit(crash, pytest.ExitCode.TESTS_FAILED) == pytest.ExitCode.TESTS_FAILED
    assert failed_exit([], pytest.ExitCode.OK) == pytest.ExitCode.OK
