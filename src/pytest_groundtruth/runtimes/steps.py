"""The command runtime's protocol: its steps, their placeholders, and how output is read.

A :class:`Step` is one configured argument list (``convert``, ``generate``, ...);
:func:`parse_step` validates one from configuration (unknown placeholders and output
keys are errors naming the step). A :class:`Reader` reads one step's JSON output into
the runtime result types, naming the tool and carrying the exact call in every fault.
The documented keys are in :mod:`pytest_groundtruth.runtimes.command` and
docs/extending.md.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_groundtruth.config.settings import ConfigError
from pytest_groundtruth.core import process
from pytest_groundtruth.core.failures import EngineFailure, FailureKind
from pytest_groundtruth.core.process import Completed, failure
from pytest_groundtruth.measures.logprobs import TopK
from pytest_groundtruth.runtimes.answers import logprobs_problem, stop_problem, token_ids_problem
from pytest_groundtruth.runtimes.base import (
    Capability,
    Generation,
    PerplexityResult,
    read_options,
)

# --------------------------------------------------------------------------- the steps

GLOBAL = ("executable", "python", "root")
MODEL = ("model", "model_dir", "weights", "source", "architecture", "tokenizer_pre", "quant")
#: Placeholders each step may use (besides :data:`GLOBAL`; every step but ``version``
#: also has :data:`MODEL`).
STEP_PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "version": (),
    "convert": ("output",),
    "reimport": ("gguf", "output"),
    "inspect": ("artifact",),
    "generate": ("artifact", "prompt", "prompt_file", "max_new_tokens", "top_k"),
    "chat": ("artifact", "messages_file", "max_new_tokens", "top_k"),
    "perplexity": ("artifact", "text", "text_file"),
    "score": ("artifact", "tokens_file", "start", "output"),
    "export": ("artifact", "output"),
}
STEP_CAPABILITY = {
    "generate": Capability.GENERATE,
    "chat": Capability.CHAT,
    "perplexity": Capability.PERPLEXITY,
    "score": Capability.SCORE,
    "export": Capability.EXPORT_GGUF,
    "reimport": Capability.REIMPORT,
}
#: The documented output keys of each step that prints JSON, and the ones it must print.
OUTPUT_KEYS: dict[str, tuple[str, ...]] = {
    "generate": ("tokens", "text", "prompt_tokens", "stop_reason", "topk", "seconds",
                 "milliseconds"),
    "perplexity": ("perplexity", "cross_entropy", "tokens_evaluated", "seconds"),
    "inspect": ("architecture", "num_layers"),
}
OUTPUT_KEYS["chat"] = OUTPUT_KEYS["generate"]
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "generate": ("tokens", "text"), "chat": ("tokens", "text"),
    "perplexity": ("perplexity",), "inspect": ("architecture",),
}

#: The files behind the ``*_file`` placeholders (UTF-8; the JSON ones hold a list).
FILE_NAMES = {"prompt_file": "prompt.txt", "text_file": "text.txt",
              "tokens_file": "tokens.json", "messages_file": "messages.json"}

Arg = str | tuple[str, str]  # an argument, or an option with its value


def _fields(template: str, where: str) -> list[str]:
    """The placeholder names in one argument template (only plain ``{name}`` allowed)."""
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"{where}: {template!r}: {exc} (write a literal brace as {{{{ or }}}})"
                          ) from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name or spec or conversion or not name.isidentifier():
            raise ConfigError(f"{where}: {template!r}: placeholders are plain {{name}}")
        names.append(name)
    return names


@dataclass(frozen=True)
class Step:
    """One configured step: its argument list, how to read its output."""

    name: str
    argv: tuple[Arg, ...]
    output: Mapping[str, str] = field(default_factory=dict)  # documented key -> tool's key
    accept_exit: Mapping[str, Any] = field(default_factory=dict)  # non-zero exit + this JSON

    def placeholders(self, where: str = "") -> set[str]:
        found: set[str] = set()
        for arg in self.argv:
            for template in (arg if isinstance(arg, tuple) else (arg,)):
                found.update(_fields(template, where or f"step {self.name!r}"))
        return found

    def key(self, name: str) -> str:
        return self.output.get(name, name)

    def render(self, values: Mapping[str, str]) -> list[str]:
        argv: list[str] = []
        for arg in self.argv:
            if isinstance(arg, tuple):
                flag, value = arg[0].format_map(values), arg[1].format_map(values)
                argv.extend([f"{flag}={value}"] if value.startswith("-") else [flag, value])
            else:
                argv.append(arg.format_map(values))
        return argv

    def accepts(self, data: Mapping[str, Any] | None) -> bool:
        """Whether a non-zero exit with ``data`` on stdout is a result, not a failure."""
        if not self.accept_exit or data is None:
            return False
        return all(type(data.get(k)) is type(v) and data.get(k) == v
                   for k, v in self.accept_exit.items())


def parse_step(runtime: str, name: str, value: Any) -> Step:
    """A step from configuration: an argument list, or ``{argv, output, accept_exit}``."""
    where = f"runtime {runtime!r}: step {name!r}"
    table = value if isinstance(value, dict) else {"argv": value}
    read_options(f"{runtime}.{name}", table,
                 {"argv": list, "output": dict, "accept_exit": dict})
    raw = table.get("argv")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: needs an argument list (a non-empty array of strings)")
    argv: list[Arg] = []
    for arg in raw:
        if isinstance(arg, str):
            argv.append(arg)
        elif isinstance(arg, list) and len(arg) == 2 and all(isinstance(a, str) for a in arg):
            argv.append((arg[0], arg[1]))
        else:
            raise ConfigError(f"{where}: argument {arg!r} is neither a string nor an "
                              "[option, value] pair of strings")
    if isinstance(argv[0], tuple):
        raise ConfigError(f"{where}: the first argument is the program, a string")
    output = table.get("output", {})
    known = OUTPUT_KEYS.get(name, ())
    for key, tool_key in output.items():
        if key not in known or not isinstance(tool_key, str):
            raise ConfigError(f"{where}: output key {key!r} = {tool_key!r}: the step's keys are "
                              f"{', '.join(known) or 'none (it prints no JSON)'}, each mapped "
                              "to a string")
    step = Step(name, tuple(argv), dict(output), dict(table.get("accept_exit", {})))
    allowed = {*GLOBAL, *STEP_PLACEHOLDERS[name], *(MODEL if name != "version" else ())}
    unknown = sorted(step.placeholders(where) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown placeholder(s) {', '.join(unknown)} (this step "
                          f"has: {', '.join(sorted(allowed))})")
    return step


# --------------------------------------------------------------------------- output


def model_eos_ids(model_dir: Path) -> tuple[int, ...]:
    """EOS ids from generation_config.json, then config.json (as the oracle reads them)."""
    for name in ("generation_config.json", "config.json"):
        try:
            data = json.loads((model_dir / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        value = data.get("eos_token_id") if isinstance(data, dict) else None
        if isinstance(value, int) and not isinstance(value, bool):
            return (value,)
        if isinstance(value, list):
            return tuple(v for v in value if isinstance(v, int) and not isinstance(v, bool))
    return ()


def finite_number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class Reader:
    """Reads one step's JSON output; every fault names the tool and carries the call."""

    tool: str
    step: Step
    done: Completed

    def fail(self, message: str, kind: FailureKind = FailureKind.GARBAGE) -> EngineFailure:
        return failure(kind, message, self.done)

    def json(self) -> dict[str, Any]:
        required = [self.step.key(k) for k in REQUIRED_KEYS.get(self.step.name, ())]
        obj = process.find_json_object(self.done.stdout, required)
        if obj is None:
            raise self.fail(f"{self.tool} printed no JSON object with keys "
                            f"{', '.join(required)}; stdout begins "
                            f"{process.excerpt(process.strip_ansi(self.done.stdout))}")
        return obj

    def get(self, data: Mapping[str, Any], key: str) -> Any:
        return data.get(self.step.key(key))

    def ids(self, value: object, what: str, vocab: int | None) -> tuple[int, ...]:
        """A list of non-negative integer token ids below ``vocab``."""
        problem = token_ids_problem(value, f"{self.tool}'s {what!r}", vocab)
        if problem:
            raise self.fail(problem[1], problem[0])
        assert isinstance(value, list)
        return tuple(value)

    def topk(self, value: object, n_tokens: int, top_k: int, vocab: int | None
             ) -> tuple[TopK, ...]:
        if not isinstance(value, list) or len(value) != n_tokens:
            raise self.fail(f"{self.tool}'s 'topk' must be a list with one entry per generated "
                            f"token ({n_tokens}), got {process.excerpt(repr(value))}")
        steps = []
        for i, entry in enumerate(value):
            ids = self.ids(entry.get("ids") if isinstance(entry, dict) else None,
                           f"topk[{i}].ids", vocab)
            raw = entry.get("logprobs") if isinstance(entry, dict) else None
            if not isinstance(raw, list) or len(ids) < top_k or len(raw) != len(ids):
                raise self.fail(f"{self.tool}'s topk[{i}] needs at least {top_k} ids with as "
                                "many finite log-probabilities <= 0")
            problem = logprobs_problem(raw, f"{self.tool}'s topk[{i}].logprobs")
            if problem:
                raise self.fail(problem[1], problem[0])
            logprobs = [float(x) for x in raw]
            steps.append(TopK(ids[:top_k], tuple(logprobs[:top_k])))
        return tuple(steps)

    def seconds(self, data: Mapping[str, Any]) -> float:
        millis = finite_number(self.get(data, "milliseconds"))
        if millis is not None and millis > 0:
            return millis / 1000.0
        secs = finite_number(self.get(data, "seconds"))
        return secs if secs is not None and secs > 0 else self.done.seconds

    def generation(self, max_new_tokens: int, eos: Sequence[int], vocab: int | None,
                   top_k: int = 0) -> Generation:
        data = self.json()
        tokens = self.ids(self.get(data, "tokens"), "tokens", vocab)
        text = self.get(data, "text")
        if not isinstance(text, str):
            raise self.fail(f"{self.tool}'s 'text' is not a string: {process.excerpt(repr(text))}")
        if len(tokens) > max_new_tokens:
            raise self.fail(f"{self.tool} returned {len(tokens)} tokens for max_new_tokens "
                            f"{max_new_tokens}")
        prompt = self.get(data, "prompt_tokens")
        stop = self.get(data, "stop_reason")
        if stop is None:  # the tool does not say: it stopped at EOS or short of the limit
            stopped = (tokens and tokens[-1] in eos) or len(tokens) < max_new_tokens
            stop = "eos" if stopped else "length"
        elif stop not in ("eos", "length"):
            raise self.fail(f"{self.tool}'s 'stop_reason' is {stop!r}, not 'eos' or 'length'")
        problem = stop_problem(stop, len(tokens), max_new_tokens)
        if problem:
            raise self.fail(f"{self.tool}'s {problem[1]}", problem[0])
        topk = None
        if top_k:
            if self.get(data, "topk") is None:
                raise self.fail(f"{self.tool} was asked for top-{top_k} log-probabilities and "
                                "printed no 'topk'")
            topk = self.topk(self.get(data, "topk"), len(tokens), top_k, vocab)
        return Generation(
            tokens=tokens,
            text=text,
            prompt_tokens=() if prompt is None else self.ids(prompt, "prompt_tokens", vocab),
            stop_reason=stop,
            seconds=self.seconds(data),
            call=self.done.call,
            topk=topk,
        )

    def perplexity(self) -> PerplexityResult:
        data = self.json()
        raw = self.get(data, "perplexity")
        if raw is None or (isinstance(raw, float) and not math.isfinite(raw)):
            spelled = "null (serde_json's spelling of NaN/Inf)" if raw is None else repr(raw)
            raise self.fail(f"{self.tool} reported perplexity {spelled}", FailureKind.NAN)
        ppl = finite_number(raw)
        if ppl is None or ppl < 1.0:
            raise self.fail(f"{self.tool} reported perplexity {raw!r} (must be a number >= 1)")
        raw_nll = self.get(data, "cross_entropy")
        if isinstance(raw_nll, float) and not math.isfinite(raw_nll):
            raise self.fail(f"{self.tool} reported cross_entropy {raw_nll!r}", FailureKind.NAN)
        nll = finite_number(raw_nll)
        count = self.get(data, "tokens_evaluated")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise self.fail(f"{self.tool} reported tokens_evaluated {count!r}")
        return PerplexityResult(
            perplexity=ppl,
            cross_entropy=nll if nll is not None else math.log(ppl),
            tokens_evaluated=count,
            seconds=self.seconds(data),
            call=self.done.call,
        )
