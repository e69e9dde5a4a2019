"""Stages finetune_cv | grl_cv | dro_cv: every fold trained once per seed with one objective.

``run_cv`` trains every fold once per seed in ``finetune.seeds`` (resumable from fold checkpoints),
starting from the fold's probe of stage lp_cv (:mod:`aes.finetune.lp`) when ``finetune.lp_ft`` is
on, and writes metrics/<stage>.json, data/predictions/<stage>.csv (one row per essay and seed),
plots/<stage>/, the inner slice's predictions data/predictions/<stage>_inner.csv (aes.core.artifacts),
models/<stage>/seed_<s>/fold_<k>/ (trained weights + config), the out-of-fold pooled representations
of the first seed data/representations/<stage>.npy + _ids.csv (for the report's prompt probe) and
DVCLive curves of the first seed.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from aes.core.artifacts import make_inner_frame, make_oof_frame, stack_seeds, write_model_outputs
from aes.core.errors import AESError
from aes.core.io import sha256_file, write_json
from aes.core.machine import compute_fingerprint
from aes.core.registry import (
    CHECKPOINTS,
    EMBED,
    ESSAYS,
    FROZEN_PASS,
    SPLITS,
    dvclive_dir,
    inputs_record,
    models_dir,
    representation_paths,
    stage_for_objective,
)
from aes.data.corpus import declared_targets
from aes.encoders.embedding import resolve_device
from aes.finetune.callbacks import DVCLiveCurves, ProgressCallback
from aes.finetune.checkpoints import (
    config_hash,
    read_checkpoint,
    remove_checkpoints,
    run_name,
    save_fold,
    write_checkpoint,
)
from aes.finetune.folds import cap_training_rows, load_cv
from aes.finetune.frozen_pass import load_frozen_pass
from aes.finetune.loop import Trainer
from aes.finetune.lp import load_probes, probe_for_fold
from aes.finetune.runtime import make_accelerator


def train_summary(objective: str, results: dict, cv: pd.DataFrame | None = None) -> dict:
    """Per-(seed, fold) last-epoch training diagnostics for metrics/<stage>.json, keyed 'seed/fold'.

    GRL: the adversary's accuracy on the last epoch's training batches, and beside it its chance
    level, the share of the fold's largest training prompt (``cv``: the CV essays with fold, prompt).
    """
    keys = {"erm": [], "grl": ["adversary_acc"], "dro": ["dro_max_weight", "dro_worst_group_loss"]}[objective]
    names = {r: f"{r[0]}/{r[1]}" for r in sorted(results)}
    summary = {"train_loss": {names[r]: results[r]["epochs"][-1]["train_mse"] for r in names}}
    for key in keys:
        summary[key] = {names[r]: results[r]["epochs"][-1].get(key) for r in names}
    if objective == "grl" and cv is not None:
        summary["adversary_chance"] = {names[r]: round(float(cv.loc[cv["fold"] != r[1], "prompt"].value_counts(normalize=True).max()), 6)
                                       for r in names}
    summary["best_epoch"] = {names[r]: results[r]["best_epoch"] for r in names}
    if any("inner_qwk" in e for r in results.values() for e in r["epochs"]):
        summary["inner_qwk"] = {names[r]: float(np.nanmax([e.get("inner_qwk", np.nan) for e in results[r]["epochs"]] + [-np.inf]))
                                for r in names}
    summary["fold_s"] = {names[r]: results[r].get("fold_s") for r in names}
    return summary


def train_runs(params: dict, objective: str, cv: pd.DataFrame, probes: dict | None, ckpt_root: Path, curves: DVCLiveCurves,
               root: Path) -> tuple[dict, list]:
    """Results of every (seed, fold) run: loaded from a finished checkpoint, else trained (and checkpointed).

    Curves are logged for the first seed only (one line per fold stays readable).
    """
    stage, ft = stage_for_objective(objective), params["finetune"]
    folds = sorted(int(f) for f in cv["fold"].unique())
    runs = [(seed, k) for seed in ft["seeds"] for k in folds]
    results: dict[tuple[int, int], dict] = {}
    for seed, k in runs:
        done = read_checkpoint(ckpt_root, run_name(seed, k))
        if done is not None:
            print(f"{stage}: resuming seed {seed} fold {k} from {ckpt_root / run_name(seed, k)}", flush=True)
            results[(seed, k)] = done
            if seed == ft["seeds"][0]:
                curves.replay(k, done)
    todo = [r for r in runs if r not in results]
    if not todo:
        return results, todo
    n_train = {k: int((cv["fold"] != k).sum()) for k in folds}
    for k in folds:  # a cap larger than a fold fails before anything is loaded or trained, not after hours
        cap_training_rows(np.arange(n_train[k]), ft["max_train_essays"], 0, k)
    trainer = Trainer(params, objective, make_accelerator(ft))
    frozen, stored = None, None
    if ft["trainable_layers"] >= 0:
        frozen = load_frozen_pass(root / FROZEN_PASS, cv["record_id"], need_hidden=True, feature_groups=ft["features"])
        print(f"{stage}: read the frozen pass of stage {EMBED} from {root / FROZEN_PASS} ({frozen.hidden.shape[0]} essays, "
              f"{frozen.hidden.shape[1]} tokens)", flush=True)
    elif ft["features"] or trainer.centres_pooled:  # the whole encoder trains from tokens; features and pristine pooled are stage embed's
        stored = load_frozen_pass(root / FROZEN_PASS, cv["record_id"], need_hidden=False, feature_groups=ft["features"])
    data = trainer.prepare(cv["text"].tolist(), frozen, None if stored is None else stored.features, cv["prompt"],
                           None if stored is None else stored.pooled)
    if ft["max_train_essays"]:
        n_train = {k: ft["max_train_essays"] for k in folds}
    if ft["inner_val_fraction"] > 0:  # the inner split removes about this share of training essays
        n_train = {k: math.ceil(n * (1 - ft["inner_val_fraction"])) for k, n in n_train.items()}
    progress = ProgressCallback(stage, sum(trainer.steps_per_epoch(n_train[k]) * ft["epochs"] for _, k in todo))
    try:
        for seed, k in todo:
            started = time.perf_counter()
            callbacks = [curves, progress] if seed == ft["seeds"][0] else [progress]
            init_head = probe_for_fold(probes, k)
            results[(seed, k)] = trainer.train_fold(cv, data, k, seed, init_head=init_head, callbacks=callbacks)
            results[(seed, k)]["fold_s"] = round(time.perf_counter() - started, 1)
            write_checkpoint(ckpt_root, run_name(seed, k), results[(seed, k)])
    finally:
        progress.close()
    return results, todo


def write_fold_models(folder: Path, results: dict, params: dict, objective: str, chash: str) -> None:
    """models/<stage>/seed_<s>/fold_<k>/: weights, fold.json and config.json (no wall-clock time: byte-stable)."""
    ft = params["finetune"]
    shutil.rmtree(folder, ignore_errors=True)
    for (seed, k), result in sorted(results.items()):
        out = folder / f"seed_{seed}" / f"fold_{k}"
        save_fold(out, result, with_timing=False)  # times are in metrics/<stage>.json
        write_json(out / "config.json", {
            "stage": stage_for_objective(objective), "objective": objective, "seed": seed, "lp_ft": ft["lp_ft"],
            "model": ft["model"], "trainable_layers": ft["trainable_layers"],
            "lora": ft["lora"], "max_length": ft["max_length"], "targets": result.get("targets"),
            "target_weights": ft["target_weights"], "target_mean": result["target_mean"],
            "target_std": result["target_std"], "features": ft["features"], "feature_scaling": result.get("feature_scaling"),
            "normalise": params["normalise"],
            "config_hash": chash,
            "weights": "weights.safetensors: trained top layers / LoRA adapters (names as in the training module) + head "
                       "(reads [pooled, (features - feature_scaling.mean) / feature_scaling.sd] when features are set)",
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
    stage, ft = stage_for_objective(objective), params["finetune"]
    started = time.perf_counter()
    cv = load_cv(root)
    folds = sorted(int(f) for f in cv["fold"].unique())
    if len(folds) < 2:
        raise AESError(f"{stage} needs at least 2 CV folds; got {len(folds)}")
    probes, probe_bytes = load_probes(root, folds, ft["features"]) if ft["lp_ft"] else (None, b"")
    chash = config_hash(params, objective, (root / SPLITS).read_bytes(), (root / ESSAYS).read_bytes(), probe_bytes)
    ckpt_root = root / CHECKPOINTS / stage / chash
    ckpt_root.mkdir(parents=True, exist_ok=True)
    curves = DVCLiveCurves(dvclive_dir(stage, root))
    results, todo = train_runs(params, objective, cv, probes, ckpt_root, curves, root)
    curves.end()

    # Assemble the out-of-fold outputs: every CV essay once per seed, predicted by its own fold's model.
    fold_of = cv["fold"].to_numpy()
    frames = []
    n_targets = len(declared_targets(cv))
    for seed in ft["seeds"]:
        pred = np.full((len(cv), n_targets), np.nan)
        for k in folds:
            pred[fold_of == k] = np.asarray(results[(seed, k)]["pred_unit"]).reshape(int((fold_of == k).sum()), -1)
        frames.append(make_oof_frame(cv, fold_of, pred, seed))
    first = ft["seeds"][0]
    reps = np.zeros((len(cv), results[(first, folds[0])]["pooled"].shape[1]), dtype=np.float32)
    for k in folds:
        reps[fold_of == k] = results[(first, k)]["pooled"]
    write_fold_models(models_dir(stage, root), results, params, objective, chash)
    write_representations(stage, cv, reps, root)
    extra = {"train": train_summary(objective, results, cv), "lp_ft": ft["lp_ft"], "features": list(ft["features"]),
             "inputs": inputs_record(params["normalise"], reads_features=bool(ft["features"])),
             "resumed_runs": [run_name(*r) for r in sorted(results) if r not in todo],
             "compute": compute_fingerprint(ft["mixed_precision"], resolve_device(ft["device"]))}
    if ft["trainable_layers"] >= 0:
        extra["frozen_pass_sha256"] = sha256_file(root / FROZEN_PASS / "hidden.npy")
    inner = {r: (res["inner_rows"], res["inner_unit"]) for r, res in results.items() if len(res["inner_rows"])}
    metrics = write_model_outputs(stage, stack_seeds(frames), time.perf_counter() - started,
                                  params["report"]["min_prompt_n"], extra=extra, root=root,
                                  inner=make_inner_frame(cv, inner) if inner else None)
    remove_checkpoints(root / CHECKPOINTS, stage)  # the outputs are written: checkpoints are done with
    return metrics
