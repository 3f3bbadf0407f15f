"""The openai runtime: configuration, what each failing server comes back as, how token ids
are read, and llama-cpp-python's own server started by the plugin.

Failing servers are real HTTP servers on real sockets (``http.server`` in a thread) that
answer 500, a malformed body, nothing at all, or close the connection; a refused
connection is a port nobody listens on. The engine tests start llama-cpp-python's server.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pytest_groundtruth.config.prompts import load_prompts
from pytest_groundtruth.config.roster import BUILTIN
from pytest_groundtruth.config.settings import ConfigError, Settings, apply_table
from pytest_groundtruth.core.failures import EngineFailure, FailureKind, RuntimeUnavailable
from pytest_groundtruth.models.sources import ResolvedModel, resolve
from pytest_groundtruth.runtimes.base import Capability, respond
from pytest_groundtruth.runtimes.llamacpp import LlamaCppRuntime
from pytest_groundtruth.runtimes.openai import OpenAIRunner, OpenAIRuntime
from pytest_groundtruth.runtimes.registry import make_runtime
from pytest_groundtruth.runtimes.server import (
    LlamaServer,
    ServerConfig,
    free_port,
    server_unavailable,
)
from pytest_groundtruth.store.artifacts import ArtifactCache, prepare

ROOT = Path(__file__).parents[2]


class FakeServer:
    """A real HTTP server whose answer a test chooses: (status, body) or a behaviour."""

    def __init__(self) -> None:
        self.answer: tuple[int, str] | str = (200, "{}")
        self.seen: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.seen.append((self.path, body, dict(self.headers)))
                if outer.answer == "hang":
                    time.sleep(5)
                    return
                if outer.answer == "close":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                assert isinstance(outer.answer, tuple)
                status, text = outer.answer
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(text.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def openai(url: str, tmp_path: Path, **options: Any) -> OpenAIRuntime:
    table = {"kind": "openai", "base_url": url, "model": "m", "quantizations": ["int8"],
             "timeout": 5, **options}
    runtime = make_runtime("srv", apply_table(Settings(root=tmp_path), {"runtime": {"srv": table}},
                                              "test"))
    assert isinstance(runtime, OpenAIRuntime)
    return runtime


def runner_for(runtime: OpenAIRuntime, model: ResolvedModel, tmp_path: Path) -> OpenAIRunner:
    artifact = prepare(runtime, model, "int8", ArtifactCache(tmp_path / "cache"))
    return runtime.open(artifact, model)


def completion(text: str, pieces: list[str] | None = None, finish: str = "length",
               **choice: Any) -> str:
    logprobs = None if pieces is None else {"tokens": pieces,
                                            "top_logprobs": [{p: -0.5} for p in pieces]}
    return json.dumps({"choices": [{"text": text, "finish_reason": finish,
                                    "logprobs": logprobs, **choice}],
                       "usage": {"prompt_tokens": 5}})


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "set exactly one of 'base_url'"),
        ({"base_url": "http://x", "serve": "llama-cpp-python"}, "set exactly one"),
        ({"serve": "vllm"}, "serve = 'vllm' is not one of llama-cpp-python"),
        ({"base_url": "http://x", "quantizations": ["int8"]}, "option 'model'"),
        ({"base_url": "http://x", "model": "m"}, "option 'quantizations'"),
        ({"serve": "llama-cpp-python", "capabilities": ["generate", "embed"]},
         r"option 'capabilities' has \['embed'\]"),
        ({"serve": "llama-cpp-python", "timeout": 0}, "'timeout' must be a positive number"),
        ({"serve": "llama-cpp-python", "kv_cache": "q8"}, "kv_cache must be one of"),
        ({"serve": "llama-cpp-python", "api_key": "s3cret"}, r"unknown option\(s\) 'api_key'"),
    ],
)
def test_bad_configuration(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        make_runtime("srv", apply_table(Settings(root=tmp_path),
                                        {"runtime": {"srv": {"kind": "openai", **options}}}, "t"))
    assert "'srv'" in str(info.value)


def test_capabilities_and_defaults(tmp_path: Path) -> None:
    served = make_runtime("srv", apply_table(Settings(root=tmp_path), {"runtime": {"srv": {
        "kind": "openai", "serve": "llama-cpp-python"}}}, "t"))
    assert served.capabilities == {Capability.GENERATE, Capability.CHAT, Capability.TOPK,
                                   Capability.EXPORT_GGUF, Capability.REIMPORT}
    assert served.quantizations == LlamaCppRuntime.quantizations
    assert isinstance(served, OpenAIRuntime)
    assert served.extra == {"repeat_penalty": 1.0}  # llama-cpp-python's default is 1.1
    external = openai("http://127.0.0.1:1", tmp_path, capabilities=["generate", "perplexity"])
    assert external.capabilities == {Capability.GENERATE, Capability.PERPLEXITY}
    assert not external.builds_artifacts
    assert external.key_parts("int8")["base_url"] == "http://127.0.0.1:1"


# --------------------------------------------------------------------------- failures


def test_error_status_is_crashed_with_status_and_body(fake: FakeServer, tmp_path: Path,
                                                      tiny: Callable[[str], ResolvedModel]
                                                      ) -> None:
    fake.answer = (500, '{"error": "CUDA out of memory while loading layer 12"}')
    with runner_for(openai(fake.url, tmp_path), tiny("llama"), tmp_path) as runner, \
            pytest.raises(EngineFailure) as info:
        runner.generate("Hello", 8)
    assert info.value.kind is FailureKind.CRASHED
    assert f"{fake.url}/v1/completions answered HTTP 500" in str(info.value)
    assert "CUDA out of memory while loading layer 12" in str(info.value)
    assert info.value.call.startswith(f"POST {fake.url}/v1/completions {{")


def test_malformed_body_is_an_engine_failure(fake: FakeServer, tmp_path: Path,
                                             tiny: Callable[[str], ResolvedModel]) -> None:
    with runner_for(openai(fake.url, tmp_path), tiny("llama"), tmp_path) as runner:
        for answer, says in (("<html>502 Bad Gateway</html>", "not a JSON object: '<html>502"),
                             ('{"choices": []}', "the answer has no choices"),
                             ('{"choices": [{"finish_reason": "length"}]}', "has no text"),
                             (completion("x", finish="content_filter"), "finish_reason")):
            fake.answer = (200, answer)
            with pytest.raises(EngineFailure) as info:
                runner.generate("Hello", 8)
            assert info.value.kind is FailureKind.GARBAGE
            assert says in str(info.value)


@pytest.mark.slow
def test_no_answer_is_a_timeout(fake: FakeServer, tmp_path: Path,
                                tiny: Callable[[str], ResolvedModel]) -> None:
    fake.answer = "hang"
    with runner_for(openai(fake.url, tmp_path, timeout=1), tiny("llama"), tmp_path) as runner, \
            pytest.raises(EngineFailure) as info:
        runner.generate("Hello", 8)
    assert info.value.kind is FailureKind.TIMEOUT
    assert "did not answer within 1 s" in str(info.value)


def test_closed_connection_is_crashed(fake: FakeServer, tmp_path: Path,
                                      tiny: Callable[[str], ResolvedModel]) -> None:
    fake.answer = "close"
    with runner_for(openai(fake.url, tmp_path, retries=0), tiny("llama"), tmp_path) as runner, \
            pytest.raises(EngineFailure) as info:
        runner.generate("Hello", 8)
    assert info.value.kind is FailureKind.CRASHED


@pytest.mark.slow
def test_refused_connection_is_retried_then_crashed(tmp_path: Path,
                                                    tiny: Callable[[str], ResolvedModel]
                                                    ) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    start = time.perf_counter()
    with runner_for(openai(url, tmp_path, retries=2), tiny("llama"), tmp_path) as runner, \
            pytest.raises(EngineFailure) as info:
        runner.chat(load_prompts(ROOT / "prompts", ["capital"])[0].messages, 8)
    assert time.perf_counter() - start >= 1.4  # waited 0.5 s, then 1 s, between attempts
    assert info.value.kind is FailureKind.CRASHED
    assert f"no answer from {url}/v1/chat/completions" in str(info.value)
    assert "(after 3 attempt(s))" in str(info.value)


def test_api_key_from_the_environment_never_in_reports(
        fake: FakeServer, tmp_path: Path, tiny: Callable[[str], ResolvedModel],
        monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = openai(fake.url, tmp_path, api_key_env="GT_TEST_KEY")
    with runner_for(runtime, tiny("llama"), tmp_path) as runner:
        with pytest.raises(RuntimeUnavailable, match=r"GT_TEST_KEY .* is not set"):
            runner.generate("Hello", 8)
        monkeypatch.setenv("GT_TEST_KEY", "s3cret-key")
        fake.answer = (200, completion(" world", [" world"]))
        gen = runner.generate("Hello", 8)
    assert fake.seen[-1][2]["Authorization"] == "Bearer s3cret-key"
    assert "s3cret" not in json.dumps(gen.to_json())


# --------------------------------------------------------------------------- token ids


def test_token_ids_given_mapped_or_retokenized(fake: FakeServer, tmp_path: Path,
                                               tiny: Callable[[str], ResolvedModel]) -> None:
    model = tiny("llama")
    with runner_for(openai(fake.url, tmp_path), model, tmp_path) as runner:
        ids = runner.vocab.encode(" Paris. It is")
        fake.answer = (200, completion(" Paris. It is", token_ids=ids))
        given = runner.generate("The capital of France is", len(ids))
        assert (given.tokens, given.notes) == (tuple(ids), ())
        fake.answer = (200, completion(" Paris. It is", [f"token_id:{i}" for i in ids]))
        assert runner.generate("The capital of France is", len(ids)).tokens == tuple(ids)
        pieces = [runner.vocab.tokenizer.decode([i]) for i in ids]
        fake.answer = (200, completion(" Paris. It is", pieces))
        mapped = runner.generate("The capital of France is", 8, top_k=1)
        assert mapped.tokens == tuple(ids)
        assert "mapped through the model's vocabulary" in mapped.notes[0]
        assert mapped.topk is not None
        assert [t.ids for t in mapped.topk] == [(i,) for i in ids]
        fake.answer = (200, completion(" Paris. It is"))  # no logprobs at all
        again = runner.generate("The capital of France is", 8)
        assert again.tokens == tuple(ids)
        assert "re-tokenized with the model's tokenizer" in again.notes[0]
        body = fake.seen[-1][1]
        assert (body["temperature"], body["top_p"], body["max_tokens"], body["model"]) == (
            0.0, 1.0, 8, "m")


def test_a_stop_short_of_max_tokens_is_eos(fake: FakeServer, tmp_path: Path,
                                           tiny: Callable[[str], ResolvedModel]) -> None:
    model = tiny("llama")
    with runner_for(openai(fake.url, tmp_path), model, tmp_path) as runner:
        fake.answer = (200, completion(" Paris.", token_ids=[7042, 30], finish="stop"))
        gen = runner.generate("The capital of France is", 8)
    assert gen.tokens == (7042, 30, runner.eos[0])
    assert gen.stop_reason == "eos"
    assert f"EOS id {runner.eos[0]} was appended" in gen.notes[0]
    assert gen.prompt_length == 5


# --------------------------------------------------------------------------- the real server


@pytest.fixture(scope="module")
def served() -> Iterator[OpenAIRuntime]:
    reason = server_unavailable()
    if reason:
        pytest.skip(reason)
    runtime = OpenAIRuntime("gt-test-server", serve="llama-cpp-python", n_ctx=512)
    yield runtime
    runtime.close()


@pytest.mark.slow
@pytest.mark.requires_llamacpp
def test_the_server_answers_as_the_in_process_runtime(served: OpenAIRuntime,
                                                      tiny: Callable[[str], ResolvedModel],
                                                      gt_cache: Path) -> None:
    model = tiny("llama")
    cache = ArtifactCache(gt_cache)
    artifact = prepare(served, model, "float32", cache)
    reference = prepare(LlamaCppRuntime(n_ctx=512), model, "float32", cache)
    prompts = {p.name: p for p in load_prompts(ROOT / "prompts")}
    with served.open(artifact, model) as runner, \
            LlamaCppRuntime(n_ctx=512).open(reference, model) as ref:
        # The random model's text holds broken UTF-8 on other prompts, whose byte tokens
        # come back as empty pieces: those are re-tokenized (and said so).
        for name in ("code", "completion", "capital"):
            got, want = respond(runner, prompts[name], 32, 5), respond(ref, prompts[name], 32, 5)
            assert got.tokens == want.tokens, name
            assert got.text == want.text
            assert got.topk is not None
            assert want.topk is not None
            assert got.topk[0].ids[0] == want.topk[0].ids[0]
            assert got.topk[0].logprobs[0] == pytest.approx(want.topk[0].logprobs[0], abs=1e-4)
            assert got.prompt_length == len(want.prompt_tokens)
        assert runner.base_url.startswith("http://127.0.0.1:")
        pid = runner.server.proc.pid if runner.server and runner.server.proc else 0
        assert pid
        os.kill(pid, signal.SIGKILL)  # the server dies under the runner
        time.sleep(0.5)
        with pytest.raises(EngineFailure) as info:
            runner.generate("Hello", 4)
        assert info.value.kind is FailureKind.CRASHED
        assert "server is not running (exit status -9)" in str(info.value)
        assert '"POST /v1/completions HTTP/1.1" 200' in info.value.stderr  # its log tail
    again = served.open(artifact, model)  # a dead server is started again on next use
    assert again.generate(prompts["code"].text, 4).tokens
    served.close()
    assert again.server is not None
    assert not again.server.alive()


@pytest.mark.slow
@pytest.mark.requires_llamacpp
def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    if server_unavailable():
        pytest.skip(str(server_unavailable()))
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    server = LlamaServer(ServerConfig(broken, "broken", 256, 1, "f16", startup_timeout=60))
    with pytest.raises(EngineFailure) as info:
        server.start()
    assert info.value.kind is FailureKind.CRASHED
    assert "llama-cpp-python's server for broken.gguf exited with status" in str(info.value)
    assert "-m pytest_groundtruth.runtimes.server --parent" in info.value.call
    assert info.value.stderr  # the server's own log tail says what it could not load
    assert not server.alive()


@pytest.mark.slow
@pytest.mark.requires_llamacpp
def test_the_servers_default_repeat_penalty_is_not_greedy(gt_cache: Path) -> None:
    """Why the preset sends repeat_penalty = 1.0: llama-cpp-python's server defaults to 1.1
    and applies it before the greedy pick (docs/extending.md, "Serving")."""
    if server_unavailable():
        pytest.skip(str(server_unavailable()))
    model = resolve(BUILTIN["smollm2-135m"], gt_cache)
    code = load_prompts(ROOT / "prompts", ["code"])[0].text
    tokens = {}
    for extra in ({}, {"repeat_penalty": 1.0}):
        runtime = OpenAIRuntime(f"penalty-{len(extra)}", serve="llama-cpp-python", extra=extra)
        artifact = prepare(runtime, model, "int8", ArtifactCache(gt_cache))
        with runtime.open(artifact, model) as runner:
            tokens[len(extra)] = runner.generate(code, 32).tokens
        runtime.close()
    reference = prepare(LlamaCppRuntime(), model, "int8", ArtifactCache(gt_cache))
    with LlamaCppRuntime().open(reference, model) as ref:
        greedy = ref.generate(code, 32).tokens
    assert tokens[1] == greedy
    assert tokens[0] != greedy
