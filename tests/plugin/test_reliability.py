"""Bad input, as a new user gives it: every case ends in a short, named error or is repaired.

Each test runs the tool the way users do (``pytest`` in a pytester project, the
``groundtruth`` command in a subprocess, files on disk, real engines and the named apr
stand-in) and checks the outcome, the exit status and that nothing was written where it
does not belong. The README's "What happens when things go wrong" describes the same
behaviour.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import distribution
from pathlib import Path

import pytest

from pytest_groundtruth.cli.main import EXIT_MEANINGS
from pytest_groundtruth.config import roster
from pytest_groundtruth.config.settings import (
    ConfigError,
    ExternalArtifact,
    Settings,
    load_settings,
)
from pytest_groundtruth.context.engines import external_artifact
from pytest_groundtruth.core.atomic import atomic_path, remove_stale
from pytest_groundtruth.core.paths import OutsideFolder, inside
from pytest_groundtruth.core.sealed import sealed_problem
from pytest_groundtruth.models.sources import resolve
from pytest_groundtruth.oracle.format import oracle_path
from pytest_groundtruth.runtimes.apr import AprRuntime
from pytest_groundtruth.store.artifacts import ArtifactCache, Recipe, prepare
from pytest_groundtruth.store.results import ResultStore
from pytest_groundtruth.suites.matrix import build_cases, check_artifacts
from standins.apr.cli import write_launcher

Project = Callable[..., pytest.Pytester]
ROOT = Path(__file__).parents[2]
# Tiny random-weight models have near-flat logits, so their first flips are near ties that
# the default rule forgives; these projects exercise failures, so they count every position.
TOOL = ('models = ["tiny-llama"]\nruntimes = ["transformers"]\nnear_ties = "count"\n'
        'quantizations = ["float32", "bfloat16"]\nsuites = ["token"]\n')
HAS_LLAMACPP = importlib.util.find_spec("llama_cpp") is not None
NO_LLAMACPP = "llama-cpp-python is not installed: pip install llama-cpp-python"


def short_error(text: str) -> None:
    """The failure is a named one-liner, not an engine's or pytest's traceback."""
    assert "Traceback" not in text
    assert "INTERNALERROR" not in text


def groundtruth(project: Path, *args: str, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
    """``groundtruth ARGS`` in ``project``, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pytest_groundtruth.cli.main", *args, "--quiet"],
        cwd=project, capture_output=True, text=True, timeout=600,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def project(tmp_path: Path, gt_cache: Path) -> Path:
    """A user project for `groundtruth oracle`: the tiny llama, the prompts, its oracles."""
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.groundtruth]\nmodels = ["tiny-llama"]\ncache_dir = {str(gt_cache)!r}\n')
    shutil.copytree(ROOT / "prompts", tmp_path / "prompts")
    shutil.copytree(ROOT / "oracle" / "tiny-llama", tmp_path / "oracle" / "tiny-llama")
    return tmp_path


# --------------------------------------------------------------------------- defect 1


DOTDOT = """
[tool.groundtruth.roster.".."]
source = "tiny:llama"
architecture = "llama"
layers = 2
heads = 4
kv_heads = 4
hidden = 64
vocab = 49152
ppl_ceiling = 1e6
"""


@pytest.mark.slow
def test_a_slug_that_leads_out_of_the_oracle_folder_is_refused(project: Path) -> None:
    """Defect 1: slug `..` and a prompt named `package` replaced the project's package.json."""
    (project / "pyproject.toml").write_text(
        (project / "pyproject.toml").read_text().replace('["tiny-llama"]', '[".."]') + DOTDOT)
    (project / "prompts" / "package.txt").write_text("Hello there")
    (project / "package.json").write_text('{"name": "mine"}\n')
    shutil.rmtree(project / "oracle")
    done = groundtruth(project, "oracle", "--prompt", "package")
    assert done.returncode == 2, done.stderr
    assert "model slug: '..' is not a valid name" in done.stderr
    short_error(done.stderr)
    assert (project / "package.json").read_text() == '{"name": "mine"}\n'
    assert not (project / "oracle").exists()


