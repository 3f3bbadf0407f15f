"""Bringing an engine in, as users do (pytester projects, real engines, real processes):

* a Python runtime from another distribution, registered by entry point (the example of
  docs/extending.md, installed as a module plus a dist-info): it is in ``--gt-runtime``,
  validation, the matrix and the reports like a built-in one;
* chat prompts through llama.cpp and llama-cpp-python's server, and a GGUF whose chat
  template was removed or altered failing with a message that says so;
* on the embedded model, the same matrix through the in-process llama.cpp runtime, the
  command runtime (the test CLI), the openai runtime (a server the plugin starts) and the
  entry-point runtime: the same verdicts wherever the engines are the same.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.runtimes.llamacpp import LlamaCppRuntime
from pytest_groundtruth.runtimes.server import server_unavailable
from pytest_groundtruth.store.artifacts import ArtifactCache, prepare

Project = Callable[..., pytest.Pytester]
ROOT = Path(__file__).parents[2]
EXAMPLE = "groundtruth_llama_example"
SKIPS = r"has no (perplexity|teacher-forced scoring|GGUF export|top-k|chat prompts)"

pytestmark = [
    pytest.mark.requires_llamacpp,
    pytest.mark.skipif(server_unavailable() is not None, reason=str(server_unavailable())),
]


def example_source() -> str:
    """The example runtime exactly as docs/extending.md shows it."""
    doc = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
    section = doc.split("### A complete example runtime", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def install_example(where: Path) -> None:
    """Install the example like a wheel would: the module and its dist-info on sys.path."""
    (where / f"{EXAMPLE}.py").write_text(example_source())
    info = where / f"{EXAMPLE}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {EXAMPLE}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[pytest_groundtruth.runtimes]\nexample-llama = {EXAMPLE}:ExampleLlamaRuntime\n")


def with_engines(pytester: pytest.Pytester) -> None:
    """The test CLI where the configured runtimes look for it ({root}/tests/engines/)."""
    (pytester.path / "tests" / "engines").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "tests" / "engines" / "llama_cli.py", pytester.path / "tests" / "engines")


def runtime_tables(runtimes: list[str], server_name: str = "llamaserver") -> str:
    """A groundtruth.toml running ``runtimes``, with tests/engines/runtimes.toml's tables
    (the server renamed, to find its processes)."""
    tables = (ROOT / "tests" / "engines" / "runtimes.toml").read_text().replace(
        "[runtime.llamaserver]", f"[runtime.{server_name}]")
    return f"runtimes = {json.dumps(runtimes)}\n{tables}"


def records(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((pytester.path / "r.json").read_text())["results"]
    return data


def by_case(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """case id with the runtime taken out -> runtime -> record."""
    table: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for record in results:
        runtime = record["case"]["runtime"]
        key = record["case"]["suite"] + ":" + record["case"]["id"].replace(f"-{runtime}-", "-*-")
        table[key][runtime] = record
    return table


def same(a: Any, b: Any) -> bool:
    """Equal, numbers within float32 rounding (a CLI hands its scores over as float32)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        return bool(a == pytest.approx(b, rel=1e-6))
    return bool(a == b)


