"""docs/qualification.md states the weights the code uses, and the README shows each
qualification feature with a command (declared once: the table is rendered from
the weights the suites declare (``report.score.weights``) and compared here)."""

from __future__ import annotations

from pathlib import Path

from pytest_groundtruth.config.qualification import GRADES
from pytest_groundtruth.lab.qualify import weights_table

ROOT = Path(__file__).parents[2]


def test_the_docs_list_every_weight_with_its_reason() -> None:
    doc = (ROOT / "docs" / "qualification.md").read_text(encoding="utf-8")
    for row in weights_table()[2:]:
        assert row in doc, row


def test_the_docs_and_readme_state_the_grades() -> None:
    spelled = ", ".join(f"{floor}+ {name}" for name, floor in GRADES[:-1]) + ", else F"
    for path in (ROOT / "docs" / "qualification.md", ROOT / "README.md"):
        text = " ".join(path.read_text(encoding="utf-8").split())
        assert spelled.replace(", else F", "") in text, path


def test_the_readme_has_a_command_for_each_feature() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for command in ("pytest tests/parity -m gateway", "groundtruth qualify reports/parity.json",
                    "--gt-min-grade B", "--gt-min-throughput llamacpp=", "--gt-max-p99-ms",
                    "groundtruth compare --model smollm2-135m --runtime llamacpp --runtime "
                    "torchao --runtime transformers",
                    "groundtruth compare --model smollm2-135m --model tiny-llama",
                    "--html=reports/parity.html"):
        assert command in readme, command
