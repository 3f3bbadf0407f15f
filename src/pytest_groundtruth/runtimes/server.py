"""llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``), started
for one GGUF and kept for the session.

:class:`LlamaServer` starts it on a free port of 127.0.0.1, waits until ``/v1/models``
answers with the model (or fails, with the server's log tail, when it exits or does not
come up in time), and stops it (SIGTERM to its process group, SIGKILL after a grace).
Servers are kept per process, one per (GGUF, settings), and stopped when the runtime
closes or, at the latest, when the process exits (:func:`stop_all`, registered with
``atexit``). The server runs under a guard (``python -m pytest_groundtruth.runtimes.server
--parent PID ...``) that ends it within a second of its parent's death, so a killed pytest
worker leaves no server behind.

Decision (issue 15): one server per artifact *per pytest process*. Sharing one across
pytest-xdist workers would need a cross-process owner to stop it; with ``--dist
loadgroup`` (the plugin puts a model's tests on one runtime in one xdist group) every
test of an artifact runs on one worker anyway, so each server starts once.

Settings that make it greedy-identical to the in-process ``llamacpp`` runtime on the same
GGUF (docs/extending.md, "Serving"): the same context size, thread count, KV cache type
(``--type_k``/``--type_v``: F32 for float32 artifacts, F16 otherwise) and seed; the
requests send ``repeat_penalty = 1.0`` (llama-cpp-python's server defaults to 1.1 and
applies penalties *before* the greedy pick).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import runpy
import shlex
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_groundtruth.core import process
from pytest_groundtruth.core.failures import EngineFailure, FailureKind, RuntimeUnavailable
from pytest_groundtruth.core.process import tail

INSTALL = "pip install 'llama-cpp-python[server]' (or 'pytest-groundtruth[server]')"
GGML_TYPES = {"f32": "0", "f16": "1"}  # ggml_type ids, as --type_k/--type_v take them
STOP_GRACE = 10.0
PORT_ATTEMPTS = 3


def server_unavailable() -> str | None:
    """Why llama-cpp-python's server cannot run here, or None."""
    missing = [m for m in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette",
                           "starlette_context", "pydantic_settings")
               if importlib.util.find_spec(m) is None]
    if missing:
        return f"llama-cpp-python's server needs {', '.join(missing)}: {INSTALL}"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ServerConfig:
    """What decides the server's answers (and identifies a running one)."""

    model: Path
    alias: str
    n_ctx: int
    n_threads: int
    kv_cache: str  # "f16" | "f32"
    seed: int = 42
    startup_timeout: float = 120.0


class LlamaServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.port = 0
        self.proc: process.Child | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="gt-llama-server-"))
        self.log_path = self._dir / "server.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self, port: int) -> list[str]:
        c = self.config
        return [
            sys.executable, "-m", "pytest_groundtruth.runtimes.server", "--parent",
            str(os.getpid()), "--model", str(c.model), "--model_alias", c.alias,
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(c.n_ctx),
            "--n_threads", str(c.n_threads), "--n_threads_batch", str(c.n_threads),
            "--type_k", GGML_TYPES[c.kv_cache], "--type_v", GGML_TYPES[c.kv_cache],
            "--seed", str(c.seed), "--logits_all", "true", "--verbose", "true",
        ]

    @property
    def call(self) -> str:
        return shlex.join(self.argv(self.port))

    def log_tail(self) -> str:
        try:
            return tail(self.log_path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> LlamaServer:
        reason = server_unavailable()
        if reason:
            raise RuntimeUnavailable(reason)
        for _attempt in range(PORT_ATTEMPTS):
            self.port = free_port()
            env = {k: v for k, v in os.environ.items() if k != "CONFIG_FILE"}
            with self.log_path.open("ab") as log:
                self.proc = process.spawn(self.argv(self.port), log=log, environ=env)
            if self._wait_healthy():
                return self
            if "address already in use" not in self.log_tail().lower():
                break  # not a port race: report it
        code = self.proc.poll() if self.proc is not None else None
        self.stop()
        what = (f"exited with status {code}" if code is not None else
                f"did not answer within {self.config.startup_timeout:g} s")
        raise EngineFailure(FailureKind.CRASHED if code is not None else FailureKind.TIMEOUT,
                            f"llama-cpp-python's server for {self.config.model.name} {what} "
                            "while starting", call=self.call, stderr=self.log_tail())

    def _wait_healthy(self) -> bool:
        deadline = time.monotonic() + self.config.startup_timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            try:
                with urllib.request.urlopen(f"{self.base_url}/v1/models", timeout=2) as answer:
                    models = json.loads(answer.read())
                if any(m.get("id") == self.config.alias for m in models.get("data", [])):
                    return True
            except (OSError, ValueError, AttributeError):
                pass  # not up yet
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            process.stop(proc, STOP_GRACE)

    def close(self) -> None:
        """Stop the server and delete its log."""
        self.stop()
        _RUNNING.pop(self.config, None)
        with contextlib.suppress(OSError):
            self.log_path.unlink(missing_ok=True)
            self._dir.rmdir()


_RUNNING: dict[ServerConfig, LlamaServer] = {}


def shared_server(config: ServerConfig) -> LlamaServer:
    """The running server for ``config`` in this process, started on first use (and again
    if it died)."""
    server = _RUNNING.get(config)
    if server is None or not server.alive():
        if server is not None:
            server.close()
        server = LlamaServer(config).start()
        _RUNNING[config] = server
    return server


def stop_server(config: ServerConfig) -> None:
    """Stop the server of ``config`` if this process runs one."""
    server = _RUNNING.get(config)
    if server is not None:
        server.close()


def stop_all() -> None:
    """Stop every server this process started."""
    for server in list(_RUNNING.values()):
        server.close()


atexit.register(stop_all)


# --------------------------------------------------------------------------- the guard


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)  # the process that started us is gone: so are we


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m pytest_groundtruth.runtimes.server --parent PID ARGS``: llama-cpp-python's
    server with ARGS, ended when process PID (the one that started it) is gone."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != "--parent" or not args[1].isdigit():
        sys.exit("usage: python -m pytest_groundtruth.runtimes.server --parent PID "
                 "[llama_cpp.server arguments]")
    threading.Thread(target=_watch_parent, args=(int(args[1]),), daemon=True).start()
    sys.argv = ["llama_cpp.server", *args[2:]]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
