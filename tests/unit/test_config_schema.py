"""One configuration schema: the declaration in config/schema.py validates every file, its
JSON Schema is published as docs/schema.json, and both say the same.

The published file must equal what the declaration exports today; the configurations
the project itself uses must pass both the loader and the JSON Schema (as an editor or
validate-pyproject reads it); a malformed table must be refused by both, with a message
that names the file, the table and the key.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pytest_groundtruth.cli.main import main, schema_text
from pytest_groundtruth.config import schema
from pytest_groundtruth.config.settings import ConfigError, apply_table, load_settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "docs" / "schema.json"
VALIDATOR = jsonschema.Draft7Validator(schema.json_schema())


def test_the_published_schema_is_the_declaration() -> None:
    assert PUBLISHED.read_text() == schema_text(), (
        "docs/schema.json differs from config/schema.py: run "
        "`groundtruth schema --write docs/schema.json`")
    jsonschema.Draft7Validator.check_schema(json.loads(PUBLISHED.read_text()))


def test_the_schema_command_writes_the_file(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "schema.json"
    assert main(["schema", "--write", str(target)]) == 0
    assert target.read_text() == schema_text()
    assert json.loads(capsys.readouterr().out) == schema.json_schema()


def _project_tables() -> list[tuple[str, dict[str, Any]]]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["groundtruth"]
    layers = [("pyproject.toml", pyproject)]
    for name in ("tests/parity/groundtruth.toml", "tests/engines/runtimes.toml"):
        layers.append((name, tomllib.loads((ROOT / name).read_text())))
    return layers


@pytest.mark.parametrize(("name", "table"), _project_tables(), ids=lambda v: str(v)[:30])
def test_the_projects_own_configuration_passes_both(name: str, table: dict[str, Any]) -> None:
    assert list(VALIDATOR.iter_errors(table)) == []
    schema.Groundtruth.model_validate(table)


def test_the_keys_are_the_settings() -> None:
    """Every key of [tool.groundtruth] lands in Settings (or is a table of them)."""
    settings = load_settings(ROOT)
    tables = {"roster", "runtime", "bounds", "artifacts", "adapters", "speculative"}
    for key in set(schema.KNOWN_KEYS) - tables:
        assert hasattr(settings, key), key


# A table, the words the loader's error must contain (after the file's name).
REFUSED = [
    ({"modles": []}, "unknown key(s) 'modles'"),
    ({"models": "smollm2-135m"}, "key 'models' must be a list of strings"),
    ({"models": ["smollm2-135m", 3]}, "key 'models' must be a list of strings"),
    ({"max_new_tokens": True}, "key 'max_new_tokens' = True has the wrong type"),
    ({"max_new_tokens": 0}, "key 'max_new_tokens' = 0 must be a positive integer"),
    ({"top_k": 1}, "key 'top_k' = 1 must be an integer >= 2"),
    ({"timeout": "300"}, "key 'timeout' = '300' has the wrong type"),
    ({"oracle_dir": ""}, "key 'oracle_dir' = '' must be a non-empty path string"),
    ({"speculative": {"draft_tokens": 0}}, "[speculative] key 'draft_tokens' = 0 must be a "
                                           "positive integer"),
    ({"speculative": {"drafts": {"m": []}}}, "[speculative] key 'drafts' must map a target"),
    ({"speculative": {"lookup": 3}}, "[speculative] unknown key(s) 'lookup'"),
    ({"bounds": [{"suite": "token", "max_mismatches": 4}]},
     "bounds[0]: key 'reason' is required: it must say which measurement justifies"),
    ({"bounds": [{"suite": "token", "reason": " ", "max_mismatches": 4}]},
     "bounds[0]: key 'reason' = ' ' must say which measurement justifies"),
    ({"bounds": [{"suite": "token", "reason": "x", "max_mismatches": "4"}]},
     "bounds[0]: key 'max_mismatches' = '4' has the wrong type: it must be a finite number"),
    ({"bounds": {"suite": "token"}}, "key 'bounds' must be an array of tables"),
    ({"artifacts": [{"model": "m", "runtime": "r", "quantization": "q"}]},
     "artifacts[0]: key 'path' is required"),
    ({"adapters": {"x": {"base": "tiny-llama", "rank": 4}}},
     "[adapters.x]: must be a table with a string key 'base'"),
    ({"runtime": {"mine": {"bin": "x"}}},
     "[runtime.mine]: must be a table with a string key 'kind'"),
    ({"roster": {"mine": {"source": "tiny:llama", "layers": "2"}}},
     "model 'mine': field 'layers' = '2' has the wrong type"),
    ({"roster": {"mine": {"source": "tiny:llama", "layerz": 2}}},
     "model 'mine': unknown key(s) 'layerz'"),
    ({"min_throughput": "fast"}, "key min_throughput = 'fast' must be a number"),
]


@pytest.mark.parametrize(("table", "words"), REFUSED, ids=[w for _, w in REFUSED])
def test_both_refuse_a_malformed_table_and_the_loader_names_file_table_and_key(
        tmp_path: Path, table: dict[str, Any], words: str) -> None:
    assert list(VALIDATOR.iter_errors(table)), "the published schema accepts it"
    settings = load_settings(tmp_path)
    with pytest.raises(ConfigError) as info:
        apply_table(settings, table, "a.toml")
    assert str(info.value).startswith("a.toml: ")
    assert words in str(info.value)


def test_several_problems_are_counted() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'x'.* \(and 2 more\)"):
        apply_table(load_settings(Path("/nonexistent")),
                    {"x": 1, "top_k": 1, "models": 3}, "a.toml")


def test_numbers_keep_their_type_and_lists_become_tuples(tmp_path: Path) -> None:
    settings = apply_table(load_settings(tmp_path), {
        "timeout": 30, "models": ["tiny-llama"], "oracle_dir": "o",
        "bounds": [{"suite": "token", "reason": "measured", "max_mismatches": 4}],
        "roster": {"mine": {"source": "tiny:llama", "ppl_ceiling": 35}}}, "a.toml")
    assert settings.timeout == 30
    assert type(settings.timeout) is int
    assert settings.models == ("tiny-llama",)
    assert settings.oracle_dir == Path("o")
    assert settings.bounds[-1].values == {"max_mismatches": 4}
    assert type(settings.bounds[-1].values["max_mismatches"]) is int
    assert type(settings.spec("mine").ppl_ceiling) is int


def test_validate_pyproject_reads_the_schema_through_the_plugin() -> None:
    """The package's ``validate_pyproject.tool_schema`` entry point, as validate-pyproject
    loads it (it refuses a tool schema of another JSON Schema draft than its own)."""
    from validate_pyproject import api, plugins
    from validate_pyproject.error_reporting import ValidationError

    assert "groundtruth" in {p.tool for p in plugins.list_from_entry_points()}
    validator = api.Validator()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert validator(project) == project
    bad = {**project, "tool": {**project["tool"], "groundtruth": {
        **project["tool"]["groundtruth"], "top_k": 1}}}
    with pytest.raises(ValidationError, match=r"tool\.groundtruth\.top_k"):
        validator(bad)
