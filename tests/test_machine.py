"""The compute fingerprint every encoder stage records: what decides whether its bits reproduce."""

from __future__ import annotations

from aes.core.machine import compute_fingerprint, cpu_flags, cpu_name, machine

CPUINFO = """processor\t: 0
model name\t: Example Xeon
flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16
"""


def test_flags_and_name_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    assert {"avx2", "avx512_bf16", "amx_bf16"} <= cpu_flags(info) and cpu_name(info) == "Example Xeon"
    assert cpu_flags(tmp_path / "missing") == set()


def test_fingerprint_names_precision_versions_and_kernel_caps(monkeypatch):
    import torch

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    plain = compute_fingerprint("bf16")
    assert plain["precision"] == "bf16" and plain["device"] == "cpu" and plain["torch"] == torch.__version__
    assert "kernel_env" not in plain and all(isinstance(v, str) for v in plain.values())
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert compute_fingerprint("no")["kernel_env"] == "ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16"


def test_benchmark_record_names_cpu_versions_and_torch():
    record = machine()
    assert set(record) >= {"platform", "cpu", "torch", "threads", "cuda", "versions", "load_avg_1m"}
    assert set(record["cpu"]["flags"]) <= {"amx_bf16", "avx512_bf16", "avx512f", "avx2"} and record["versions"]["python"]
