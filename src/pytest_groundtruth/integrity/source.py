"""The source model's tensors, read one at a time from its safetensors files.

A :class:`SourceTensors` keeps the ``model*.safetensors`` parts open (memory-mapped by
safetensors) and loads one tensor as float32 on request, so comparing a model never
holds more than the tensor at hand. With tied embeddings the source has no
``lm_head.weight`` (or has it as a copy): :meth:`SourceTensors.resolve` maps the output
projection to the embedding, which is what transformers and llama.cpp use.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_groundtruth.core.tensorfiles import open_safetensors, read_rows, safetensors_header
from pytest_groundtruth.ggufio import names

FloatArray = npt.NDArray[np.float32]
EMBEDDINGS = ("model.embed_tokens.weight", "transformer.wte.weight")
OUTPUT = "lm_head.weight"


class SourceTensors:
    """Lazy, one-at-a-time access to a float32 Hugging Face model's weights."""

    def __init__(self, model_dir: Path, tied: bool) -> None:

        self.model_dir = Path(model_dir)
        self.tied = tied
        self._stack = contextlib.ExitStack()
        self._handles: dict[str, Any] = {}
        self._torch: dict[str, Any] = {}
        self._parts: dict[str, Path] = {}
        self._headers: dict[str, tuple[int, dict[str, Any]]] = {}
        parts = sorted(p for p in self.model_dir.glob("model*.safetensors") if p.is_file())
        if not parts:
            raise FileNotFoundError(f"{self.model_dir}: no model*.safetensors weights")
        for part in parts:
            handle = self._stack.enter_context(open_safetensors(str(part), "np"))
            self._handles[str(part)] = handle
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                if not key.endswith(names.SKIPPED_SUFFIXES):
                    self._parts.setdefault(key, part)

    def __enter__(self) -> SourceTensors:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()
        self._handles.clear()
        self._torch.clear()

    @property
    def names(self) -> list[str]:
        """Every weight name of the source, in file order."""
        return list(self._parts)

    @property
    def embedding(self) -> str | None:
        return next((n for n in EMBEDDINGS if n in self._parts), None)

    def resolve(self, name: str) -> str | None:
        """The source tensor that ``name`` stands for (tied output -> embedding), or None."""
        if name == OUTPUT and (self.tied or name not in self._parts):
            return self.embedding if self.tied else None
        return name if name in self._parts else None

    def shape(self, name: str) -> tuple[int, ...]:
        part = self._parts[name]
        return tuple(int(d) for d in self._handles[str(part)].get_slice(name).get_shape())

    def load(self, name: str) -> FloatArray:
        """Tensor ``name`` as a contiguous float32 array (bfloat16 widened through torch)."""
        return self.rows(name)

    def rows(self, name: str, start: int | None = None, stop: int | None = None
             ) -> FloatArray:
        """Rows ``start:stop`` (first dimension) of tensor ``name`` as a contiguous
        float32 array, reading only those rows (:func:`~pytest_groundtruth.core.
        tensorfiles.read_rows`); all of it without bounds."""
        part = str(self._parts[name])
        handle = self._handles[part]
        whole = start is None and stop is None
        if not whole:
            if part not in self._headers:
                self._headers[part] = safetensors_header(part)
            rows = self.shape(name)[0]
            block: FloatArray = read_rows(part, name, start or 0,
                                          rows if stop is None else stop, self._headers[part])
            return block
        dtype = str(handle.get_slice(name).get_dtype())
        if dtype == "BF16":
            if part not in self._torch:
                self._torch[part] = self._stack.enter_context(open_safetensors(part, "pt"))
            data = self._torch[part].get_tensor(name).float().numpy()
        else:
            data = handle.get_tensor(name)
        return np.ascontiguousarray(data, dtype=np.float32)
