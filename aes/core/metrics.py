"""Metrics shared by every model. Scores live on the half-band scale 1.0-5.0 (steps of 0.5).

QWK is computed on predictions clipped to [1.0, 5.0] and rounded to the nearest half band,
as ``cohen_kappa_score(round(2*y_true), round(2*y_pred), weights="quadratic")``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score

SCORE_MIN, SCORE_MAX, SCORE_STEP = 1.0, 5.0, 0.5
WORST_SHARE = 0.25  # qwk.worst_quarter: mean QWK of the lowest quarter of scored prompts

# The headline metrics of a model, as dotted keys of metrics/<stage>.json, each +1 if higher is
# better and -1 if lower is better. The report bootstraps every one of them; verdict rules
# (params report.q1_metrics / q2_metrics) may name any of them.
METRIC_DIRECTION = {
    "qwk.pooled": +1,
    "qwk.fold_mean": +1,
    "qwk.worst_prompt": +1,
    "qwk.worst_quarter": +1,
    "qwk.median_prompt": +1,
    "qwk.within_prompt": +1,  # mean per-prompt QWK: ranking within an unseen prompt
    "offset.rms": -1,  # how far whole unseen prompts are shifted up or down (score units)
    "rmse": -1,
    "mae": -1,
    "within_half_band": +1,
}
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


def prompt_offset(oof: pd.DataFrame) -> float:
    """Essay-weighted root mean square over prompts of each prompt's mean residual, in score units.

    oof: one row per essay with columns prompt, y_true, y_pred_raw. A scorer that shifts every essay
    of an unseen prompt by the same amount (it scores the topic, not the writing) has a large
    offset however well it ranks the essays within the prompt: sqrt(sum_p n_p r_p^2 / sum_p n_p),
    r_p = mean(y_pred_raw - y_true) over prompt p's n_p essays.
    """
    err = oof["y_pred_raw"].to_numpy(float) - oof["y_true"].to_numpy(float)
    by_prompt = pd.DataFrame({"prompt": oof["prompt"].to_numpy(), "err": err}).groupby("prompt")["err"].agg(["mean", "size"])
    return float(np.sqrt((by_prompt["size"] * by_prompt["mean"] ** 2).sum() / by_prompt["size"].sum())) if len(by_prompt) else float("nan")


def prompt_offset_noise(oof: pd.DataFrame) -> float:
    """The offset that sampling noise alone would give: the expected :func:`prompt_offset` when each
    fold's residuals are shuffled across its prompts (prompt sizes kept), in score units.

    A prompt of n_p essays drawn without replacement from its fold's N_f residuals (mean m_f,
    population variance s2_f) has E[r_p^2] = m_f^2 + s2_f / n_p * (N_f - n_p) / (N_f - 1): exact,
    no random draws. It shrinks as prompts grow; an offset well above it is a prompt effect.
    """
    err = oof["y_pred_raw"].to_numpy(float) - oof["y_true"].to_numpy(float)
    frame = pd.DataFrame({"fold": oof["fold"].to_numpy(), "prompt": oof["prompt"].to_numpy(), "err": err})
    total, weighted = 0, 0.0
    for _, fold in frame.groupby("fold", sort=True):
        n_fold, mean, var = len(fold), fold["err"].mean(), fold["err"].var(ddof=0)
        for n_p in fold.groupby("prompt").size().to_numpy():
            shrink = (n_fold - n_p) / (n_fold - 1) if n_fold > 1 else 0.0
            weighted += n_p * (mean**2 + var / n_p * shrink)
            total += n_p
    return float(np.sqrt(weighted / total)) if total else float("nan")


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


def worst_share_mean(values, share: float = WORST_SHARE) -> float:
    """Mean of the lowest ``ceil(share * m)`` of m finite values (NaN when there are none).

    A single worst prompt of ~20 essays swings by +-0.1 QWK; the mean of the worst quarter is a
    worst-group measure stable enough to compare models on.
    """
    v = np.sort(np.asarray(values, dtype=float)[np.isfinite(values)])
    return float(v[: int(np.ceil(share * len(v)))].mean()) if len(v) else float("nan")


def summarize(oof: pd.DataFrame, min_prompt_n: int) -> dict:
    """The metrics dict of the artifact contract from out-of-fold predictions of ONE seed.

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
            "worst_quarter": finite_or_none(worst_share_mean(prompt_qwk.to_numpy())),
            "median_prompt": finite_or_none(prompt_qwk.median() if len(prompt_qwk) else float("nan")),
            "within_prompt": finite_or_none(prompt_qwk.mean() if len(prompt_qwk) else float("nan")),
            "per_fold": {str(int(k)): finite_or_none(v) for k, v in fold_qwk.items()},
        },
        "offset": {"rms": finite_or_none(prompt_offset(oof)), "noise_rms": finite_or_none(prompt_offset_noise(oof))},
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
        vals = [metric_value(m, key) for m in per_seed.values()]
        vals = [v for v in vals if v is not None]
        return finite_or_none(float(np.mean(vals))) if vals else None

    for key in (*METRIC_DIRECTION, "qwk.fold_std", "offset.noise_rms"):
        *path, leaf = key.split(".")
        node = out[path[0]] if path else out
        node[leaf] = mean_of(key)
    out["qwk"]["per_fold"] = {k: mean_of(f"qwk.per_fold.{k}") for k in first["qwk"]["per_fold"]}
    out["seed_sd"] = {}
    for key in METRIC_DIRECTION:
        vals = [v for v in (metric_value(m, key) for m in per_seed.values()) if v is not None]
        out["seed_sd"][key] = finite_or_none(float(np.std(vals, ddof=1))) if len(vals) > 1 else (0.0 if vals else None)
    out["seeds"] = {s: {k: m[k] for k in ("qwk", "offset", "rmse", "mae", "within_half_band")} for s, m in per_seed.items()}
    return out
