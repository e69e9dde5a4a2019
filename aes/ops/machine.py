"""What a benchmark ran on: CPU model and the flags that decide bf16 speed, library versions, GPU.

Imports only the standard library at module level; torch and the others are read if installed.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

# CPU flags that change which kernels torch picks (bf16 matrix products, AVX-512 fp32).
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "avx512_vnni")
PACKAGES = ("torch", "transformers", "accelerate", "peft", "datasets", "numpy", "pandas", "scikit-learn")


def cpu_info() -> dict:
    """{"model": str, "flags": [the CPU_FLAGS this CPU has], "cpu_count": int} (Linux; model '?' elsewhere)."""
    model, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and model in ("?", "", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in flags], "cpu_count": os.cpu_count()}


def versions() -> dict:
    """{package: version or None} for the libraries the training path uses, plus python."""
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def torch_info() -> dict:
    """torch version, threads, CUDA version (None on a CPU build) and the GPU's name and memory, if any."""
    import torch

    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cuda": torch.version.cuda,
            "gpu": None, "gpu_memory_gib": None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cudnn=torch.backends.cudnn.version(), bf16_supported=torch.cuda.is_bf16_supported())
    return info


def machine() -> dict:
    """Everything above in one dict, plus the platform string and the 1-minute load average."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"platform": platform.platform(), "cpu": cpu_info(), **torch_info(), "versions": versions(),
            "load_avg_1m": None if load is None else round(load, 2)}
