"""Metrics shared by every model. Each essay's score lives on its prompt's own grid
(:mod:`aes.core.scale`: the columns score_low, score_high, score_step of every table).

QWK is computed on predictions clipped to the grid's range and rounded to its nearest step, as
``cohen_kappa_score(level(y_true), level(y_pred), weights="quadratic")`` over the grid's levels.
A QWK pooled over prompts exists only where they share one scale (ELLIPSE); with several scales
(ASAP) the literature's headline is the mean of the per-prompt QWKs (``qwk.within_prompt``).
Error metrics (RMSE, MAE, the prompt offset) are in score points when a table has one scale and
in shares of each prompt's score range when it has several (``error_unit`` says which).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score

from aes.core.scale import SCALE_COLUMNS, Scale, grid_labels, scale_arrays, to_grid

WORST_SHARE = 0.25  # qwk.worst_quarter: mean QWK of the lowest quarter of scored prompts
POINTS, RANGE_SHARE = "score points", "share of each prompt's score range"

# The headline metrics of a model, as dotted keys of metrics/<stage>.json, each +1 if higher is
# better and -1 if lower is better. The report bootstraps every one of them; verdict rules
# (params report.q1_metrics / q2_metrics) may name any of them.
METRIC_DIRECTION = {
    "qwk.pooled": +1,
    "qwk.fold_mean": +1,
    "qwk.worst_prompt": +1,
    "qwk.worst_quarter": +1,
    "qwk.median_prompt": +1,
    "qwk.within_prompt": +1,  # mean per-prompt QWK: ranking within an unseen prompt (ASAP's published headline)
    "offset.rms": -1,  # how far whole unseen prompts are shifted up or down (error_unit)
    "rmse": -1,
    "mae": -1,
    "within_one_step": +1,
}
POOLED_METRICS = ("qwk.pooled", "qwk.fold_mean")  # undefined where prompts have different scales


def table_scale(frame: pd.DataFrame) -> Scale | None:
    """The one scale every row of ``frame`` shares, or None when its rows have several."""
    rows = frame[list(SCALE_COLUMNS)].drop_duplicates()
    if len(rows) != 1:
        return None
    low, high, step = (float(v) for v in rows.iloc[0])
    return Scale(low, high, step)


def is_single_scale(frame: pd.DataFrame) -> bool:
    return len(frame[list(SCALE_COLUMNS)].drop_duplicates()) <= 1


def qwk(y_true, y_pred, scale: Scale) -> float:
    """Quadratic weighted kappa on one grid.

    y_true: (n,) true scores on ``scale``'s grid. y_pred: (n,) raw predictions in score points;
    they are clipped and rounded to the grid first. Returns NaN when undefined (fewer than 2
    essays, or a single level on both sides).
    """
    a = grid_labels(y_true, scale.low, scale.step)
    b = grid_labels(to_grid(y_pred, scale.low, scale.high, scale.step), scale.low, scale.step)
    if len(a) < 2 or len(np.union1d(a, b)) < 2:
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        value = cohen_kappa_score(a, b, weights="quadratic", labels=np.arange(scale.n_levels))
    return float(value)


def table_qwk(frame: pd.DataFrame) -> float:
    """QWK of a table's rows (y_true, y_pred_raw) pooled on their one scale; NaN with several scales."""
    scale = table_scale(frame)
    return qwk(frame["y_true"], frame["y_pred_raw"], scale) if scale is not None else float("nan")


def headline_qwk(frame: pd.DataFrame) -> float:
    """The QWK a choice made on this table should maximise (an inner split's epoch or setting):
    the pooled QWK on one scale, else the mean per-prompt QWK (each prompt on its own scale)."""
    if is_single_scale(frame):
        return table_qwk(frame)
    return float(np.nanmean(per_group_qwk(frame, "prompt").to_numpy()))


def scored_rows(essays: pd.DataFrame, pred_unit) -> pd.DataFrame:
    """A table that the metrics read (prompt, fold, y_true, y_pred_raw, scale columns) from essays
    (prompt, y, the scale columns) and their primary-target predictions (n,) on the unit range."""
    from aes.core.scale import from_unit

    low, high, _ = scale_arrays(essays)
    frame = essays[["prompt", *SCALE_COLUMNS]].reset_index(drop=True).assign(
        y_true=essays["y"].to_numpy(float), y_pred_raw=from_unit(np.asarray(pred_unit, dtype=float), low, high))
    if "fold" in essays.columns:
        frame["fold"] = essays["fold"].to_numpy()
    return frame