def server_processes(marker: str) -> list[str]:
    """Command lines of running processes that mention ``marker``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "pytest_groundtruth.runtimes.server" in text and marker in text:
            found.append(text)
    return found


# --------------------------------------------------------------------------- entry point


@pytest.mark.slow
def test_an_entry_point_runtime_is_like_a_built_in_one(make_project: Project) -> None:
    pytester = make_project(
        'models = ["tiny-llama"]\nruntimes = ["llamacpp", "example-llama"]\n'
        'quantizations = ["int8"]\nsuites = ["token", "ppl"]\n', models=("tiny-llama",))
    install_example(pytester.path)
    listed = pytester.runpytest("--collect-only", "-q")
    listed.stdout.fnmatch_lines(["*token[[]tiny-llama-example-llama-int8-code[]]*",
                                 "*ppl[[]tiny-llama-example-llama-int8[]]*"])
    typo = pytester.runpytest("--gt-runtime", "example-lama", "--collect-only")
    typo.stdout.fnmatch_lines(["*'example-lama', which is neither a registered runtime "
                               "(apr, command, example-llama, llamacpp, openai, torchao, "
                               "transformers)*"])
    result = pytester.runpytest("--gt-results", "r.json", "-rs")
    result.stdout.fnmatch_lines([
        "*groundtruth parity matrix*",
        "tiny-llama*example-llama*int8*skip*",
        "*runtime 'example-llama' has no perplexity (suite 'ppl' needs it)*",
    ])
    seen = records(pytester)
    versions = {r["runtime_version"] for r in seen if r["case"]["runtime"] == "example-llama"
                and r["outcome"] != "skipped"}
    assert len(versions) == 1
    assert versions.pop().startswith("example-llama 1 / llama-cpp-python")
    for key, runs in by_case(seen).items():  # the same engine: the same verdicts
        if key.startswith("token:"):
            assert runs["example-llama"]["outcome"] == runs["llamacpp"]["outcome"], key
            assert runs["example-llama"]["result"]["details"]["tokens"] == \
                runs["llamacpp"]["result"]["details"]["tokens"], key


# --------------------------------------------------------------------------- chat


def rewritten(source: Path, out: Path, *args: str) -> Path:
    """``source`` with new metadata, by gguf-py's own ``gguf-new-metadata``."""
    tool = Path(sys.executable).with_name("gguf-new-metadata")
    subprocess.run([str(tool), "--force", *args, str(source), str(out)], check=True,
                   capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="module")
def tiny_gguf(tiny: Callable[[str], ResolvedModel], gt_cache: Path) -> Path:
    return prepare(LlamaCppRuntime(), tiny("llama"), "float32", ArtifactCache(gt_cache)).path


