"""Fold checkpoints, so a killed stage resumes instead of retraining, and the fold model files.

A finished (seed, fold) run is written to ``.checkpoints/<stage>/<config_hash>/seed_<s>_fold_<k>/``
(temp folder renamed into place, ``DONE`` marker last); a re-run with the same params, splits,
essays and linear probes loads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

FOLD_INFO_KEYS = ("targets", "target_mean", "target_std", "feature_scaling", "epochs", "best_epoch", "prompts", "history")


def config_hash(params: dict, objective: str, *inputs: bytes) -> str:
    """sha256 over the finetune + objective params and the bytes of the input files (splits, essays, probes)."""
    digest = hashlib.sha256()
    cfg = {"objective": objective, "finetune": params["finetune"], objective: params.get(objective, {})}
    digest.update(json.dumps(cfg, sort_keys=True).encode())
    for data in inputs:
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()[:16]


def run_name(seed: int, k: int) -> str:
    """Folder name of one (seed, fold) run."""
    return f"seed_{seed}_fold_{k}"


def save_fold(folder: Path, result: dict, with_timing: bool = True) -> None:
    """Write one fold's weights (safetensors) + fold.json (target and writing-feature scaling, epochs, prompts, curves).

    with_timing=False leaves the wall-clock time out, so the DVC out is byte-identical across re-runs.
    """
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(result["state"], str(folder / "weights.safetensors"))
    keys = FOLD_INFO_KEYS + (("fold_s",) if with_timing else ())
    (folder / "fold.json").write_text(json.dumps({k: result.get(k) for k in keys}, indent=2) + "\n")


def write_checkpoint(root: Path, name: str, result: dict) -> None:
    """Atomically write run ``name`` under ``root``: temp folder, rename, then the DONE marker."""
    final = root / name
    tmp = root / f".{name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_fold(tmp, result)
    np.save(tmp / "pred_unit.npy", np.asarray(result["pred_unit"], dtype=np.float64))
    np.save(tmp / "pooled.npy", np.asarray(result["pooled"], dtype=np.float32))
    # the inner slice's rows and predictions (empty without an inner slice)
    np.save(tmp / "inner_rows.npy", np.asarray(result.get("inner_rows", []), dtype=np.int64))
    np.save(tmp / "inner_unit.npy", np.asarray(result.get("inner_unit", []), dtype=np.float64))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    (final / "DONE").write_text("ok\n")


def read_checkpoint(root: Path, name: str) -> dict | None:
    """Run ``name``'s result if its DONE marker exists, else None."""
    from safetensors.torch import load_file

    folder = root / name
    if not (folder / "DONE").exists():
        return None
    info = json.loads((folder / "fold.json").read_text())

    def inner(file: str, dtype) -> np.ndarray:
        # checkpoints written before the inner slice existed have no inner files; their config hash
        # matches only a run without an inner slice (finetune.inner_val_fraction: 0), so empty is right
        return np.load(folder / file) if (folder / file).exists() else np.zeros(0, dtype=dtype)

    return {
        **info,
        "pred_unit": np.load(folder / "pred_unit.npy"),
        "pooled": np.load(folder / "pooled.npy"),
        "inner_rows": inner("inner_rows.npy", np.int64),
        "inner_unit": inner("inner_unit.npy", np.float64),
        "state": load_file(str(folder / "weights.safetensors")),
    }


def remove_checkpoints(checkpoints: Path, stage: str) -> None:
    """Drop a stage's checkpoints (this config and any stale ones) once its outputs are written."""
    shutil.rmtree(checkpoints / stage, ignore_errors=True)
    try:
        checkpoints.rmdir()  # only when no other stage has checkpoints there
    except OSError:
        pass