@pytest.mark.parametrize("slug", [".", "..", "a/b", ""])
def test_roster_slugs_must_be_plain_names(tmp_path: Path, slug: str) -> None:
    (tmp_path / "pyproject.toml").write_text(DOTDOT.replace('".."', json.dumps(slug)))
    with pytest.raises(ConfigError, match="model slug"):
        load_settings(tmp_path)


def test_every_written_path_stays_inside_its_folder(tmp_path: Path) -> None:
    """Defect 1, the cache half: `<cache>/llamacpp-int8-...` was written outside artifacts/."""
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "inner").symlink_to(outside, target_is_directory=True)
    cache = ArtifactCache(folder / "cache")
    recipe = Recipe("..", "llamacpp-int8", {"a": 1}, ".gguf",
                    build=lambda out: (out.write_bytes(b"x"), "wrote x")[1],
                    validate=lambda _: None)
    with pytest.raises(OutsideFolder):
        cache.get(recipe)
    with pytest.raises(OutsideFolder):
        oracle_path(folder / "oracle", "..", "package")
    with pytest.raises(OutsideFolder):
        ResultStore(folder / "cache").path("..", "key", [])
    with pytest.raises(OutsideFolder):
        inside(folder, "..", "x")
    with pytest.raises(OutsideFolder):
        inside(folder, "inner", "x")  # a symlink that leads out
    assert inside(folder, "a", "b.json") == folder / "a" / "b.json"
    assert sorted(p.name for p in folder.iterdir()) == ["inner"]
    assert not list(outside.iterdir())


# --------------------------------------------------------------------------- defect 2


@pytest.mark.parametrize(("artifact", "why"), [
    ("tiny-llama:llamacpp:int9", "runtime 'llamacpp' has no quantization 'int9'"),
    ("tiny-llama:llamacpp:int8", "quantization 'int8' is not in quantizations"),
    ("tiny-qwen2:llamacpp:float32", "model 'tiny-qwen2' is not in models"),
    ("tiny-llama:torchao:int8", "runtime 'torchao' is not in runtimes"),
])
def test_a_supplied_artifact_that_no_test_uses_is_an_error(make_project: Project,
                                                           artifact: str, why: str) -> None:
    """Defect 2: the run went green having tested the plugin's own artifact."""
    pytester = make_project('models = ["tiny-llama"]\nruntimes = ["transformers", "llamacpp"]\n'
                            'quantizations = ["float32"]\nsuites = ["token"]\n',
                            models=("tiny-llama",))
    (pytester.path / "empty.gguf").write_bytes(b"")
    result = pytester.runpytest(f"--gt-artifact={artifact}=empty.gguf")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([f"*artifact */empty.gguf ({artifact}) would not be tested: "
                                 f"{why}*"])
    result.assert_outcomes(errors=1)


@pytest.mark.parametrize(("artifact", "why"), [
    ("tiny-llama:llamacpp:int9", "runtime 'llamacpp' has no quantization 'int9'"),
    ("tiny-llama:llamacpp:int8", "quantization 'int8' is not in quantizations"),
    ("tiny-qwen2:llamacpp:float32", "model 'tiny-qwen2' is not in models"),
    ("tiny-llama:torchao:int8", "runtime 'torchao' is not in runtimes"),
    ("tiny-llama:llamacpp:float32", None),  # a cell of the matrix: tested
])
def test_the_matrix_names_why_a_supplied_artifact_would_not_be_tested(
        tmp_path: Path, artifact: str, why: str | None) -> None:
    """The fast twin of the pytester test above: the check on the settings alone."""
    model, runtime, quant = artifact.split(":")
    settings = Settings(root=tmp_path, models=("tiny-llama",),
                        runtimes=("transformers", "llamacpp"), quantizations=("float32",),
                        suites=("token",), artifacts=(
                            ExternalArtifact(model, runtime, quant, tmp_path / "empty.gguf"),))
    if why is None:
        cases = build_cases(settings, ["code"])
        assert any(c.runtime == "llamacpp" for c in cases)
        check_artifacts(settings, cases)
        return
    with pytest.raises(ConfigError) as info:
        build_cases(settings, ["code"])  # checks the supplied artifacts against its cases
    assert str(info.value).startswith(f"artifact {tmp_path / 'empty.gguf'} ({artifact}) would "
                                      f"not be tested: {why}")


