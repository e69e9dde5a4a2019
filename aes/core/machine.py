"""What decides whether a run's numbers reproduce on another machine: the compute fingerprint.

Same params, same library versions and the same kind of CPU give bit-identical outputs (tested).
Across CPU kinds they do not: bfloat16 matrix kernels differ between a CPU with AMX and one with
only AVX512-BF16 (oneDNN picks the kernel from the CPU unless ``ONEDNN_MAX_CPU_ISA`` caps it), and
float32 kernels between AVX-512 and AVX2 (MKL, ATen's vectorised ops). Every stage that runs an
encoder records :func:`compute_fingerprint` in its metrics, so two runs whose numbers differ say
why (README "What reproduces where"; measured by ``python -m aes.ops.bench_kernels``).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path

# CPU flags (as /proc/cpuinfo names them) that choose a different float kernel, strongest first.
KERNEL_FLAGS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")
# Libraries whose versions a benchmark record names (the training path's).
PACKAGES = ("torch", "transformers", "accelerate", "peft", "numpy", "pandas", "scikit-learn")
# Environment variables that cap or change the kernels the libraries pick.
KERNEL_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is missing, e.g. macOS)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def compute_fingerprint(precision: str, device: str = "cpu") -> dict:
    """What decides the bits of an encoder's output on this machine (JSON-ready, strings only).

    ``precision``: the autocast dtype the stage used (``no`` | ``bf16`` | ``fp16``); ``device``:
    ``cpu`` or ``cuda``.
    """
    import torch
    import transformers

    flags = cpu_flags()
    out = {
        "device": device,
        "precision": precision,
        "cpu": cpu_name(),
        "cpu_kernel_flags": " ".join(f for f in KERNEL_FLAGS if f in flags) or "none",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": str(torch.get_num_threads()),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["cuda"] = str(torch.version.cuda)
    capped = {name: os.environ[name] for name in KERNEL_ENV if os.environ.get(name)}
    if capped:
        out["kernel_env"] = " ".join(f"{k}={v}" for k, v in sorted(capped.items()))
    return out


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
    """What a benchmark ran on: CPU model and kernel flags, torch/GPU, library versions, platform, load."""
    flags = cpu_flags()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"platform": platform.platform(),
            "cpu": {"model": cpu_name(), "flags": [f for f in KERNEL_FLAGS if f in flags], "cpu_count": os.cpu_count()},
            **torch_info(), "versions": versions(), "load_avg_1m": None if load is None else round(load, 2)}
