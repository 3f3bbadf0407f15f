"""The known-failure baseline: falsifications a team has accepted, as strict xfails.

A plain text file, one test per line, sorted, so it reads and diffs well::

    # pytest-groundtruth baseline: known falsifications (strict xfail).
    # <test id>                                   <measured value>
    token[smollm2-135m-llamacpp-int8-code]        13

A listed test that fails is reported as xfail (with the baseline's and today's
measurement); one that passes is XPASS(strict) and fails the run until the baseline is
updated (``--gt-baseline-update`` rewrites it from the run's parity failures). A test
that is not listed fails as usual. Only parity verdicts are excused: an engine crash,
a timeout or a corrupt oracle still fails.
"""

from __future__ import annotations

from pathlib import Path

from pytest_groundtruth.core.atomic import atomic_write_text

HEADER = """\
# pytest-groundtruth baseline: known falsifications (strict xfail).
# Rewrite with `pytest --gt-baseline FILE --gt-baseline-update`.
# <test id>  <measured value>
"""


class BaselineError(ValueError):
    """The baseline file is malformed; names the file and line."""


def load_baseline(path: Path) -> dict[str, str]:
    """test id -> measured value, as recorded."""
    entries: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BaselineError(
            f"baseline {path} does not exist: create it with --gt-baseline-update"
        ) from None
    except UnicodeDecodeError as exc:
        at = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise BaselineError(f"{path}:{at}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:  # a directory, unreadable
        raise BaselineError(f"baseline {path} cannot be read ({exc.strerror or exc})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
        if not stripped:
            continue
        parts = stripped.split()
        if len(parts) != 2 or "[" not in parts[0] or not parts[0].endswith("]"):
            raise BaselineError(
                f"{path}:{number}: expected '<suite>[<id>] <measured value>', got {line!r}"
            )
        if parts[0] in entries:
            raise BaselineError(f"{path}:{number}: {parts[0]} is listed twice")
        entries[parts[0]] = parts[1]
    return entries


def format_measured(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace(" ", "_") if value is not None else "-"


def write_baseline(path: Path, entries: dict[str, str]) -> None:
    width = max((len(k) for k in entries), default=0) + 2
    body = "".join(f"{k:<{width}}{v}\n" for k, v in sorted(entries.items()))
    atomic_write_text(path, HEADER + body)