# --------------------------------------------------------------------------- defect 4


def test_an_oracle_of_an_edited_prompt_is_stale(make_project: Project) -> None:
    """Defect 4: the float32 reference itself 'failed' and the table blamed the runtime."""
    pytester = make_project(TOOL, models=("tiny-llama",))
    (pytester.path / "prompts" / "code.txt").write_text("def factorial(n):\n")
    result = pytester.runpytest("-k", "float32 and code")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "token[[]tiny-llama-transformers-float32-code[]]: StaleOracle: */oracle/tiny-llama/"
        "code.json is stale: its prompt 'def fibonacci(n):' is not the prompt file's "
        "'def factorial(n):' (the prompt was edited); regenerate it: "
        "`groundtruth oracle --model tiny-llama --prompt code --force`"])
    short_error(result.stdout.str())


def test_an_oracle_of_another_model_is_stale(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    shutil.copy(ROOT / "oracle" / "tiny-qwen2" / "greeting.json",
                pytester.path / "oracle" / "tiny-llama" / "greeting.json")
    result = pytester.runpytest("-k", "float32 and greeting")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*StaleOracle: */greeting.json is stale: it was generated for "
                                 "model 'tiny-qwen2', not 'tiny-llama'*"])


# --------------------------------------------------------------------------- defect 5


@pytest.mark.slow
def test_an_unwritable_output_is_named_and_the_others_are_written(
        make_project: Project) -> None:
    """Defect 5: a traceback from pytest_sessionfinish, no matrix, the other reports lost."""
    pytester = make_project(TOOL, models=("tiny-llama",))
    (pytester.path / "blocker").write_text("a file, not a folder\n")
    result = pytester.runpytest("-k", "code", "--gt-results=blocker/r.json",
                                "--gt-ticket=ticket.md", "--html=report.html",
                                "--self-contained-html")
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*groundtruth parity matrix*",
        "ERROR groundtruth results: could not write blocker/r.json: *",
        "groundtruth ticket: ticket.md",
    ])
    short_error(result.stdout.str() + result.stderr.str())
    assert (pytester.path / "ticket.md").read_text().startswith("## Model Parity Failures")
    assert "Parity matrix" in (pytester.path / "report.html").read_text()


def test_an_unwritable_output_fails_an_otherwise_green_run(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    (pytester.path / "blocker").write_text("a file, not a folder\n")
    result = pytester.runpytest("-k", "float32 and code", "--gt-baseline=blocker/b.txt",
                                "--gt-baseline-update", "--gt-results=r.json")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["ERROR groundtruth baseline: could not write blocker/b.txt*"])
    assert json.loads((pytester.path / "r.json").read_text())["results"]


# --------------------------------------------------------------------------- short errors


@pytest.mark.requires_llamacpp
@pytest.mark.skipif(not HAS_LLAMACPP, reason=NO_LLAMACPP)
@pytest.mark.parametrize("content", [b"", b"not a gguf file at all\n", "truncated"])
def test_a_bad_user_artifact_is_a_short_named_error(make_project: Project,
                                                    content: bytes | str) -> None:
    pytester = make_project('models = ["tiny-llama"]\nruntimes = ["llamacpp"]\n'
                            'quantizations = ["int8"]\nsuites = ["token"]\n',
                            models=("tiny-llama",))
    if content == "truncated":  # the head of a real GGUF file
        gguf = distribution(roster.EMBEDDED_DIST).locate_file(roster.EMBEDDED_FILE)
        content = Path(str(gguf)).read_bytes()[:65536]
    assert isinstance(content, bytes)
    (pytester.path / "user.gguf").write_bytes(content)
    result = pytester.runpytest("-k", "code", "--gt-artifact=tiny-llama:llamacpp:int8=user.gguf")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["token[[]tiny-llama-llamacpp-int8-code[]]: ArtifactError: "
                                 "artifact */user.gguf is not a sound llamacpp artifact: *"])
    short_error(result.stdout.str())


