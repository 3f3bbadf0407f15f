"""Qualification as users run it: the gateway suite, the four outcomes, the score and its
grade in every report, ``--gt-min-grade`` and the performance assertions.

Real engines throughout: the tiny llama with transformers (float32 matches its oracle
exactly; bfloat16 drifts on two prompts: real Falsified tests and a score below A+),
llama.cpp on a GGUF broken in place (a real engine producing garbage), and the named apr
stand-in (apr cannot be installed here) with injected crash, hang and NaN faults.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from standins.apr.cli import write_launcher

Project = Callable[..., pytest.Pytester]
# pytest runs of real engines in subprocesses: seconds to a minute each
pytestmark = pytest.mark.slow

# Tiny random-weight models have near-flat logits, so their first flips are near ties that
# the default rule forgives; these projects exercise failures, so they count every position.
TOOL = ('models = ["tiny-llama"]\nruntimes = ["transformers"]\nnear_ties = "count"\n'
        'quantizations = ["float32", "bfloat16"]\nsuites = ["gateway", "token", "agreement"]\n'
        'prompts = ["arithmetic", "code", "completion", "greeting"]\n')
GRADE = r"\d+ (A\+|A|B\+|B|C|F)( \(gateway\))?"


def results(pytester: pytest.Pytester, name: str = "r.json") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((pytester.path / name).read_text())
    return data


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in data["results"]}


def report_tests(path: Path) -> dict[str, list[dict[str, Any]]]:
    """pytest-html's per-test data (the JSON its page script renders)."""
    blob = re.search(r'data-jsonblob="([^"]*)"', path.read_text())
    assert blob is not None
    tests: dict[str, list[dict[str, Any]]] = json.loads(html.unescape(blob.group(1)))["tests"]
    return tests


