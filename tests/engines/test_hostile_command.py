"""The command runtime against hostile tools: NaN and infinite log-probabilities, a length
stop with no tokens, a grandchild that leaves the process group with ``setsid``.

Each tool is a real Python script run through the ``command`` runtime (a real subprocess)
that prints the JSON a test chose.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_groundtruth.config.settings import Settings, apply_table
from pytest_groundtruth.core.failures import EngineFailure, FailureKind
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.runtimes.base import Artifact
from pytest_groundtruth.runtimes.command import CommandRunner, CommandRuntime
from pytest_groundtruth.runtimes.registry import make_runtime

TOOL = r'''
import sys
print(open(sys.argv[1], encoding="utf-8").read())
'''

SETSID = r'''
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import os, sys, time; os.setsid(); open(sys.argv[1], 'w').write(str(os.getpid())); "
    "time.sleep(60)", sys.argv[1]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(60)
'''


def runner_printing(tmp_path: Path, model: ResolvedModel, output: str,
                    **options: Any) -> CommandRunner:
    tool = tmp_path / "tool.py"
    tool.write_text(TOOL)
    answer = tmp_path / "answer.json"
    answer.write_text(output)
    table = {"kind": "command", "quantizations": ["q8"], "timeout": 20,
             "generate": ["{python}", str(tool), str(answer), "{top_k}"], **options}
    runtime = make_runtime("tool", apply_table(Settings(root=tmp_path),
                                               {"runtime": {"tool": table}}, "test"))
    assert isinstance(runtime, CommandRuntime)
    return CommandRunner(runtime, Artifact("tool", model.slug, "q8", model.path, "k", "r"),
                         model)


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_logprobs_are_the_nan_kind(tmp_path: Path, bad: str,
                                              tiny: Callable[[str], ResolvedModel]) -> None:
    output = ('{"tokens": [5, 6], "text": "ab", "topk": [{"ids": [5], "logprobs": [-0.1]}, '
              f'{{"ids": [6], "logprobs": [{bad}]}}]}}')
    runner = runner_printing(tmp_path, tiny("llama"), output)
    with pytest.raises(EngineFailure) as info:
        runner.generate("Hello", 2, top_k=1)
    assert info.value.kind is FailureKind.NAN
    assert "topk[1].logprobs #0 is" in str(info.value)


def test_a_length_stop_with_too_few_tokens_is_garbage(tmp_path: Path,
                                                      tiny: Callable[[str], ResolvedModel]
                                                      ) -> None:
    output = json.dumps({"tokens": [], "text": "", "stop_reason": "length"})
    runner = runner_printing(tmp_path, tiny("llama"), output)
    with pytest.raises(EngineFailure) as info:
        runner.generate("Hello", 8)
    assert info.value.kind is FailureKind.GARBAGE
    assert "stop_reason 'length' with 0 token(s) for a limit of 8" in str(info.value)
    fine = runner_printing(tmp_path, tiny("llama"),
                           json.dumps({"tokens": [], "text": "", "stop_reason": "eos"}))
    assert fine.generate("Hello", 8).tokens == ()


@pytest.mark.slow
def test_a_setsid_grandchild_is_killed_at_the_timeout(tmp_path: Path,
                                                      tiny: Callable[[str], ResolvedModel]
                                                      ) -> None:
    tool = tmp_path / "daemon.py"
    tool.write_text(SETSID)
    pidfile = tmp_path / "grandchild.pid"
    table = {"kind": "command", "quantizations": ["q8"], "timeout": 2,
             "generate": ["{python}", str(tool), str(pidfile)]}
    runtime = make_runtime("tool", apply_table(Settings(root=tmp_path),
                                               {"runtime": {"tool": table}}, "test"))
    assert isinstance(runtime, CommandRuntime)
    model = tiny("llama")
    runner = CommandRunner(runtime, Artifact("tool", model.slug, "q8", model.path, "k", "r"),
                           model)
    with pytest.raises(EngineFailure) as info:
        runner.generate("Hello", 2)
    assert info.value.kind is FailureKind.TIMEOUT
    pid = int(pidfile.read_text())
    try:
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists() or " Z " in Path(
                    f"/proc/{pid}/stat").read_text():
                break
            time.sleep(0.1)
        alive = Path(f"/proc/{pid}").exists() and " Z " not in Path(
            f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        alive = False
    if alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, "the grandchild that called setsid() outlived the timeout"
