"""The HTTP client for engines behind a server: JSON in, JSON out, failures named.

:func:`post_json` sends one request (standard library only) and turns every way a server
can fail into an :class:`~pytest_groundtruth.core.failures.EngineFailure` carrying the
call (method, URL and body; never headers, so an API key never reaches a report):

* an error status: ``CRASHED`` with the status and an excerpt of the body;
* no whole answer within ``timeout``: ``TIMEOUT``. The timeout bounds the request from
  connecting to the last byte, not each socket read: a server that trickles one byte a
  second is cut at ``timeout`` (a timer shuts the socket down under any blocked read);
* a body over ``max_bytes``: ``GARBAGE``, read in chunks and abandoned at the limit (a
  3 GB answer was read whole before, 6.3 GB resident);
* a refused connection: retried ``retries`` times (0.5 s, then doubling), then
  ``CRASHED``; no other error is retried;
* the connection closed without an answer: ``CRASHED``;
* a body that is not a JSON object: ``GARBAGE`` with an excerpt.

Every message, call and log tail passes through ``redact`` before it leaves (the API
key's value, where a server echoes it).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from pytest_groundtruth.core.failures import EngineFailure, FailureKind
from pytest_groundtruth.core.process import excerpt

BACKOFF = 0.5  # seconds before the first retry of a refused connection; doubles
BODY_EXCERPT = 500
CHUNK = 1 << 16


class _Cut(Exception):
    """The deadline passed, or the body grew over the limit."""


def _read_body(answer: http.client.HTTPResponse, max_bytes: int, expired: threading.Event
               ) -> bytes:
    length = answer.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise _Cut(f"announced {int(length)} bytes")
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = answer.read1(CHUNK)
        if expired.is_set():
            raise TimeoutError
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > max_bytes:
            raise _Cut(f"sent more than {max_bytes} bytes")
        parts.append(chunk)


def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    if parts.scheme == "https":
        return http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                           context=ssl.create_default_context()), path
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout), path


def _exchange(url: str, payload: bytes, headers: Mapping[str, str], timeout: float,
              max_bytes: int) -> tuple[int, str, bytes]:
    """One request: (status, reason, body); raises TimeoutError at the deadline."""
    conn, path = _connection(url, timeout)
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(timeout, cut)
    timer.daemon = True
    timer.start()
    answer = None
    try:
        conn.request("POST", path, payload, dict(headers))
        answer = conn.getresponse()  # owns the socket when the server closes after it
        body = _read_body(answer, max_bytes, expired)
        return answer.status, answer.reason, body
    except (OSError, http.client.HTTPException):
        if expired.is_set():
            raise TimeoutError from None
        raise
    finally:
        timer.cancel()
        if answer is not None:
            answer.close()
        conn.close()


def post_json(url: str, body: Mapping[str, Any], *, timeout: float, retries: int = 0,
              headers: Mapping[str, str] | None = None, max_bytes: int = 8 << 20,
              log: Callable[[], str] = lambda: "",
              redact: Callable[[str], str] = lambda text: text,
              hint: Callable[[int], str] = lambda status: "",
              ) -> tuple[dict[str, Any], str]:
    """POST ``body`` as JSON to ``url``; the answer's JSON object and the call.

    ``log()`` (a server's log tail, read when a failure happens) goes into its stderr;
    ``hint(status)`` is added to an error status's message.
    """
    call = redact(f"POST {url} {json.dumps(body, ensure_ascii=False)}")

    def fail(kind: FailureKind, message: str) -> EngineFailure:
        return EngineFailure(kind, redact(message), call=call, stderr=redact(log()))

    payload = json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    delay = BACKOFF
    for attempt in range(retries + 1):
        try:
            status, reason, raw = _exchange(url, payload, all_headers, timeout, max_bytes)
            break
        except TimeoutError:
            raise fail(FailureKind.TIMEOUT, f"{url} did not answer within {timeout:g} s "
                       "(the whole request, from connecting to the last byte)") from None
        except _Cut as exc:
            raise fail(FailureKind.GARBAGE, f"{url} {exc.args[0]}: an answer over the limit "
                       f"of {max_bytes} bytes (the runtime's 'max_response_bytes') was "
                       "abandoned unread") from None
        except ConnectionRefusedError as exc:
            if attempt < retries:
                time.sleep(delay)
                delay *= 2
                continue
            raise fail(FailureKind.CRASHED, f"no answer from {url}: {exc} (after "
                       f"{attempt + 1} attempt(s))") from None
        except (http.client.HTTPException, ConnectionError) as exc:
            raise fail(FailureKind.CRASHED, f"{url} closed the connection without an answer "
                       f"({type(exc).__name__}: {exc})") from None
        except OSError as exc:
            raise fail(FailureKind.CRASHED, f"no answer from {url}: {exc} (after "
                       f"{attempt + 1} attempt(s))") from None
    text = raw.decode("utf-8", "replace")
    if status >= 400:
        extra = hint(status)
        raise fail(FailureKind.CRASHED, f"{url} answered HTTP {status} {reason}: "
                   f"{excerpt(text, BODY_EXCERPT)}" + (f" ({extra})" if extra else ""))
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise fail(FailureKind.GARBAGE, f"{url} answered a body that is not a JSON object: "
                   f"{excerpt(text, BODY_EXCERPT)}")
    return data, call