def test_a_non_utf8_oracle_is_a_short_named_error(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    (pytester.path / "oracle" / "tiny-llama" / "code.json").write_bytes(b'{"schema": "\xff\xfe')
    result = pytester.runpytest("-k", "float32 and code")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*OracleError: */code.json: not UTF-8 text*"])
    short_error(result.stdout.str())


@pytest.mark.slow
@pytest.mark.requires_llamacpp
@pytest.mark.skipif(not HAS_LLAMACPP, reason=NO_LLAMACPP)
def test_a_context_too_small_says_which_option_raises_it(make_project: Project) -> None:
    pytester = make_project('models = ["tiny-llama"]\nruntimes = ["small"]\n'
                            'quantizations = ["float32"]\nsuites = ["ppl"]\n'
                            '[tool.groundtruth.runtime.small]\nkind = "llamacpp"\nn_ctx = 64\n',
                            models=("tiny-llama",))
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "ppl[[]tiny-llama-small-float32[]]: ContextTooSmall: a sequence of * tokens needs * "
        "positions but the llama.cpp context holds 64 (n_ctx); raise it in pyproject.toml: "
        '[[]tool.groundtruth.runtime.small[]] with kind = "llamacpp" and n_ctx = 1024'])
    short_error(result.stdout.str())


@pytest.mark.slow
def test_a_truncated_model_in_the_cache_is_detected_and_rebuilt(tmp_path: Path,
                                                                gt_cache: Path) -> None:
    """A cached model folder was used as long as its `.complete` marker existed."""
    embedded = resolve(roster.BUILTIN["smollm2-135m"], gt_cache).path
    cache = tmp_path / "cache"
    try:  # share the converted embedded model's bytes (the tiny model's tokenizer)
        shutil.copytree(embedded, cache / "models" / embedded.name, copy_function=os.link)
    except OSError:
        shutil.copytree(embedded, cache / "models" / embedded.name)
    model = resolve(roster.BUILTIN["tiny-llama"], cache)
    weights = model.path / "model.safetensors"
    size = weights.stat().st_size
    with weights.open("r+b") as fh:
        fh.truncate(size // 2)
    again = resolve(roster.BUILTIN["tiny-llama"], cache)
    assert again.path == model.path
    assert weights.stat().st_size == size  # rebuilt
    assert sealed_problem(again.path) is None
    with weights.open("r+b") as fh:
        fh.truncate(size - 1)
    assert "model.safetensors has" in (sealed_problem(model.path) or "")


@pytest.mark.slow
def test_apr_leaves_the_folder_of_a_users_artifact_alone(tmp_path: Path, gt_cache: Path) -> None:
    """apr reads files by extension: a user's `model.bin` was linked as `.apr` in its own
    folder, which fails in a read-only folder (checked here as: the folder is unchanged)."""
    runtime = AprRuntime(apr_bin=str(write_launcher(tmp_path / "bin")), timeout=300.0)
    model = resolve(roster.BUILTIN["tiny-llama"], gt_cache)
    built = prepare(runtime, model, "float16", ArtifactCache(gt_cache))
    folder = tmp_path / "users-folder"
    folder.mkdir()
    shutil.copy(built.path, folder / "model.bin")
    os.utime(folder, ns=(0, 0))
    artifact = external_artifact(runtime, model.slug, "float16", folder / "model.bin")
    with runtime.open(artifact, model) as runner:
        assert runner.generate("Hello", 4).tokens
    assert [p.name for p in folder.iterdir()] == ["model.bin"]
    assert folder.stat().st_mtime_ns == 0  # nothing was created in it, even for a moment


@pytest.mark.parametrize(("content", "message"), [
    (b"token[a-b-c] 3\nnot a baseline line\n", "bad.txt:2: expected '<suite>*"),
    (b"token[a-b-c] 3\n\xff\xfe 1\n", "bad.txt:2: not UTF-8 text"),
    (None, "bad.txt cannot be read (Is a directory)"),
])
def test_a_malformed_baseline_is_a_usage_error(make_project: Project, content: bytes | None,
                                               message: str) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    bad = pytester.path / "bad.txt"
    if content is None:
        bad.mkdir()
    else:
        bad.write_bytes(content)
    result = pytester.runpytest("--gt-baseline=bad.txt")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --gt-baseline: *{message}*"])
    short_error(result.stdout.str() + result.stderr.str())


# --------------------------------------------------------------------------- groundtruth oracle


@pytest.mark.slow
def test_oracle_empty_prompts_folder_is_bad_input(project: Path) -> None:
    for prompt in (project / "prompts").glob("*.txt"):
        prompt.unlink()
    shutil.rmtree(project / "prompts" / "chat", ignore_errors=True)
    done = groundtruth(project, "oracle")
    assert done.returncode == 4, done.stderr
    assert "has no *.txt files" in done.stderr
    short_error(done.stderr)


@pytest.mark.slow
def test_oracle_non_utf8_prompt_is_bad_input(project: Path) -> None:
    (project / "prompts" / "latin1.txt").write_bytes("café".encode("latin-1"))
    done = groundtruth(project, "oracle")
    assert done.returncode == 4, done.stderr
    assert "latin1.txt: not valid UTF-8" in done.stderr
    short_error(done.stderr)


@pytest.mark.slow
def test_oracle_refuses_a_prompt_longer_than_the_model_context(project: Path) -> None:
    (project / "prompts" / "long.txt").write_text("word " * 600)
    done = groundtruth(project, "oracle", "--prompt", "long")
    assert done.returncode == 4, done.stderr
    assert "exceed model 'tiny-llama''s context of 512 (max_position_embeddings)" in done.stderr
    assert not (project / "oracle" / "tiny-llama" / "long.json").exists()
    short_error(done.stderr)


@pytest.mark.slow
def test_oracle_unavailable_model_and_unwritable_folder_have_their_own_status(
        project: Path, tmp_path: Path) -> None:
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('["tiny-llama"]', '["remote"]') + (
        '[tool.groundtruth.roster.remote]\nsource = "hf:groundtruth-tests/absent"\n'
        'architecture = "llama"\nlayers = 2\nheads = 4\nkv_heads = 4\nhidden = 64\n'
        "vocab = 49152\nppl_ceiling = 10\n"))
    done = groundtruth(project, "oracle", env={"HF_HUB_OFFLINE": "1",
                                                "HF_HOME": str(tmp_path / "hf")})
    assert done.returncode == 3, done.stderr
    assert "HF_HUB_OFFLINE is set" in done.stderr

    pyproject.write_text(text + 'oracle_dir = "blocker"\n')
    (project / "blocker").write_text("a file, not a folder\n")
    done = groundtruth(project, "oracle", "--prompt", "greeting")
    assert done.returncode == 5, done.stderr
    assert "error: cannot write: " in done.stderr
    short_error(done.stderr)


