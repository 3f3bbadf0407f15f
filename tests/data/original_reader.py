"""A script written for the original workflow's oracle files: it reads only their fields.

It stands for the scripts teams already have (tests/unit/test_original_format.py runs it
on the committed oracles). It knows nothing of pytest-groundtruth: it walks
``ORACLE_DIR/<slug>/<prompt>.json`` and checks every file as the original workflow
documents it (field names and order, types, meanings), one line per file.

Usage: python original_reader.py ORACLE_DIR PROMPTS_DIR; exit status 1 when a file
does not read as an original oracle.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

FIELDS = ["model", "model_slug", "prompt", "prompt_file", "runtime", "format",
          "transformers_version", "torch_version", "tokens", "text", "token_count",
          "max_new_tokens", "do_sample"]


def problems(path: Path, data: dict[str, Any], prompts: Path) -> list[str]:
    missing = [name for name in FIELDS if name not in data]
    if missing:
        return [f"missing {', '.join(missing)}"]
    found = []
    if list(data)[:len(FIELDS)] != FIELDS:
        found.append(f"fields out of order: {list(data)[:len(FIELDS)]}")
    if data["model_slug"] != path.parent.name:
        found.append(f"model_slug {data['model_slug']!r} is not the folder's name")
    if data["prompt_file"] != f"{path.stem}.txt":
        found.append(f"prompt_file {data['prompt_file']!r} is not {path.stem}.txt")
    elif data["prompt"] != (prompts / data["prompt_file"]).read_text().strip():
        found.append("prompt differs from the prompt file")
    if data["runtime"] != "transformers" or data["format"] != "float32":
        found.append(f"runtime/format {data['runtime']}/{data['format']}")
    tokens = data["tokens"]
    if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
        found.append("tokens is not a list of ids")
    elif data["token_count"] != len(tokens) or not 0 < len(tokens) <= data["max_new_tokens"]:
        found.append(f"token_count {data['token_count']} for {len(tokens)} tokens")
    if data["max_new_tokens"] != 32 or data["do_sample"] is not False:
        found.append("not the original's greedy 32-token generation")
    if not isinstance(data["model"], str) or not data["model"]:
        found.append("model is not a name")
    if not all(isinstance(data[k], str) for k in ("text", "transformers_version",
                                                  "torch_version")):
        found.append("text or versions are not strings")
    return found


def main(argv: list[str]) -> int:
    oracles, prompts = Path(argv[1]), Path(argv[2])
    bad = count = 0
    for path in sorted(oracles.glob("*/*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        found = problems(path, data, prompts)
        count += 1
        bad += bool(found)
        verdict = "; ".join(found) if found else (
            f"ok {data['model']} {data['token_count']} tokens {data['text'][:30]!r}")
        print(f"{path.parent.name}/{path.name}: {verdict}")
    print(f"{count} oracle file(s), {bad} not in the original format")
    return 1 if bad or not count else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
