"""Constructed model outputs for report / final_test tests (no training, no real essays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from aes.core.artifacts import make_inner_frame, make_oof_frame, stack_seeds, write_model_outputs
from aes.core.io import write_json
from aes.core.registry import FROZEN_STAGES, MODEL_STAGES, OBJECTIVE_STAGES
from aes.core.scale import SCALE_COLUMNS, Scale, to_unit

# ELLIPSE's one grid for every prompt: 1.0-5.0 in half bands (what every fixture here is scored on).
HALF_BANDS_SCALE = Scale(1.0, 5.0, 0.5)


def with_scale(frame: pd.DataFrame, scale: Scale = HALF_BANDS_SCALE) -> pd.DataFrame:
    """``frame`` with the score-scale columns (aes.core.scale.SCALE_COLUMNS) of ``scale`` on every row."""
    return frame.assign(**dict(zip(SCALE_COLUMNS, (scale.low, scale.high, scale.step))))


# a small, fast gbm section for tests that fit XGBoost on a gbm_cv_frame
GBM = {
    "features": ["embeddings"], "n_estimators": 60, "learning_rate": 0.1, "max_depth": [1, 2], "min_child_weight": 1.0,
    "subsample": 0.8, "colsample_bytree": 0.8, "reg_lambda": 1.0, "early_stopping_rounds": 5,
    "inner_val_fraction": 0.25, "n_jobs": 1, "seeds": [7],
}


def gbm_cv_frame(n_prompts=9, per_prompt=8, n_folds=3, seed=0):
    """CV-shaped frame (prompt, y, fold, the half-band scale) plus features whose column 0 is the row id."""
    rng = np.random.default_rng(seed)
    n = n_prompts * per_prompt
    prompt = np.repeat([f"P{p}" for p in range(n_prompts)], per_prompt)
    y = np.clip(np.round(rng.normal(3, 0.7, n) * 2) / 2, 1, 5)
    fold = np.repeat(np.arange(n_prompts) % n_folds, per_prompt)
    cv = with_scale(pd.DataFrame({"record_id": [f"r{i}" for i in range(n)], "prompt": prompt, "y": y, "fold": fold, "grade": 9}))
    features = np.column_stack([np.arange(n), y + rng.normal(0, 0.3, n), rng.normal(size=(n, 3))]).astype(np.float32)
    return cv, features


def points_to_unit(points, scale: Scale = HALF_BANDS_SCALE) -> np.ndarray:
    """Predictions (n,) or (n, T) in score points of ``scale`` -> its unit range (what make_oof_frame takes)."""
    return to_unit(points, np.full(len(points), scale.low), np.full(len(points), scale.high))

# Prediction noise (sd, score points) per stage: smaller noise = better model. gbm_cv is the
# strongest frozen model, so it is Q1's reference unless a test changes the noise.
DEFAULT_NOISE = {"gbm_cv": 0.55, "linear_cv": 0.62, "lp_cv": 0.60, "finetune_cv": 0.45, "grl_cv": 0.42, "dro_cv": 0.35}
# Training seeds per stage: several for the fine-tuned models (each seed its own predictions) and
# 1-3 for the frozen ones, so the report's per-seed code paths see 1 and several seeds.
DEFAULT_SEEDS = {"gbm_cv": (7, 8, 9), "linear_cv": (0,), "lp_cv": (0,), "finetune_cv": (7, 8, 9), "grl_cv": (7, 8, 9), "dro_cv": (7, 8, 9)}
FINETUNED_STAGES = tuple(OBJECTIVE_STAGES.values())
assert set(DEFAULT_NOISE) == set(DEFAULT_SEEDS) == set(MODEL_STAGES) and set(FROZEN_STAGES) < set(MODEL_STAGES)


def make_cv_essays(n_prompts: int = 15, per_prompt: int = 40, n_folds: int = 5, seed: int = 0, traits=()) -> pd.DataFrame:
    """CV essays without text: record_id, prompt, grade, y (half bands), fold (prompt-grouped) and
    the half-band scale columns.

    traits: names of further targets; then the frame also has Overall (= y) and one column per trait
    (y plus half-band noise from a generator of its own, so y and the rest stay as without traits).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        for i in range(per_prompt):
            rows.append({"record_id": f"r{p:02d}{i:04d}", "prompt": f"Prompt {p:02d}", "grade": int(rng.choice([8, 9, 10, 11, 12])),
                         "y": float(np.clip(np.round(rng.normal(3.0, 0.7) * 2) / 2, 1.0, 5.0)), "fold": p % n_folds})
    essays = with_scale(pd.DataFrame(rows))
    if traits:
        trait_rng = np.random.default_rng([seed, 23])
        essays["Overall"] = essays["y"]
        for t in traits:
            essays[t] = np.clip(essays["y"] + 0.5 * trait_rng.integers(-1, 2, len(essays)), 1.0, 5.0)
    return essays


