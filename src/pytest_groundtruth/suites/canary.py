"""canary: the int8 generation's text equals the oracle's text exactly."""

from __future__ import annotations

from pytest_groundtruth.matrix import Case
from pytest_groundtruth.results import SuiteResult, token_rows
from pytest_groundtruth.suites.tokens import compare
from pytest_groundtruth.workbench import Workbench


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def run(case: Case, bench: Workbench) -> SuiteResult:
    assert case.prompt is not None
    oracle = bench.oracle(case.model, case.prompt)
    gen, artifact = bench.generate(case.model, case.runtime, case.quant, case.prompt)
    cmp = compare(oracle, oracle.tokens, gen.tokens)
    passed = gen.text == oracle.text
    summary = (
        "text identical to the oracle"
        if passed
        else f"text differs from the oracle: {_short(gen.text)} vs oracle {_short(oracle.text)}"
        f" ({cmp.mismatches}/{oracle.max_new_tokens} token mismatches)"
    )
    return SuiteResult(
        case=case,
        passed=passed,
        summary=summary,
        measured=cmp.mismatches,
        bound="identical text",
        first_divergence=cmp.first,
        rows=() if passed else token_rows(
            oracle.tokens, gen.tokens, lambda t: bench.decode(case.model, t),
            cmp.positions, oracle),
        artifact=str(artifact.path),
        recipe=artifact.recipe,
        calls=(gen.call,),
        details={"text": gen.text, "oracle_text": oracle.text, "tokens": list(gen.tokens),
                 "tokens_per_second": gen.tokens_per_second},
    )
