"""The apr runtime: aprender's ``apr`` CLI (``cargo install apr-cli``), a preset of the
command runtime (:mod:`pytest_groundtruth.runtimes.command`).

Its argument lists and output keys are data (:data:`APR_STEPS`), the
command line (aprender; `apr --help` of the release), :data:`APR_CLI`::

    apr import <hf://ID | file> --quantize int8|int4|fp16 -o <out>.apr
    apr export <file>.apr --format gguf -o <out>.gguf
    apr run <file> -p <prompt> -n 32 --temperature 0 --top-k 1 --json
    apr eval <file> --json --text <text>
    apr inspect <file> --json
    apr --version

Everything else is the command runtime's: argument lists (never a shell), a timeout per
call (the process group is killed when it runs out), ``NO_COLOR=1``, ANSI codes stripped
before the JSON object is looked for, failures carrying the exact command line and the
stderr tail. apr adds: a refused flag says which command line this runner speaks
(older releases used ``apr run <file> <prompt> -n 32 -f json``); ``apr eval`` exiting
non-zero with ``"passed": false`` (perplexity over apr's own threshold) is a result, not
a crash. A prompt longer than the OS argument limit cannot reach ``apr run -p`` (apr
reads no prompt file): that is a REFUSED failure saying so, never "apr is missing".

Import source: ``hf://<repo>`` when the roster source is ``hf:<repo>`` without a pinned
revision (apr fetches it itself, as the original workflow did); otherwise the local
float32 ``model.safetensors`` of the resolved model directory (the very bytes the
oracle loads), or the directory for sharded weights. apr's own GGUF importer is
exercised by :meth:`AprRuntime.reimport`.

apr's JSON has no log-probabilities and no prompt token ids: no TOPK or SCORE
capability, and :attr:`Generation.prompt_tokens` is empty. ``stop_reason`` is ``"eos"``
when the last token is an EOS id of the model or fewer than ``max_new_tokens`` came back,
else ``"length"``.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.core import process
from pytest_groundtruth.core.failures import RuntimeUnavailable
from pytest_groundtruth.core.process import Completed, find_json_object, strip_ansi
from pytest_groundtruth.runtimes.base import Generation, PerplexityResult, Runtime, read_options
from pytest_groundtruth.runtimes.command import CommandRunner, CommandRuntime, import_source
from pytest_groundtruth.runtimes.steps import Reader, Step, model_eos_ids, parse_step

if TYPE_CHECKING:
    from pytest_groundtruth.models.sources import ResolvedModel

__all__ = ["APR_QUANT", "AprRunner", "AprRuntime", "Completed", "find_json_object",
           "model_eos_ids", "parse_generation", "parse_perplexity", "strip_ansi"]

#: The apr command line this runner speaks (apr-cli's current flags).
APR_CLI = (
    "apr-cli current flags: `run FILE -p PROMPT -n N --temperature 0 --top-k 1 --json`, "
    "`eval FILE --json --text TEXT`, `import SRC --quantize int8|int4|fp16 -o OUT.apr`, "
    "`export FILE --format gguf -o OUT.gguf`, `inspect FILE --json`"
)
OLD_CLI_HINT = (
    "this runner speaks the current apr-cli flags (" + APR_CLI + "); older apr releases used "
    "`apr run <file> <prompt> -n 32 -f json`: upgrade with `cargo install apr-cli` "
    "(or point apr_bin / --gt-apr-bin at a current build)"
)
INSTALL_HINT = "install it with `cargo install apr-cli` or set apr_bin / --gt-apr-bin"

#: Our quantization names -> apr's ``--quantize`` values.
APR_QUANT = {"int8": "int8", "int4": "int4", "float16": "fp16"}

#: apr's command line and JSON, as command-runtime steps.
APR_STEPS: dict[str, Any] = {
    "version": ["{executable}", "--version"],
    "convert": ["{executable}", "import", "{source}", "--quantize", "{quant}", "-o", "{output}"],
    "reimport": ["{executable}", "import", "{gguf}", "--quantize", "{quant}", "-o", "{output}"],
    "inspect": ["{executable}", "inspect", "{artifact}", "--json"],
    "generate": {
        "argv": ["{executable}", "run", "{artifact}", ["-p", "{prompt}"], "-n",
                 "{max_new_tokens}", "--temperature", "0", "--top-k", "1", "--json"],
        "output": {"milliseconds": "inference_time_ms"},
    },
    "perplexity": {
        # No --threshold: apr exits non-zero when the perplexity is over its default one;
        # with valid JSON that says passed=false, that exit is not a crash.
        "argv": ["{executable}", "eval", "{artifact}", "--json", ["--text", "{text}"]],
        "output": {"seconds": "eval_time_secs"},
        "accept_exit": {"passed": False},
    },
    "export": ["{executable}", "export", "{artifact}", "--format", "gguf", "-o", "{output}"],
}
STEPS: dict[str, Step] = {name: parse_step("apr", name, value)
                          for name, value in APR_STEPS.items()}


class AprRuntime(CommandRuntime):
    name = "apr"

    def __init__(self, apr_bin: str = "apr", timeout: float = 300.0) -> None:
        super().__init__("apr", STEPS, tuple(APR_QUANT), executable=apr_bin,
                         quant_names=APR_QUANT, artifact_suffix=".apr", timeout=timeout,
                         install_hint=INSTALL_HINT, tool="apr")
        self.apr_bin = apr_bin

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any], settings: Settings,
                    device: str = "cpu") -> Runtime:
        """Options: ``bin`` (default: ``apr_bin``), ``timeout`` (default: ``timeout``)."""
        values = read_options(name, options, {"bin": str, "timeout": (int, float)})
        runtime = cls(apr_bin=values.get("bin", settings.apr_bin),
                      timeout=float(values.get("timeout", settings.timeout)))
        runtime.name = name
        return runtime

    def refused_hint(self) -> str:
        return OLD_CLI_HINT

    def key_parts(self, quant: str) -> dict[str, str]:
        # The argument lists are apr's own (a new apr version is a new key).
        return {**Runtime.key_parts(self, quant), "apr_quantize": APR_QUANT[quant]}

    def import_source(self, model: ResolvedModel) -> str:
        """What ``apr import`` reads for ``model`` (see the module docstring)."""
        return import_source(model)

    def executable(self) -> str | None:
        """The apr binary on PATH (or at the configured path), or None."""
        return shutil.which(self.apr_bin)

    def call(self, *args: str, check: bool = True) -> Completed:
        """Run ``apr ARGS`` directly; with ``check`` a non-zero exit raises its failure."""
        exe = self.executable()
        if exe is None:
            raise RuntimeUnavailable(self.unavailable() or INSTALL_HINT)
        done = process.invoke([exe, *args], self.timeout, tool="apr", env=self.env,
                              install_hint=INSTALL_HINT)
        if check and done.returncode != 0:
            raise process.exit_failure(done, "apr", OLD_CLI_HINT)
        return done


AprRunner = CommandRunner


def parse_generation(done: Completed, max_new_tokens: int, eos: Sequence[int],
                     vocab: int | None = None) -> Generation:
    """A :class:`Generation` from ``apr run --json`` output."""
    return Reader("apr", STEPS["generate"], done).generation(max_new_tokens, eos, vocab)


def parse_perplexity(done: Completed) -> PerplexityResult:
    """A :class:`PerplexityResult` from ``apr eval --json`` output."""
    return Reader("apr", STEPS["perplexity"], done).perplexity()