def seeded_oof(essays: pd.DataFrame, noise_sd: float, seeds, rng: np.random.Generator, shift=None) -> pd.DataFrame:
    """Prediction table with one block per seed: y + independent N(0, noise_sd) noise per seed (+ shift (n,)),
    in score points (handed to make_oof_frame on the unit range).

    Essays with trait columns get a prediction per trait too (the trait + noise of the same sd, from a
    generator of its own, so the primary's draws from ``rng`` stay as without traits).
    """
    from aes.data.corpus import declared_targets

    traits = [t for t in declared_targets(essays) if t not in ("y", "Overall")]
    trait_rng = np.random.default_rng([int(noise_sd * 1000), 29])
    frames = []
    for s in seeds:
        pred = essays["y"].to_numpy() + rng.normal(0.0, noise_sd, len(essays)) + (0 if shift is None else shift)
        if traits:
            pred = np.column_stack([pred, *[essays[t].to_numpy() + trait_rng.normal(0.0, noise_sd, len(essays)) for t in traits]])
        frames.append(make_oof_frame(essays, essays["fold"].to_numpy(), points_to_unit(pred), seed=s))
    return stack_seeds(frames)


def fake_inner(essays: pd.DataFrame, noise_sd: float, seeds, rng: np.random.Generator) -> pd.DataFrame:
    """Inner predictions as a model stage writes them: per seed and fold k, the essays of the next fold
    (on k's training side) predicted with noise ``noise_sd`` in score points, squeezed toward the
    middle as real models are (so cut-points have something to undo)."""
    fold_of = essays["fold"].to_numpy()
    folds = sorted(np.unique(fold_of))
    inner = {}
    for s in seeds:
        for i, k in enumerate(folds):
            rows = np.flatnonzero(fold_of == folds[(i + 1) % len(folds)])
            points = 3.0 + 0.7 * (essays["y"].to_numpy()[rows] - 3.0) + rng.normal(0.0, noise_sd, len(rows))
            inner[(int(s), int(k))] = (rows, points_to_unit(points))
    return make_inner_frame(essays, inner)


def write_fake_workspace(root: Path, noise: dict | None = None, seed: int = 0, stages=None, representations: bool = True,
                         curves: bool = True, n_prompts: int = 15, per_prompt: int = 40, seeds: dict | None = None,
                         traits=()) -> pd.DataFrame:
    """Write metrics/, data/predictions/, data/prepared/splits.json, data/embeddings/, data/representations/ and dvclive/ under root.

    Every stage of ``stages`` (default: all six model stages) gets the artifact contract for its
    seeds (``seeds`` overrides DEFAULT_SEEDS per stage). Representations: frozen embeddings encode
    the prompt strongly; fine-tuned ones weakly (GRL least). Returns the CV essays.
    """
    root = Path(root)
    noise = {**DEFAULT_NOISE, **(noise or {})}
    seeds = {**DEFAULT_SEEDS, **(seeds or {})}
    essays = make_cv_essays(n_prompts, per_prompt, seed=seed, traits=traits)
    rng = np.random.default_rng(seed + 1)
    n = len(essays)
    for stage in stages or MODEL_STAGES:
        write_model_outputs(stage, seeded_oof(essays, noise[stage], seeds[stage], rng), 1.0, 20, root=root,
                            inner=fake_inner(essays, noise[stage], seeds[stage], rng))
    test_ids = [f"rT{i:04d}" for i in range(per_prompt)]  # a locked test prompt (its essays are not among the CV essays)
    splits = {"dataset_sha256": "fake", "params": {"groups": "prompt"},
              "test": {"prompts": ["Prompt T"], "n_essays": len(test_ids), "record_ids": test_ids},
              "folds": [{"fold": int(k), "val_prompts": sorted(essays.loc[essays["fold"] == k, "prompt"].unique().tolist())}
                        for k in sorted(essays["fold"].unique())]}
    write_json(root / "data/prepared/splits.json", splits)
    if representations:
        prompt_code = pd.factorize(essays["prompt"])[0]
        centers = rng.normal(0, 1, (n_prompts, 16))
        emb = centers[prompt_code] * 3 + rng.normal(0, 1, (n, 16))
        (root / "data/embeddings").mkdir(parents=True, exist_ok=True)
        np.save(root / "data/embeddings/embeddings.npy", emb)
        essays[["record_id"]].to_csv(root / "data/embeddings/record_ids.csv", index=False)
        (root / "data/representations").mkdir(parents=True, exist_ok=True)
        for stage in FINETUNED_STAGES:
            rep = centers[prompt_code] * (0.05 if stage == "grl_cv" else 0.5) + rng.normal(0, 1, (n, 16))
            order = rng.permutation(n)  # files need not be in essay order
            np.save(root / f"data/representations/{stage}.npy", rep[order])
            essays[["record_id"]].iloc[order].to_csv(root / f"data/representations/{stage}_ids.csv", index=False)
    if curves:
        for stage in FINETUNED_STAGES:
            for k in range(2):
                d = root / f"dvclive/{stage}/plots/metrics/fold{k}"
                d.mkdir(parents=True, exist_ok=True)
                steps = np.arange(20)
                pd.DataFrame({"step": steps, "train_loss": 1.5 * np.exp(-steps / 8) + 0.2 + 0.05 * k}).to_csv(d / "train_loss.tsv", sep="\t", index=False)
                if stage == "grl_cv":
                    pd.DataFrame({"step": steps, "adversary_acc": 0.3 - 0.01 * steps}).to_csv(d / "adversary_acc.tsv", sep="\t", index=False)
                if stage == "dro_cv":
                    pd.DataFrame({"step": steps, "dro_max_weight": 0.1 + 0.01 * steps}).to_csv(d / "dro_max_weight.tsv", sep="\t", index=False)
    return essays
