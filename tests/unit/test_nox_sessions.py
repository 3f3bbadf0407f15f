"""The nox sessions that run the parity matrix give it all it needs on a machine that never ran
the project.

Measured (issue 21, a fresh clone with an empty HOME): `nox -s parity` skipped
paired[smollm2-135m-llamacpp-int8/int4] ("llama.cpp's convert_hf_to_gguf.py is not at hand")
because only `nox -s tests` fetched the llama-cpp-python sdist that holds it: the README's main
job covered less on a new machine than on one where the tests had run once.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sessions() -> dict[str, ast.FunctionDef]:
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    found: dict[str, ast.FunctionDef] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any(
                "session" in ast.unparse(d) for d in node.decorator_list):
            found[node.name] = node
    return found


def runs_the_matrix(body: ast.FunctionDef) -> bool:
    text = ast.unparse(body)
    return "PARITY" in text or "'tests/parity'" in text or "pytest', '-n'" in text


def calls(body: ast.FunctionDef, name: str) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name
               for n in ast.walk(body))


def test_every_session_that_runs_the_matrix_fetches_the_reference_converter() -> None:
    found = sessions()
    matrix = sorted(name for name, body in found.items() if runs_the_matrix(body))
    assert {"parity", "tests", "check", "latest"} <= set(matrix), matrix
    missing = [name for name in matrix if not calls(found[name], "llama_cpp_sources")]
    assert missing == [], (f"sessions {missing} run the parity matrix without "
                           "llama_cpp_sources(session): the paired suite's llama.cpp cases skip "
                           "on a machine where `nox -s tests` never ran")
