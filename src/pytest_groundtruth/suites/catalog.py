"""The suites: names, markers, what each applies to, and the default bound of each parameter.

Pure data, no heavy imports: the plugin builds the test matrix and validates
configuration from this catalog alone. A bound's default is either one number or a
table keyed by quantization (``"*"`` for any other). Every bound can be overridden per
suite and per model / runtime / quantization / prompt (``[[tool.groundtruth.bounds]]``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

Number: TypeAlias = "int | float"
Default: TypeAlias = "int | float | dict[str, int | float] | None"


@dataclass(frozen=True)
class SuiteInfo:
    name: str
    summary: str
    # "prompt": one test per model x runtime x quant x prompt; "artifact": per model x
    # runtime x quant; "pair": per model x runtime (x prompt), comparing two quantizations.
    scope: str
    per_prompt: bool
    params: dict[str, Default] = field(default_factory=dict)
    # Quantizations the suite applies to (None: every selected one).
    quantizations: tuple[str, ...] | None = None


AGREEMENT_BOUNDS_FILE = Path(__file__).parents[1] / "data" / "agreement_bounds.json"


def load_agreement_bounds(path: Path = AGREEMENT_BOUNDS_FILE) -> dict[str, dict[str, float]]:
    """The calibrated agreement bounds (written by `groundtruth calibrate`)."""
    bounds: dict[str, dict[str, float]] = json.loads(path.read_text())["bounds"]
    return bounds


AGREEMENT_BOUNDS = load_agreement_bounds()

CATALOG: dict[str, SuiteInfo] = {
    s.name: s
    for s in (
        SuiteInfo(
            "canary",
            "int8 generation's text equals the oracle text exactly",
            scope="prompt",
            per_prompt=True,
            quantizations=("int8",),
        ),
        SuiteInfo(
            "token",
            "positional token mismatches against the oracle within a bound",
            scope="prompt",
            per_prompt=True,
            params={
                "max_mismatches": {
                    "int8": 3,
                    "int4": 5,
                    "float32": 2,
                    "bfloat16": 3,
                    "float16": 5,
                    "*": 5,
                }
            },
        ),
        SuiteInfo(
            "drift",
            "int8 mismatches <= int4 mismatches + slack (more bits must not drift more)",
            scope="pair",
            per_prompt=True,
            params={"slack": 1},
        ),
        SuiteInfo(
            "roundtrip",
            "export the int4 artifact to GGUF, reimport: tokens identical to the artifact's own",
            scope="prompt",
            per_prompt=True,
            params={"max_mismatches": 0},
            quantizations=("int4",),
        ),
        SuiteInfo(
            "ppl",
            "perplexity below the model's ceiling; |ppl(int4) - ppl(int8)| below a gap",
            scope="artifact",
            per_prompt=False,
            params={"ceiling": None, "max_gap": 0.5},
        ),
        SuiteInfo(
            "cuda",
            "GPU precision ladder: bf16/fp16 against the float32 oracle and each other",
            scope="cuda",
            per_prompt=True,
            params={
                "max_mismatches": {"bfloat16": 3, "float16": 5, "*": 5},
                "pair_max_mismatches": 3,
                "slack": 0,  # drift(bf16) <= drift(fp16)
            },
        ),
        SuiteInfo(
            "topk",
            "at the first divergence each side's token is in the other's top-k (vLLM's rule)",
            scope="prompt",
            per_prompt=True,
            params={"k": 5},
        ),
        SuiteInfo(
            "agreement",
            "teacher-forced top-1 agreement and KL divergence against the oracle's top-k",
            scope="artifact",
            per_prompt=False,
            # `groundtruth calibrate` derives these (docs/calibration.md).
            params={
                "min_top1": {q: b["min_top1"] for q, b in AGREEMENT_BOUNDS.items()},
                "max_kl": {q: b["max_kl"] for q, b in AGREEMENT_BOUNDS.items()},
            },
        ),
        SuiteInfo(
            "integrity",
            "the artifact itself against the source: metadata, tokenizer, every tensor",
            scope="artifact",
            per_prompt=False,
            # Tensor bounds are derived from each tensor's declared type (docs/integrity.md);
            # slack multiplies them (e.g. 1.5 for an importance-matrix quantization).
            params={"slack": 1.0},
        ),
    )
}

MARKERS: dict[str, str] = {name: info.summary for name, info in CATALOG.items()}

DEFAULT_SUITES = tuple(CATALOG)

