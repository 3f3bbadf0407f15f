"""`groundtruth falsify`: power per box and quantization, false alarms, the report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_groundtruth.config.settings import load_settings
from pytest_groundtruth.ggufio import hfconvert
from pytest_groundtruth.ggufio.reader import scan_gguf
from pytest_groundtruth.lab.falsify import (
    README_BEGIN,
    README_END,
    RowResult,
    false_alarms,
    falsify,
    missed,
    power,
    readme_section,
    render,
    replace_readme_section,
    trusted,
)
from pytest_groundtruth.lab.falsify import (
    SUITES as DEFAULT_SUITES,
)
from pytest_groundtruth.lab.other_tools import correct_files
from pytest_groundtruth.models.sources import ResolvedModel

ROOT = Path(__file__).parents[2]
SUITES = ("token", "rescore", "integrity")


def row(label: str, kind: str, **caught: list[str]) -> RowResult:
    result = RowResult(label, kind, ("float32", "int4"))
    for suite, quants in caught.items():
        result.caught[suite] = quants
        result.evidence[suite] = f"{suite} failed"
    return result


ROWS = [
    row("correct conversion", "correct", token=["q4"]),
    row("llama.cpp quantizer Q4_K_M", "correct", token=["q4"]),
    row("layer_dropped", "file", token=["f32", "q4"], rescore=["f32", "q4"],
        integrity=["f32", "q4"]),
    row("scale_off", "file", token=["q4"], integrity=["f32", "q4"]),
    row("kv_cache_reused", "engine", token=["f32", "q4"], rescore=["f32"]),
    RowResult("kv_heads_wrong", "file", not_applicable="no GQA"),
]


def test_black_box_power_counts_only_suites_quiet_on_correct_files() -> None:
    assert false_alarms(ROWS) == {"token": {"q4"}}
    assert trusted(ROWS, SUITES, "q4") == ["rescore"]
    assert trusted(ROWS, SUITES, "f32") == ["token", "rescore"]
    # At q4 token fails everything, correct files included: its catches do not count.
    assert power(ROWS, SUITES, "q4") == (1, 2, 3, ["scale_off", "kv_cache_reused"])
    assert power(ROWS, SUITES, "f32") == (2, 2, 3, ["scale_off"])
    assert missed(ROWS) == []
    assert missed([*ROWS, row("quiet", "engine")]) == ["quiet"]


def test_the_report_separates_the_boxes_and_lists_every_row() -> None:
    text = render("tiny", ROWS, SUITES, ("float32", "int4"))
    assert text.startswith("<!-- groundtruth falsify: ")  # its section of the document
    assert "| f32 | 2/3 (67 %) | `token`, `rescore` | 2/3 | scale_off |" in text
    assert "| q4 | 1/3 (33 %) | `rescore` | 2/3 | scale_off, kv_cache_reused |" in text
    assert "| `token` | black | q4 | 2/3 | 3/3 (false alarms) |" in text
    assert "| `integrity` | white | none | 2/3 | 2/3 |" in text
    assert "| kv_heads_wrong | file | not applicable: no GQA |" in text
    assert "| llama.cpp quantizer Q4_K_M (correct) | correct | q4 | - | - | q4 | - |" in text


def test_by_default_every_cpu_suite_runs_but_those_needing_a_derived_model() -> None:
    # lora and speculative judge a derived model (an adapter, a draft) the harness does
    # not break: they would only add time, and their verdicts would not be about the fault.
    assert "lora" not in DEFAULT_SUITES
    assert "speculative" not in DEFAULT_SUITES
    assert "cuda" not in DEFAULT_SUITES
    assert {"gateway", "token", "rescore", "agreement", "integrity"} <= set(DEFAULT_SUITES)


def test_the_readme_section_is_replaced_between_its_markers() -> None:
    readme = f"intro\n{README_BEGIN}\nold table\n{README_END}\nrest\n"
    section = readme_section(ROWS, SUITES, ("float32", "int4"))
    updated = replace_readme_section(readme, section)
    assert updated.startswith("intro\n" + README_BEGIN)
    assert "old table" not in updated
    assert "| `rescore` | black | none | 2/3 | 1/3 |" in updated
    assert updated.endswith(f"{README_END}\nrest\n")
    with pytest.raises(ValueError, match=r"no .* markers"):
        replace_readme_section("no markers here", section)


@pytest.mark.requires_llamacpp
def test_a_real_run_on_a_tiny_model(gt_cache: Path) -> None:
    settings = load_settings(ROOT)
    rows = falsify(settings, gt_cache, "tiny-llama", ("float32",), ["layer_dropped"],
                   ["prompt_token_dropped"], ("rescore", "integrity"), other_tools=False,
                   progress=False)
    correct, file_fault, engine_fault = rows
    assert (correct.kind, file_fault.kind, engine_fault.kind) == ("correct", "file", "engine")
    assert not correct.caught.get("rescore")  # no false alarm at float32
    assert file_fault.caught["rescore"] == ["f32"]
    assert file_fault.caught["integrity"] == ["f32"]
    assert engine_fault.caught["rescore"] == ["f32"]
    assert not engine_fault.caught.get("integrity")  # the file is correct: white box is blind


@pytest.mark.requires_llamacpp
def test_other_tools_files_are_judged_at_their_own_type_where_offered(
    tiny: Callable[[str], ResolvedModel], gt_cache: Path
) -> None:
    files = correct_files(gt_cache, tiny("llama"), ("float32", "int8", "int4", "q4_k_m"))
    judged = {f.gguf_type: f.quant for f in files if "pure" not in f.label}
    if files[0].path is None:
        pytest.skip(files[0].recipe)
    assert judged == {"F32": "float32", "Q8_0": "int8", "Q4_0": "int4", "Q4_K_M": "q4_k_m",
                      "Q5_K_M": "int4", "Q6_K": "int4"}
    assert all(f.path is not None and f.path.is_file() for f in files)
    # the all-Q4_0 recipe: every 2-D tensor Q4_0, the token embeddings included
    pure = next(f for f in files if "pure" in f.label)
    assert pure.quant == "int4"
    assert pure.path is not None
    scan = scan_gguf(pure.path)
    assert {t.type for t in scan.tensors.values() if len(t.dims) == 2} == {"Q4_0"}


def test_a_suite_of_one_precision_runs_on_a_file_of_that_precision_under_its_type_name(
        tmp_path: Path) -> None:
    """canary judges int8 generations: llama.cpp's Q8_0 file, judged at ``q8_0``, is one
    (the other tools' correct files are judged at their own type's name)."""
    from pytest_groundtruth.config.settings import Settings
    from pytest_groundtruth.suites.matrix import build_cases

    for quant in ("int8", "q8_0"):
        settings = Settings(root=tmp_path, runtimes=("llamacpp",), quantizations=(quant,),
                            suites=("canary",))
        cases = build_cases(settings, ["code"])
        assert [(c.suite, c.quant) for c in cases] == [("canary", quant)]
    settings = Settings(root=tmp_path, runtimes=("llamacpp",), quantizations=("q4_0",),
                        suites=("canary",))
    assert not build_cases(settings, ["code"])
    # and not the other way: roundtrip declares q8_0 (the K-quant runs), which adds no
    # int8 case to the matrix (it did, 21 cases, after the first version of this rule)
    settings = Settings(root=tmp_path, runtimes=("llamacpp",), quantizations=("int8", "q8_0"),
                        suites=("roundtrip",))
    assert [c.quant for c in build_cases(settings, ["code"])] == ["q8_0"]


@pytest.mark.slow
@pytest.mark.requires_llamacpp
def test_only_the_selected_precisions_correct_files_are_judged(gt_cache: Path) -> None:
    """``--quant int8 --suite canary``: the other tools' float32 and 4-bit files are not
    judged (they used to be, and canary's absence at float32 was an error ending the run)."""
    settings = load_settings(ROOT)
    rows = falsify(settings, gt_cache, "tiny-llama", ("int8",), [], [], ("canary",),
                   progress=False)
    if len(rows) == 1:
        pytest.skip("llama.cpp's converter is not at hand, so no other tool's file to judge: "
                    f"{hfconvert.unavailable(gt_cache)}")
    assert [r.label for r in rows] == ["correct conversion", "llama.cpp converter Q8_0"]
    assert not any(r.not_applicable for r in rows)
    assert all(r.seconds for r in rows)  # canary ran on both


def test_runs_split_by_quantization_merge_into_one_runs_tables(tmp_path: Path) -> None:
    from pytest_groundtruth.lab.falsify import merge_rows, quants_of, read_rows, rows_json

    def at(quant: str, **caught: list[str]) -> list[RowResult]:
        correct = RowResult("correct conversion", "correct", (quant,))
        fault = RowResult("layer_dropped", "file", (quant,))
        for suite, quants in caught.items():
            fault.caught[suite] = quants
            fault.evidence[suite] = f"{suite} failed at {quants}"
        return [correct, fault]

    (tmp_path / "a.json").write_text(rows_json("m", at("float32", rescore=["f32"])))
    (tmp_path / "b.json").write_text(rows_json("m", at("int4", rescore=["q4"], token=["q4"])))
    model, first = read_rows(tmp_path / "a.json")
    assert model == "m"
    rows = merge_rows(first, read_rows(tmp_path / "b.json")[1])
    assert [r.label for r in rows] == ["correct conversion", "layer_dropped"]
    assert quants_of(rows, ("float32", "int8", "int4")) == ("float32", "int4")
    assert rows[1].caught == {"rescore": ["f32", "q4"], "token": ["q4"]}
    assert rows[1].evidence["rescore"] == "rescore failed at ['f32']"
    assert power(rows, SUITES, "q4")[:3] == (1, 0, 1)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match=r"bad\.json: not a falsify rows file"):
        read_rows(tmp_path / "bad.json")


