"""The command runtime: any command-line converter and engine, configured, no Python.

Declared in configuration (``docs/extending.md`` has the full reference)::

    [tool.groundtruth.runtime.mytool]
    kind = "command"
    quantizations = ["int8", "int4"]
    quant_names = { int8 = "q8_0", int4 = "q4_0" }      # the tool's spelling of {quant}
    executable = "mytool"                                # {executable}
    artifact_suffix = ".gguf"
    timeout = 300
    version = ["{executable}", "--version"]              # or a literal string
    convert = ["{executable}", "convert", "{model_dir}", "--type", "{quant}", "-o", "{output}"]
    generate = ["{executable}", "run", "{artifact}", "--prompt-file", "{prompt_file}",
                "-n", "{max_new_tokens}", "--top-k", "{top_k}", "--json"]
    perplexity = ["{executable}", "ppl", "{artifact}", "--text-file", "{text_file}"]

Each step is an argument list (or a table with ``argv``, ``output`` and ``accept_exit``).
Placeholders (``{name}``) are substituted inside single arguments, never through a shell,
so a prompt reaches the tool as exactly one argument (``{prompt}``) or as a file
(``{prompt_file}``). A two-element list ``["-p", "{prompt}"]`` is an option with its
value, written ``-p=VALUE`` when the value begins with ``-`` (so a prompt is never read
as a flag). Unknown placeholders are configuration errors naming the step.

Capabilities follow from the steps declared (:data:`STEP_CAPABILITY`); ``{top_k}`` in
``generate`` declares per-step top-k log-probabilities. Without ``convert`` the model
directory itself is the artifact (the tool converts at load time).

Output: ``generate``/``chat`` print one JSON object with ``tokens`` (generated ids) and
``text``, optionally ``prompt_tokens``, ``stop_reason`` (``eos``/``length``), ``topk``
(``[{"ids": [...], "logprobs": [...]}]`` per generated step, most likely first),
``seconds`` or ``milliseconds``; ``perplexity`` prints ``perplexity`` and
``tokens_evaluated``, optionally ``cross_entropy`` and ``seconds``; ``inspect`` prints
``architecture`` and optionally ``num_layers`` (checked against the roster after every
build); ``score`` writes a ``.npy`` float32 array ``[len(tokens) - start, vocab]`` of
log-probabilities (or logits) at ``{output}``. ``output`` renames keys (documented name
-> the tool's); log lines around the JSON and ANSI colour codes are tolerated.

Every run goes through :mod:`pytest_groundtruth.core.process`: failures name the
step, the exact argument list, the exit status and the stderr tail; a hang ends at the
timeout with the process group killed.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_groundtruth.config.prompts import Message
from pytest_groundtruth.config.settings import ConfigError, Settings, check_name
from pytest_groundtruth.core import process
from pytest_groundtruth.core.failures import EngineFailure, FailureKind, RuntimeUnavailable
from pytest_groundtruth.core.hashing import digest
from pytest_groundtruth.core.process import Completed, failure
from pytest_groundtruth.measures import logprobs as lp
from pytest_groundtruth.runtimes.base import (
    Artifact,
    Capability,
    Generation,
    PerplexityResult,
    Runner,
    Runtime,
    read_options,
)
from pytest_groundtruth.runtimes.steps import (
    FILE_NAMES,
    MODEL,
    STEP_CAPABILITY,
    STEP_PLACEHOLDERS,
    Reader,
    Step,
    model_eos_ids,
    parse_step,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from pytest_groundtruth.models.sources import ResolvedModel

# --------------------------------------------------------------------------- files


@contextlib.contextmanager
def staged(out: Path, name: str, tool: str) -> Iterator[Path]:
    """A path ``<private dir beside out>/<name>`` that becomes exactly ``out`` on success
    (the tool never sees the cache's ``.partial`` names)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=".gt-stage-", dir=out.parent))
    try:
        target = directory / name
        yield target
        if not target.exists():
            raise EngineFailure(FailureKind.GARBAGE, f"{tool} exited 0 but did not write {target}")
        target.replace(out)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def staged_name(path: Path, suffix: str) -> Iterator[Path]:
    """``path`` itself when it ends in ``suffix``, else a symlink to it that does (tools
    choose a file's reader by its extension; the cache's temporaries end in .partial)."""
    if not suffix or path.suffix == suffix:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="gt-name-") as tmp:
        link = Path(tmp) / f"model{suffix}"
        link.symlink_to(path.resolve())
        yield link


def import_source(model: ResolvedModel) -> str:
    """``{source}``: ``hf://ORG/NAME`` for an unpinned hub model (the tool fetches it
    itself), else the float32 ``model.safetensors`` (or the directory, when sharded)."""
    if model.spec.scheme == "hf" and model.spec.revision is None:
        return f"hf://{model.spec.location}"
    return weights_path(model)


