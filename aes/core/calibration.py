"""Calibration: a model's raw output mapped onto its scale's grid, fitted without the scored fold.

Every method works per training seed and CV fold k, and none reads fold k's scores
(:data:`aes.core.registry.CALIBRATIONS`; docs/calibration.md):

- ``inner`` (the default): monotone cut-points between grid levels, fitted for QWK on fold k's
  INNER predictions: essays of fold k's own training side, from prompts held out of the model
  that predicted them (the fine-tunes' inner slice; XGBoost's early-stopping slice at the chosen
  depth; the ridge probes' inner prompt-grouped folds at the chosen penalty). Needs one scale.
- ``other_folds``: cut-points fitted on the other folds' out-of-fold predictions. Those come from
  the other folds' models, so one model's outputs calibrate another's. Kept for comparison. Needs one scale.
- ``prompt_spread``: label-free and transductive. Each held-out prompt's predictions, on the unit
  range of its scale, are stretched about their own mean until their sd equals the mean
  within-prompt sd of the training prompts' true scores (the other folds' prompts). They are then
  rounded to the prompt's own grid. It reads the held-out prompt's predictions, never its scores,
  so it also works where prompts have different grids (ASAP).

The calibrated scores are columns ``y_cal_<method>`` of a prediction table (NaN where the method
is undefined); :func:`calibrated_view` puts one in ``y_pred_raw`` so every metric and the
bootstrap score it unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from aes.core.errors import AESError
from aes.core.metrics import qwk_from_confusion, rounded, table_scale
from aes.core.registry import CALIBRATIONS, TRANSDUCTIVE_CALIBRATIONS
from aes.core.scale import Scale, from_unit, grid_labels, scale_arrays, to_grid, to_unit

CUT_POINT_METHODS = ("inner", "other_folds")
CAL_PREFIX = "y_cal_"  # + method: a prediction table's calibrated grid scores


def cal_column(method: str) -> str:
    """The prediction-table column of ``method``'s calibrated scores."""
    if method not in CALIBRATIONS:
        raise AESError(f"unknown calibration {method!r}; expected one of {', '.join(CALIBRATIONS)}")
    return CAL_PREFIX + method


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
    neighbours and keeps the best (ties keep the current value), n_passes times. The cut-points stay
    increasing, so the map is monotone. Deterministic; the fitted QWK is never below plain rounding's.
    """
    y_true, x = np.asarray(y_true, dtype=float), np.asarray(y_pred_raw, dtype=float)
    if len(x) == 0:
        raise AESError("cut-points need at least one prediction to fit on; got none")
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


def fold_cut_points(oof: pd.DataFrame, method: str, inner: pd.DataFrame | None = None) -> dict[tuple[int, int], np.ndarray]:
    """{(seed, fold): cut-points (K-1,)} for a prediction table on one scale.

    oof: one row per essay and seed (columns seed, fold, y_true, y_pred_raw and the scale columns).
    ``inner``: fits on the rows of ``inner`` (same columns; ``fold`` = the outer fold whose model
    made the prediction) with that seed and fold. ``other_folds``: fits on the rows of ``oof`` with
    that seed and another fold. Either way no row of the scored fold is read.
    """
    scale = table_scale(oof)
    if scale is None:
        raise AESError(f"calibration {method!r}: the prompts have different score scales; cut-points fitted on one grid cannot "
                       "score an unseen prompt on another (use prompt_spread, or none)")
    cuts = {}
    for (seed, k), _ in oof.groupby(["seed", "fold"], sort=True):
        if method == "inner":
            if inner is None:
                raise AESError("calibration 'inner' needs the model's inner predictions; this model wrote none")
            source = inner[(inner["seed"] == seed) & (inner["fold"] == k)]
            if len(source) == 0:
                raise AESError(f"calibration 'inner': no inner predictions for seed {seed}, fold {k}")
        elif method == "other_folds":
            source = oof[(oof["seed"] == seed) & (oof["fold"] != k)]
        else:
            raise AESError(f"{method!r} fits no cut-points; cut-point methods are {', '.join(CUT_POINT_METHODS)}")
        cuts[(int(seed), int(k))] = fit_cut_points(source["y_true"], source["y_pred_raw"], scale)
    return cuts


def spread_match(oof: pd.DataFrame) -> np.ndarray:
    """``prompt_spread`` grid scores (n,) of a prediction table (any scales): see the module docstring.

    Per seed and fold k: target sd = mean over the other folds' prompts of the sd of their true
    scores on the unit range; each prompt of fold k gets u' = m + (u - m) * target / sd(u), where u
    are its predictions on the unit range and m their mean, clipped to [0, 1] and rounded to its
    grid. A prompt with fewer than two essays or constant predictions keeps its predictions.
    """
    low, high, step = scale_arrays(oof)
    u_true = to_unit(oof["y_true"], low, high)
    u_pred = to_unit(oof["y_pred_raw"], low, high)
    frame = pd.DataFrame({"seed": oof["seed"].to_numpy(), "fold": oof["fold"].to_numpy(), "prompt": oof["prompt"].astype(str).to_numpy(),
                          "u_true": u_true, "u_pred": u_pred})
    true_sd = frame.groupby(["seed", "fold", "prompt"])["u_true"].std(ddof=0)  # (seed, fold, prompt) -> sd of its true scores
    out = u_pred.copy()
    for (seed, k), rows in frame.groupby(["seed", "fold"], sort=True).indices.items():
        others = true_sd.loc[seed]
        others = others[others.index.get_level_values("fold") != k]
        if len(others) == 0:
            raise AESError(f"prompt_spread: seed {seed}, fold {k} has no training prompts to take the score spread from")
        target = float(others.mean())
        for p_rows in frame.iloc[rows].groupby("prompt").indices.values():
            positions = rows[p_rows]
            u = u_pred[positions]
            sd = float(u.std())
            if len(u) > 1 and sd > 1e-12:
                out[positions] = np.clip(u.mean() + (u - u.mean()) * target / sd, 0.0, 1.0)
    return to_grid(from_unit(out, low, high), low, high, step)


def calibrate(oof: pd.DataFrame, method: str, inner: pd.DataFrame | None = None) -> tuple[np.ndarray, dict]:
    """``method``'s calibrated grid scores (n,) for ``oof`` and its cut-points {(seed, fold): (K-1,)} ({} for prompt_spread)."""
    if method == "prompt_spread":
        return spread_match(oof), {}
    cuts = fold_cut_points(oof, method, inner)
    scale = table_scale(oof)
    y_cal, raw = np.full(len(oof), np.nan), oof["y_pred_raw"].to_numpy(float)
    for (seed, k), rows in oof.groupby(["seed", "fold"], sort=True).indices.items():
        y_cal[rows] = apply_cut_points(raw[rows], cuts[(int(seed), int(k))], scale)
    return y_cal, cuts


