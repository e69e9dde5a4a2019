"""Metrics shared by every model. Scores live on the half-band scale 1.0-5.0 (steps of 0.5).

QWK is computed on predictions clipped to [1.0, 5.0] and rounded to the nearest half band,
as ``cohen_kappa_score(round(2*y_true), round(2*y_pred), weights="quadratic")``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score

SCORE_MIN, SCORE_MAX, SCORE_STEP = 1.0, 5.0, 0.5
HALF_BANDS = np.arange(SCORE_MIN, SCORE_MAX + SCORE_STEP / 2, SCORE_STEP)  # shape (9,)
N_BANDS = len(HALF_BANDS)


def to_half_band(y) -> np.ndarray:
    """Clip raw scores to [1, 5] and round to the nearest 0.5 (ties away from zero).

    y: array-like of shape (n,), raw predictions in score units. Returns float array (n,).
    """
    y = np.clip(np.asarray(y, dtype=float), SCORE_MIN, SCORE_MAX)
    # floor(x + 0.5) rounds halves up, unlike np.round's banker's rounding (2.25 -> 2.5).
    return np.floor(y * 2 + 0.5) / 2


def band_labels(y) -> np.ndarray:
    """Half-band scores (n,) -> integer labels 2..10 (twice the score), for kappa and stratifying."""
    return np.rint(np.asarray(y, dtype=float) * 2).astype(int)


def qwk(y_true, y_pred) -> float:
    """Quadratic weighted kappa of half-band scores.

    y_true: (n,) true scores on the half-band grid. y_pred: (n,) raw predictions; they are
    clipped and rounded with :func:`to_half_band` first. Returns NaN when undefined
    (fewer than 2 essays, or a single label on both sides).
    """
    y_true = np.asarray(y_true, dtype=float)
    a, b = band_labels(y_true), band_labels(to_half_band(y_pred))
    if len(a) < 2 or len(np.union1d(a, b)) < 2:
        return float("nan")
    labels = band_labels(HALF_BANDS)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = cohen_kappa_score(a, b, weights="quadratic", labels=labels)
    return float(value)


def rmse(y_true, y_pred) -> float:
    """Root-mean-square error of raw predictions, in score units."""
    d = np.asarray(y_pred, dtype=float) - np.asarray(y_true, dtype=float)
    return float(np.sqrt(np.mean(d**2)))


def mae(y_true, y_pred) -> float:
    """Mean absolute error of raw predictions, in score units."""
    return float(np.mean(np.abs(np.asarray(y_pred, dtype=float) - np.asarray(y_true, dtype=float))))


def within_half_band(y_true, y_pred) -> float:
    """Share of essays whose half-band prediction is within 0.5 of the true score."""
    diff = np.abs(to_half_band(y_pred) - np.asarray(y_true, dtype=float))
    return float(np.mean(diff <= SCORE_STEP + 1e-9))


def per_group_qwk(oof: pd.DataFrame, by: str, min_n: int = 1) -> pd.Series:
    """QWK per value of column ``by`` for groups with at least ``min_n`` essays (index: group)."""
    out = {}
    for key, grp in oof.groupby(by, sort=True):
        if len(grp) >= min_n:
            out[key] = qwk(grp["y_true"], grp["y_pred_raw"])
    return pd.Series(out, dtype=float, name="qwk")


def finite_or_none(x: float) -> float | None:
    """x rounded to 6 decimals for JSON, or None when it is None, NaN or infinite."""
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def qwk_from_confusion(conf: np.ndarray) -> np.ndarray:
    """Quadratic weighted kappa of confusion-count matrices.

    conf: (..., K, K) counts, rows = true band, columns = predicted band. Returns (...) floats,
    NaN where undefined (no essays, or a single label on both sides). Equals
    :func:`qwk` on the essays the counts came from.
    """
    conf = np.asarray(conf, dtype=float)
    k = conf.shape[-1]
    idx = np.arange(k)
    weight = (idx[:, None] - idx[None, :]) ** 2 / (k - 1) ** 2
    n = conf.sum(axis=(-2, -1))
    observed = (conf * weight).sum(axis=(-2, -1))
    rows, cols = conf.sum(axis=-1), conf.sum(axis=-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.einsum("...i,...j,ij->...", rows, cols, weight) / n
        kappa = 1.0 - observed / expected
    return np.where(expected > 0, kappa, np.nan)


def summarize(oof: pd.DataFrame, min_prompt_n: int) -> dict:
    """The metrics dict of the artifact contract from out-of-fold predictions.

    oof needs columns fold, prompt, y_true, y_pred_raw (one row per essay).
    """
    fold_qwk = oof.groupby("fold", sort=True).apply(lambda g: qwk(g["y_true"], g["y_pred_raw"]), include_groups=False)
    prompt_qwk = per_group_qwk(oof, "prompt", min_prompt_n).dropna()
    y, p = oof["y_true"].to_numpy(), oof["y_pred_raw"].to_numpy()
    return {
        "qwk": {
            "pooled": finite_or_none(qwk(y, p)),
            "fold_mean": finite_or_none(float(np.nanmean(fold_qwk))),
            "fold_std": finite_or_none(float(np.nanstd(fold_qwk, ddof=1)) if len(fold_qwk) > 1 else float("nan")),
            "worst_prompt": finite_or_none(prompt_qwk.min() if len(prompt_qwk) else float("nan")),
            "median_prompt": finite_or_none(prompt_qwk.median() if len(prompt_qwk) else float("nan")),
            "per_fold": {str(int(k)): finite_or_none(v) for k, v in fold_qwk.items()},
        },
        "rmse": finite_or_none(rmse(y, p)),
        "mae": finite_or_none(mae(y, p)),
        "within_half_band": finite_or_none(within_half_band(y, p)),
        "n": {
            "essays": int(len(oof)),
            "prompts": int(oof["prompt"].nunique()),
            "folds": int(oof["fold"].nunique()),
            "prompts_scored": int(len(prompt_qwk)),
        },
    }


def diagnostics(oof: pd.DataFrame, by: str) -> pd.DataFrame:
    """Residual diagnostics grouped by ``by`` (prompt, grade or y_true score band).

    Returns one row per group: <by>, n, qwk (NaN where undefined), mae, mean_residual
    (mean of y_pred_raw - y_true), within_half_band.
    """
    rows = []
    for key, grp in oof.groupby(by, sort=True):
        rows.append(
            {
                by: key,
                "n": int(len(grp)),
                "qwk": qwk(grp["y_true"], grp["y_pred_raw"]),
                "mae": mae(grp["y_true"], grp["y_pred_raw"]),
                "mean_residual": float((grp["y_pred_raw"] - grp["y_true"]).mean()),
                "within_half_band": within_half_band(grp["y_true"], grp["y_pred_raw"]),
            }
        )
    return pd.DataFrame(rows)