def weights_path(model: ResolvedModel) -> str:
    weights = model.path / "model.safetensors"
    return str(weights if weights.is_file() else model.path)


# --------------------------------------------------------------------------- the runtime


class CommandRuntime(Runtime):
    """A command-line tool configured by its steps (see the module docstring)."""

    name = "command"
    quantizations: tuple[str, ...] = ()
    capabilities: frozenset[Capability] = frozenset()

    def __init__(self, name: str, steps: Mapping[str, Step], quantizations: Sequence[str], *,
                 executable: str = "", quant_names: Mapping[str, str] | None = None,
                 artifact_suffix: str = "", timeout: float = 300.0, version: str = "",
                 env: Mapping[str, str] | None = None, install_hint: str = "",
                 root: Path | None = None, tool: str | None = None) -> None:
        self.name = name
        self.steps = dict(steps)
        self.quantizations = tuple(quantizations)
        self.executable_name = executable
        self.quant_names = dict(quant_names or {})
        self.suffix = artifact_suffix
        self.timeout = timeout
        self.fixed_version = version
        self.env = dict(env or {})
        self.tool = tool or name
        self.install_hint = install_hint or (
            f"install it, or set `executable` in [tool.groundtruth.runtime.{name}]")
        self.root = root or Path.cwd()
        self._version: str | None = None
        caps = {STEP_CAPABILITY[s] for s in self.steps if s in STEP_CAPABILITY}
        for step in ("generate", "chat"):
            if step in self.steps and "top_k" in self.steps[step].placeholders():
                caps.add(Capability.TOPK)
        self.capabilities = frozenset(caps)
        self.builds_artifacts = "convert" in self.steps

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any], settings: Settings,
                    device: str = "cpu") -> Runtime:
        """The options of the module docstring; every step is optional."""
        kinds: dict[str, type | tuple[type, ...]] = {
            **{step: (list, dict) for step in STEP_PLACEHOLDERS},
            "quantizations": list, "quant_names": dict, "executable": str,
            "artifact_suffix": str, "timeout": (int, float), "version": (str, list, dict),
            "env": dict, "install_hint": str,
        }
        values = read_options(name, options, kinds)
        quants = values.get("quantizations")
        if not quants or not all(isinstance(q, str) for q in quants):
            raise ConfigError(f"runtime {name!r}: option 'quantizations' (a non-empty list of "
                              "names) is required")
        for quant in quants:
            check_name(quant, f"runtime {name!r}: option 'quantizations'")
        for key in ("quant_names", "env"):
            table = values.get(key, {})
            if not all(isinstance(v, str) for v in table.values()):
                raise ConfigError(f"runtime {name!r}: option {key!r} maps names to strings")
        timeout = float(values.get("timeout", settings.timeout))
        if not math.isfinite(timeout) or timeout <= 0:
            raise ConfigError(f"runtime {name!r}: option 'timeout' must be a positive number")
        version = values.pop("version", "")
        if not isinstance(version, str):
            values["version"] = version  # the version step
            version = ""
        steps = {s: parse_step(name, s, values[s]) for s in STEP_PLACEHOLDERS if s in values}
        return cls(name, steps, quants, executable=values.get("executable", ""),
                   quant_names=values.get("quant_names"),
                   artifact_suffix=values.get("artifact_suffix", ""), timeout=timeout,
                   version=version, env=values.get("env"),
                   install_hint=values.get("install_hint", ""), root=settings.root)

    # -- running steps

    def global_values(self) -> dict[str, str]:
        """``{executable}`` is resolved on PATH, so that reports name the binary that ran."""
        name = self.executable_name
        executable = (shutil.which(name) or name) if name else ""
        return {"executable": executable, "python": sys.executable, "root": str(self.root)}

    def model_values(self, model: ResolvedModel, quant: str) -> dict[str, str]:
        return {
            **self.global_values(),
            "model": model.slug,
            "model_dir": str(model.path),
            "weights": weights_path(model),
            "source": import_source(model),
            # a resolved model's spec holds what the model says (config.json); "" where
            # it says nothing (a hub model's pre-tokenizer: llama.cpp's converter decides)
            "architecture": model.spec.architecture or "",
            "tokenizer_pre": model.spec.tokenizer_pre or "",
            "quant": self.quant_names.get(quant, quant),
        }

    def programs(self) -> dict[str, str]:
        """step -> the program it runs (the first argument, placeholders substituted)."""
        values = {**self.global_values(), **dict.fromkeys(
            {p for names in STEP_PLACEHOLDERS.values() for p in names} | set(MODEL), "")}
        return {name: step.render(values)[0] for name, step in self.steps.items()}

    def unavailable(self) -> str | None:
        for program in dict.fromkeys(self.programs().values()):
            if shutil.which(program) is None:
                looked = "" if program == self.tool else f" (looked for {program!r})"
                return f"{self.tool} not found on PATH{looked}: {self.install_hint}"
        return None

    def step(self, name: str) -> Step:
        if name not in self.steps:
            raise NotImplementedError(f"runtime {self.name!r} declares no {name!r} step")
        return self.steps[name]

    def run(self, name: str, values: Mapping[str, str]) -> Completed:
        """Run step ``name`` with ``values``; a non-zero exit is its failure, unless the
        step accepts it (``accept_exit``)."""
        step = self.step(name)
        tool = f"{self.tool} ({name} step)"
        done = process.invoke(step.render(values), self.timeout, tool=tool, env=self.env,
                              install_hint=self.install_hint)
        if done.returncode != 0 and not step.accepts(
                process.find_json_object(done.stdout)):
            raise process.exit_failure(done, tool, self.refused_hint())
        return done

    def reader(self, name: str, done: Completed) -> Reader:
        return Reader(self.tool, self.step(name), done)

    def refused_hint(self) -> str:
        """Added to a REFUSED failure: which command line this runtime speaks."""
        return f"the configured argument lists are in [tool.groundtruth.runtime.{self.name}]"

    # -- the Runtime interface

    def version(self) -> str:
        if self._version is None:
            reason = self.unavailable()
            if reason and "version" in self.steps:
                raise RuntimeUnavailable(reason)
            if "version" not in self.steps:
                steps = digest(self.describe_steps())[:12]
                self._version = self.fixed_version or (
                    f"{self.tool} (no version configured; steps {steps})")
            else:
                done = self.run("version", self.global_values())
                lines = [ln.strip() for ln in process.strip_ansi(done.stdout).splitlines()
                         if ln.strip()]
                if not lines:
                    raise failure(FailureKind.GARBAGE, f"`{done.call}` printed nothing", done)
                self._version = lines[0]
        return self._version

    def describe_steps(self) -> dict[str, Any]:
        return {name: [list(a) if isinstance(a, tuple) else a for a in step.argv]
                for name, step in sorted(self.steps.items())}

    def key_parts(self, quant: str) -> dict[str, str]:
        # The argument lists decide the outputs (flags, quantization spelling).
        return {**super().key_parts(quant),
                "command": digest({"steps": self.describe_steps(), "quant": self.quant_names.get(
                    quant, quant), "suffix": self.suffix, "env": self.env})}

    def artifact_suffix(self, quant: str) -> str:
        return self.suffix

    def describe(self, model_path: Path, quant: str) -> str:
        return (f"{self.tool} reads the model directory {model_path} itself "
                f"(no convert step; quantization {self.quant_names.get(quant, quant)!r})")

    def build(self, model: ResolvedModel, quant: str, out: Path) -> str:
        self.check_quant(quant)
        with staged(out, f"model{self.suffix}", self.tool) as target:
            done = self.run("convert", {**self.model_values(model, quant), "output": str(target)})
        self.check_inspect(out, model)
        return done.call

    def reimport(self, gguf: Path, model: ResolvedModel, quant: str, out: Path) -> str:
        self.check_quant(quant)
        with staged_name(gguf, ".gguf") as source, \
                staged(out, f"model{self.suffix}", self.tool) as target:
            done = self.run("reimport", {**self.model_values(model, quant), "gguf": str(source),
                                         "output": str(target)})
        self.check_inspect(out, model)
        return done.call

    def inspect(self, path: Path, model: ResolvedModel | None = None) -> dict[str, Any]:
        """The ``inspect`` step's JSON for the artifact at ``path``."""
        with staged_name(path, self.suffix) as named:
            values = {**(self.model_values(model, "") if model else dict.fromkeys(MODEL, "")),
                      **self.global_values(), "artifact": str(named)}
            done = self.run("inspect", values)
        return self.reader("inspect", done).json()

    def check_inspect(self, path: Path, model: ResolvedModel) -> None:
        """With an ``inspect`` step: the tool must read back what it wrote, with the
        roster's layer count."""
        if "inspect" not in self.steps:
            return
        step = self.steps["inspect"]
        layers = self.inspect(path, model).get(step.key("num_layers"))
        if isinstance(layers, int) and not isinstance(layers, bool) and layers != model.spec.layers:
            raise EngineFailure(
                FailureKind.GARBAGE,
                f"{self.tool} inspect reports {layers} layers in {path.name}; the roster says "
                f"{model.spec.layers} for {model.slug!r}",
            )

    def validate(self, artifact_path: Path) -> str | None:
        if not artifact_path.exists():
            return f"{artifact_path} does not exist"
        if artifact_path.is_file() and artifact_path.stat().st_size == 0:
            return f"{artifact_path} is empty"
        if artifact_path.is_dir() and not any(artifact_path.iterdir()):
            return f"{artifact_path} is an empty directory"
        return None

    def open(self, artifact: Artifact, model: ResolvedModel) -> CommandRunner:
        reason = self.unavailable()
        if reason:
            raise RuntimeUnavailable(reason)
        problem = self.validate(artifact.path)
        if problem:
            raise FileNotFoundError(problem)
        return CommandRunner(self, artifact, model)


