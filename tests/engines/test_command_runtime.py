"""The command runtime: configured steps, placeholders, capabilities, real executables.

Two kinds of program: the test CLI around llama-cpp-python (tests/engines/llama_cli.py),
a real engine that must give the in-process llama.cpp runtime's results exactly; and a
small hostile tool written here (it hangs, crashes with a 10 MB stderr line, prints
colour codes or garbage, echoes its argument list) for the harness's failure paths.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_groundtruth.config.prompts import Message
from pytest_groundtruth.config.settings import ConfigError, Settings, apply_table, load_settings
from pytest_groundtruth.core.failures import EngineFailure, FailureKind, RuntimeUnavailable
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.runtimes.base import Artifact, Capability
from pytest_groundtruth.runtimes.command import CommandRunner, CommandRuntime
from pytest_groundtruth.runtimes.llamacpp import LlamaCppRuntime
from pytest_groundtruth.runtimes.registry import make_runtime
from pytest_groundtruth.runtimes.steps import STEP_CAPABILITY
from pytest_groundtruth.store.artifacts import ArtifactCache, prepare, reimported
from pytest_groundtruth.suites.matrix import build_cases

ROOT = Path(__file__).parents[2]
RUNTIMES_TOML = ROOT / "tests" / "engines" / "runtimes.toml"
PROMPTS = {p.stem: p.read_text().strip() for p in sorted((ROOT / "prompts").glob("*.txt"))}

TOOL = r'''
import json, os, subprocess, sys, time
args = sys.argv[1:]
step, mode = args[0], args[1]
if step == "version":
    print("\x1b[1mhostile-tool 1.0\x1b[0m")
    sys.exit(0)
if mode == "hang":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"child {child.pid}", file=sys.stderr, flush=True)
    time.sleep(600)
if mode == "crash":
    sys.stderr.write("E" * 10_000_000 + "\nsegfault in kernel q4_0\n")
    sys.exit(139)
if mode == "refuse":
    print("error: unrecognized arguments: --top-k", file=sys.stderr)
    sys.exit(2)
if mode == "garbage":
    print("tokens: 1 2 3 (not json)")
    sys.exit(0)
if mode == "argv":
    out = {"tokens": [len(args[3]) % 7], "text": json.dumps(args[2:])}
elif mode == "file":
    prompt = open(args[3], encoding="utf-8").read()
    out = {"tokens": [1, 2], "text": prompt[:20], "ms": 250}
if mode == "ansi":
    print("\x1b[32mloaded {layers: 2}\x1b[0m")
    print("\x1b[1;39m{\x1b[0m\"tokens\": [3, 4], \"text\": \"ok\"\x1b[1;39m}\x1b[0m")
    print("done {ok}")
else:
    print(json.dumps(out))
'''


def command_runtime(tmp_path: Path, mode: str, prompt: str = "{prompt}", **extra: Any
                    ) -> CommandRuntime:
    tool = tmp_path / "tool.py"
    tool.write_text(TOOL)
    table = {"kind": "command", "quantizations": ["q8"], "timeout": 20,
             "version": ["{python}", str(tool), "version", "-"],
             "generate": {"argv": ["{python}", str(tool), "generate", mode, ["-p", prompt],
                                   "-n", "{max_new_tokens}"], "output": {"milliseconds": "ms"}},
             **extra}
    settings = apply_table(Settings(root=tmp_path), {"runtime": {"tool": table}}, "test")
    runtime = make_runtime("tool", settings)
    assert isinstance(runtime, CommandRuntime)
    return runtime


def runner(runtime: CommandRuntime, model: ResolvedModel, tmp_path: Path) -> CommandRunner:
    return CommandRunner(runtime, Artifact("tool", model.slug, "q8", model.path, "k", "r"), model)


# --------------------------------------------------------------------------- configuration


def test_capabilities_follow_the_declared_steps(tmp_path: Path) -> None:
    runtime = command_runtime(tmp_path, "argv")
    assert runtime.capabilities == {Capability.GENERATE}
    assert not runtime.builds_artifacts  # no convert step: the model directory is read
    assert runtime.missing(Capability.PERPLEXITY) == "runtime 'tool' has no perplexity"
    settings = apply_table(Settings(root=tmp_path), {
        "runtime": {"tool": {"kind": "command", "quantizations": ["int8"],
                             "generate": ["t", "{artifact}", "--top-k", "{top_k}"],
                             "perplexity": ["t", "{artifact}", "{text_file}"]}},
        "models": ["tiny-llama"], "runtimes": ["tool"], "quantizations": ["int8"],
        "suites": ["token", "topk", "ppl", "agreement", "roundtrip"]}, "test")
    assert make_runtime("tool", settings).capabilities == {
        Capability.GENERATE, Capability.TOPK, Capability.PERPLEXITY}
    skips = {c.suite: c.skip for c in build_cases(settings, ["code"])}
    assert skips["token"] is None
    assert skips["topk"] is None
    assert skips["ppl"] is None
    assert skips["agreement"] == ("runtime 'tool' has no teacher-forced scoring "
                                  "(suite 'agreement' needs it)")
    chat = {c.suite: c.skip for c in build_cases(settings, ["capital"], chat=["capital"])}
    assert chat["token"] == ("runtime 'tool' has no chat prompts (a conversation rendered "
                             "with the model's chat template) (prompt 'capital' is a "
                             "conversation)")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"generate": ["t"]}, r"option 'quantizations' \(a non-empty list of names\)"),
        ({"quantizations": ["int8"], "generate": ["t", "{prompt_fil}"]},
         r"step 'generate': unknown placeholder\(s\) prompt_fil \(this step has: .*prompt_file"),
        ({"quantizations": ["int8"], "perplexity": ["t", "{prompt}"]},
         r"step 'perplexity': unknown placeholder\(s\) prompt"),
        ({"quantizations": ["int8"], "generate": ["t", "{prompt!r}"]}, r"plain \{name\}"),
        ({"quantizations": ["int8"], "generate": {"argv": ["t"], "output": {"ids": "x"}}},
         "output key 'ids'"),
        ({"quantizations": ["int8"], "generate": [["-p", "{prompt}"]]}, "first argument"),
        ({"quantizations": ["int8"], "generate": ["t", 3]}, "neither a string nor"),
        ({"quantizations": ["int8"], "frobnicate": ["t"]}, r"unknown option\(s\) 'frobnicate'"),
        ({"quantizations": ["../x"], "generate": ["t"]}, "not a valid name"),
    ],
)
def test_bad_configuration_names_runtime_step_and_key(tmp_path: Path, table: dict[str, Any],
                                                      message: str) -> None:
    def configure() -> None:
        make_runtime("mytool", apply_table(
            Settings(root=tmp_path), {"runtime": {"mytool": {"kind": "command", **table}}}, "t"))

    with pytest.raises(ConfigError, match=message) as info:
        configure()
    assert "'mytool" in str(info.value)


def test_option_pairs_keep_a_dash_value_from_being_a_flag(tmp_path: Path,
                                                          tiny: Callable[[str], ResolvedModel]
                                                          ) -> None:
    runtime = command_runtime(tmp_path, "argv")
    nasty = "a; rm -rf / $(id) `id` 'q' \"dq\" | cat"
    with runner(runtime, tiny("llama"), tmp_path) as engine:
        assert json.loads(engine.generate(nasty, 4).text) == ["-p", nasty, "-n", "4"]
        gen = engine.generate("--help me", 4)
    assert json.loads(gen.text) == ["-p=--help me", "-n", "4"]
    assert gen.call.endswith(" generate argv '-p=--help me' -n 4")


# --------------------------------------------------------------------------- failures


def test_missing_program_is_unavailable_with_the_hint(tmp_path: Path) -> None:
    settings = apply_table(Settings(root=tmp_path), {"runtime": {"mytool": {
        "kind": "command", "quantizations": ["int8"], "executable": "no-such-mytool",
        "install_hint": "pip install mytool", "generate": ["{executable}", "{prompt}"]}}}, "t")
    runtime = make_runtime("mytool", settings)
    assert runtime.unavailable() == ("mytool not found on PATH (looked for 'no-such-mytool'): "
                                     "pip install mytool")


@pytest.mark.parametrize(
    ("mode", "kind", "says"),
    [
        ("crash", FailureKind.CRASHED, "tool (generate step) exited with status 139"),
        ("garbage", FailureKind.GARBAGE, "printed no JSON object with keys tokens, text; "
         "stdout begins 'tokens: 1 2 3"),
        ("refuse", FailureKind.REFUSED, "tool (generate step) refused the command line "
         "(exit status 2); the configured argument lists are in [tool.groundtruth.runtime.tool]"),
    ],
)
def test_failures_name_step_argv_status_and_stderr(tmp_path: Path,
                                                   tiny: Callable[[str], ResolvedModel],
                                                   mode: str, kind: FailureKind, says: str
                                                   ) -> None:
    runtime = command_runtime(tmp_path, mode)
    with runner(runtime, tiny("llama"), tmp_path) as engine, \
            pytest.raises(EngineFailure) as info:
        engine.generate("hello", 4)
    failure = info.value
    assert failure.kind is kind
    assert says in str(failure)
    assert failure.call.split()[2:6] == ["generate", mode, "-p", "hello"]
    if mode == "crash":
        assert failure.stderr.endswith("segfault in kernel q4_0")
        assert len(str(failure)) < 6000  # the 10 MB line is cut


@pytest.mark.slow
def test_hang_ends_at_the_timeout_with_the_group_killed(tmp_path: Path,
                                                        tiny: Callable[[str], ResolvedModel]
                                                        ) -> None:
    runtime = command_runtime(tmp_path, "hang")
    runtime.timeout = 2.0
    with runner(runtime, tiny("llama"), tmp_path) as engine, \
            pytest.raises(EngineFailure) as info:
        engine.generate("hello", 4)
    assert info.value.kind is FailureKind.TIMEOUT
    assert "tool (generate step) did not finish within 2 s" in str(info.value)
    assert "child" in info.value.stderr


def test_ansi_output_and_version(tmp_path: Path, tiny: Callable[[str], ResolvedModel]) -> None:
    runtime = command_runtime(tmp_path, "ansi")
    assert runtime.version() == "hostile-tool 1.0"
    with runner(runtime, tiny("llama"), tmp_path) as engine:
        gen = engine.generate("hello", 4)
    assert (gen.tokens, gen.text, gen.stop_reason) == ((3, 4), "ok", "eos")  # 2 < 4 asked


def test_a_long_prompt_goes_by_file_and_is_refused_as_an_argument(
        tmp_path: Path, tiny: Callable[[str], ResolvedModel]) -> None:
    long = "word " * 40_000  # 200 KB: over Linux's 128 KiB limit for one argument
    by_file = command_runtime(tmp_path, "file", prompt="{prompt_file}")
    with runner(by_file, tiny("llama"), tmp_path) as engine:
        gen = engine.generate(long, 4)
    assert (gen.tokens, gen.text, gen.seconds) == ((1, 2), long[:20], 0.25)
    by_argument = command_runtime(tmp_path, "argv")
    with runner(by_argument, tiny("llama"), tmp_path) as engine, \
            pytest.raises(EngineFailure) as info:
        engine.generate(long, 4)
    assert info.value.kind is FailureKind.REFUSED
    assert "E2BIG" in str(info.value)


def test_unavailable_runtime_skips_not_fails(tmp_path: Path) -> None:
    settings = apply_table(Settings(root=tmp_path), {"runtime": {"mytool": {
        "kind": "command", "quantizations": ["int8"], "generate": ["no-such-tool-xyz"]}}}, "t")
    runtime = make_runtime("mytool", settings)
    model = ResolvedModel.__new__(ResolvedModel)
    with pytest.raises(RuntimeUnavailable, match="not found on PATH"):
        runtime.open(Artifact("mytool", "m", "int8", tmp_path, "k", "r"), model)


# --------------------------------------------------------------------------- the llama.cpp CLI


@pytest.fixture(scope="module")
def llamacli() -> CommandRuntime:
    runtime = make_runtime("llamacli", load_settings(ROOT, [RUNTIMES_TOML]))
    assert isinstance(runtime, CommandRuntime)
    return runtime


@pytest.mark.slow
@pytest.mark.requires_llamacpp
def test_the_cli_is_the_in_process_runtime(llamacli: CommandRuntime,
                                           tiny: Callable[[str], ResolvedModel],
                                           gt_cache: Path) -> None:
    """Every step through the test CLI equals the in-process llama.cpp runtime's result."""
    pytest.importorskip("llama_cpp")
    # Every capability a command's steps can declare (the in-process engine features,
    # assisted or prompt-lookup decoding and LoRA application, are not steps).
    assert llamacli.capabilities == {*STEP_CAPABILITY.values(), Capability.TOPK}
    assert llamacli.version().startswith("llama-cli-test 1 (llama-cpp-python ")
    model = tiny("llama")
    cache = ArtifactCache(gt_cache)
    artifact = prepare(llamacli, model, "int8", cache)
    assert artifact.recipe.split()[2:4] == ["convert", str(model.path)]
    reference = prepare(LlamaCppRuntime(), model, "int8", cache)
    assert artifact.path.read_bytes() == reference.path.read_bytes()  # the same exporter
    chat = (Message("system", "Be brief."), Message("user", "Hi there"))
    text = PROMPTS["completion"] + " Paris, on the Seine."
    with llamacli.open(artifact, model) as cli, LlamaCppRuntime().open(reference, model) as ref:
        for prompt in PROMPTS.values():
            got, want = cli.generate(prompt, 32, top_k=10), ref.generate(prompt, 32, top_k=10)
            assert (got.tokens, got.text, got.prompt_tokens, got.stop_reason, got.topk) == (
                want.tokens, want.text, want.prompt_tokens, want.stop_reason, want.topk)
        got, want = cli.chat(chat, 16, top_k=3), ref.chat(chat, 16, top_k=3)
        assert (got.tokens, got.prompt_tokens, got.topk) == (
            want.tokens, want.prompt_tokens, want.topk)
        assert cli.perplexity(text).perplexity == pytest.approx(
            ref.perplexity(text).perplexity, rel=1e-12)
        ids = want.prompt_tokens + want.tokens
        assert np.array_equal(cli.score(ids, 3), ref.score(ids, 3))
    back = reimported(llamacli, model, "int8", reference.path, cache)
    assert back.path.read_bytes() == reimported(LlamaCppRuntime(), model, "int8",
                                                reference.path, cache).path.read_bytes()
    assert "--quant int8" in back.recipe
