"""Calibration: monotone cut-points between a scale's grid levels, fitted on other folds only,
applied to the scored fold. Only for tables whose prompts share one scale (ELLIPSE's half bands):
cut-points fitted on one grid cannot carry over to an unseen prompt scored on another."""

from __future__ import annotations

import numpy as np
import pandas as pd

from aes.core.errors import AESError
from aes.core.metrics import mean_over_seeds, qwk_from_confusion, summarize, table_scale
from aes.core.scale import Scale, grid_labels


def default_cuts(scale: Scale) -> np.ndarray:
    """(K-1,) the midpoints between grid levels: plain rounding (1.25 .. 4.75 on half bands)."""
    return (scale.grid[:-1] + scale.grid[1:]) / 2


def apply_cut_points(y_pred_raw, cuts: np.ndarray, scale: Scale) -> np.ndarray:
    """Map raw predictions (n,) to grid scores (n,) with K-1 increasing cut-points (K-1,).

    A prediction above cuts[j-1] and at most cuts[j] gets the grid's j-th score.
    """
    return scale.grid[np.searchsorted(np.asarray(cuts, dtype=float), np.asarray(y_pred_raw, dtype=float), side="left")]


def fit_cut_points(y_true, y_pred_raw, scale: Scale, n_grid: int = 40, n_passes: int = 3) -> np.ndarray:
    """Cut-points (K-1,) that maximise QWK of ``apply_cut_points(y_pred_raw)`` against y_true (n,).

    Coordinate ascent from plain rounding: each cut-point in turn tries n_grid values between its
    neighbours and keeps the best (ties keep the current value), n_passes times.
    Deterministic; training QWK never goes below that of plain rounding.
    """
    y_true, x = np.asarray(y_true, dtype=float), np.asarray(y_pred_raw, dtype=float)
    K = scale.n_levels
    t = grid_labels(y_true, scale.low, scale.step)
    cuts = default_cuts(scale)

    def score(c):
        p = np.searchsorted(c, x, side="left")
        conf = np.bincount(t * K + p, minlength=K * K).reshape(K, K)
        v = qwk_from_confusion(conf)
        return -np.inf if not np.isfinite(v) else float(v)

    best = score(cuts)
    lo_all, hi_all = min(x.min(), scale.low) - 0.01, max(x.max(), scale.high) + 0.01
    for _ in range(n_passes):
        for j in range(len(cuts)):
            lo = cuts[j - 1] if j > 0 else lo_all
            hi = cuts[j + 1] if j + 1 < len(cuts) else hi_all
            for value in np.linspace(lo, hi, n_grid + 2)[1:-1]:
                trial = cuts.copy()
                trial[j] = value
                s = score(trial)
                if s > best + 1e-12:
                    best, cuts = s, trial
    return cuts


def calibrate_oof(oof: pd.DataFrame, fit=fit_cut_points) -> tuple[np.ndarray, dict]:
    """Calibrated grid predictions (n,) for an OOF table on one scale, fold by fold.

    For fold k the cut-points are fitted on the rows of the OTHER folds (y_true, y_pred_raw)
    and applied to fold k's y_pred_raw; fold k's labels are never seen. Approximation: the
    other folds' predictions come from other folds' models (each is out-of-fold for its own
    model), not from fold k's model on its training essays. Returns (y_cal, {fold: cuts list}).
    """
    scale = table_scale(oof)
    if scale is None:
        raise AESError("report.calibration: true, but the prompts have different score scales (e.g. ASAP); cut-points fitted "
                       "on other prompts' grids cannot score an unseen prompt on its own. Set report.calibration: false")
    y_cal = np.full(len(oof), np.nan)
    cuts_by_fold = {}
    fold = oof["fold"].to_numpy()
    for k in np.unique(fold):
        train, score = fold != k, fold == k
        cuts = fit(oof["y_true"].to_numpy(float)[train], oof["y_pred_raw"].to_numpy(float)[train], scale)
        y_cal[score] = apply_cut_points(oof["y_pred_raw"].to_numpy(float)[score], cuts, scale)
        cuts_by_fold[str(int(k))] = [round(float(c), 4) for c in cuts]
    return y_cal, cuts_by_fold


def calibrated_metrics(oof: pd.DataFrame, min_prompt_n: int) -> dict:
    """QWK (pooled, fold_mean, worst_prompt) of fold-wise calibrated and of raw predictions, plus cut-points."""
    y_cal, cuts = calibrate_oof(oof)
    cal, raw = summarize(oof.assign(y_pred_raw=y_cal), min_prompt_n), summarize(oof, min_prompt_n)
    keys = ("pooled", "fold_mean", "worst_prompt")
    return {"qwk": {k: cal["qwk"][k] for k in keys}, "qwk_uncalibrated": {k: raw["qwk"][k] for k in keys}, "cut_points": cuts}


def calibration_summary(oofs: dict[str, pd.DataFrame], min_prompt_n: int) -> tuple[dict, list[dict]]:
    """The report's calibration block and cut-point rows, from each stage's prediction table.

    oofs: {stage: prediction table with a ``seed`` column, one scale}. Returns ({stage: {qwk_<k>,
    qwk_<k>_uncalibrated for k in pooled, fold_mean, worst_prompt: mean over seeds of
    :func:`calibrated_metrics`}}, rows {model, fold, between (two grid levels), cut_point} of each
    stage's first seed).
    """
    calibration, cut_rows = {}, []
    for s, oof in oofs.items():
        per_seed = [calibrated_metrics(g.reset_index(drop=True), min_prompt_n) for _, g in oof.groupby("seed", sort=True)]
        grid = table_scale(oof).grid
        for fold, cuts in per_seed[0]["cut_points"].items():
            cut_rows += [{"model": s, "fold": int(fold), "between": f"{grid[j]:g}-{grid[j + 1]:g}", "cut_point": c}
                         for j, c in enumerate(cuts)]
        calibration[s] = {}
        for k in per_seed[0]["qwk"]:
            for name, block in ((f"qwk_{k}", "qwk"), (f"qwk_{k}_uncalibrated", "qwk_uncalibrated")):
                calibration[s][name] = mean_over_seeds(c[block][k] for c in per_seed)
    return calibration, cut_rows
