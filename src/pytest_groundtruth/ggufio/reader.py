"""Read a GGUF back: metadata as plain values, tensors dequantized in Hugging Face layout.

:func:`iter_hf_tensors` inverts everything :mod:`~pytest_groundtruth.ggufio.writer` (and
llama.cpp's converter) does to a tensor: the GGUF name becomes the transformers name
(the inverse of ``gguf.TensorNameMap`` over the model's own names), the architecture's
layout rules are undone (llama q/k rows un-permuted, gpt2 Conv1D weights transposed
back, gemma's norm offset removed), and the data is dequantized with
``gguf.quants.dequantize``. For an F32 GGUF the result is bit-exact
with the source safetensors. Tensors are yielded one at a time from a memory map of the
file, located by :func:`scan_gguf`.

:func:`scan_gguf` is the cheap structural check (header, key/value section, tensor
table, data extent against the file size) used to validate cached artifacts and to
locate tensors:
``gguf.GGUFReader`` builds a numpy view per vocabulary string and takes about 2 s on a
49152-token vocabulary, the scan about a tenth of that.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt

from pytest_groundtruth.core.tensorfiles import open_safetensors
from pytest_groundtruth.ggufio import names
from pytest_groundtruth.ggufio.names import GGUFExportError, GGUFFormatError


def open_reader(path: Path) -> gguf.GGUFReader:
    """``gguf.GGUFReader`` on ``path``; a corrupt file raises :class:`GGUFFormatError`."""
    path = Path(path)
    if not path.is_file():
        raise GGUFFormatError(f"{path}: no such GGUF file")
    try:
        return gguf.GGUFReader(path, "r")
    except Exception as exc:  # the reader raises ValueError, struct errors, IndexError...
        raise GGUFFormatError(
            f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})"
        ) from exc


def _plain(field: Any) -> Any:
    value = field.contents()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_metadata(path: Path) -> dict[str, Any]:
    """Every key/value of the GGUF at ``path`` as plain Python values (str, int, float,
    bool, lists of them), in file order; the header fields appear as ``GGUF.version``,
    ``GGUF.tensor_count`` and ``GGUF.kv_count``."""
    reader = open_reader(path)
    return {name: _plain(field) for name, field in reader.fields.items()}


def config_of(config: Mapping[str, Any] | Path) -> Mapping[str, Any]:
    if isinstance(config, Path):
        return names.read_config(config)
    return config


def iter_hf_tensors(
    path: Path, config: Mapping[str, Any] | Path
) -> Iterator[tuple[str, npt.NDArray[np.float32], str]]:
    """Yield ``(hf_name, float32 array in HF layout, ggml type name)`` for every tensor.

    ``config`` is the model's config.json (parsed, or the path of the file or its
    directory): it gives the architecture and the head counts the q/k permutation
    needs, and the HF names (the directory's safetensors, else what transformers builds
    from the config). Tensors that llama.cpp's converter generates without an HF
    counterpart (``rope_freqs``) are skipped; any other unknown name raises
    GGUFFormatError.
    The file is memory-mapped; each tensor is dequantized into its own array.
    """
    path = Path(path)
    try:
        source = str(config) if isinstance(config, Path) else "config"
        hp = names.hparams(config_of(config), source)
    except GGUFExportError as exc:
        raise GGUFFormatError(str(exc)) from exc
    tensor_names = names.TensorNames(hp, _hf_names(config, hp))
    scan = scan_gguf(path)
    arch = scan.scalars.get("general.architecture")
    if arch != hp.arch_name:
        raise GGUFFormatError(
            f"{path}: general.architecture is {arch!r}, the config says {hp.model_type!r}"
        )
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    try:
        for name, tensor in scan.tensors.items():
            if name in names.GENERATED_GGUF_TENSORS:
                continue
            hf = tensor_names.hf(name)
            if hf is None:
                raise GGUFFormatError(
                    f"{path}: tensor {name!r} has no transformers name for {hp.model_type} "
                    f"with {hp.block_count} layers"
                )
            qtype = gguf.GGMLQuantizationType[tensor.type]
            shape = tuple(reversed(tensor.dims))  # ggml lists the fastest dimension first
            start = scan.data_offset + tensor.offset
            raw = mapped[start : start + tensor.nbytes]
            raw = raw.reshape(gguf.quants.quant_shape_to_byte_shape(shape, qtype))
            try:
                data = gguf.quants.dequantize(raw, qtype)
            except NotImplementedError as exc:
                raise GGUFFormatError(
                    f"{path}: tensor {name!r} has type {tensor.type}, which gguf cannot dequantize"
                ) from exc
            array = np.array(data, dtype=np.float32).reshape(shape)
            yield hf, names.to_hf_layout(hp, hf, array), tensor.type
    finally:
        del mapped


def _hf_names(config: Mapping[str, Any] | Path, hp: names.HParams) -> list[str]:
    if isinstance(config, Path) and config.is_dir():

        found: list[str] = []
        for part in sorted(config.glob("model*.safetensors")):
            with open_safetensors(str(part), "np") as f:
                found += list(f.keys())
        if found:
            return found
    return list(names.skeleton(hp.config))


# --------------------------------------------------------------------------- cheap scan

_SCALAR_FORMATS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class ScannedTensor:
    type: str  # ggml type name (F32, Q8_0, ...)
    dims: tuple[int, ...]  # ggml order: the fastest-varying dimension first
    offset: int  # from the start of the data section
    nbytes: int


@dataclass
class GGUFScan:
    """What :func:`scan_gguf` learned: header counts, scalar metadata, data extent."""

    version: int
    tensor_count: int
    kv_count: int
    scalars: dict[str, Any] = field(default_factory=dict)  # non-array key/values
    tensors: dict[str, ScannedTensor] = field(default_factory=dict)  # file order
    data_offset: int = 0  # where tensor data starts
    data_end: int = 0  # end of the last tensor's bytes
    file_size: int = 0


class _Cursor:
    def __init__(self, buffer: bytes | memoryview, path: Path) -> None:
        self.buf, self.pos, self.path = buffer, 0, path

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise GGUFFormatError(f"{self.path}: truncated at byte {self.pos} (header or metadata)")
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        length = self.take("<Q")
        if self.pos + length > len(self.buf):
            raise GGUFFormatError(f"{self.path}: truncated string at byte {self.pos}")
        raw = bytes(self.buf[self.pos : self.pos + length])
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALAR_FORMATS:
            return self.take(_SCALAR_FORMATS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item_type, count = self.take("<I"), self.take("<Q")
            if item_type in _SCALAR_FORMATS:
                self.pos += struct.calcsize(_SCALAR_FORMATS[item_type]) * count
            elif item_type == _STRING:
                for _ in range(count):
                    length = self.take("<Q")
                    self.pos += length
            else:  # nested arrays do not occur in llama.cpp's files; walk them anyway
                for _ in range(count):
                    self.value(item_type)
            if self.pos > len(self.buf):
                raise GGUFFormatError(f"{self.path}: truncated array value")
            return None
        raise GGUFFormatError(f"{self.path}: unknown metadata value type {vtype} at {self.pos}")


def scan_gguf(path: Path) -> GGUFScan:
    """Walk the GGUF structure without building arrays; raise GGUFFormatError if unsound.

    Checks the magic, the version (2 or 3), every key/value and tensor-info record,
    that every tensor type is known and that all tensor data lies inside the file.
    """
    import mmap

    path = Path(path)
    try:
        size = path.stat().st_size
        if size < 24:
            raise GGUFFormatError(f"{path}: {size} bytes is too short for a GGUF header")
        with (
            path.open("rb") as fh,
            mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm,
            memoryview(mm) as view,
        ):
            return _scan(view, path, size)
    except OSError as exc:
        raise GGUFFormatError(f"{path}: cannot read ({exc})") from exc


def _scan(buf: memoryview, path: Path, size: int) -> GGUFScan:
    cur = _Cursor(buf, path)
    try:
        if bytes(buf[:4]) != b"GGUF":
            raise GGUFFormatError(f"{path}: not a GGUF file (magic {bytes(buf[:4])!r})")
        cur.pos = 4
        version = cur.take("<I")
        if version not in (2, 3):
            raise GGUFFormatError(f"{path}: unsupported GGUF version {version}")
        scan = GGUFScan(version, cur.take("<Q"), cur.take("<Q"), file_size=size)
        for _ in range(scan.kv_count):
            key = cur.string()
            value = cur.value(cur.take("<I"))
            if value is not None:
                scan.scalars[key] = value
        extents = []
        for _ in range(scan.tensor_count):
            name = cur.string()
            dims = tuple(cur.take("<Q") for _ in range(cur.take("<I")))
            type_id, offset = cur.take("<I"), cur.take("<Q")
            try:
                qtype = gguf.GGMLQuantizationType(type_id)
                block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            except (ValueError, KeyError):
                raise GGUFFormatError(
                    f"{path}: tensor {name!r} has unknown type {type_id}"
                ) from None
            count = math.prod(dims)
            if dims and dims[0] % block:
                raise GGUFFormatError(
                    f"{path}: tensor {name!r} rows ({dims[0]}) do not split "
                    f"into {qtype.name} blocks of {block}"
                )
            nbytes = count // block * type_size
            scan.tensors[name] = ScannedTensor(qtype.name, dims, offset, nbytes)
            extents.append(offset + nbytes)
        alignment = scan.scalars.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0:
            raise GGUFFormatError(f"{path}: bad general.alignment {alignment!r}")
        scan.data_offset = -(-cur.pos // alignment) * alignment
        scan.data_end = scan.data_offset + max(extents, default=0)
        if scan.data_end > size:
            raise GGUFFormatError(
                f"{path}: truncated: tensor data ends at byte {scan.data_end}, the file has {size}"
            )
        return scan
    finally:
        cur.buf = b""  # drop the view before the map closes


def gguf_problem(path: Path) -> str | None:
    """Why ``path`` is not a sound GGUF model file (truncated, no tensors, no
    architecture), or None."""
    try:
        scan = scan_gguf(path)
    except GGUFFormatError as exc:
        return str(exc)
    if not scan.tensor_count:
        return f"{path}: GGUF has no tensors"
    if not isinstance(scan.scalars.get("general.architecture"), str):
        return f"{path}: GGUF has no general.architecture"
    return None
