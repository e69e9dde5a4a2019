"""The fine-tuning stages (finetune_cv | grl_cv | dro_cv): every CV fold, resumable, then the artifact contract.

Writes metrics/<stage>.json, data/predictions/<stage>.csv and plots/<stage>/ (aes.core.artifacts),
models/<stage>/fold_<k>/ (trained weights + config), the out-of-fold pooled representations
data/representations/<stage>.npy + _ids.csv (for the report's prompt probe) and DVCLive curves.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from aes.core.artifacts import make_oof_frame, write_model_outputs
from aes.core.errors import AESError
from aes.core.io import write_json
from aes.core.registry import CHECKPOINTS, ESSAYS, SPLITS, dvclive_dir, models_dir, representation_paths, stage_for_objective
from aes.data.corpus import load_essays
from aes.data.splits import cv_essays, load_splits
from aes.finetune.callbacks import DVCLiveCurves, ProgressCallback
from aes.finetune.checkpoints import config_hash, read_checkpoint, remove_checkpoints, save_fold, write_checkpoint
from aes.finetune.loop import Trainer, make_accelerator


def train_summary(objective: str, results: list[dict]) -> dict:
    """Per-fold last-epoch training diagnostics for metrics/<stage>.json."""
    keys = {"erm": [], "grl": ["adversary_acc"], "dro": ["dro_max_weight", "dro_worst_group_loss"]}[objective]
    summary = {"train_loss": {str(k): r["epochs"][-1]["train_mse"] for k, r in enumerate(results)}}
    for key in keys:
        summary[key] = {str(k): r["epochs"][-1].get(key) for k, r in enumerate(results)}
    summary["best_epoch"] = {str(k): r["best_epoch"] for k, r in enumerate(results)}
    if any("inner_qwk" in e for r in results for e in r["epochs"]):
        summary["inner_qwk"] = {
            str(k): float(np.nanmax([e.get("inner_qwk", np.nan) for e in r["epochs"]] + [-np.inf])) for k, r in enumerate(results)
        }
    summary["fold_s"] = {str(k): r.get("fold_s") for k, r in enumerate(results)}
    return summary


def train_folds(params: dict, objective: str, cv: pd.DataFrame, folds: list[int], ckpt_root: Path, curves: DVCLiveCurves) -> tuple[dict, list]:
    """Results of every fold: loaded from a finished checkpoint, else trained (and checkpointed)."""
    stage, ft = stage_for_objective(objective), params["finetune"]
    results: dict[int, dict] = {}
    for k in folds:
        done = read_checkpoint(ckpt_root, k)
        if done is not None:
            print(f"{stage}: resuming fold {k} from {ckpt_root / f'fold_{k}'}", flush=True)
            results[k] = done
    for k in sorted(results):
        curves.replay(k, results[k])
    todo = [k for k in folds if k not in results]
    if not todo:
        return results, todo
    trainer = Trainer(params, objective, make_accelerator(ft))
    data = trainer.prepare(cv["text"].tolist())
    n_train = {k: int((cv["fold"] != k).sum()) for k in todo}
    if ft["inner_val_fraction"] > 0:  # the inner split removes about this share of training essays
        n_train = {k: math.ceil(n * (1 - ft["inner_val_fraction"])) for k, n in n_train.items()}
    progress = ProgressCallback(stage, sum(trainer.steps_per_epoch(n) * ft["epochs"] for n in n_train.values()))
    try:
        for k in todo:
            started = time.perf_counter()
            results[k] = trainer.train_fold(cv, data, k, callbacks=[curves, progress])
            results[k]["fold_s"] = round(time.perf_counter() - started, 1)
            write_checkpoint(ckpt_root, k, results[k])
    finally:
        progress.close()
    return results, todo


def write_fold_models(folder: Path, results: dict, params: dict, objective: str, chash: str) -> None:
    """models/<stage>/fold_<k>/: weights, fold.json and config.json (no wall-clock time: byte-stable)."""
    ft = params["finetune"]
    shutil.rmtree(folder, ignore_errors=True)
    for k, result in sorted(results.items()):
        save_fold(folder / f"fold_{k}", result, with_timing=False)  # times are in metrics/<stage>.json
        write_json(folder / f"fold_{k}" / "config.json", {
            "stage": stage_for_objective(objective), "objective": objective, "model": ft["model"], "trainable_layers": ft["trainable_layers"],
            "lora": ft["lora"], "max_length": ft["max_length"], "target_mean": result["target_mean"],
            "target_std": result["target_std"], "config_hash": chash,
            "weights": "weights.safetensors: trained top layers / LoRA adapters (names as in the training module) + head",
        })


def write_representations(stage: str, cv: pd.DataFrame, reps: np.ndarray, root: Path) -> None:
    """Out-of-fold pooled vectors (n, H) float32 + their record ids and folds, written atomically."""
    vectors, ids = representation_paths(stage, root)
    vectors.parent.mkdir(parents=True, exist_ok=True)
    tmp = vectors.with_suffix(".tmp.npy")
    np.save(tmp, reps)
    tmp.replace(vectors)
    pd.DataFrame({"record_id": cv["record_id"].astype(str), "fold": cv["fold"].to_numpy()}).to_csv(ids, index=False)


def run_cv(params: dict, objective: str, root: Path = Path(".")) -> dict:
    """Run the whole stage for ``objective`` in the repository ``root``; return its metrics."""
    stage = stage_for_objective(objective)
    started = time.perf_counter()
    essays_path, splits_path = root / ESSAYS, root / SPLITS
    cv = cv_essays(load_essays(essays_path), load_splits(splits_path))
    folds = sorted(int(f) for f in cv["fold"].unique())
    if len(folds) < 2:
        raise AESError(f"{stage} needs at least 2 CV folds; got {len(folds)}")
    chash = config_hash(params, objective, splits_path.read_bytes(), essays_path.read_bytes())
    ckpt_root = root / CHECKPOINTS / stage / chash
    ckpt_root.mkdir(parents=True, exist_ok=True)
    curves = DVCLiveCurves(dvclive_dir(stage, root))
    results, todo = train_folds(params, objective, cv, folds, ckpt_root, curves)
    curves.end()

    # Assemble the out-of-fold outputs: every CV essay once, predicted by its own fold's model.
    fold_of = cv["fold"].to_numpy()
    pred = np.full(len(cv), np.nan)
    reps = np.zeros((len(cv), results[folds[0]]["pooled"].shape[1]), dtype=np.float32)
    for k in folds:
        rows = np.flatnonzero(fold_of == k)
        pred[rows], reps[rows] = results[k]["pred_raw"], results[k]["pooled"]
    write_fold_models(models_dir(stage, root), results, params, objective, chash)
    write_representations(stage, cv, reps, root)
    extra = {"train": train_summary(objective, [results[k] for k in folds]), "resumed_folds": [k for k in folds if k not in todo]}
    metrics = write_model_outputs(stage, make_oof_frame(cv, fold_of, pred), time.perf_counter() - started,
                                  params["report"]["min_prompt_n"], extra=extra, root=root)
    remove_checkpoints(root / CHECKPOINTS, stage)  # the outputs are written: checkpoints are done with
    return metrics