def qualification(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{q['runtime']}/{q['quantization']}": q for q in data["qualification"]}


# --------------------------------------------------------------------------- gateway, score


def test_gateway_and_score_in_the_terminal_matrix_and_the_json(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    result = pytester.runpytest("--gt-results", "r.json")
    result.assert_outcomes(passed=12, failed=2)
    result.stdout.fnmatch_lines([
        "*groundtruth parity matrix*",
        "model*runtime*quant*gateway*token*agreement*score",
        "tiny-llama*transformers*bfloat16*1C*2F 2C*2C*B",
        "tiny-llama*transformers*float32*1C*4C*2C*1000 A+",
        "*X Crashed  T Timeout  F Falsified*C Corroborated  s skipped*",
    ])
    data = results(pytester)
    scores = qualification(data)
    assert scores["transformers/float32"]["score"] == 1000
    assert scores["transformers/float32"]["grade"] == "A+"
    bf16 = scores["transformers/bfloat16"]
    assert bf16["gateway"] == "passed"
    assert 800 <= bf16["score"] < 900  # token falsified twice: measured values, not a verdict
    parts = {p["suite"]: p for p in bf16["parts"]}
    assert set(parts) == {"token", "agreement"}
    assert 0.3 < parts["token"]["quality"] < 0.7
    records = by_name(data)
    gateway = records["gateway[tiny-llama-transformers-float32]"]
    assert gateway["verdict"] == "Corroborated"
    gates = gateway["result"]["details"]["gates"]
    assert [(g["gate"], g["status"]) for g in gates] == [
        ("G1", "passed"), ("G2", "passed"), ("G3", "passed"), ("G4", "passed")]
    assert set(gateway["result"]["details"]["performance"]) == {
        "arithmetic", "code", "completion", "greeting"}
    assert records["token[tiny-llama-transformers-bfloat16-code]"]["verdict"] == "Falsified"


def test_every_generation_records_its_speed(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    pytester.runpytest("-k", "gateway and float32", "--gt-no-cache", "--gt-results", "r.json")
    perf = by_name(results(pytester))["gateway[tiny-llama-transformers-float32]"]
    for name, speed in perf["result"]["details"]["performance"].items():
        assert speed["tokens"] == 32, name
        assert speed["tokens_per_second"] > 0
        assert 0 < speed["first_token_ms"] < 60_000
        assert 0 < speed["p50_ms"] <= speed["p99_ms"]


@pytest.mark.requires_llamacpp
def test_a_real_engine_printing_garbage_fails_g4_and_scores_zero(
    make_project: Project, tiny: Callable[[str], Any], tmp_path: Path, gt_cache: Path
) -> None:
    """A float32 GGUF whose final norm is zeroed: every logit is 0, llama.cpp's argmax is
    token 0 (``<|endoftext|>``, special) at every step."""
    import gguf

    from pytest_groundtruth.config.settings import Settings
    from pytest_groundtruth.runtimes.registry import make_runtime
    from pytest_groundtruth.store.artifacts import ArtifactCache, prepare

    runtime = make_runtime("llamacpp", Settings(root=tmp_path))
    good = prepare(runtime, tiny("llama"), "float32", ArtifactCache(gt_cache)).path
    broken = tmp_path / "broken.gguf"
    shutil.copyfile(good, broken)
    reader = gguf.GGUFReader(broken, "r+")
    (norm,) = [t for t in reader.tensors if t.name == "output_norm.weight"]
    norm.data[:] = 0
    reader.data.flush()
    del reader
    pytester = make_project(
        'models = ["tiny-llama"]\nruntimes = ["llamacpp"]\nquantizations = ["float32"]\n'
        'suites = ["gateway", "token"]\nprompts = ["code", "greeting"]\n',
        models=("tiny-llama",))
    result = pytester.runpytest(f"--gt-artifact=tiny-llama:llamacpp:float32={broken}",
                                "--gt-results", "r.json", "--gt-no-cache")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines([
        "gateway[[]tiny-llama-llamacpp-float32[]]: G4 (not garbage) failed: code: empty at "
        "character 0: no visible text ('') where the oracle has 198 characters (and 5 more)",
        "*note:   code: repetition at token 0: token [[]0[]] repeated 32.0 times over 32/32 "
        "tokens (>= 70%)",
        "*note:   code: special-flood at token 0: special token 0 is 32/32 of the tokens*",
        "*G1*loads*passed*",
        "*G4*not garbage*failed*code: empty*",
        "tiny-llama*llamacpp*float32*1F*2F*0 F (gateway)",
    ])
    data = results(pytester)
    assert qualification(data)["llamacpp/float32"]["score"] == 0
    assert by_name(data)["gateway[tiny-llama-llamacpp-float32]"]["verdict"] == "Falsified"


def test_an_artifact_that_does_not_load_fails_g1_as_crashed(make_project: Project,
                                                             tmp_path: Path) -> None:
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00")
    pytester = make_project(
        'models = ["tiny-llama"]\nruntimes = ["llamacpp"]\nquantizations = ["float32"]\n'
        'suites = ["gateway"]\n', models=("tiny-llama",))
    result = pytester.runpytest(f"--gt-artifact=tiny-llama:llamacpp:float32={bad}",
                                "--gt-results", "r.json", "--junitxml", "j.xml")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*G1 (loads) failed: loading your file *truncated.gguf: ArtifactError: artifact "
        "*truncated.gguf is not a sound llamacpp artifact*",
        "*G2*generates*not checked*",
    ])
    record = by_name(results(pytester))["gateway[tiny-llama-llamacpp-float32]"]
    assert record["verdict"] == "Crashed"
    assert record["result"]["fault"] == "crashed"
    assert '<property name="groundtruth_outcome" value="Crashed"' in \
        (pytester.path / "j.xml").read_text()


# --------------------------------------------------------------------------- outcomes


@pytest.fixture
def apr_project(make_project: Project, tmp_path: Path) -> pytest.Pytester:
    launcher = write_launcher(tmp_path / "bin")
    return make_project(
        'models = ["tiny-llama"]\nruntimes = ["apr"]\nquantizations = ["float16"]\n'
        f'suites = ["gateway", "token"]\nprompts = ["code", "greeting"]\n'
        f'apr_bin = "{launcher}"\n',
        models=("tiny-llama",),
    )


@pytest.mark.parametrize(("fault", "outcome", "gate"), [
    ("run:crash", "Crashed", "G2"),
    ("run:nan", "Falsified", "G4"),
])
def test_an_engine_that_dies_is_crashed_one_that_answers_nan_is_falsified(
    apr_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, fault: str, outcome: str,
    gate: str,
) -> None:
    monkeypatch.setenv("APR_STANDIN_FAULT", fault)
    result = apr_project.runpytest("--gt-no-cache", "--gt-results", "r.json",
                                   "--junitxml", "j.xml", "--html", "report.html")
    data = results(apr_project)
    records = by_name(data)
    gateway = records["gateway[tiny-llama-apr-float16]"]
    assert gateway["verdict"] == outcome
    failed_gate = [g for g in gateway["result"]["details"]["gates"] if g["status"] == "failed"]
    assert [g["gate"] for g in failed_gate] == [gate]
    assert qualification(data)["apr/float16"]["score"] == 0
    code = {"Crashed": "X", "Falsified": "F"}[outcome]
    result.stdout.fnmatch_lines([f"tiny-llama*apr*float16*1{code}*0 F (gateway)"])
    token = records["token[tiny-llama-apr-float16-code]"]["verdict"]
    assert token == ("Crashed" if fault == "run:crash" else "Corroborated")  # NaN text, ids ok
    junit = (apr_project.path / "j.xml").read_text()
    assert f'<property name="groundtruth_outcome" value="{outcome}" />' in junit
    rows = {test_id: runs[0]["resultsTableRow"]
            for test_id, runs in report_tests(apr_project.path / "report.html").items()}
    (gateway_row,) = [r for test_id, r in rows.items() if "gateway[" in test_id]
    assert f'<td class="col-outcome">{outcome}</td>' in gateway_row


def test_an_engine_that_hangs_is_timeout(apr_project: pytest.Pytester,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APR_STANDIN_FAULT", "run:hang")
    result = apr_project.runpytest("-k", "gateway", "--gt-no-cache", "--gt-timeout", "45",
                                   "--gt-results", "r.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*G2 (generates) failed: prompt 'code': EngineFailure: "
                                 "[[]timeout[]]*", "tiny-llama*apr*float16*1T*0 F (gateway)"])
    assert by_name(results(apr_project))["gateway[tiny-llama-apr-float16]"]["verdict"] == \
        "Timeout"


# --------------------------------------------------------------------------- minimum grade


@pytest.mark.parametrize("where", ["option", "pyproject", "groundtruth.toml"])
def test_a_combination_below_the_minimum_grade_fails_the_run(make_project: Project,
                                                              where: str) -> None:
    tool, local, args = TOOL, "", ["-k", "not token"]  # every test passes
    if where == "option":
        args.append("--gt-min-grade=A+")
    elif where == "pyproject":
        tool += 'min_grade = "A+"\n'
    else:
        local = 'min_grade = "A+"\n'
    pytester = make_project(tool, local, models=("tiny-llama",))
    result = pytester.runpytest(*args, "--gt-results", "r.json")
    result.assert_outcomes(passed=6)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    score = qualification(results(pytester))["transformers/bfloat16"]["score"]
    assert 850 <= score < 900  # agreement only, on the prompts and the evaluation text: a B+
    result.stdout.fnmatch_lines([f"groundtruth: tiny-llama/transformers/bfloat16 scores {score} "
                                 "(B+), below the minimum grade A+ (950)"])
    assert "float32 scores" not in result.stdout.str()


def test_a_combination_at_the_minimum_grade_passes(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    result = pytester.runpytest("-k", "not token", "--gt-min-grade", "B+")
    result.assert_outcomes(passed=6)
    assert result.ret == pytest.ExitCode.OK
    assert "below the minimum grade" not in result.stdout.str()


# --------------------------------------------------------------------------- performance


def test_no_performance_test_unless_a_threshold_is_set(make_project: Project) -> None:
    pytester = make_project(TOOL.replace('"agreement"]', '"agreement", "perf"]'),
                            models=("tiny-llama",))
    result = pytester.runpytest("--collect-only", "-q")
    assert "perf[" not in result.stdout.str()
    result = pytester.runpytest("--collect-only", "-q", "--gt-min-throughput=transformers=1")
    result.stdout.fnmatch_lines(["*perf[[]tiny-llama-transformers-float32[]]",
                                 "*perf[[]tiny-llama-transformers-bfloat16[]]"])


def test_throughput_and_latency_floors_fail_with_the_measured_figure(
    make_project: Project,
) -> None:
    pytester = make_project(TOOL.replace('"agreement"]', '"perf"]')
                            + "min_throughput = {transformers = 1}\n", models=("tiny-llama",))
    result = pytester.runpytest("-k", "perf and float32", "--gt-max-p99-ms=0.001",
                                "--gt-results", "r.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "perf[[]tiny-llama-transformers-float32[]]: * tokens/s >= 1; p99 per-token latency "
        "* ms > 0.001 (128 tokens over 4 prompts; time to first token * ms (mean))"])
    speed = by_name(results(pytester))["perf[tiny-llama-transformers-float32]"]["result"]
    assert speed["measured"]["p99_ms"] > 0.001
    # the same floors a machine meets pass, and are not part of the score
    result = pytester.runpytest("-k", "perf and float32", "--gt-max-p99-ms=60000",
                                "--gt-results", "r2.json")
    result.assert_outcomes(passed=1)
    assert results(pytester, "r2.json")["qualification"][0]["parts"] == []


@pytest.mark.parametrize(("config", "args", "message"), [
    ('min_grade = "Z"\n', [], "*key 'min_grade' = 'Z' is not one of A+, A, B+, B, C, F*"),
    ("min_throughput = -1\n", [], "*key min_throughput = -1 must be a positive, finite number*"),
    ("max_p99_ms = {nosuch = 5}\n", [],
     "*key 'max_p99_ms' names runtime 'nosuch', which is neither a registered runtime*"),
    ("max_p99_ms = 'fast'\n", [], "*key max_p99_ms = 'fast' must be a number*"),
    ("", ["--gt-min-throughput=llamacpp=many"],
     "*--gt-min-throughput 'llamacpp=many': expected [[]RUNTIME=[]]NUMBER*"),
])
def test_bad_qualification_settings_are_named(make_project: Project, config: str,
                                              args: list[str], message: str) -> None:
    pytester = make_project(TOOL + config)
    result = pytester.runpytest("--collect-only", *args)
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines([message])


# --------------------------------------------------------------------------- HTML structure


class _Tables(HTMLParser):
    """The report's matrix: header cells, and each row's cells with their style."""

    def __init__(self) -> None:
        super().__init__()
        self.in_matrix = False
        self.header: list[str] = []
        self.rows: list[list[tuple[str, str]]] = []
        self._cell: list[str] | None = None
        self._style = ""
        self._th = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and "gt-matrix" in (a.get("class") or ""):
            self.in_matrix = True
        elif self.in_matrix and tag == "tr":
            self.rows.append([])
        elif self.in_matrix and tag in ("td", "th"):
            self._cell, self._style, self._th = [], a.get("style") or "", tag == "th"

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.in_matrix:
            self.in_matrix = False
        elif tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell)
            if self._th:
                self.header.append(text)
            else:
                self.rows[-1].append((text, self._style))
            self._cell = None