def why_undefined(oof: pd.DataFrame, method: str, inner: pd.DataFrame | None) -> str | None:
    """Why ``method`` cannot calibrate ``oof`` (None when it can)."""
    if method in CUT_POINT_METHODS and table_scale(oof) is None:
        return "the prompts have different score scales: cut-points fitted on one grid cannot score a prompt on another"
    if method == "inner" and (inner is None or len(inner) == 0):
        return "the model wrote no inner predictions (a fine-tune needs finetune.inner_val_fraction > 0)"
    return None


def with_calibrations(oof: pd.DataFrame, inner: pd.DataFrame | None) -> tuple[pd.DataFrame, dict, dict]:
    """The prediction table with a ``y_cal_<method>`` column per method (NaN where undefined).

    Returns (table, {method: why undefined}, {method: {(seed, fold): cut-points}}).
    """
    columns, undefined, cuts = {}, {}, {}
    for method in CALIBRATIONS:
        why = why_undefined(oof, method, inner)
        if why is not None:
            columns[cal_column(method)], undefined[method] = np.full(len(oof), np.nan), why
            continue
        columns[cal_column(method)], cuts[method] = calibrate(oof, method, inner)
    return oof.assign(**columns), undefined, cuts


def calibrated_view(oof: pd.DataFrame, method: str) -> pd.DataFrame:
    """The prediction table with ``method``'s calibrated scores in y_pred_raw (y_pred, residual follow).

    AESError naming the method when the table has no such column or it is undefined (NaN).
    """
    column = cal_column(method)
    if column not in oof.columns or oof[column].isna().any():
        raise AESError(f"no {method!r} calibrated scores in this prediction table (re-run the model stage; "
                       f"a fine-tune needs finetune.inner_val_fraction > 0 for 'inner', and cut-points need one scale)")
    view = oof.assign(y_pred_raw=oof[column].to_numpy(float))
    view["y_pred"] = rounded(view)
    view["residual"] = view["y_pred_raw"] - view["y_true"]
    return view


def is_transductive_calibration(method: str) -> bool:
    """True when ``method`` reads the held-out prompt's essays (never its scores)."""
    return method in TRANSDUCTIVE_CALIBRATIONS