def rounded(frame: pd.DataFrame) -> np.ndarray:
    """(n,) each row's raw prediction clipped and rounded to its own grid (the reported score)."""
    low, high, step = scale_arrays(frame)
    return to_grid(frame["y_pred_raw"], low, high, step)


def residuals(frame: pd.DataFrame) -> np.ndarray:
    """(n,) y_pred_raw - y_true in the table's error unit: score points on one scale, else the
    share of each row's score range (so prompts scored 0-3 and 0-60 weigh alike)."""
    err = frame["y_pred_raw"].to_numpy(float) - frame["y_true"].to_numpy(float)
    if is_single_scale(frame):
        return err
    low, high, _ = scale_arrays(frame)
    return err / (high - low)


def error_unit(frame: pd.DataFrame) -> str:
    return POINTS if is_single_scale(frame) else RANGE_SHARE


def rmse(err) -> float:
    """Root-mean-square of residuals (n,) (:func:`residuals`)."""
    err = np.asarray(err, dtype=float)
    return float(np.sqrt(np.mean(err**2)))


def mae(err) -> float:
    """Mean absolute value of residuals (n,) (:func:`residuals`)."""
    return float(np.mean(np.abs(np.asarray(err, dtype=float))))


def within_one_step(frame: pd.DataFrame) -> float:
    """Share of essays whose rounded prediction is within one grid step of the true score
    (within half a band on ELLIPSE, within one point on ASAP)."""
    _, _, step = scale_arrays(frame)
    diff = np.abs(rounded(frame) - frame["y_true"].to_numpy(float))
    return float(np.mean(diff <= step + 1e-9))


def per_group_qwk(oof: pd.DataFrame, by: str, min_n: int = 1) -> pd.Series:
    """QWK per value of column ``by`` for groups with at least ``min_n`` essays (index: group);
    NaN for a group whose rows span several scales (a grade or band across ASAP's prompts)."""
    out = {}
    for key, grp in oof.groupby(by, sort=True):
        if len(grp) >= min_n:
            out[key] = table_qwk(grp)
    return pd.Series(out, dtype=float, name="qwk")


def prompt_offset(oof: pd.DataFrame) -> float:
    """Essay-weighted root mean square over prompts of each prompt's mean residual (:func:`residuals`' unit).

    oof: one row per essay with columns prompt, y_true, y_pred_raw. A scorer that shifts every essay
    of an unseen prompt by the same amount (it scores the topic, not the writing) has a large
    offset however well it ranks the essays within the prompt: sqrt(sum_p n_p r_p^2 / sum_p n_p),
    r_p = mean(y_pred_raw - y_true) over prompt p's n_p essays.
    """
    err = residuals(oof)
    by_prompt = pd.DataFrame({"prompt": oof["prompt"].to_numpy(), "err": err}).groupby("prompt")["err"].agg(["mean", "size"])
    return float(np.sqrt((by_prompt["size"] * by_prompt["mean"] ** 2).sum() / by_prompt["size"].sum())) if len(by_prompt) else float("nan")


