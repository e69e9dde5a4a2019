"""Paired bootstrap over prompts and seeds: every model scored on the same resamples of whole prompts.

Prompts, not essays, are the unit of resampling because the question is about unseen prompts
and essays of one prompt are not independent. Seeds are resampled too: a model trained with S
seeds is, on each replicate, the mean of S seeds drawn with replacement (independently per
model), so an interval covers both which prompts were sampled and which seeds were drawn. Each
(model, seed) is reduced once to per-prompt sufficient statistics (confusion counts, error sums),
so B resamples cost B small matrix products instead of B recomputations over essays.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from aes.core.errors import AESError
from aes.core.metrics import METRIC_DIRECTION, N_BANDS, WORST_SHARE, band_labels, finite_or_none, qwk_from_confusion, to_half_band


def prompt_summaries(oof: pd.DataFrame, prompts: np.ndarray, folds: np.ndarray) -> dict[str, np.ndarray]:
    """Per-prompt sufficient statistics of one model.

    prompts: (P,) prompt names; folds: (F,) fold ids. Returns conf (P, 9, 9) half-band confusion
    counts, n (P,), se / sse / sae / within (P,) sums of error, squared error, absolute error and
    within-half-band hits, and fold_of (P, F) one-hot prompt -> fold.
    """
    p_idx = pd.Index(prompts).get_indexer(oof["prompt"])
    t = band_labels(oof["y_true"]) - 2
    pr = band_labels(to_half_band(oof["y_pred_raw"])) - 2
    P = len(prompts)
    conf = np.bincount((p_idx * N_BANDS + t) * N_BANDS + pr, minlength=P * N_BANDS * N_BANDS).reshape(P, N_BANDS, N_BANDS)
    err = oof["y_pred_raw"].to_numpy(float) - oof["y_true"].to_numpy(float)
    hit = np.abs(to_half_band(oof["y_pred_raw"]) - oof["y_true"].to_numpy(float)) <= 0.5 + 1e-9
    fold_of = np.zeros((P, len(folds)))
    folds_per_prompt = oof.groupby("prompt")["fold"].nunique()
    if (folds_per_prompt > 1).any():
        raise AESError(f"prompt(s) {folds_per_prompt[folds_per_prompt > 1].index.tolist()[:3]} appear in several CV folds; "
                       "folds must group by prompt (re-run `dvc repro prepare` and the model stages)")
    prompt_fold = oof.groupby("prompt")["fold"].first()
    fold_of[pd.Index(prompts).get_indexer(prompt_fold.index), pd.Index(folds).get_indexer(prompt_fold.to_numpy())] = 1.0
    return {
        "conf": conf.astype(float),
        "n": np.bincount(p_idx, minlength=P).astype(float),
        "se": np.bincount(p_idx, weights=err, minlength=P),
        "sse": np.bincount(p_idx, weights=err**2, minlength=P),
        "sae": np.bincount(p_idx, weights=np.abs(err), minlength=P),
        "within": np.bincount(p_idx, weights=hit.astype(float), minlength=P),
        "fold_of": fold_of,
    }


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Median of ``values`` (P,) repeated ``weights`` (B, P) integer times, per row -> (B,).

    Matches np.median of the expanded list (mean of the two middle values when the count is even).
    """
    order = np.argsort(values)
    v, w = values[order], weights[:, order]
    cum = np.cumsum(w, axis=1)
    total = cum[:, -1]
    lo = np.array([np.searchsorted(c, (t - 1) // 2, side="right") for c, t in zip(cum, total)])
    hi = np.array([np.searchsorted(c, t // 2, side="right") for c, t in zip(cum, total)])
    ok = total > 0
    lo, hi = np.minimum(lo, len(v) - 1), np.minimum(hi, len(v) - 1)
    return np.where(ok, (v[lo] + v[hi]) / 2, np.nan)


def _weighted_lowest_share(values: np.ndarray, weights: np.ndarray, share: float) -> np.ndarray:
    """Mean of the lowest ``ceil(share * m)`` of ``values`` (P,) repeated ``weights`` (B, P) times
    (m = the row's total count), per row -> (B,); NaN for rows with no count."""
    order = np.argsort(values)
    v, w = values[order], weights[:, order].astype(float)
    total = w.sum(axis=1)
    q = np.ceil(share * total)
    before = np.cumsum(w, axis=1) - w  # counts of the lower values
    take = np.clip(q[:, None] - before, 0.0, w)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, (take * v[None, :]).sum(axis=1) / q, np.nan)


def resampled_metrics(stats: dict[str, np.ndarray], weights: np.ndarray, min_prompt_n: int) -> dict[str, np.ndarray]:
    """Every decision metric of one model on prompt resamples.

    stats: from :func:`prompt_summaries`. weights: (B, P) how many times each prompt is drawn
    (all ones = the original data). Returns {metric key: (B,) values}; keys = METRIC_DIRECTION.
    The essays of a prompt drawn twice count twice (the concatenation of the resampled prompts).
    """
    w = np.asarray(weights, dtype=float)
    n = w @ stats["n"]
    pooled_conf = np.einsum("bp,pij->bij", w, stats["conf"])
    fold_conf = np.einsum("bp,pf,pij->bfij", w, stats["fold_of"], stats["conf"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows -> NaN, intended
        fold_mean = np.nanmean(qwk_from_confusion(fold_conf), axis=1)
    prompt_qwk = qwk_from_confusion(stats["conf"])  # (P,) fixed per prompt
    eligible = (stats["n"] >= min_prompt_n) & np.isfinite(prompt_qwk)
    drawn = (w > 0) & eligible[None, :]
    worst = np.where(drawn, np.where(eligible, prompt_qwk, 0.0)[None, :], np.inf).min(axis=1)
    median = _weighted_median(np.where(eligible, prompt_qwk, 0.0), np.where(drawn, w, 0).astype(int))
    worst_quarter = _weighted_lowest_share(np.where(eligible, prompt_qwk, 0.0), np.where(drawn, w, 0), WORST_SHARE)
    counted = np.where(drawn, w, 0.0)  # a prompt drawn twice counts twice among the scored prompts
    within_prompt = counted @ np.where(eligible, prompt_qwk, 0.0) / counted.sum(axis=1)
    # n_p * r_p^2 = se_p^2 / n_p for each prompt's mean residual r_p (aes.core.metrics.prompt_offset)
    offset_sq = np.divide(stats["se"] ** 2, stats["n"], out=np.zeros_like(stats["se"]), where=stats["n"] > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "qwk.pooled": qwk_from_confusion(pooled_conf),
            "qwk.fold_mean": fold_mean,
            "qwk.worst_prompt": np.where(np.isfinite(worst), worst, np.nan),
            "qwk.worst_quarter": worst_quarter,
            "qwk.median_prompt": median,
            "qwk.within_prompt": within_prompt,
            "offset.rms": np.sqrt(w @ offset_sq / n),
            "rmse": np.sqrt(w @ stats["sse"] / n),
            "mae": w @ stats["sae"] / n,
            "within_half_band": w @ stats["within"] / n,
        }


def prompt_resample_weights(n_prompts: int, n_resamples: int, seed: int) -> np.ndarray:
    """(B, P) integer counts: B resamples of P prompts drawn with replacement, seeded."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_prompts, size=(n_resamples, n_prompts))
    offsets = np.arange(n_resamples)[:, None] * n_prompts
    return np.bincount((draws + offsets).ravel(), minlength=n_resamples * n_prompts).reshape(n_resamples, n_prompts)


def seed_resample_index(n_seeds: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, S) seed positions drawn with replacement: replicate b averages the S seeds in row b."""
    return rng.integers(0, n_seeds, size=(n_resamples, n_seeds))


def _interval(values: np.ndarray) -> tuple[float, float]:
    valid = values[np.isfinite(values)]
    return tuple(np.percentile(valid, [2.5, 97.5])) if len(valid) else (np.nan, np.nan)


def prompt_bootstrap(oofs: dict[str, pd.DataFrame], pairs, n_resamples: int, seed: int, min_prompt_n: int) -> dict:
    """Paired bootstrap over prompts (and seeds) of the gain of model A over model B.

    oofs: {model: prediction table with a ``seed`` column} on the same essays. pairs: [(name, A, B),
    ...]. Every model is scored on the same (B, P) prompt resamples, so differences are paired over
    prompts; each model's seeds are resampled independently (:func:`seed_resample_index`).

    Returns
    - "point": {model: {metric: mean over seeds of the metric on the original data}};
    - "seed_sd": {model: {metric: sample sd over seeds (0 for one seed)}}, "n_seeds": {model: S};
    - "pairs": {name: {metric: {"delta", "gain", "ci_low", "ci_high", "p_not_better", "n_valid",
      "seed_spread"}}}: delta = A - B on the original data (seed means), gain = delta signed so
      positive is better, ci_* = 95% percentile interval of the gain over replicates where it is
      defined, p_not_better = share of those with gain <= 0, seed_spread = max of A's and B's
      seed sd (a gain inside it could be a lucky seed);
    - "intervals": {model: {metric: {"ci_low", "ci_high"}}}: each model's own 95% interval;
    - "n_prompts": P.
    """
    any_oof = next(iter(oofs.values()))
    prompts = np.array(sorted(any_oof["prompt"].unique()))
    folds = np.array(sorted(any_oof["fold"].unique()))
    weights = prompt_resample_weights(len(prompts), n_resamples, seed)
    seed_rng = np.random.default_rng([seed, 1])  # its own stream: adding a model leaves the prompt draws unchanged
    ones = np.ones((1, len(prompts)))
    point, seed_sd, boot, n_seeds = {}, {}, {}, {}
    for model, oof in oofs.items():
        per_seed_point, per_seed_boot = [], []
        for _, one in oof.groupby("seed", sort=True):
            stats = prompt_summaries(one, prompts, folds)
            per_seed_point.append({k: float(v[0]) for k, v in resampled_metrics(stats, ones, min_prompt_n).items()})
            per_seed_boot.append(resampled_metrics(stats, weights, min_prompt_n))
        n_seeds[model] = len(per_seed_point)
        idx = seed_resample_index(n_seeds[model], n_resamples, seed_rng)
        point[model], seed_sd[model], boot[model] = {}, {}, {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN -> NaN, intended
            for metric in METRIC_DIRECTION:
                values = np.array([p[metric] for p in per_seed_point])
                point[model][metric] = float(np.nanmean(values))
                seed_sd[model][metric] = float(np.nanstd(values, ddof=1)) if len(values) > 1 else 0.0
                stacked = np.stack([b[metric] for b in per_seed_boot])  # (S, B)
                boot[model][metric] = np.nanmean(stacked[idx.T, np.arange(n_resamples)[None, :]], axis=0)
    out: dict = {}
    for name, a, b in pairs:
        out[name] = {}
        for metric, sign in METRIC_DIRECTION.items():
            gains = sign * (boot[a][metric] - boot[b][metric])
            valid = gains[np.isfinite(gains)]
            delta = point[a][metric] - point[b][metric]
            lo, hi = _interval(gains)
            out[name][metric] = {
                "delta": finite_or_none(delta),
                "gain": finite_or_none(sign * delta),
                "ci_low": finite_or_none(lo),
                "ci_high": finite_or_none(hi),
                "p_not_better": finite_or_none(float(np.mean(valid <= 0)) if len(valid) else np.nan),
                "n_valid": int(len(valid)),
                "seed_spread": finite_or_none(max(seed_sd[a][metric], seed_sd[b][metric])),
            }
    intervals = {}  # each model on its own: comparable across experiments that score different essays
    for model in oofs:
        intervals[model] = {}
        for metric in ("qwk.pooled", "qwk.worst_quarter", "qwk.worst_prompt", "qwk.within_prompt", "offset.rms"):
            lo, hi = _interval(boot[model][metric])
            intervals[model][metric] = {"ci_low": finite_or_none(lo), "ci_high": finite_or_none(hi)}
    return {"pairs": out, "point": {m: {k: finite_or_none(v) for k, v in d.items()} for m, d in point.items()},
            "seed_sd": {m: {k: finite_or_none(v) for k, v in d.items()} for m, d in seed_sd.items()}, "n_seeds": n_seeds,
            "intervals": intervals, "n_prompts": int(len(prompts))}
