"""Engine results, cached: one key scheme for every kind of result.

``results/<kind>/<key>.json`` where ``key = digest([SCHEMA, kind, artifact key, inputs])``:
a generation (inputs: prompt, max_new_tokens, top_k), a perplexity (the text's hash), an
agreement or integrity measurement (what it was measured against), ... Each file holds
``{"token": ..., "artifact": <artifact key>, "result": {...}}``; a missing, unreadable
or (under ``--gt-no-cache``) stale file is a miss.

:meth:`ResultStore.fetch` makes a missing result under a file lock, so a result that
one pytest-xdist worker is making is waited for by the others, never made twice. In a
read-only cache a missing result is made and used, not stored; a full disk is a
:class:`~pytest_groundtruth.core.failures.CacheUnusable` naming the folder.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pytest_groundtruth.core.atomic import atomic_write_text, cache_problem, locked
from pytest_groundtruth.core.hashing import digest
from pytest_groundtruth.core.paths import inside

SCHEMA = 2  # bump when a stored result changes meaning
T = TypeVar("T")


class ResultStore:
    def __init__(self, root: Path, refresh_token: str | None = None) -> None:
        self.root = root / "results"
        self.refresh_token = refresh_token
        self.made = 0  # results this process computed (cache misses)

    def path(self, kind: str, artifact_key: str, inputs: Any) -> Path:
        return inside(self.root, kind, f"{digest([SCHEMA, kind, artifact_key, inputs])[:40]}.json")

    def get(self, kind: str, artifact_key: str, inputs: Any) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path(kind, artifact_key, inputs).read_text())
            if self.refresh_token is not None and data.get("token") != self.refresh_token:
                return None
            result = data["result"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # missing or unreadable: the engine runs again
        return result if isinstance(result, dict) else None

    def put(self, kind: str, artifact_key: str, inputs: Any, result: dict[str, Any]) -> None:
        # "artifact": which artifact's result this is, so `groundtruth clean` can drop a
        # runtime's results (the file name is a one-way digest).
        payload = {"token": self.refresh_token, "artifact": artifact_key, "result": result}
        path = self.path(kind, artifact_key, inputs)
        try:
            atomic_write_text(path, json.dumps(payload) + "\n")
        except OSError as exc:
            problem = cache_problem(self.root, exc, f"storing a {kind} result")
            if problem is None:
                raise
            if problem.errno == errno.EROFS:
                return  # a read-only cache: the result is used, not kept
            raise problem from exc

    def fetch(self, kind: str, artifact_key: str, inputs: Any,
              make: Callable[[], dict[str, Any]], decode: Callable[[dict[str, Any]], T]) -> T:
        """The stored result decoded, else ``make()`` (once across processes) stored and
        decoded. A stored result that no longer decodes (``decode`` raises KeyError,
        TypeError or ValueError) is made again."""
        found = self._decoded(kind, artifact_key, inputs, decode)
        if found is not None:
            return found
        with locked(self.path(kind, artifact_key, inputs)):
            found = self._decoded(kind, artifact_key, inputs, decode)  # made meanwhile?
            if found is not None:
                return found
            result = make()
            self.made += 1
            self.put(kind, artifact_key, inputs, result)
            return decode(result)

    def _decoded(self, kind: str, artifact_key: str, inputs: Any,
                 decode: Callable[[dict[str, Any]], T]) -> T | None:
        data = self.get(kind, artifact_key, inputs)
        if data is None:
            return None
        try:
            return decode(data)
        except (KeyError, TypeError, ValueError):
            return None
