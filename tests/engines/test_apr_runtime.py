"""The apr runtime against the apr stand-in (real models, real subprocesses), and against
the real ``apr`` binary where one is installed (``requires_apr``).

The stand-in (standins.apr) is put on PATH as ``apr`` through
a launcher in a temporary bin directory. Its faults (APR_STANDIN_FAULT) drive the
runner's error handling: every fault must come back as the right FailureKind with the
exact command line and the engine's stderr.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_groundtruth.config import roster
from pytest_groundtruth.core.failures import EngineFailure, FailureKind, RuntimeUnavailable
from pytest_groundtruth.models import sources
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.runtimes.apr import (
    APR_QUANT,
    AprRunner,
    AprRuntime,
    Completed,
    find_json_object,
    model_eos_ids,
    parse_generation,
    parse_perplexity,
    strip_ansi,
)
from pytest_groundtruth.runtimes.base import Artifact, Capability
from pytest_groundtruth.store.artifacts import ArtifactCache, prepare, reimported
from standins.apr import cli as apr_standin
from standins.apr.cli import FAULT_ENV, is_standin_version
from standins.apr.faults import colour_json

PROMPT = "The capital of France is"
TEXT = "The capital of France is Paris. It lies on the Seine and has about two million people."
HAS_GGUF_WRITER = importlib.util.find_spec("pytest_groundtruth.ggufio.writer") is not None


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def apr_test_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The apr artifacts' own cache (their builds are logged and counted here)."""
    return tmp_path_factory.mktemp("apr-cache")


@pytest.fixture(scope="session")
def tiny_llama(gt_cache: Path) -> ResolvedModel:
    """From the shared cache: in an empty one, resolving a tiny model first converts the
    embedded model (its tokenizer's source), ~25 s of CPU per worker."""
    return sources.resolve(roster.BUILTIN["tiny-llama"], gt_cache)