def test_each_model_has_its_own_section_in_the_document() -> None:
    from pytest_groundtruth.lab.falsify import replace_model_section

    one = render("one", ROWS, SUITES, ("float32", "int4"))
    two = render("two", ROWS[:2], SUITES, ("float32",))
    document = replace_model_section("", "one", one)
    document = replace_model_section(document, "two", two)
    assert document.count("### one on llama.cpp") == 1
    assert document.count("### two on llama.cpp") == 1
    again = replace_model_section(document, "one", one.replace("26", "27"))
    assert again.count("### one on llama.cpp") == 1
    assert again.index("### one") < again.index("### two")  # its place is kept
    assert again.startswith("<!-- generated by `groundtruth falsify`")


@pytest.mark.parametrize(("name", "gguf_type"), [
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
    ("gemma-3-270m-q4_k_m.gguf", "Q4_K_M"),  # a dash, lower case: was read as the whole stem
    ("model-Q8_0.gguf", "Q8_0"), ("m.f16.gguf", "F16"), ("model.gguf", "?")])
def test_a_published_files_type_is_read_from_its_name(name: str, gguf_type: str) -> None:
    from pytest_groundtruth.lab.other_tools import published_type

    assert published_type(name) == gguf_type


@pytest.mark.slow
@pytest.mark.requires_llamacpp
def test_other_files_not_kept_are_not_listed(
        tiny: Callable[[str], ResolvedModel], gt_cache: Path) -> None:
    files = correct_files(gt_cache, tiny("llama"), ("float32", "int8", "int4", "q4_k_m"),
                          keep=lambda gguf_type, width: gguf_type == "Q4_K_M")
    if not files or files[0].path is None:
        pytest.skip(f"llama.cpp's converter is not at hand: {hfconvert.unavailable(gt_cache)}")
    assert [(f.label, f.quant, f.width) for f in files] == [
        ("llama.cpp quantizer Q4_K_M", "q4_k_m", "int4")]


