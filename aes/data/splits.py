"""Prompt-holdout splits, by the chosen dataset's protocol.

``locked_test`` (ELLIPSE): a locked test of whole prompts (or topics), then grouped CV folds over
the rest. ``leave_one_prompt_out`` (ASAP): every prompt is one fold, no locked test. ``prepare``
carves the splits once into ``splits.json``; every later stage reads folds from there and never
re-splits. The locked-test essays (if any) are only ever read by ``final_test``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

from aes.core.errors import AESError
from aes.core.registry import SPLITS
from aes.core.scale import Scale, grid_labels, scale_arrays

# The names of the two split documents (and protocols, aes.data.protocols).
LOCKED_TEST = "locked_test"
LEAVE_ONE_PROMPT_OUT = "leave_one_prompt_out"


def single_scale(essays: pd.DataFrame) -> Scale:
    """The one score scale every essay shares (columns ``SCALE_COLUMNS``); AESError when they have several.

    The locked-test protocol matches score mixes on one grid, so it needs a dataset whose prompts
    share a scale (ELLIPSE); a dataset with a scale per prompt splits by leaving one prompt out.
    """
    low, high, step = scale_arrays(essays)
    found = sorted(set(zip(low.tolist(), high.tolist(), step.tolist())))
    if len(found) != 1:
        raise AESError(f"the locked-test protocol needs one score scale for every essay; the essays have {len(found)} ({found[:3]} ...)")
    return Scale(*found[0])


def score_distribution(y: np.ndarray, scale: Scale) -> np.ndarray:
    """Share of essays at each level of ``scale``'s grid: shape (n_levels,) (ELLIPSE: 1.0..5.0, 9), sums to 1."""
    labels = grid_labels(y, scale.low, scale.step)
    counts = np.array([(labels == k).sum() for k in range(scale.n_levels)], dtype=float)
    return counts / max(counts.sum(), 1.0)


def carve_test_groups(essays: pd.DataFrame, fraction: float, n_candidates: int, seed: int, scale: Scale) -> list[str]:
    """Choose whole groups (column ``group``: prompts or topics) for the locked test, deterministically from ``seed``.

    Tries ``n_candidates`` random group orders; for each, takes the prefix whose essay count is
    closest to ``fraction`` of all essays, and scores it by |share - fraction| plus the total
    variation distance between the test and remaining score distributions. Lowest score wins.
    """
    sizes = essays.groupby("group").size().sort_index()
    groups, counts = sizes.index.to_numpy(), sizes.to_numpy()
    if len(groups) < 3:
        raise AESError(f"only {len(groups)} group(s) of prompts in the data; prompt-holdout needs at least 3")
    total, target = counts.sum(), fraction * counts.sum()
    rng = np.random.default_rng(seed)
    best, best_cost = None, np.inf
    for _ in range(max(1, n_candidates)):
        order = rng.permutation(len(groups))
        cum = np.cumsum(counts[order])
        k = int(np.argmin(np.abs(cum - target))) + 1
        k = min(max(k, 1), len(groups) - 2)  # keep >= 2 groups for CV
        chosen = groups[order[:k]]
        in_test = essays["group"].isin(chosen).to_numpy()
        y = essays["y"].to_numpy()
        tv = 0.5 * np.abs(score_distribution(y[in_test], scale) - score_distribution(y[~in_test], scale)).sum()
        cost = abs(cum[k - 1] / total - fraction) + tv
        if cost < best_cost - 1e-12:
            best, best_cost = sorted(chosen.tolist()), cost
    return best


def make_cv_folds(cv: pd.DataFrame, n_folds: int, seed: int, scale: Scale, section: str = "prepare") -> np.ndarray:
    """Fold index (0..n_folds-1) per essay of ``cv``: grouped by column ``group``, stratified on ``scale``'s grid.

    ``section``: the params section holding ``n_folds`` (``prepare.ellipse``), named by the errors.
    """
    n_groups = cv["group"].nunique()
    if n_groups < n_folds:
        raise AESError(
            f"{section}.n_folds={n_folds} but only {n_groups} groups of prompts remain for CV after the locked test; "
            f"each fold needs at least one group of its own (lower {section}.n_folds or {section}.test_fraction)"
        )
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.full(len(cv), -1, dtype=int)
    with warnings.catch_warnings():
        # Rare bands (1.0, 5.0) have fewer essays than folds: stratification is best effort there.
        warnings.simplefilter("ignore", UserWarning)
        levels = grid_labels(cv["y"], scale.low, scale.step)
        for k, (_, val_idx) in enumerate(splitter.split(np.zeros(len(cv)), levels, cv["group"])):
            fold[val_idx] = k
    for k in range(n_folds):
        if not (fold == k).any():
            raise AESError(f"fold {k} got no essays: the groups are too few or too small for {section}.n_folds={n_folds}")
    return fold