@pytest.fixture(scope="session")
def standin_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding ``apr`` = the stand-in."""
    directory = tmp_path_factory.mktemp("bin")
    apr_standin.write_launcher(directory)
    return directory


@pytest.fixture(scope="session")
def standin_runtime(standin_bin: Path) -> AprRuntime:
    """The runtime with the stand-in by absolute path (session-wide builds)."""
    return AprRuntime(apr_bin=str(standin_bin / "apr"), timeout=240.0)


@pytest.fixture
def apr(monkeypatch: pytest.MonkeyPatch, standin_bin: Path) -> AprRuntime:
    """The runtime finding the stand-in as ``apr`` on PATH, with no fault set."""
    monkeypatch.setenv("PATH", f"{standin_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv(FAULT_ENV, raising=False)
    return AprRuntime(timeout=240.0)


@pytest.fixture(scope="session")
def artifacts(
    standin_runtime: AprRuntime, tiny_llama: ResolvedModel, apr_test_cache: Path
) -> dict[str, Artifact]:
    """Artifacts built through the real artifact cache (temporary path, rename, manifest)."""
    cache = ArtifactCache(apr_test_cache)
    return {q: prepare(standin_runtime, tiny_llama, q, cache) for q in ("float16",)}


@pytest.fixture(scope="session")
def fp16_generation(
    standin_runtime: AprRuntime, artifacts: dict[str, Artifact], tiny_llama: ResolvedModel
) -> tuple[int, ...]:
    with standin_runtime.open(artifacts["float16"], tiny_llama) as runner:
        return runner.generate(PROMPT, 32).tokens


def fault_raised(
    apr: AprRuntime, artifact: Artifact, model: ResolvedModel, what: str
) -> EngineFailure:
    with apr.open(artifact, model) as runner:
        call = (lambda: runner.generate(PROMPT, 32)) if what == "run" else (
            lambda: runner.perplexity(TEXT)
        )
        with pytest.raises(EngineFailure) as info:
            call()
    return info.value


# --------------------------------------------------------------------------- the binary


def test_declares_contract() -> None:
    runtime = AprRuntime()
    assert runtime.name == "apr"
    assert runtime.quantizations == ("int8", "int4", "float16")
    assert APR_QUANT == {"int8": "int8", "int4": "int4", "float16": "fp16"}
    assert runtime.capabilities == {
        Capability.GENERATE, Capability.PERPLEXITY, Capability.EXPORT_GGUF, Capability.REIMPORT
    }
    assert runtime.missing(Capability.TOPK) is not None
    assert runtime.artifact_suffix("int8") == ".apr"


@pytest.mark.slow
def test_missing_binary_gives_actionable_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_llama: ResolvedModel
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    runtime = AprRuntime()
    assert runtime.unavailable() == (
        "apr not found on PATH: install it with `cargo install apr-cli` or set apr_bin / "
        "--gt-apr-bin"
    )
    other = AprRuntime(apr_bin="/nowhere/apr")
    reason = other.unavailable()
    assert reason is not None
    assert "'/nowhere/apr'" in reason
    assert "cargo install apr-cli" in reason
    artifact = Artifact("apr", tiny_llama.slug, "int8", tmp_path / "x.apr", "k", "r")
    with pytest.raises(RuntimeUnavailable, match="cargo install apr-cli"):
        runtime.open(artifact, tiny_llama)
    with pytest.raises(RuntimeUnavailable, match="not found on PATH"):
        runtime.version()


def test_version_is_the_standin_and_cached(apr: AprRuntime) -> None:
    version = apr.version()
    assert version == apr_standin.VERSION_LINE
    assert is_standin_version(version)
    assert "not aprender" in version
    assert apr.key_parts("float16") == {
        "runtime": "apr", "quant": "float16", "version": version, "apr_quantize": "fp16"
    }
    assert apr.version() is version  # cached per instance


# --------------------------------------------------------------------------- real work


@pytest.mark.slow
def test_build_through_cache(
    artifacts: dict[str, Artifact], tiny_llama: ResolvedModel, apr_test_cache: Path
) -> None:
    artifact = artifacts["float16"]
    assert artifact.path.name == "artifact.apr"
    assert artifact.path.stat().st_size > 0
    argv = shlex.split(artifact.recipe)
    assert argv[1:5] == ["import", str(tiny_llama.path / "model.safetensors"), "--quantize",
                         "fp16"]
    assert argv[5] == "-o"
    assert argv[6].endswith("model.apr")
    with zipfile.ZipFile(artifact.path) as archive:
        manifest = json.loads(archive.read("apr-standin.json"))
        assert "model/model.safetensors" in archive.namelist()
    assert manifest["quantization"] == "fp16"
    assert manifest["standin"] is True
    # No staging leftovers beside the artifact; a second prepare reuses it.
    assert sorted(p.name for p in artifact.path.parent.iterdir()) == [
        "artifact.apr", "manifest.json"
    ]
    log_lines = (apr_test_cache / "builds.log").read_text().splitlines()
    runtime = AprRuntime(apr_bin=shlex.split(artifact.recipe)[0], timeout=240.0)
    again = prepare(runtime, tiny_llama, "float16", ArtifactCache(apr_test_cache))
    assert again.path == artifact.path
    assert again.key == artifact.key
    assert (apr_test_cache / "builds.log").read_text().splitlines() == log_lines


@pytest.mark.slow
def test_inspect(standin_runtime: AprRuntime, artifacts: dict[str, Artifact]) -> None:
    info = standin_runtime.inspect(artifacts["float16"].path)
    assert info["architecture"] == "llama"
    assert (info["num_layers"], info["num_heads"], info["hidden_size"], info["vocab_size"]) == (
        2, 4, 64, 49152
    )
    assert info["tensor_count"] > 0
    assert "not the aprender" in info["format"]


@pytest.mark.slow
def test_fp16_matches_transformers_float16(
    standin_runtime: AprRuntime,
    artifacts: dict[str, Artifact],
    tiny_llama: ResolvedModel,
    fp16_generation: tuple[int, ...],
) -> None:
    """The stand-in at fp16 is transformers at float16: the runner must lose nothing."""
    from pytest_groundtruth.runtimes.hf import TransformersRunner

    reference_artifact = Artifact("transformers", tiny_llama.slug, "float16", tiny_llama.path,
                                  "ref", "ref")
    with TransformersRunner(reference_artifact) as reference:
        expected = reference.generate(PROMPT, 32)
        expected_ppl = reference.perplexity(TEXT)
    with standin_runtime.open(artifacts["float16"], tiny_llama) as runner:
        assert isinstance(runner, AprRunner)
        gen = runner.generate(PROMPT, 32)
        ppl = runner.perplexity(TEXT)
    assert gen.tokens == expected.tokens == fp16_generation
    assert gen.text == expected.text
    assert gen.stop_reason == expected.stop_reason
    assert gen.prompt_tokens == ()  # apr's JSON has no prompt ids
    argv = shlex.split(gen.call)
    assert argv[1:] == ["run", str(artifacts["float16"].path), "-p", PROMPT, "-n", "32",
                        "--temperature", "0", "--top-k", "1", "--json"]
    # The tiny random model is far over the stand-in's default threshold (20): apr eval
    # exits 1 with valid JSON, which is a result, not a crash.
    assert ppl.perplexity > 20
    assert ppl.perplexity == pytest.approx(expected_ppl.perplexity, rel=1e-9)
    assert ppl.cross_entropy == pytest.approx(expected_ppl.cross_entropy, rel=1e-9)
    assert ppl.tokens_evaluated == expected_ppl.tokens_evaluated
    assert shlex.split(ppl.call)[1:] == ["eval", str(artifacts["float16"].path), "--json",
                                         "--text", TEXT]
    raw = standin_runtime.call("eval", str(artifacts["float16"].path), "--json", "--text", TEXT,
                               check=False)
    assert raw.returncode == 1
    assert '"passed": false' in raw.stdout


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_quantized_generation(
    apr: AprRuntime, tiny_llama: ResolvedModel, apr_test_cache: Path, quant: str
) -> None:
    from transformers import AutoTokenizer

    artifact = prepare(apr, tiny_llama, quant, ArtifactCache(apr_test_cache))
    assert f"--quantize {quant}" in artifact.recipe
    with apr.open(artifact, tiny_llama) as runner:
        gen = runner.generate(PROMPT, 32)
    assert len(gen.tokens) == 32 or gen.stop_reason == "eos"
    assert all(0 <= t < 49152 for t in gen.tokens)  # the tiny models' vocabulary
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama.path)
    assert gen.text == tokenizer.decode(list(gen.tokens), skip_special_tokens=True)
    assert gen.seconds > 0


@pytest.mark.slow
@pytest.mark.skipif(not HAS_GGUF_WRITER, reason="pytest_groundtruth.ggufio.writer not present")
def test_export_gguf_and_reimport_roundtrip(
    standin_runtime: AprRuntime,
    artifacts: dict[str, Artifact],
    tiny_llama: ResolvedModel,
    apr_test_cache: Path,
    tmp_path: Path,
    fp16_generation: tuple[int, ...],
) -> None:
    """fp16 -> F16 GGUF -> apr import fp16 is lossless: the same tokens come back."""
    from gguf import GGUFReader

    gguf = tmp_path / "exported.gguf"
    with standin_runtime.open(artifacts["float16"], tiny_llama) as runner:
        call = runner.export_gguf(gguf)
    assert shlex.split(call)[1:5] == ["export", str(artifacts["float16"].path), "--format",
                                      "gguf"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported.gguf"]
    reader = GGUFReader(gguf)
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["llama.block_count"].contents() == 2
    assert reader.fields["tokenizer.ggml.pre"].contents() == "smollm"
    back = reimported(standin_runtime, tiny_llama, "float16", gguf, ArtifactCache(apr_test_cache))
    assert shlex.split(back.recipe)[1:4] == ["import", str(gguf), "--quantize"]
    with standin_runtime.open(back, tiny_llama) as runner:
        assert runner.generate(PROMPT, 32).tokens == fp16_generation


@pytest.mark.slow
def test_import_source(tiny_llama: ResolvedModel, tmp_path: Path) -> None:
    runtime = AprRuntime()
    assert runtime.import_source(tiny_llama) == str(tiny_llama.path / "model.safetensors")
    hub = ResolvedModel(roster.BUILTIN["smollm-135m"], tmp_path, fingerprint="f")
    assert runtime.import_source(hub) == "hf://HuggingFaceTB/SmolLM-135M"
    pinned = replace(hub, spec=replace(hub.spec, revision="abc123"))
    assert runtime.import_source(pinned) == str(tmp_path)  # no model.safetensors: the dir
    (tmp_path / "model.safetensors").write_bytes(b"x")
    assert runtime.import_source(pinned) == str(tmp_path / "model.safetensors")


# --------------------------------------------------------------------------- faults


@pytest.mark.slow
def test_crash_reports_command_and_stderr(
    apr: AprRuntime, monkeypatch: pytest.MonkeyPatch, artifacts: dict[str, Artifact],
    tiny_llama: ResolvedModel,
) -> None:
    monkeypatch.setenv(FAULT_ENV, "crash")
    fault = fault_raised(apr, artifacts["float16"], tiny_llama, "run")
    assert fault.kind is FailureKind.CRASHED
    assert "exited with status 101" in str(fault)
    assert fault.call.split()[1:3] == ["run", str(artifacts["float16"].path)]
    assert f"call: {fault.call}" in str(fault)
    assert "panicked" in fault.stderr
    assert "panicked" in str(fault)


def test_crash_of_eval_is_not_taken_for_a_threshold_exit(
    apr: AprRuntime, monkeypatch: pytest.MonkeyPatch, artifacts: dict[str, Artifact],
    tiny_llama: ResolvedModel,
) -> None:
    monkeypatch.setenv(FAULT_ENV, "eval:crash")
    fault = fault_raised(apr, artifacts["float16"], tiny_llama, "eval")
    assert fault.kind is FailureKind.CRASHED
    assert "eval" in fault.call


def test_crash_during_build_leaves_nothing(
    apr: AprRuntime, monkeypatch: pytest.MonkeyPatch, tiny_llama: ResolvedModel, tmp_path: Path
) -> None:
    monkeypatch.setenv(FAULT_ENV, "import:crash")
    with pytest.raises(EngineFailure) as info:
        prepare(apr, tiny_llama, "int8", ArtifactCache(tmp_path))
    assert info.value.kind is FailureKind.CRASHED
    assert "import" in info.value.call
    assert "--quantize int8" in info.value.call
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.name.endswith(".apr")]
    assert leftovers == []
    assert not list(tmp_path.rglob(".apr-stage-*"))


def test_garbage_output(
    apr: AprRuntime, monkeypatch: pytest.MonkeyPatch, artifacts: dict[str, Artifact],
    tiny_llama: ResolvedModel,
) -> None:
    monkeypatch.setenv(FAULT_ENV, "garbage")
    fault = fault_raised(apr, artifacts["float16"], tiny_llama, "run")
    assert fault.kind is FailureKind.GARBAGE
    assert "no JSON object" in str(fault)
    assert "generated" in str(fault)
    assert fault.call.startswith(apr.executable() or "?")


def test_dash_leading_prompt_is_not_taken_for_a_flag(
    apr: AprRuntime, monkeypatch: pytest.MonkeyPatch, artifacts: dict[str, Artifact],
    tiny_llama: ResolvedModel,
) -> None:
    # The garbage fault fires after argument parsing: GARBAGE (not REFUSED) means the
    # command line was accepted.
    monkeypatch.setenv(FAULT_ENV, "garbage")
    with apr.open(artifacts["float16"], tiny_llama) as runner:
        with pytest.raises(EngineFailure) as info:
            runner.generate("-n 5 --json", 32)
        assert info.value.kind is FailureKind.GARBAGE
        assert "'-p=-n 5 --json'" in info.value.call
        with pytest.raises(EngineFailure) as info:
            runner.perplexity("--threshold 1")
        assert info.value.kind is FailureKind.GARBAGE


def test_prompt_over_the_argument_limit_is_refused_not_missing(
    apr: AprRuntime, artifacts: dict[str, Artifact], tiny_llama: ResolvedModel,
) -> None:
    """Issue 11, defect 3: E2BIG (a 200 KiB prompt; apr reads no prompt file) used to be
    taken for "apr is missing", and the tests skipped with the install hint."""
    with apr.open(artifacts["float16"], tiny_llama) as runner, \
            pytest.raises(EngineFailure) as info:
        runner.generate("word " * 40_000, 32)
    assert info.value.kind is FailureKind.REFUSED
    assert "E2BIG" in str(info.value)
    assert "cargo install" not in str(info.value)


@pytest.mark.slow
def test_timeout_kills_the_process_group(
    monkeypatch: pytest.MonkeyPatch, standin_bin: Path, artifacts: dict[str, Artifact],
    tiny_llama: ResolvedModel,
) -> None:
    monkeypatch.setenv(FAULT_ENV, "hang")
    runtime = AprRuntime(apr_bin=str(standin_bin / "apr"), timeout=1.5)
    start = time.perf_counter()
    fault = fault_raised(runtime, artifacts["float16"], tiny_llama, "run")
    elapsed = time.perf_counter() - start
    assert fault.kind is FailureKind.TIMEOUT
    assert "1.5 s" in str(fault)
    assert fault.call.split()[1] == "run"
    assert elapsed < 5.0  # the helper holding the pipes died with the group
    helper = int(fault.stderr.rsplit("helper pid", 1)[1].split()[0])
    for _ in range(50):
        try:
            os.kill(helper, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"helper process {helper} survived the timeout")


@pytest.mark.slow
def test_nan_perplexity(
    apr: AprRuntime, monkeypatch: pytest.MonkeyPatch, artifacts: dict[str, Artifact],
    tiny_llama: ResolvedModel,
) -> None:
    monkeypatch.setenv(FAULT_ENV, "eval:nan")
    fault = fault_raised(apr, artifacts["float16"], tiny_llama, "eval")
    assert fault.kind is FailureKind.NAN
    assert "perplexity nan" in str(fault).lower()
    assert "--text" in fault.call


@pytest.mark.slow
def test_non_integer_tokens(
    apr: AprRuntime, monkeypatch: pytest.MonkeyPatch, artifacts: dict[str, Artifact],
    tiny_llama: ResolvedModel,
) -> None:
    monkeypatch.setenv(FAULT_ENV, "bad-tokens")
    fault = fault_raised(apr, artifacts["float16"], tiny_llama, "run")
    assert fault.kind is FailureKind.GARBAGE
    assert "not an integer id" in str(fault)


@pytest.mark.slow
def test_ansi_and_log_noise_are_stripped(
    apr: AprRuntime, monkeypatch: pytest.MonkeyPatch, artifacts: dict[str, Artifact],
    tiny_llama: ResolvedModel, fp16_generation: tuple[int, ...],
) -> None:
    monkeypatch.setenv(FAULT_ENV, "ansi,noisy")
    raw = apr.call("run", str(artifacts["float16"].path), "-p", PROMPT, "-n", "32",
                   "--temperature", "0", "--top-k", "1", "--json")
    assert "\x1b[" in raw.stdout  # the engine misbehaved: colours despite NO_COLOR=1
    assert "{layers" in raw.stdout  # and log lines with braces around the JSON
    gen = parse_generation(raw, 32, model_eos_ids(tiny_llama.path), tiny_llama.spec.vocab)
    assert gen.tokens == fp16_generation


@pytest.mark.parametrize(
    ("fault", "what", "refused"),
    [
        ("refuse-flags", "run", "unexpected argument '--temperature'"),
        ("old-cli", "run", "unexpected argument '-p'"),
        ("old-cli", "eval", "unexpected argument '--json'"),
    ],
)
def test_refused_flag_gives_the_hint(
    apr: AprRuntime, monkeypatch: pytest.MonkeyPatch, artifacts: dict[str, Artifact],
    tiny_llama: ResolvedModel, fault: str, what: str, refused: str,
) -> None:
    monkeypatch.setenv(FAULT_ENV, fault)
    error = fault_raised(apr, artifacts["float16"], tiny_llama, what)
    assert error.kind is FailureKind.REFUSED
    assert refused in error.stderr
    assert refused in str(error)
    assert "apr run <file> <prompt> -n 32 -f json" in str(error)
    assert "cargo install apr-cli" in str(error)


@pytest.mark.slow
def test_old_cli_hint_is_the_old_spelling(
    apr: AprRuntime, monkeypatch: pytest.MonkeyPatch, artifacts: dict[str, Artifact],
    fp16_generation: tuple[int, ...],
) -> None:
    """The spelling the hint names is what the older command line accepts."""
    monkeypatch.setenv(FAULT_ENV, "old-cli")
    done = apr.call("run", str(artifacts["float16"].path), PROMPT, "-n", "32", "-f", "json")
    data = find_json_object(done.stdout, ("tokens",))
    assert data is not None
    assert tuple(data["tokens"]) == fp16_generation


def test_unknown_fault_name_is_refused(apr: AprRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULT_ENV, "version:explode")
    with pytest.raises(EngineFailure) as info:
        apr.version()
    assert info.value.kind is FailureKind.CRASHED
    assert "unknown fault 'explode'" in info.value.stderr


# --------------------------------------------------------------------------- parsing


def completed(stdout: str, returncode: int = 0, stderr: str = "") -> Completed:
    return Completed(("apr", "run", "m.apr"), returncode, stdout, stderr, 0.25)


def test_find_json_after_ansi_and_logs() -> None:
    payload = {"model": "m", "text": " a {b}", "tokens": [1, 2, 3]}
    coloured = colour_json(payload)
    assert "\x1b[" in coloured
    assert json.loads(strip_ansi(coloured)) == payload
    stdout = "\x1b[32mloading {layers: 2}\x1b[0m\n" + coloured + "\ndone {ok}\n"
    assert find_json_object(stdout, ("tokens",)) == payload
    assert find_json_object("no json here {oops", ("tokens",)) is None
    assert find_json_object('{"level": "info"} ' + json.dumps(payload), ("tokens",)) == payload
    osc = "\x1b]8;;https://x\x07link\x1b]8;;\x07 " + json.dumps(payload)
    assert find_json_object(osc, ("tokens",)) == payload


def test_parse_generation_stop_reasons() -> None:
    def gen(tokens: list[int], n: int = 4) -> str:
        return parse_generation(
            completed(json.dumps({"text": "x", "tokens": tokens})), n, eos=(2,), vocab=100
        ).stop_reason

    assert gen([5, 6, 7, 8]) == "length"
    assert gen([5, 6, 7, 2]) == "eos"
    assert gen([5, 2]) == "eos"
    assert gen([5, 6]) == "eos"  # fewer than asked: apr stopped early
    result = parse_generation(
        completed(json.dumps({"text": "x", "tokens": [3], "inference_time_ms": 500})), 4, (2,)
    )
    assert result.seconds == 0.5
    assert result.call == "apr run m.apr"


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ([1, 2.0], "not an integer id"),
        ([1, True], "not an integer id"),
        ([1, "2"], "not an integer id"),
        ([1, -1], "outside the vocabulary"),
        ([1, 100], "outside the vocabulary"),
        ([1, 2, 3, 4, 5], "5 tokens for max_new_tokens 4"),
        ("1 2 3", "not a list"),
    ],
)
def test_parse_generation_rejects_bad_tokens(tokens: object, message: str) -> None:
    with pytest.raises(EngineFailure, match=message) as info:
        parse_generation(completed(json.dumps({"text": "x", "tokens": tokens})), 4, (2,), 100)
    assert info.value.kind is FailureKind.GARBAGE
    assert info.value.call == "apr run m.apr"


@pytest.mark.parametrize(
    ("perplexity", "kind"),
    [("null", FailureKind.NAN), ("NaN", FailureKind.NAN), ("Infinity", FailureKind.NAN),
     ('"12"', FailureKind.GARBAGE), ("0.5", FailureKind.GARBAGE)],
)
def test_parse_perplexity_faults(perplexity: str, kind: FailureKind) -> None:
    stdout = f'{{"perplexity": {perplexity}, "cross_entropy": 1.0, "tokens_evaluated": 5}}'
    with pytest.raises(EngineFailure) as info:
        parse_perplexity(completed(stdout))
    assert info.value.kind is kind


def test_parse_perplexity() -> None:
    result = parse_perplexity(completed(
        '[eval] wikitext\n{"model": "m", "dataset": "custom", "perplexity": 12.5, '
        '"cross_entropy": 2.5257, "tokens_evaluated": 40, "eval_time_secs": 0.75, '
        '"threshold": 20.0, "passed": true}'
    ))
    assert (result.perplexity, result.cross_entropy, result.tokens_evaluated, result.seconds) == (
        12.5, 2.5257, 40, 0.75
    )


# --------------------------------------------------------------------------- the real apr


@pytest.fixture(scope="session")
def real_apr() -> AprRuntime:
    """The real ``apr`` on PATH; skips when it is missing or is the stand-in (session-scoped
    and listed first, so that the skip comes before the tiny model is built)."""
    exe = shutil.which("apr")
    if exe is None:
        pytest.skip("the real apr is not on PATH: install it with `cargo install apr-cli`")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60,
                             check=False).stdout
    if is_standin_version(version):
        pytest.skip(f"`apr` on PATH ({exe}) is the pytest-groundtruth stand-in, not aprender: "
                    "install the real one with `cargo install apr-cli` and put it first on PATH")
    return AprRuntime(apr_bin=exe, timeout=600.0)


@pytest.mark.requires_apr
def test_real_apr_contract(
    real_apr: AprRuntime, tiny_llama: ResolvedModel, tmp_path: Path
) -> None:
    """import, run --json, eval --json, inspect --json and export gguf on the real binary."""
    assert real_apr.version()
    cache = ArtifactCache(tmp_path / "cache")
    artifact = prepare(real_apr, tiny_llama, "int8", cache)
    assert artifact.path.stat().st_size > 0
    assert real_apr.inspect(artifact.path)["architecture"]
    with real_apr.open(artifact, tiny_llama) as runner:
        gen = runner.generate(PROMPT, 32)
        assert 0 < len(gen.tokens) <= 32
        assert all(0 <= t < 49152 for t in gen.tokens)  # the tiny models' vocabulary
        assert isinstance(gen.text, str)
        ppl = runner.perplexity(TEXT)
        assert ppl.perplexity >= 1.0
        assert ppl.tokens_evaluated > 0
        gguf = tmp_path / "out.gguf"
        runner.export_gguf(gguf)
    from gguf import GGUFReader

    assert GGUFReader(gguf).fields["general.architecture"].contents() == "llama"


@pytest.mark.requires_apr
def test_real_apr_reimport(
    real_apr: AprRuntime, tiny_llama: ResolvedModel, tmp_path: Path
) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    artifact = prepare(real_apr, tiny_llama, "int4", cache)
    gguf = tmp_path / "out.gguf"
    with real_apr.open(artifact, tiny_llama) as runner:
        first = runner.generate(PROMPT, 32)
        runner.export_gguf(gguf)
    back = reimported(real_apr, tiny_llama, "int4", gguf, cache)
    with real_apr.open(back, tiny_llama) as runner:
        again = runner.generate(PROMPT, 32)
    # The original workflow's roundtrip rule: a lossless export + reimport gives the int4
    # artifact's own tokens back.
    assert again.tokens == first.tokens, (first.tokens, again.tokens)
