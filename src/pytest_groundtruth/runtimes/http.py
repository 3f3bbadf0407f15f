"""The one HTTP client for engines behind a server: JSON in, JSON out, failures named.

:func:`post_json` sends one request (standard library only) and turns every way a server
can fail into an :class:`~pytest_groundtruth.core.failures.EngineFailure` carrying the
call (method, URL and body; never headers, so an API key never reaches a report):

* an error status: ``CRASHED`` with the status and an excerpt of the body;
* no answer within ``timeout``: ``TIMEOUT``;
* a refused connection: retried ``retries`` times (0.5 s, then doubling), then
  ``CRASHED``; no other error is retried;
* the connection closed without an answer: ``CRASHED``;
* a body that is not a JSON object: ``GARBAGE`` with an excerpt.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from pytest_groundtruth.core.failures import EngineFailure, FailureKind
from pytest_groundtruth.core.process import excerpt

BACKOFF = 0.5  # seconds before the first retry of a refused connection; doubles
BODY_EXCERPT = 500


def post_json(url: str, body: Mapping[str, Any], *, timeout: float, retries: int = 0,
              headers: Mapping[str, str] | None = None,
              log: Callable[[], str] = lambda: "") -> tuple[dict[str, Any], str]:
    """POST ``body`` as JSON to ``url``; the answer's JSON object and the call.

    ``log()`` (a server's log tail, read when a failure happens) goes into its stderr.
    """
    call = f"POST {url} {json.dumps(body, ensure_ascii=False)}"

    def fail(kind: FailureKind, message: str) -> EngineFailure:
        return EngineFailure(kind, message, call=call, stderr=log())

    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json", **(headers or {})})
    delay = BACKOFF
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                raw = answer.read()
            break
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            raise fail(FailureKind.CRASHED, f"{url} answered HTTP {exc.code} {exc.reason}: "
                       f"{excerpt(text, BODY_EXCERPT)}") from None
        except TimeoutError:
            raise fail(FailureKind.TIMEOUT, f"{url} did not answer within {timeout:g} s"
                       ) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise fail(FailureKind.TIMEOUT, f"{url} did not answer within {timeout:g} s"
                           ) from None
            if isinstance(exc.reason, ConnectionRefusedError) and attempt < retries:
                time.sleep(delay)
                delay *= 2
                continue
            raise fail(FailureKind.CRASHED, f"no answer from {url}: {exc.reason} (after "
                       f"{attempt + 1} attempt(s))") from None
        except (http.client.HTTPException, ConnectionError) as exc:
            raise fail(FailureKind.CRASHED, f"{url} closed the connection without an answer "
                       f"({type(exc).__name__}: {exc})") from None
    text = raw.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise fail(FailureKind.GARBAGE, f"{url} answered a body that is not a JSON object: "
                   f"{excerpt(text, BODY_EXCERPT)}")
    return data, call
