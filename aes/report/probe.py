"""Prompt-leakage probe: how well a linear classifier recovers the prompt from a representation."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from aes.core.errors import AESError
from aes.core.metrics import finite_or_none


def prompt_probe(features: np.ndarray, prompts: np.ndarray, n_folds: int, seed: int = 0) -> dict:
    """How well a linear classifier recovers the prompt from a representation.

    features: (n, d) one row per essay; prompts: (n,) labels. Standardised features ->
    multinomial LogisticRegression, accuracy from StratifiedKFold(n_folds) cross-validation.
    Prompts with fewer than n_folds essays are dropped (listed in the result). Returns accuracy,
    accuracy_sd (across folds), chance (majority-class share), n_essays, n_prompts, dropped_prompts.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    prompts = np.asarray(prompts).astype(str)
    counts = pd.Series(prompts).value_counts()
    dropped = sorted(counts[counts < n_folds].index.tolist())
    keep = ~np.isin(prompts, dropped)
    x, y = np.asarray(features, dtype=float)[keep], prompts[keep]
    if len(np.unique(y)) < 2:
        raise AESError(f"prompt probe needs >= 2 prompts with >= report.probe_folds={n_folds} essays; got {len(np.unique(y))}")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on near-separable data
        scores = cross_val_score(probe, x, y, cv=cv, scoring="accuracy")
    return {
        "accuracy": finite_or_none(scores.mean()),
        "accuracy_sd": finite_or_none(scores.std(ddof=1)) if len(scores) > 1 else None,
        "chance": finite_or_none(pd.Series(y).value_counts(normalize=True).iloc[0]),
        "n_essays": int(len(y)),
        "n_prompts": int(len(np.unique(y))),
        "dropped_prompts": dropped,
    }


def prompt_probe_within_folds(features: np.ndarray, prompts: np.ndarray, folds: np.ndarray, n_folds: int, seed: int = 0) -> dict:
    """The prompt probe run separately inside each CV fold, then averaged (weighted by essays).

    Why: a fine-tuned representation of a fold's essays comes from that fold's model, and folds
    group by prompt, so a probe across folds could tell prompts apart just by which model made the
    vector. Inside one fold every vector comes from one model. features: (n, d); prompts, folds: (n,).
    Returns accuracy, chance (both essay-weighted over folds), per_fold accuracy, n_essays,
    n_prompts, dropped_prompts. Folds left with fewer than 2 probe-able prompts are skipped.
    """
    folds = np.asarray(folds)
    per_fold, weights, chances, dropped, n_prompts = {}, [], [], [], 0
    for k in np.unique(folds):
        rows = folds == k
        counts = pd.Series(np.asarray(prompts)[rows]).value_counts()
        if (counts >= n_folds).sum() < 2:
            dropped += sorted(counts.index.tolist())
            continue
        res = prompt_probe(np.asarray(features)[rows], np.asarray(prompts)[rows], n_folds, seed)
        per_fold[str(int(k))] = res["accuracy"]
        weights.append(res["n_essays"])
        chances.append(res["chance"])
        dropped += res["dropped_prompts"]
        n_prompts += res["n_prompts"]
    if not weights:
        raise AESError(f"prompt probe: no CV fold has >= 2 prompts with >= report.probe_folds={n_folds} essays")
    w = np.asarray(weights, dtype=float)
    return {
        "accuracy": finite_or_none(np.average([per_fold[k] for k in per_fold], weights=w)),
        "chance": finite_or_none(np.average(chances, weights=w)),
        "per_fold": per_fold,
        "n_essays": int(w.sum()),
        "n_prompts": int(n_prompts),
        "dropped_prompts": sorted(dropped),
    }
