"""Which essays a fold trains on, and the seeds it draws with.

Discipline: a fold never looks at its validation essays while training. With
``finetune.max_train_essays`` > 0 a seeded sample of the fold's training essays trains; with
``finetune.inner_val_fraction`` > 0 the fold's training essays are split by prompt
(:func:`aes.data.splits.inner_split`) and the inner part chooses the epoch. Seeds: python, numpy,
torch and the data order of training fold ``k`` with ``seed`` are seeded with :func:`run_seed`
(seed, k), so a (seed, fold) run gives the same numbers whether or not other runs came before it
in the same process.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd

from aes.core.errors import AESError
from aes.core.registry import ESSAYS, SPLITS


def load_cv(root: Path) -> pd.DataFrame:
    """The CV essays of the repository ``root`` (prepared essays with their fold; never the locked test)."""
    from aes.data.corpus import load_essays
    from aes.data.splits import cv_essays, load_splits

    return cv_essays(load_essays(root / ESSAYS), load_splits(root / SPLITS))


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators with ``seed`` (a :func:`run_seed`)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_seed(seed: int, k: int) -> int:
    """The RNG seed of training fold ``k`` with ``seed``: distinct for every (seed, fold) pair of a run."""
    return seed * 1000 + k


def cap_training_rows(train_rows: np.ndarray, cap: int, seed: int, k: int) -> np.ndarray:
    """At most ``cap`` of a fold's training row positions (``finetune.max_train_essays``; 0 = all).

    train_rows: (n,) positions of fold ``k``'s training essays (never its validation essays, so
    the cap cannot touch them). Returns (min(cap, n),) positions in their original order: a
    uniform sample drawn with ``seed`` (the run's :func:`run_seed`), so the same seed and fold
    always train on the same essays. A cap larger than the fold is a mistake (a smoke run that
    silently trains on everything), so it fails naming the key and the fold's size.
    """
    if cap == 0:
        return train_rows
    if cap > len(train_rows):
        raise AESError(
            f"finetune.max_train_essays={cap} but fold {k} has only {len(train_rows)} training essays; "
            f"use at most {len(train_rows)}, or 0 to train on all of them"
        )
    picked = np.random.default_rng(seed).choice(len(train_rows), size=cap, replace=False)
    return train_rows[np.sort(picked)]


def fold_rows(ft: dict, cv: pd.DataFrame, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, inner validation, validation) row positions of fold ``k`` of ``cv`` with ``seed``.

    Inner is empty unless ``finetune.inner_val_fraction`` > 0; with ``finetune.max_train_essays``
    > 0, train + inner hold that many of the fold's training essays. Validation is every essay of fold ``k``.
    """
    from aes.data.splits import inner_split

    fold_of = cv["fold"].to_numpy()
    train_rows, val_rows = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
    if len(train_rows) == 0:
        raise AESError(f"fold {k}: the training part has no essays (every CV essay is in fold {k})")
    # The cap comes first, so the inner split (if any) divides the capped essays.
    train_rows = cap_training_rows(train_rows, ft["max_train_essays"], run_seed(seed, k), k)
    inner_rows = np.array([], dtype=int)
    if ft["inner_val_fraction"] > 0:
        fit_pos, inner_pos = inner_split(cv.iloc[train_rows].reset_index(drop=True), ft["inner_val_fraction"], run_seed(seed, k))
        train_rows, inner_rows = train_rows[fit_pos], train_rows[inner_pos]
    return train_rows, inner_rows, val_rows
