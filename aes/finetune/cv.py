"""The stage drivers: embed (embeddings + the frozen pass), lp_cv (linear-probe phase) and finetune_cv | grl_cv | dro_cv.

``run_embed`` computes the frozen baselines' embeddings and the fine-tune's frozen pass, in one
forward pass when they share model and length (:mod:`aes.finetune.frozen_pass`), with the essays'
writing features when ``finetune.features`` names groups.
``run_lp_cv`` reads that pass, fits the linear probe per fold on its pooled output (and the
standardised writing features, scaled on that fold's training essays) and writes the artifact
contract for stage lp_cv.
``run_cv`` trains every fold once per seed in ``finetune.seeds`` (resumable), starting from the
fold's probe when ``finetune.lp_ft`` is on, and writes metrics/<stage>.json,
data/predictions/<stage>.csv (one row per essay and seed) and plots/<stage>/ (aes.core.artifacts),
models/<stage>/seed_<s>/fold_<k>/ (trained weights + config), the out-of-fold pooled
representations of the first seed data/representations/<stage>.npy + _ids.csv (for the report's
prompt probe) and DVCLive curves of the first seed.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from aes.baseline.linear import cross_validate as probe_cross_validate
from aes.baseline.linear import fits_from_json, fits_to_json
from aes.core.artifacts import make_oof_frame, stack_seeds, write_model_outputs
from aes.core.errors import AESError
from aes.core.io import sha256_file, write_json
from aes.core.machine import compute_fingerprint
from aes.core.registry import (
    CHECKPOINTS,
    EMBED,
    EMBED_METRICS,
    EMBEDDINGS,
    ESSAYS,
    FROZEN_PASS,
    LP_STAGE,
    SPLITS,
    dvclive_dir,
    models_dir,
    representation_paths,
    stage_for_objective,
)
from aes.data.corpus import declared_targets, load_essays
from aes.data.splits import cv_essays, load_splits
from aes.encoders.embedding import resolve_device, save_embeddings
from aes.finetune.callbacks import DVCLiveCurves, ProgressCallback
from aes.finetune.checkpoints import (
    config_hash,
    read_checkpoint,
    remove_checkpoints,
    run_name,
    save_fold,
    write_checkpoint,
)
from aes.finetune.frozen_pass import embed_and_freeze, load_frozen_pass, save_frozen_pass
from aes.finetune.loop import Trainer, cap_training_rows, make_accelerator

PROBES_FILE = "probes.json"


def load_cv(root: Path) -> pd.DataFrame:
    return cv_essays(load_essays(root / ESSAYS), load_splits(root / SPLITS))


def run_embed(params: dict, root: Path = Path(".")) -> dict:
    """Stage embed: the frozen baselines' embeddings (data/embeddings) and the fine-tune's frozen pass
    (data/frozen_pass) over the CV essays, one forward pass when they share model and length; returns
    the metrics (metrics/embed.json). The locked test is never read."""
    embed, ft = params["embed"], params["finetune"]
    cv = load_cv(root)
    started = time.perf_counter()
    embeddings, frozen, info = embed_and_freeze(embed, ft, cv["text"].tolist(), cv["record_id"], EMBED)
    runtime_s = time.perf_counter() - started  # includes loading the encoder(s) and the writing features
    save_embeddings(root / EMBEDDINGS, embeddings, cv["record_id"])
    save_frozen_pass(root / FROZEN_PASS, frozen)
    metrics = {
        "n_essays": int(len(cv)), "dim": int(embeddings.shape[1]), "model": embed["model"],
        "max_length": embed["max_length"], "mixed_precision": embed["mixed_precision"], "runtime_s": round(runtime_s, 1),
        "essays_per_s": round(len(cv) / runtime_s, 2), "compute": compute_fingerprint(embed["mixed_precision"], resolve_device("auto")),
        "frozen_pass": {"shared_with_embeddings": info["shared"], "own_pass_s": info["frozen_pass_s"], "max_length": ft["max_length"],
                        "trainable_layers": ft["trainable_layers"], "mean_tokens": round(float(np.mean(frozen.lengths)), 1),
                        "features": list(frozen.feature_groups),
                        "n_writing_features": 0 if frozen.features is None else int(frozen.features.shape[1])},
    }
    write_json(root / EMBED_METRICS, metrics)
    return metrics


def run_lp_cv(params: dict, root: Path = Path(".")) -> dict:
    """Stage lp_cv: the linear probe per fold on the frozen pass's pooled output (and the writing
    features) of stage embed; returns the metrics."""
    ft, lin = params["finetune"], params["linear"]
    started = time.perf_counter()
    cv = load_cv(root)
    frozen = load_frozen_pass(root / FROZEN_PASS, cv["record_id"], need_hidden=False, feature_groups=ft["features"])
    # With finetune.features the probe reads [pooled, writing features], each fold's features
    # standardised on its own training essays, so LP-FT starts from the best linear use of both.
    oof, fits = probe_cross_validate(cv, frozen.pooled, lin["alphas"], lin["inner_folds"], frozen.features, frozen.feature_groups,
                                     lin["feature_weights"])
    write_json(models_dir(LP_STAGE, root) / PROBES_FILE, fits_to_json(fits))
    extra = {"alpha": {str(k): f.alpha for k, f in fits.items()},
             "feature_weight": {str(k): f.feature_weight for k, f in fits.items()},
             "max_length": ft["max_length"], "model": ft["model"], "mean_tokens": round(float(np.mean(frozen.lengths)), 1),
             "features": list(frozen.feature_groups), "n_writing_features": 0 if frozen.features is None else int(frozen.features.shape[1])}
    return write_model_outputs(LP_STAGE, make_oof_frame(cv, cv["fold"], oof), time.perf_counter() - started,
                               params["report"]["min_prompt_n"], extra=extra, root=root)


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
    frozen, features = None, None
    if ft["trainable_layers"] >= 0:
        frozen = load_frozen_pass(root / FROZEN_PASS, cv["record_id"], need_hidden=True, feature_groups=ft["features"])
        print(f"{stage}: read the frozen pass of stage {EMBED} from {root / FROZEN_PASS} ({frozen.hidden.shape[0]} essays, "
              f"{frozen.hidden.shape[1]} tokens)", flush=True)
    elif ft["features"]:  # the whole encoder trains from tokens, but the writing features are stage embed's, not recomputed
        features = load_frozen_pass(root / FROZEN_PASS, cv["record_id"], need_hidden=False, feature_groups=ft["features"]).features
    data = trainer.prepare(cv["text"].tolist(), frozen, features)
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


def load_probes(root: Path, folds: list[int], feature_groups=()) -> tuple[dict | None, bytes]:
    """The per-fold linear probes of stage lp_cv (LP-FT's starting heads) and the file's bytes.

    feature_groups: ``finetune.features``; every probe must have been fitted with exactly these
    writing features (AESError naming the key and `dvc repro lp_cv` otherwise), checked here so a
    stale probe stops the stage before any fold trains.
    """
    path = models_dir(LP_STAGE, root) / PROBES_FILE
    if not path.exists():
        raise AESError(f"{path}: not found; finetune.lp_ft starts from the probes of stage {LP_STAGE}: run `dvc repro {LP_STAGE}`")
    import json

    from aes.finetune.frozen_pass import check_feature_groups

    probes = fits_from_json(json.loads(path.read_text()), str(path))
    missing = [k for k in folds if k not in probes]
    if missing:
        raise AESError(f"{path}: no probe for fold(s) {missing}; re-run `dvc repro {LP_STAGE}`")
    for k in folds:
        check_feature_groups(probes[k].scaling.groups if probes[k].scaling is not None else (), feature_groups,
                             f"{path}: the probe of fold {k}", rerun=LP_STAGE)
    return probes, path.read_bytes()


def probe_for_fold(probes: dict | None, k: int):
    """The probe that starts fold ``k`` (LP-FT): the one lp_cv fitted WITHOUT fold ``k``'s essays.

    lp_cv fits probe ``k`` on the essays with fold != k, so it never saw fold ``k``'s labels; any
    other fold's probe was trained on fold ``k`` and would leak its labels into its validation.
    """
    return None if probes is None else probes[k]


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
            pred[fold_of == k] = np.asarray(results[(seed, k)]["pred_raw"]).reshape(int((fold_of == k).sum()), -1)
        frames.append(make_oof_frame(cv, fold_of, pred, seed))
    first = ft["seeds"][0]
    reps = np.zeros((len(cv), results[(first, folds[0])]["pooled"].shape[1]), dtype=np.float32)
    for k in folds:
        reps[fold_of == k] = results[(first, k)]["pooled"]
    write_fold_models(models_dir(stage, root), results, params, objective, chash)
    write_representations(stage, cv, reps, root)
    extra = {"train": train_summary(objective, results, cv), "lp_ft": ft["lp_ft"], "features": list(ft["features"]),
             "resumed_runs": [run_name(*r) for r in sorted(results) if r not in todo],
             "compute": compute_fingerprint(ft["mixed_precision"], resolve_device(ft["device"]))}
    if ft["trainable_layers"] >= 0:
        extra["frozen_pass_sha256"] = sha256_file(root / FROZEN_PASS / "hidden.npy")
    metrics = write_model_outputs(stage, stack_seeds(frames), time.perf_counter() - started,
                                  params["report"]["min_prompt_n"], extra=extra, root=root)
    remove_checkpoints(root / CHECKPOINTS, stage)  # the outputs are written: checkpoints are done with
    return metrics
