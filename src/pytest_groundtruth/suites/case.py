"""One parity test: which suite checks which model, runtime, quantization (and prompt).

Pure data. A case knows its test name and id (``token[smollm2-135m-llamacpp-int4-code]``),
the device it runs on, the pytest-xdist group that keeps one artifact's tests on one
worker, and, when it is known at collection, why it will skip.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    suite: str
    model: str
    runtime: str
    quant: str
    prompt: str | None = None
    other: str | None = None  # pair cases: the quantization compared with ``quant``
    variant: str = ""  # distinguishes several checks of one suite on one cell ("gap", ...)
    skip: str | None = None  # known at collection: why this case cannot run
    device: str = "cpu"

    @property
    def id(self) -> str:
        parts = [self.model, self.runtime, self.variant, self.quant, self.other, self.prompt]
        return "-".join(p for p in parts if p)

    @property
    def quant_label(self) -> str:
        return f"{self.quant}-{self.other}" if self.other else self.quant

    @property
    def name(self) -> str:
        return f"{self.suite}[{self.id}]"

    @property
    def group(self) -> str:
        """Tests sharing a group run on one xdist worker (``--dist loadgroup``, the
        plugin's default under xdist): one artifact's conversion, load and generations
        happen on one worker, while the other workers take other artifacts. A pair case
        joins its first quantization's group; the other artifact's results come from the
        result store (made once, waited for under its lock)."""
        group = f"{self.model}-{self.runtime}-{self.quant}"
        return group if self.device == "cpu" else f"{group}@{self.device}"

    @property
    def match(self) -> dict[str, str | None]:
        """What a ``[[tool.groundtruth.bounds]]`` rule may match this case on."""
        return {"model": self.model, "runtime": self.runtime, "quantization": self.quant,
                "prompt": self.prompt}