def test_html_report_has_the_scored_matrix_and_a_chart_per_test(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    pytester.runpytest("-n", "2", "--html", "report.html", "--self-contained-html")
    page = (pytester.path / "report.html").read_text()
    tables = _Tables()
    tables.feed(page)
    assert tables.header[:4] == ["model", "runtime", "quant", "gateway"]
    assert tables.header[-1] == "score"
    rows = [r for r in tables.rows if r]
    assert len(rows) == 2
    for row in rows:
        score, style = row[-1]
        assert re.fullmatch(GRADE, score), score
        assert style.startswith("background:hsl(")
        for text, style in row[3:-1]:  # every suite cell is coloured by its quality
            assert re.fullmatch(r"(\d+[XTFfC!s]+ ?)+", text), text
            assert style.startswith("background:hsl(")
    charts = 0
    for test_id, runs in report_tests(pytester.path / "report.html").items():
        extras = [e["content"] for run in runs for e in run.get("extras", [])
                  if e.get("name") == "groundtruth"]
        assert len(extras) == 1, test_id
        content = extras[0]
        assert "<script" not in content
        assert "http://" not in content.replace('xmlns="http://www.w3.org/2000/svg"', "")
        svgs = re.findall(r"<svg .*?</svg>", content, flags=re.S)
        if "agreement[" in test_id:
            assert not svgs
            assert "no per-position chart" in content
            continue
        expected = 4 if "gateway[" in test_id else 1
        assert len(svgs) == expected, test_id
        for s in svgs:
            root = ET.fromstring(s)  # well-formed SVG
            assert root.tag == "{http://www.w3.org/2000/svg}svg"
            classes = {e.get("class") for e in root.iter()}
            assert {"series-oracle", "series-runtime"} <= classes
            charts += 1
        if "bfloat16-code" in test_id:  # a failing test: side by side, divergence marked
            assert "gt-sidebyside" in content
            assert "<mark>" in content
            assert 'class="first-divergence"' in content
    assert charts == 2 * 4 + 2 * 4  # token tests, and the gateways' four prompts each