@pytest.mark.slow
@pytest.mark.parametrize("change", ["removed", "altered"])
def test_a_broken_chat_template_fails_saying_so(make_project: Project, tiny_gguf: Path,
                                                tmp_path: Path, change: str) -> None:
    if change == "removed":
        broken = rewritten(tiny_gguf, tmp_path / "no-template.gguf",
                           "--remove-metadata", "tokenizer.chat_template")
    else:  # a template that drops the default system prompt, as a converter might
        broken = rewritten(tiny_gguf, tmp_path / "other-template.gguf", "--chat-template",
                           "{% for message in messages %}{{'<|im_start|>' + message['role'] + "
                           "'\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
                           "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                           "{% endif %}")
    server = f"srv-{tmp_path.name}"[:40].replace("_", "-")
    pytester = make_project(
        'models = ["tiny-llama"]\nquantizations = ["float32"]\nsuites = ["token"]\n'
        'prompts = ["capital", "code"]\n',
        groundtruth_toml=runtime_tables(["llamacpp", server], server), models=("tiny-llama",),
        chat=True)
    with_engines(pytester)
    result = pytester.runpytest("--gt-results", "r.json",
                                f"--gt-artifact=tiny-llama:llamacpp:float32={broken}",
                                f"--gt-artifact=tiny-llama:{server}:float32={broken}")
    outcomes = {r["name"]: (r["outcome"], r["reason"]) for r in records(pytester)}
    for runtime in ("llamacpp", server):
        outcome, reason = outcomes[f"token[tiny-llama-{runtime}-float32-capital]"]
        assert outcome == "failed"
        assert "chat prompt 'capital'" in reason
        assert "chat template is missing or altered" in reason
        # the plain prompt does not depend on the template
        assert outcomes[f"token[tiny-llama-{runtime}-float32-code]"][0] == "passed"
    first = {"removed": "at prompt token 0: oracle 1 '<|im_start|>', runtime ",
             "altered": "at prompt token 1: oracle 9690 'system', runtime 4093 'user'"}[change]
    result.stdout.fnmatch_lines([f"*token[[]tiny-llama-llamacpp-float32-capital[]]: chat prompt "
                                 f"'capital': the rendered prompt differs from the oracle's "
                                 f"{first}*"])
    if change == "removed":
        result.stdout.fnmatch_lines(["*note: the GGUF has no tokenizer.chat_template: rendered "
                                     "with llama-cpp-python's fallback chat format 'llama-2'*"])
    assert re.search(rf"token\[tiny-llama-{server}-float32-capital\]: chat prompt 'capital': the "
                     r"engine rendered the conversation to \d+ prompt tokens, the oracle's chat "
                     r"template to 37", result.stdout.str())
    assert not server_processes(str(broken)), "the plugin's server outlived the session"


@pytest.mark.slow
def test_chat_prompts_run_for_llamacpp_and_the_server(make_project: Project,
                                                      tmp_path: Path) -> None:
    server = f"srv-{tmp_path.name}"[:40].replace("_", "-")
    pytester = make_project(
        'models = ["tiny-llama"]\nquantizations = ["float32"]\nsuites = ["token", "topk"]\n'
        'prompts = ["capital", "colours"]\n',
        groundtruth_toml=runtime_tables(["llamacpp", server], server),
        models=("tiny-llama",), chat=True)
    with_engines(pytester)
    pytester.runpytest("--gt-results", "r.json", "-n", "2")
    seen = {r["name"]: r for r in records(pytester)}
    for runtime in ("llamacpp", server):
        for prompt in ("capital", "colours"):
            record = seen[f"token[tiny-llama-{runtime}-float32-{prompt}]"]
            assert record["outcome"] in ("passed", "failed"), record
            assert record["result"], record
    # the same GGUF, in process and served: the same tokens
    for prompt in ("capital", "colours"):
        tokens = {r: seen[f"token[tiny-llama-{r}-float32-{prompt}]"]["result"]["details"]
                  ["tokens"] for r in ("llamacpp", server)}
        assert tokens["llamacpp"] == tokens[server]
    assert not server_processes(server)


# --------------------------------------------------------------------------- the whole matrix


@pytest.mark.slow
def test_the_matrix_through_four_ways_of_running_llama_cpp(make_project: Project) -> None:
    """Done-when of issue 15: one matrix on the embedded model through in-process llama.cpp,
    the command runtime (the test CLI), the openai runtime (a server the plugin starts) and
    an entry-point runtime; every verdict agrees where the engines are the same."""
    pytester = make_project(
        'models = ["smollm2-135m"]\nquantizations = ["int8", "int4"]\n',
        groundtruth_toml=runtime_tables(["llamacpp", "llamacli", "llamaserver",
                                         "example-llama"]),
        models=("smollm2-135m",), chat=True)
    with_engines(pytester)
    install_example(pytester.path)
    pytester.runpytest("--gt-results", "r.json", "-n", "2", "--dist", "loadgroup")
    table = by_case(records(pytester))
    compared: dict[str, int] = defaultdict(int)
    for key, runs in sorted(table.items()):
        if key.startswith("cuda:"):
            continue  # the GPU ladder is the transformers runtime's, on CUDA only
        reference = runs["llamacpp"]
        assert reference["outcome"] in ("passed", "failed"), (key, reference["reason"])
        for runtime, record in runs.items():
            if record["outcome"] == "skipped":  # a capability the runtime lacks: say which
                assert re.search(SKIPS, record["reason"]), (key, runtime, record["reason"])
                continue
            assert record["outcome"] == reference["outcome"], (key, runtime, record["reason"])
            if "-nll-" in key and runtime == "example-llama":
                # pooled over the prompts it can answer: the example runtime has no chat,
                # so its pool lacks the chat prompts and the value is another average
                compared[runtime] += 1
                continue
            assert same(record["result"]["measured"], reference["result"]["measured"]), (
                key, runtime)
            if key.startswith("token:"):  # the same tokens for every prompt
                assert record["result"]["details"]["tokens"] == \
                    reference["result"]["details"]["tokens"], (key, runtime)
            compared[runtime] += 1
    # every runtime ran the suites its capabilities allow
    # ... the same ones for the CLI as in process, but for the suites that drive the
    # in-process engine itself (prompt lookup, a hot-applied LoRA adapter)
    in_process_only = sum(1 for key in table if key.startswith(("speculative:", "lora:")))
    assert in_process_only > 0
    assert compared["llamacli"] == compared["llamacpp"] - in_process_only
    assert compared["llamaserver"] > 0
    assert compared["example-llama"] > 0
    assert not server_processes("llamaserver")