@pytest.mark.slow
def test_oracle_help_and_readme_document_the_exit_statuses() -> None:
    done = subprocess.run([sys.executable, "-m", "pytest_groundtruth.cli.main", "oracle",
                           "--help"], capture_output=True, text=True, timeout=120, check=True)
    readme = (ROOT / "README.md").read_text()
    for status, meaning in EXIT_MEANINGS.items():
        assert f"\n  {status.value}  {meaning}" in done.stdout
        row = f"| {status.value} | {' '.join(meaning.split())} |"
        assert row in readme.replace("`", ""), row


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("toml", "message"), [
    ("timeout = nan\n", "key 'timeout' = nan must be a positive, finite"),
    ('[[tool.groundtruth.bounds]]\nsuite = "token"\nmax_mismatches = nan\nreason = "r"\n',
     "key 'max_mismatches' = nan must be a finite number"),
    ('[tool.groundtruth.roster.m]\nsource = "tiny:llama"\narchitecture = "llama"\nlayers = 2\n'
     "heads = 4\nkv_heads = 4\nhidden = 64\nvocab = 49152\nppl_ceiling = nan\n",
     "field 'ppl_ceiling' = nan must be a finite number"),
    ('[[tool.groundtruth.bounds]]\nsuite = "token"\nruntime = "llamacpp-typo"\n'
     'max_mismatches = 9\nreason = "measured"\n',
     "key 'runtime' = 'llamacpp-typo' is neither a registered runtime"),
    ('[[tool.groundtruth.bounds]]\nsuite = "token"\nmodel = "nobody"\n'
     'max_mismatches = 9\nreason = "measured"\n', "key 'model' = 'nobody' is not in the roster"),
])
def test_nan_and_names_of_nothing_are_rejected(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.groundtruth]\n" + toml)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_settings(tmp_path)