def test_a_document_from_before_the_sections_is_written_anew() -> None:
    from pytest_groundtruth.lab.falsify import DOC_HEAD, replace_model_section

    old = f"{DOC_HEAD}\n\n### one on llama.cpp (f32 = float32)\n\nstale tables\n"
    document = replace_model_section(old, "one", render("one", ROWS, SUITES, ("float32",)))
    assert "stale tables" not in document
    assert document.count("### one on llama.cpp") == 1


def test_faults_run_at_one_quantization_count_only_there() -> None:
    correct = RowResult("correct conversion", "correct", ("float32", "int4"))
    fault = RowResult("layer_dropped", "file", ("int4",))
    fault.caught["rescore"] = ["q4"]
    rows = [correct, fault]
    assert power(rows, SUITES, "q4")[:3] == (1, 0, 1)
    assert power(rows, SUITES, "f32")[:3] == (0, 0, 0)  # not "0/1": it did not run there
    text = render("m", rows, SUITES, ("float32", "int4"))
    assert "| f32 | no fault run here |" in text


def test_a_suite_that_never_ran_is_not_reported_quiet() -> None:
    """Defect: `perf` read "no false alarms" (and was trusted) though no row ran it."""
    from pytest_groundtruth.lab.falsify import RowResult, suites_run

    timed = RowResult("ours", "correct", ("int8",), seconds={"token": 1.0, "total": 1.0})
    failed = RowResult("theirs", "correct", ("int8",))
    failed.caught["ppl"].append("q8")
    skipped = RowResult("published", "correct", ("int8",), skipped={"canary": "no oracle"})
    rows = [timed, failed, skipped]
    assert suites_run(rows, ("token", "ppl", "canary", "perf")) == ("token", "ppl", "canary")
