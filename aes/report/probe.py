"""Prompt-leakage probe: how well a linear classifier recovers the prompt from a representation.

Stage ``prompt_probe`` runs it on the frozen embeddings and on each fine-tuned model's pooled
representation and writes metrics/prompt_probe.json; ``report`` reads that file. The probe is a
property of the representations, not of the candidate ``objective``, so it lives in its own stage
and switching ``objective`` re-runs only the (fast) report.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from aes.core.errors import AESError
from aes.core.metrics import finite_or_none
from aes.core.registry import (
    EMBEDDINGS,
    FROZEN_STAGES,
    PROBE_JSON,
    PROBE_STAGE,
    representation_paths,
)
from aes.features.normalise import normalise_embeddings


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


def load_representation(npy: Path, ids_csv: Path, record_ids: np.ndarray) -> np.ndarray | None:
    """Rows of a saved representation matrix for ``record_ids`` (n,), in that order.

    npy holds (m, d) floats; ids_csv has a ``record_id`` column of length m. Returns (n, d) or
    None when either file is missing. Raises AESError if ids are missing or counts disagree.
    """
    if not npy.exists() or not ids_csv.exists():
        return None
    matrix = np.load(npy)
    ids = pd.read_csv(ids_csv, dtype=str, keep_default_na=False)
    if "record_id" not in ids.columns:
        raise AESError(f"{ids_csv}: needs a 'record_id' column; got {list(ids.columns)}")
    if len(ids) != len(matrix):
        raise AESError(f"{ids_csv}: {len(ids)} ids but {npy} has {len(matrix)} rows")
    pos = pd.Series(np.arange(len(ids)), index=ids["record_id"].to_numpy())
    missing = [r for r in record_ids if r not in pos.index]
    if missing:
        raise AESError(f"{npy}: no row for {len(missing)} CV essays (e.g. {missing[:3]}); re-run the stage that wrote it")
    return np.asarray(matrix[pos.loc[record_ids].to_numpy()], dtype=float)


def run_probes(cv: pd.DataFrame, stages, n_folds: int, seed: int, root: Path = Path("."), embeddings: str = "as_is") -> dict:
    """Prompt-leakage probe on the frozen embeddings and each fine-tuned model's representation.

    ``embeddings``: ``normalise.embeddings``. Under ``prompt_mean`` every representation is centred
    on its prompt's mean before the probe, as the models read it (gbm_cv, linear_cv, lp_cv and the
    fine-tunes' head all see centred vectors), so the probe measures what reaches the scorer.

    Two numbers per representation: "within_fold" (the comparable one: each CV fold's essays,
    whose fine-tuned vectors come from one model) and "all_essays" (all CV essays at once; for
    fine-tuned models it mixes five models' vectors, so it can exceed the within-fold figure for
    reasons that have nothing to do with the prompt). A representation whose files are missing gets
    {"status": "missing ..."} instead of numbers. cv: the CV essays (record_id, prompt, fold).
    """
    ids, prompts, folds = cv["record_id"].astype(str).to_numpy(), cv["prompt"].astype(str).to_numpy(), cv["fold"].to_numpy()
    sources = {"frozen_embeddings": (root / EMBEDDINGS / "embeddings.npy", root / EMBEDDINGS / "record_ids.csv")}
    for stage in stages:
        if stage not in FROZEN_STAGES:
            sources[stage] = representation_paths(stage, root)
    out = {}
    for name, (npy, ids_csv) in sources.items():
        x = load_representation(npy, ids_csv, ids)
        if x is None:
            warnings.warn(f"prompt probe: {npy} or {ids_csv} not found; skipping {name}", stacklevel=2)
            out[name] = {"status": f"missing {npy}"}
            continue
        x = normalise_embeddings(x, prompts, embeddings)
        try:
            out[name] = {
                "within_fold": prompt_probe_within_folds(x, prompts, folds, n_folds, seed),
                "all_essays": prompt_probe(x, prompts, n_folds, seed),
                "embeddings": embeddings,
            }
        except AESError as err:  # too few essays per prompt: report it, do not stop the report
            warnings.warn(f"prompt probe skipped for {name}: {err}", stacklevel=2)
            out[name] = {"status": f"skipped: {err}"}
    return out


def write_probes(params: dict, root: Path = Path("."), cv: pd.DataFrame | None = None) -> dict:
    """Stage prompt_probe: run :func:`run_probes` on the CV essays (``cv``: record_id, prompt, fold;
    default: read from data/prepared) and write metrics/prompt_probe.json."""
    from aes.core.io import write_json
    from aes.core.registry import ESSAYS, MODEL_STAGES, SPLITS
    from aes.data.corpus import load_essays
    from aes.data.splits import cv_essays, load_splits

    rp = params["report"]
    if cv is None:
        cv = cv_essays(load_essays(root / ESSAYS), load_splits(root / SPLITS))
    probes = run_probes(cv, MODEL_STAGES, rp["probe_folds"], rp["bootstrap_seed"], root, params["normalise"]["embeddings"])
    write_json(root / PROBE_JSON, probes)
    return probes


def read_probes(root: Path = Path(".")) -> dict:
    """The probes stage prompt_probe wrote; a warning and {} when the file is missing (the report is still written)."""
    import json

    path = root / PROBE_JSON
    if not path.exists():
        warnings.warn(f"{path} not found: the report has no prompt probe; run `dvc repro {PROBE_STAGE}`", stacklevel=2)
        return {}
    return json.loads(path.read_text())