@pytest.mark.slow
def test_nan_options_are_rejected(make_project: Project) -> None:
    pytester = make_project(TOOL + '[tool.groundtruth.runtime.slow-apr]\nkind = "apr"\n'
                            "timeout = nan\n")
    result = pytester.runpytest("--gt-timeout=nan", "--collect-only")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*--gt-timeout 'nan' must be a positive, finite number*"])
    result = pytester.runpytest("--collect-only")  # every configured runtime is checked
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*runtime 'slow-apr': option 'timeout' = nan must be finite*"])


# --------------------------------------------------------------------------- leftovers and traps


KILLED_WRITER = """
import os, sys
from pathlib import Path
from pytest_groundtruth.core.atomic import atomic_path
with atomic_path(Path(sys.argv[1])) as tmp:
    tmp.write_text("half of an oracle")
    os._exit(9)  # killed between fsync and rename
"""


@pytest.mark.slow
def test_a_killed_writers_partial_file_is_removed_by_the_next_run(project: Path) -> None:
    target = project / "oracle" / "tiny-llama" / "code.json"
    subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], timeout=120)
    (left,) = target.parent.glob(".code.json.*.partial")
    done = groundtruth(project, "oracle", "--check", "--tolerance", "1e-4")
    assert done.returncode == 0, done.stderr
    assert f"removed stale temporary {left}" in done.stderr
    assert not list(project.rglob("*.partial"))


def test_a_partial_file_being_written_is_kept(tmp_path: Path) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER.replace("os._exit(9)", "import time; "
                                                     "time.sleep(300)"),
         str(tmp_path / "f.json")])
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".f.json.*.partial")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert remove_stale(tmp_path) == []
        with atomic_path(tmp_path / "f.json") as tmp:  # a write of the same file keeps it too
            tmp.write_text("done")
        assert len(list(tmp_path.glob(".f.json.*.partial"))) == 1
    finally:
        writer.kill()
        writer.wait()
    assert [p.name.endswith(".partial") for p in remove_stale(tmp_path)] == [True]
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


@pytest.mark.slow
def test_an_option_value_after_a_space_cannot_move_the_rootdir(make_project: Project,
                                                               gt_cache: Path) -> None:
    """pytest reads `--gt-cache-dir /path` as a test path before the plugin is loaded and
    picks the rootdir (and configuration) from it: stop and say to write `=`."""
    pytester = make_project(TOOL, models=("tiny-llama",))
    result = pytester.runpytest("--gt-cache-dir", str(gt_cache), "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --gt-cache-dir {gt_cache}: pytest took this option "
                                 "value for a test path and chose the rootdir *; write an "
                                 "option's value with '=' (--gt-cache-dir=/path)*"])
    result = pytester.runpytest(f"--gt-cache-dir={gt_cache}", "--collect-only")
    assert result.ret == pytest.ExitCode.OK
    (pytester.path / "r.json").write_text("{}")  # a value inside the project is harmless
    result = pytester.runpytest("--gt-results", "r.json", "--collect-only")
    assert result.ret == pytest.ExitCode.OK
    help_text = pytester.runpytest("--help").stdout.str()
    assert "write an option's value with '=' (--gt-cache-dir=/path)" in help_text