def prompt_offset_noise(oof: pd.DataFrame) -> float:
    """The offset that sampling noise alone would give: the expected :func:`prompt_offset` when each
    fold's residuals are shuffled across its prompts (prompt sizes kept), in :func:`residuals`' unit.

    A prompt of n_p essays drawn without replacement from its fold's N_f residuals (mean m_f,
    population variance s2_f) has E[r_p^2] = m_f^2 + s2_f / n_p * (N_f - n_p) / (N_f - 1): exact,
    no random draws. It shrinks as prompts grow; an offset well above it is a prompt effect.
    A fold of ONE prompt (leave-one-prompt-out) has nothing to shuffle with: its reference is the
    sampling variance of the prompt's mean residual, s2_p / n_p (the offset a prompt whose true
    shift is 0 would show from its n_p essays alone).
    """
    frame = pd.DataFrame({"fold": oof["fold"].to_numpy(), "prompt": oof["prompt"].to_numpy(), "err": residuals(oof)})
    total, weighted = 0, 0.0
    for _, fold in frame.groupby("fold", sort=True):
        n_fold, mean, var = len(fold), fold["err"].mean(), fold["err"].var(ddof=0)
        sizes = fold.groupby("prompt").size().to_numpy()
        if len(sizes) == 1:
            n_p = int(sizes[0])
            weighted += n_p * (fold["err"].var(ddof=1) / n_p if n_p > 1 else 0.0)
            total += n_p
            continue
        for n_p in sizes:
            shrink = (n_fold - n_p) / (n_fold - 1) if n_fold > 1 else 0.0
            weighted += n_p * (mean**2 + var / n_p * shrink)
            total += n_p
    return float(np.sqrt(weighted / total)) if total else float("nan")


def finite_or_none(x: float) -> float | None:
    """x rounded to 6 decimals for JSON, or None when it is None, NaN or infinite."""
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def mean_over_seeds(values) -> float | None:
    """The mean of one number per seed, skipping seeds where it is None (undefined), for JSON
    (:func:`finite_or_none`); None when no seed has it."""
    values = [v for v in values if v is not None]
    return finite_or_none(float(np.mean(values))) if values else None


def sd_over_seeds(values) -> float | None:
    """The sample sd of one number per seed, skipping None: 0.0 for one seed, None for none."""
    values = [v for v in values if v is not None]
    return finite_or_none(float(np.std(values, ddof=1))) if len(values) > 1 else (0.0 if values else None)


