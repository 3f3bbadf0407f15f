"""The openai runtime against hostile servers: a trickle, a huge answer, an echoed API key,
token ids outside the vocabulary, NaN and infinite log-probabilities, a /v1 base URL.

Each server is a real HTTP server on 127.0.0.1 (``http.server`` in a thread) whose handler a
test chooses; every handler's loop is bounded and ends when the client goes away, and the
fixture shuts the server down.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pytest_groundtruth.config.settings import Settings, apply_table
from pytest_groundtruth.core.failures import EngineFailure, FailureKind
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.runtimes.openai import OpenAIRunner, OpenAIRuntime
from pytest_groundtruth.runtimes.registry import make_runtime
from pytest_groundtruth.store.artifacts import ArtifactCache, prepare

KEY = "sk-hostile-0123456789abcdef"
Handler = Callable[[BaseHTTPRequestHandler], None]


class Server:
    """A real HTTP server on 127.0.0.1 whose POST handler a test sets (``handle``)."""

    def __init__(self) -> None:
        self.handle: Handler = lambda h: None
        self.stopping = threading.Event()
        outer = self

        class Request(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                with contextlib.suppress(OSError):  # the client went away: the point
                    outer.handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Request)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.close()


def runner_for(url: str, tmp_path: Path, model: ResolvedModel, **options: Any) -> OpenAIRunner:
    table = {"kind": "openai", "base_url": url, "model": "m", "quantizations": ["int8"],
             "timeout": 5, "retries": 0, **options}
    runtime = make_runtime("srv", apply_table(Settings(root=tmp_path),
                                              {"runtime": {"srv": table}}, "test"))
    assert isinstance(runtime, OpenAIRuntime)
    artifact = prepare(runtime, model, "int8", ArtifactCache(tmp_path / "cache"))
    return runtime.open(artifact, model)


def answer(status: int, body: str | bytes) -> Handler:
    def handle(h: BaseHTTPRequestHandler) -> None:
        data = body.encode() if isinstance(body, str) else body
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return handle


def completion(text: str, **choice: Any) -> str:
    return json.dumps({"choices": [{"text": text, "finish_reason": "length", **choice}]},
                      allow_nan=True)


# --------------------------------------------------------------------------- 1: time and size


def test_a_trickling_server_is_cut_at_the_timeout(server: Server, tmp_path: Path,
                                                  tiny: Callable[[str], ResolvedModel]) -> None:
    def trickle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.flush()
        for _ in range(40):  # one byte every 0.25 s: each read is quick, the whole is not
            if server.stopping.wait(0.25):
                return
            h.wfile.write(b" ")
            h.wfile.flush()

    server.handle = trickle
    with runner_for(server.url, tmp_path, tiny("llama"), timeout=1.5) as runner:
        start = time.monotonic()
        with pytest.raises(EngineFailure) as info:
            runner.generate("Hello", 8)
        assert time.monotonic() - start < 4
    assert info.value.kind is FailureKind.TIMEOUT
    assert "did not answer within 1.5 s" in str(info.value)


def test_trickled_headers_are_cut_at_the_timeout(server: Server, tmp_path: Path,
                                                 tiny: Callable[[str], ResolvedModel]) -> None:
    def trickle(h: BaseHTTPRequestHandler) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 40:
            if server.stopping.wait(0.25):
                return
            h.wfile.write(bytes([byte]))
            h.wfile.flush()

    server.handle = trickle
    with runner_for(server.url, tmp_path, tiny("llama"), timeout=1.5) as runner:
        start = time.monotonic()
        with pytest.raises(EngineFailure) as info:
            runner.generate("Hello", 8)
        assert time.monotonic() - start < 4
    assert info.value.kind is FailureKind.TIMEOUT


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "until-close"])
def test_an_oversize_answer_is_abandoned_unread(server: Server, tmp_path: Path,
                                                tiny: Callable[[str], ResolvedModel],
                                                announced: bool) -> None:
    chunk = b"x" * (1 << 20)
    total = 64  # MiB the server would send

    def huge(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        if announced:
            h.send_header("Content-Length", str(total * len(chunk)))
        h.send_header("Connection", "close")
        h.end_headers()
        for _ in range(total):
            if server.stopping.is_set():
                return
            h.wfile.write(chunk)

    server.handle = huge
    with runner_for(server.url, tmp_path, tiny("llama"), max_response_bytes=1 << 20) as runner:
        tracemalloc.start()
        try:
            with pytest.raises(EngineFailure) as info:
                runner.generate("Hello", 8)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert info.value.kind is FailureKind.GARBAGE
    assert "over the limit of 1048576 bytes" in str(info.value)
    assert "max_response_bytes" in str(info.value)
    assert peak < 8 << 20  # never the whole 64 MiB


def test_the_default_size_limit_scales_with_max_tokens(tmp_path: Path,
                                                       tiny: Callable[[str], ResolvedModel]
                                                       ) -> None:
    runner = runner_for("http://127.0.0.1:9", tmp_path, tiny("llama"))
    assert 4 << 20 <= runner.max_bytes(32) < runner.max_bytes(1024) <= 128 << 20


# --------------------------------------------------------------------------- 2: the key


def test_an_echoed_key_is_redacted_from_the_failure(server: Server, tmp_path: Path,
                                                    tiny: Callable[[str], ResolvedModel],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GT_HOSTILE_KEY", KEY)
    server.handle = answer(401, json.dumps({"error": {
        "message": f"Incorrect API key provided: {KEY}. Bearer {KEY}"}}))
    with runner_for(server.url, tmp_path, tiny("llama"), api_key_env="GT_HOSTILE_KEY"
                    ) as runner, pytest.raises(EngineFailure) as info:
        runner.generate("Hello", 8)
    text = f"{info.value} {info.value.call} {info.value.stderr} {info.value!r}"
    assert KEY not in text
    assert "Incorrect API key provided: <$GT_HOSTILE_KEY>" in str(info.value)
    assert info.value.kind is FailureKind.CRASHED


def test_a_key_in_a_garbage_answer_is_redacted(server: Server, tmp_path: Path,
                                               tiny: Callable[[str], ResolvedModel],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GT_HOSTILE_KEY", KEY)
    server.handle = answer(200, json.dumps({"choices": [], "debug": {"auth": KEY}}))
    with runner_for(server.url, tmp_path, tiny("llama"), api_key_env="GT_HOSTILE_KEY"
                    ) as runner, pytest.raises(EngineFailure) as info:
        runner.generate("Hello", 8)
    assert KEY not in str(info.value)
    assert info.value.kind is FailureKind.GARBAGE


# --------------------------------------------------------------------------- 3, 4: ids, NaN


@pytest.mark.parametrize(("ids", "says"), [
    ([5, -1], "#1 is -1, outside the vocabulary [0, "),
    ([5, "vocab"], "#1 is 'vocab', not an integer id"),
])
def test_token_ids_are_checked(server: Server, tmp_path: Path,
                               tiny: Callable[[str], ResolvedModel], ids: list[Any],
                               says: str) -> None:
    model = tiny("llama")
    server.handle = answer(200, completion(" x", token_ids=ids))
    with runner_for(server.url, tmp_path, model) as runner, \
            pytest.raises(EngineFailure) as info:
        runner.generate("Hello", 8)
    assert info.value.kind is FailureKind.GARBAGE
    assert says in str(info.value)


def test_a_token_id_equal_to_the_vocabulary_size_is_rejected(
        server: Server, tmp_path: Path, tiny: Callable[[str], ResolvedModel]) -> None:
    model = tiny("llama")
    assert model.spec.vocab
    server.handle = answer(200, completion(" x", token_ids=[1, model.spec.vocab]))
    with runner_for(server.url, tmp_path, model) as runner, \
            pytest.raises(EngineFailure) as info:
        runner.generate("Hello", 8)
    assert info.value.kind is FailureKind.GARBAGE
    assert f"is {model.spec.vocab}, outside the vocabulary [0, {model.spec.vocab})" in str(
        info.value)
    server.handle = answer(200, completion(" x", token_ids=[1, 2],
                                           prompt_token_ids=[3, -7]))
    with runner_for(server.url, tmp_path, model) as runner, \
            pytest.raises(EngineFailure, match="prompt token id #1 is -7"):
        runner.generate("Hello", 8)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_logprobs_are_nan_inf(server: Server, tmp_path: Path,
                                         tiny: Callable[[str], ResolvedModel],
                                         bad: float) -> None:
    model = tiny("llama")
    with runner_for(server.url, tmp_path, model) as runner:
        ids = runner.vocab.encode(" Paris. It is")[:3]
        pieces = [runner.vocab.tokenizer.decode([i]) for i in ids]
        tops = [{p: -0.5} for p in pieces]
        tops[1] = {pieces[1]: bad}
        server.handle = answer(200, completion("".join(pieces), token_ids=ids, logprobs={
            "tokens": pieces, "top_logprobs": tops}))
        with pytest.raises(EngineFailure) as info:
            runner.generate("The capital of France is", 3, top_k=1)
    assert info.value.kind is FailureKind.NAN
    assert "top_logprobs[1]" in str(info.value)


def test_chat_non_finite_logprobs_are_nan_inf(server: Server, tmp_path: Path,
                                              tiny: Callable[[str], ResolvedModel]) -> None:
    from pytest_groundtruth.config.prompts import Message

    content = [{"token": " x", "logprob": -0.1, "top_logprobs": [{"token": " x",
                                                                   "logprob": float("nan")}]}]
    server.handle = answer(200, json.dumps({"choices": [{
        "message": {"content": " x"}, "finish_reason": "length",
        "logprobs": {"content": content}}]}))
    with runner_for(server.url, tmp_path, tiny("llama")) as runner, \
            pytest.raises(EngineFailure) as info:
        runner.chat([Message("user", "hi")], 1, top_k=1)
    assert info.value.kind is FailureKind.NAN


# --------------------------------------------------------------------------- minor: /v1


def test_a_base_url_ending_in_v1_gets_a_hint(server: Server, tmp_path: Path,
                                             tiny: Callable[[str], ResolvedModel]) -> None:
    server.handle = answer(404, '{"detail": "Not Found"}')
    with runner_for(server.url + "/v1", tmp_path, tiny("llama")) as runner, \
            pytest.raises(EngineFailure) as info:
        runner.generate("Hello", 8)
    assert "/v1/v1/completions answered HTTP 404" in str(info.value)
    assert "leave /v1 out of base_url" in str(info.value)


# --------------------------------------------------------------------------- 2: every output


@pytest.mark.slow
def test_an_echoed_key_reaches_no_report(server: Server, make_project: Callable[..., Any],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A 401 that echoes the key, as OpenAI's does, through every output of a real run."""

    def echo(h: BaseHTTPRequestHandler) -> None:
        key = h.headers.get("Authorization", "").removeprefix("Bearer ")
        answer(401, json.dumps({"error": {"message": f"Incorrect API key provided: {key}. "
                                          f"You can find your API key at ..."}}))(h)

    server.handle = echo
    monkeypatch.setenv("GT_SECRET_KEY", KEY)
    pytester = make_project(
        'models = ["tiny-llama"]\nruntimes = ["srv"]\nquantizations = ["int8"]\n'
        'suites = ["gateway", "token"]\nprompts = ["code"]\n'
        f'[tool.groundtruth.runtime.srv]\nkind = "openai"\nbase_url = "{server.url}"\n'
        'model = "m"\napi_key_env = "GT_SECRET_KEY"\nquantizations = ["int8"]\n'
        'retries = 0\ntimeout = 5\n',
        models=("tiny-llama",))
    result = pytester.runpytest("--gt-results=r.json", "--gt-ticket=t.md",
                                "--junitxml=j.xml", "--html=h.html", "-rA", "-v")
    outputs = {name: (pytester.path / name).read_text() for name in
               ("r.json", "t.md", "j.xml", "h.html")}
    outputs["terminal"] = result.stdout.str() + result.stderr.str()
    assert "Incorrect API key provided" in outputs["terminal"]  # the server was reached
    for name, text in outputs.items():
        assert KEY not in text, f"the API key is in the {name}"
    assert "<$GT_SECRET_KEY>" in outputs["r.json"]
    assert "<$GT_SECRET_KEY>" in outputs["t.md"]
