"""What decides the float32 numbers this machine's CPU kernels produce, read cheaply.

torch picks its CPU kernels (and oneDNN / MKL theirs) from the CPU's instruction sets:
an oracle regenerated on an AVX-512 machine differs from one made with AVX2 in the
fifth decimal of its log-probabilities. :func:`cpu_kernel_family` names that family
without importing torch (seconds): the vendor and model, the vector and matrix
instruction flags, and the environment variables that override the dispatch
(``ATEN_CPU_CAPABILITY``, oneDNN's and MKL's). torch's own ``get_cpu_capability()`` is
a function of these and of the torch version, which a key includes separately.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# Flag prefixes that select kernels: x86 vector/matrix extensions, Arm SIMD and SVE.
KERNEL_FLAGS = ("avx", "amx", "fma", "f16c", "sse", "vnni", "bf16", "asimd", "sve", "neon",
                "fphp", "i8mm")
DISPATCH_VARIABLES = ("ATEN_CPU_CAPABILITY", "DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA",
                      "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "MKL_DEBUG_CPU_TYPE")
CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo(text: str) -> dict[str, str]:
    """The first processor block of /proc/cpuinfo as key -> value."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    return fields


def cpu_kernel_family(cpuinfo: str | None = None) -> dict[str, str]:
    """The CPU's kernel-relevant identity (``cpuinfo``: /proc/cpuinfo's text, read when
    None; other systems fall back to ``platform``)."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            cpuinfo = ""
    info = _cpuinfo(cpuinfo)
    flags = (info.get("flags") or info.get("features") or "").split()
    family = {
        "machine": platform.machine(),
        "vendor": info.get("vendor_id") or info.get("cpu implementer") or platform.processor(),
        "model": info.get("model name") or info.get("cpu part") or platform.processor(),
        "flags": " ".join(sorted({f for f in flags if f.startswith(KERNEL_FLAGS)})),
    }
    family.update({name: os.environ[name] for name in DISPATCH_VARIABLES if name in os.environ})
    return family