class CommandRunner(Runner):
    """An artifact of a command runtime; every call is one run of the tool."""

    def __init__(self, runtime: CommandRuntime, artifact: Artifact, model: ResolvedModel
                 ) -> None:
        super().__init__(artifact)
        self.runtime = runtime
        self.model = model
        self.eos = model_eos_ids(model.path)
        self.vocab: int | None = model.spec.vocab

    @contextlib.contextmanager
    def values(self, **files: str) -> Iterator[dict[str, str]]:
        """The step values, with ``files`` (placeholder -> content) written to a private
        directory for the duration of the call."""
        base = {**self.runtime.model_values(self.model, self.artifact.quant)}
        with tempfile.TemporaryDirectory(prefix="gt-command-") as tmp, \
                staged_name(self.artifact.path, self.runtime.suffix) as artifact:
            base["artifact"] = str(artifact)
            for key, content in files.items():
                path = Path(tmp) / FILE_NAMES[key]
                path.write_text(content, encoding="utf-8")
                base[key] = str(path)
            base["tmp"] = tmp
            yield base

    def _top_k(self, top_k: int) -> int:
        if top_k and Capability.TOPK not in self.runtime.capabilities:
            raise NotImplementedError(f"runtime {self.runtime.name!r} reports no "
                                      "log-probabilities (its generate step has no {top_k})")
        return top_k

    def generate(self, prompt: str, max_new_tokens: int, top_k: int = 0) -> Generation:
        top_k = self._top_k(top_k)
        with self.values(prompt_file=prompt) as values:
            done = self.runtime.run("generate", {**values, "prompt": prompt,
                                                 "max_new_tokens": str(max_new_tokens),
                                                 "top_k": str(top_k)})
        return self.runtime.reader("generate", done).generation(
            max_new_tokens, self.eos, self.vocab, top_k)

    def chat(self, messages: Sequence[Message], max_new_tokens: int, top_k: int = 0
             ) -> Generation:
        top_k = self._top_k(top_k)
        if "chat" not in self.runtime.steps:
            raise NotImplementedError(f"runtime {self.runtime.name!r} declares no chat step")
        payload = json.dumps([{"role": m.role, "content": m.content} for m in messages],
                             ensure_ascii=False)
        with self.values(messages_file=payload) as values:
            done = self.runtime.run("chat", {**values, "max_new_tokens": str(max_new_tokens),
                                             "top_k": str(top_k)})
        return self.runtime.reader("chat", done).generation(
            max_new_tokens, self.eos, self.vocab, top_k)

    def perplexity(self, text: str) -> PerplexityResult:
        with self.values(text_file=text) as values:
            done = self.runtime.run("perplexity", {**values, "text": text})
        return self.runtime.reader("perplexity", done).perplexity()

    def score(self, token_ids: Sequence[int], start: int) -> npt.NDArray[np.float32]:
        import numpy as np

        if not 1 <= start <= len(token_ids):
            raise ValueError(f"start must be in 1..{len(token_ids)}, got {start}")
        with self.values(tokens_file=json.dumps([int(t) for t in token_ids])) as values:
            out = Path(values["tmp"]) / "scores.npy"
            done = self.runtime.run("score", {**values, "start": str(start), "output": str(out)})
            try:
                rows = np.load(out, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise failure(FailureKind.GARBAGE, f"{self.runtime.tool} (score step) wrote no "
                              f"readable .npy array at {out}: {exc}", done) from None
        expected = len(token_ids) - start
        if rows.ndim != 2 or rows.shape[0] != expected:
            raise failure(FailureKind.GARBAGE, f"{self.runtime.tool} (score step) wrote an "
                          f"array of shape {rows.shape}, expected ({expected}, vocab)", done)
        try:
            return lp.log_softmax(rows.astype(np.float64)).astype(np.float32)
        except EngineFailure as exc:  # NaN/Inf: keep the call
            raise failure(exc.kind, f"{self.runtime.tool} (score step): {exc.args[0]}",
                          done) from None

    def export_gguf(self, out: Path) -> str:
        with self.values() as values, staged(out, "model.gguf", self.runtime.tool) as target:
            done = self.runtime.run("export", {**values, "output": str(target)})
        return done.call