def qwk_from_confusion(conf: np.ndarray) -> np.ndarray:
    """Quadratic weighted kappa of confusion-count matrices.

    conf: (..., K, K) counts, rows = true grid level, columns = predicted grid level. Returns (...) floats,
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


def worst_share_mean(values, share: float = WORST_SHARE) -> float:
    """Mean of the lowest ``ceil(share * m)`` of m finite values (NaN when there are none).

    A single worst prompt of ~20 essays swings by +-0.1 QWK; the mean of the worst quarter is a
    worst-group measure stable enough to compare models on.
    """
    v = np.sort(np.asarray(values, dtype=float)[np.isfinite(values)])
    return float(v[: int(np.ceil(share * len(v)))].mean()) if len(v) else float("nan")


def summarize(oof: pd.DataFrame, min_prompt_n: int) -> dict:
    """The metrics dict of the artifact contract from out-of-fold predictions of ONE seed.

    oof needs columns fold, prompt, y_true, y_pred_raw and the scale columns (one row per essay).
    qwk.pooled (and a fold's QWK) is None where the rows span several scales; so are qwk.fold_mean
    and fold_std (POOLED_METRICS) even where each fold has one prompt: the report's bootstrap and
    check_scale_rules treat them as undefined on several scales.
    """
    fold_qwk = oof.groupby("fold", sort=True)[list(oof.columns)].apply(table_qwk)
    prompt_qwk = per_group_qwk(oof, "prompt", min_prompt_n).dropna()
    err = residuals(oof)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # every fold NaN (several scales) -> None, intended
        fold_mean = float(np.nanmean(fold_qwk)) if len(fold_qwk) and is_single_scale(oof) else float("nan")
        fold_std = float(np.nanstd(fold_qwk, ddof=1)) if len(fold_qwk) > 1 and is_single_scale(oof) else float("nan")
    return {
        "qwk": {
            "pooled": finite_or_none(table_qwk(oof)),
            "fold_mean": finite_or_none(fold_mean),
            "fold_std": finite_or_none(fold_std),
            "worst_prompt": finite_or_none(prompt_qwk.min() if len(prompt_qwk) else float("nan")),
            "worst_quarter": finite_or_none(worst_share_mean(prompt_qwk.to_numpy())),
            "median_prompt": finite_or_none(prompt_qwk.median() if len(prompt_qwk) else float("nan")),
            "within_prompt": finite_or_none(prompt_qwk.mean() if len(prompt_qwk) else float("nan")),
            "per_fold": {str(int(k)): finite_or_none(v) for k, v in fold_qwk.items()},
        },
        "offset": {"rms": finite_or_none(prompt_offset(oof)), "noise_rms": finite_or_none(prompt_offset_noise(oof))},
        "rmse": finite_or_none(rmse(err)),
        "mae": finite_or_none(mae(err)),
        "within_one_step": finite_or_none(within_one_step(oof)),
        "error_unit": error_unit(oof),
        "n": {
            "essays": int(len(oof)),
            "prompts": int(oof["prompt"].nunique()),
            "folds": int(oof["fold"].nunique()),
            "prompts_scored": int(len(prompt_qwk)),
        },
    }


def diagnostics(oof: pd.DataFrame, by: str) -> pd.DataFrame:
    """Residual diagnostics grouped by ``by`` (prompt, grade or y_true score band).

    Returns one row per group: <by>, n, qwk (NaN where undefined or the group spans several
    scales), mae, mean_residual (mean of y_pred_raw - y_true: score points of the group's own
    scale where it has one, else shares of each prompt's range), within_one_step.
    """
    rows = []
    for key, grp in oof.groupby(by, sort=True):
        err = residuals(grp)
        rows.append(
            {
                by: key,
                "n": int(len(grp)),
                "qwk": table_qwk(grp),
                "mae": mae(err),
                "mean_residual": float(err.mean()),
                "within_one_step": within_one_step(grp),
            }
        )
    return pd.DataFrame(rows)


def headline_text(metrics: dict) -> str:
    """One line for a stage's log: the QWK that heads its dataset (pooled on one scale, else the
    mean per-prompt QWK), its seed sd where there are seeds, and the RMSE in its error unit."""
    key = "qwk.pooled" if metric_value(metrics, "qwk.pooled") is not None else "qwk.within_prompt"
    name = "QWK pooled" if key == "qwk.pooled" else "mean per-prompt QWK"

    def fmt(x):
        return "n/a" if x is None else f"{x:.3f}"

    sd = (metrics.get("seed_sd") or {}).get(key)
    seeds = f" (sd over {metrics['n'].get('seeds', 1)} seed(s) {fmt(sd)})" if sd is not None else ""
    return f"{name} {fmt(metric_value(metrics, key))}{seeds}, RMSE {fmt(metrics.get('rmse'))} ({metrics.get('error_unit', POINTS)})"


def metric_value(metrics: dict, key: str):
    """Value of a dotted key ('qwk.pooled') in a (nested) metrics dict, or None when absent."""
    value = metrics
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def summarize_seeds(oof: pd.DataFrame, min_prompt_n: int) -> dict:
    """The metrics dict of a model trained with one or more seeds.

    oof: prediction table with a ``seed`` column (one row per essay and seed). Every headline key
    (``METRIC_DIRECTION``, plus qwk.fold_std and qwk.per_fold) is the MEAN over seeds of that
    seed's value: the expected score of one training run, not of an ensemble. Adds
    ``seed_sd`` {metric: sample sd over seeds (0 for one seed)}, ``seeds`` {seed: its own
    summary} and n.seeds.
    """
    per_seed = {str(int(s)): summarize(g, min_prompt_n) for s, g in oof.groupby("seed", sort=True)}
    first = next(iter(per_seed.values()))
    out = {"qwk": {}, "offset": {}, "n": {**first["n"], "seeds": len(per_seed)}}

    def mean_of(key):
        return mean_over_seeds(metric_value(m, key) for m in per_seed.values())

    for key in (*METRIC_DIRECTION, "qwk.fold_std", "offset.noise_rms"):
        *path, leaf = key.split(".")
        node = out[path[0]] if path else out
        node[leaf] = mean_of(key)
    out["qwk"]["per_fold"] = {k: mean_of(f"qwk.per_fold.{k}") for k in first["qwk"]["per_fold"]}
    out["seed_sd"] = {}
    for key in METRIC_DIRECTION:
        out["seed_sd"][key] = sd_over_seeds(metric_value(m, key) for m in per_seed.values())
    out["seeds"] = {s: {k: m[k] for k in ("qwk", "offset", "rmse", "mae", "within_one_step")} for s, m in per_seed.items()}
    out["error_unit"] = first["error_unit"]
    return out