def build_splits(essays: pd.DataFrame, params: dict, dataset_sha256: str, topics: dict[str, str] | None = None,
                 section: str = "prepare") -> dict:
    """The locked-test protocol: carve the locked test and the CV folds; return the ``splits.json`` document.

    ``essays``: prepared essays (record_id, prompt, y and ``SCALE_COLUMNS``, one scale for all);
    ``params``: the flat prepare settings (test_fraction, test_candidates, n_folds, seed, ...).
    ``topics`` ({prompt: topic}, from :mod:`aes.data.topics`) makes the topic, not the prompt, the
    unit that the locked test and the folds keep whole; None groups by prompt. ``section``: the
    params section of these settings (``prepare.ellipse``), named by the errors.
    """
    scale = single_scale(essays)
    essays = essays.assign(group=essays["prompt"].map(topics) if topics else essays["prompt"])
    test_groups = carve_test_groups(essays, params["test_fraction"], params["test_candidates"], params["seed"], scale)
    in_test = essays["group"].isin(test_groups)
    test_prompts = sorted(essays.loc[in_test, "prompt"].unique().tolist())
    cv = essays[~in_test].reset_index(drop=True)
    fold = make_cv_folds(cv, params["n_folds"], params["seed"], scale, section)
    folds = []
    for k in range(params["n_folds"]):
        val = cv[fold == k]
        folds.append(
            {
                "fold": k,
                "val_prompts": sorted(val["prompt"].unique().tolist()),
                "n_val": int(len(val)),
                "n_train": int((fold != k).sum()),
                "val_record_ids": val["record_id"].tolist(),
            }
        )
    test = essays[in_test]
    splits = {
        "dataset_sha256": dataset_sha256,
        "seed": params["seed"],
        "params": params,
        "n_essays": int(len(essays)),
        "test": {
            "prompts": test_prompts,
            "n_essays": int(len(test)),
            "share": round(len(test) / len(essays), 4),
            "score_distribution": score_distribution(test["y"].to_numpy(), scale).round(4).tolist(),
            "cv_score_distribution": score_distribution(cv["y"].to_numpy(), scale).round(4).tolist(),
            "record_ids": test["record_id"].tolist(),
        },
        "folds": folds,
    }
    if topics:
        members = essays.groupby("group")["prompt"].unique()
        splits["topics"] = {str(t): sorted(members[t].tolist()) for t in sorted(members.index)}
        splits["test"]["topics"] = test_groups
        for entry in folds:
            entry["val_topics"] = sorted({topics[p] for p in entry["val_prompts"]})
    return splits


def leave_one_prompt_out(essays: pd.DataFrame, params: dict, dataset_sha256: str, prompts: list[str], dataset: str) -> dict:
    """The leave-one-prompt-out protocol: fold k validates on every essay of ``prompts[k]`` (the
    dataset's declared order: ASAP's fold 0 is prompt 1, fold 7 prompt 8) and trains on the others.

    No locked test: ``test`` is empty, so :func:`cv_essays` returns every essay, and
    ``locked_test: false`` says so. ``params``: the flat prepare settings (recorded as given).
    """
    if len(prompts) < 2:
        raise AESError(f"leave one prompt out needs at least 2 prompts; the {dataset} essays have {len(prompts)} ({prompts})")
    folds = []
    for k, prompt in enumerate(prompts):
        val = essays[essays["prompt"] == prompt]
        folds.append(
            {
                "fold": k,
                "val_prompts": [prompt],
                "n_val": int(len(val)),
                "n_train": int(len(essays) - len(val)),
                "val_record_ids": val["record_id"].tolist(),
            }
        )
    return {
        "dataset_sha256": dataset_sha256,
        "seed": params["seed"],
        "params": params,
        "dataset": dataset,
        "protocol": LEAVE_ONE_PROMPT_OUT,
        "locked_test": False,
        "n_essays": int(len(essays)),
        "test": {"prompts": [], "n_essays": 0, "share": 0.0, "record_ids": []},
        "folds": folds,
    }


def load_splits(path: str | Path = SPLITS) -> dict:
    path = Path(path)
    if not path.exists():
        raise AESError(f"{path}: splits not found; run `dvc repro prepare` first")
    splits = json.loads(path.read_text())
    for key in ("test", "folds", "dataset_sha256"):
        if key not in splits:
            raise AESError(f"{path}: missing key '{key}' (re-run prepare)")
    return splits


def cv_essays(essays: pd.DataFrame, splits: dict) -> pd.DataFrame:
    """The non-test essays with an int column ``fold`` (where each is validation); index reset."""
    test_ids = set(splits["test"]["record_ids"])
    fold_of = {rid: f["fold"] for f in splits["folds"] for rid in f["val_record_ids"]}
    cv = essays[~essays["record_id"].isin(test_ids)].reset_index(drop=True)
    fold = cv["record_id"].map(fold_of)
    if fold.isna().any() or len(cv) != len(fold_of):
        raise AESError("splits.json does not match the prepared essays (re-run `dvc repro prepare`)")
    return cv.assign(fold=fold.astype(int))


def locked_test_essays(essays: pd.DataFrame, splits: dict) -> pd.DataFrame:
    """The locked-test essays. Only ``final_test`` may call this."""
    ids = set(splits["test"]["record_ids"])
    test = essays[essays["record_id"].isin(ids)].reset_index(drop=True)
    if len(test) != len(ids):
        raise AESError("splits.json test ids do not match the prepared essays (re-run `dvc repro prepare`)")
    return test


def inner_split(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a training fold by prompt for early stopping / checkpoint choice.

    Returns positional (train_idx, val_idx) arrays; no prompt is on both sides.
    """
    if frame["prompt"].nunique() < 2:
        raise AESError("inner split needs at least 2 prompts in the training fold")
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    train_idx, val_idx = next(splitter.split(np.zeros(len(frame)), groups=frame["prompt"].to_numpy()))
    return np.sort(train_idx), np.sort(val_idx)
