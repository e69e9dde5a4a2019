"""Paired bootstrap over prompts and seeds: every model scored on the same resamples of whole prompts.

Prompts, not essays, are the unit of resampling because the question is about unseen prompts
and essays of one prompt are not independent. With few prompts (ASAP's 8) a prompt bootstrap is
too coarse (at most 8 distinct values per prompt-level metric), so ``unit="essay_within_prompt"``
keeps every prompt and resamples its essays: an interval conditional on the prompts at hand. Seeds are resampled too: a model trained with S
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
from aes.core.metrics import (
    METRIC_DIRECTION,
    WORST_SHARE,
    finite_or_none,
    is_single_scale,
    qwk_from_confusion,
    residuals,
    rounded,
)
from aes.core.scale import grid_labels, scale_arrays

UNITS = {"prompt": "prompt x seed", "essay_within_prompt": "essay within prompt x seed"}


def _levels(oof: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, int]:
    """(true level (n,), predicted level (n,), K = the most levels of any row's grid) of a prediction table."""
    low, high, step = scale_arrays(oof)
    k = int(np.rint((high - low) / step).max()) + 1
    return grid_labels(oof["y_true"], low, step), grid_labels(rounded(oof), low, step), k


def prompt_summaries(oof: pd.DataFrame, prompts: np.ndarray, folds: np.ndarray) -> dict[str, np.ndarray]:
    """Per-prompt sufficient statistics of one model.

    prompts: (P,) prompt names; folds: (F,) fold ids. Returns conf (P, K, K) confusion counts on
    each prompt's grid levels (K: the most levels of any prompt), n (P,), se / sse / sae / within
    (P,) sums of residual, squared residual, absolute residual (:func:`aes.core.metrics.residuals`)
    and within-one-step hits, fold_of (P, F) one-hot prompt -> fold and single_scale (bool).
    """
    p_idx = pd.Index(prompts).get_indexer(oof["prompt"])
    t, pr, K = _levels(oof)
    P = len(prompts)
    conf = np.bincount((p_idx * K + t) * K + pr, minlength=P * K * K).reshape(P, K, K)
    err = residuals(oof)
    _, _, step = scale_arrays(oof)
    hit = np.abs(rounded(oof) - oof["y_true"].to_numpy(float)) <= step + 1e-9
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
        "single_scale": is_single_scale(oof),
    }


def _row_sorted(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """values (P,) or (B, P) and weights (B, P), each row sorted by value -> (B, P), (B, P)."""
    values = np.broadcast_to(np.asarray(values, dtype=float), weights.shape)
    order = np.argsort(values, axis=1, kind="stable")
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(weights, order, axis=1)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Median of ``values`` (P,) or (B, P) repeated ``weights`` (B, P) integer times, per row -> (B,).

    Matches np.median of the expanded list (mean of the two middle values when the count is even).
    """
    v, w = _row_sorted(values, weights)
    cum = np.cumsum(w, axis=1)
    total = cum[:, -1]
    lo = np.array([np.searchsorted(c, (t - 1) // 2, side="right") for c, t in zip(cum, total)])
    hi = np.array([np.searchsorted(c, t // 2, side="right") for c, t in zip(cum, total)])
    ok = total > 0
    lo, hi = np.minimum(lo, v.shape[1] - 1), np.minimum(hi, v.shape[1] - 1)
    rows = np.arange(len(v))
    return np.where(ok, (v[rows, lo] + v[rows, hi]) / 2, np.nan)


def _weighted_lowest_share(values: np.ndarray, weights: np.ndarray, share: float) -> np.ndarray:
    """Mean of the lowest ``ceil(share * m)`` of ``values`` (P,) or (B, P) repeated ``weights`` (B, P)
    times (m = the row's total count), per row -> (B,); NaN for rows with no count."""
    v, w = _row_sorted(values, np.asarray(weights, dtype=float))
    total = w.sum(axis=1)
    q = np.ceil(share * total)
    before = np.cumsum(w, axis=1) - w  # counts of the lower values
    take = np.clip(q[:, None] - before, 0.0, w)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, (take * v).sum(axis=1) / q, np.nan)


def resampled_metrics(stats: dict[str, np.ndarray], weights: np.ndarray, min_prompt_n: int) -> dict[str, np.ndarray]:
    """Every decision metric of one model on prompt resamples.

    stats: from :func:`prompt_summaries`. weights: (B, P) how many times each prompt is drawn
    (all ones = the original data). Returns {metric key: (B,) values}; keys = METRIC_DIRECTION.
    The essays of a prompt drawn twice count twice (the concatenation of the resampled prompts).
    """
    w = np.asarray(weights, dtype=float)
    rep = {key: w * stats[key][None, :] for key in ("n", "se", "sse", "sae", "within")}
    rep["prompt_qwk"] = np.broadcast_to(qwk_from_confusion(stats["conf"]), w.shape)  # fixed per prompt
    if stats["single_scale"]:
        rep["pooled_conf"] = np.einsum("bp,pij->bij", w, stats["conf"])
        rep["fold_conf"] = np.einsum("bp,pf,pij->bfij", w, stats["fold_of"], stats["conf"])
    return replicate_metrics(rep, w, stats["n"], min_prompt_n)


def replicate_metrics(rep: dict[str, np.ndarray], count: np.ndarray, n_prompt: np.ndarray, min_prompt_n: int) -> dict[str, np.ndarray]:
    """Every decision metric from per-replicate, per-prompt statistics.

    rep: n, se, sse, sae, within (B, P) sums over each replicate's essays of each prompt;
    prompt_qwk (B, P) each prompt's QWK in the replicate; optional pooled_conf (B, K, K) and
    fold_conf (B, F, K, K) (only where every prompt shares one scale). count: (B, P) how many
    times each prompt is drawn. n_prompt: (P,) essays per prompt in the data (who is scored).
    Returns {metric key: (B,) values}; keys = METRIC_DIRECTION (pooled ones NaN without confusions).
    """
    B = count.shape[0]
    n = rep["n"].sum(axis=1)
    prompt_qwk = rep["prompt_qwk"]
    eligible = (n_prompt >= min_prompt_n)[None, :] & np.isfinite(prompt_qwk)
    drawn = (count > 0) & eligible
    q = np.where(eligible, prompt_qwk, 0.0)
    worst = np.where(drawn, q, np.inf).min(axis=1)
    counted = np.where(drawn, count, 0.0)  # a prompt drawn twice counts twice among the scored prompts
    # n_p * r_p^2 = se_p^2 / n_p for each prompt's mean residual r_p (aes.core.metrics.prompt_offset)
    offset_sq = np.divide(rep["se"] ** 2, rep["n"], out=np.zeros_like(rep["se"]), where=rep["n"] > 0)
    nan = np.full(B, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows -> NaN, intended
        pooled = qwk_from_confusion(rep["pooled_conf"]) if "pooled_conf" in rep else nan
        fold_mean = np.nanmean(qwk_from_confusion(rep["fold_conf"]), axis=1) if "fold_conf" in rep else nan
        return {
            "qwk.pooled": pooled,
            "qwk.fold_mean": fold_mean,
            "qwk.worst_prompt": np.where(np.isfinite(worst), worst, np.nan),
            "qwk.worst_quarter": _weighted_lowest_share(q, counted, WORST_SHARE),
            "qwk.median_prompt": _weighted_median(q, counted.astype(int)),
            "qwk.within_prompt": (counted * q).sum(axis=1) / counted.sum(axis=1),
            "offset.rms": np.sqrt(offset_sq.sum(axis=1) / n),
            "rmse": np.sqrt(rep["sse"].sum(axis=1) / n),
            "mae": rep["sae"].sum(axis=1) / n,
            "within_one_step": rep["within"].sum(axis=1) / n,
        }


def essay_resample_counts(n_per_prompt: np.ndarray, n_resamples: int, seed: int) -> list[np.ndarray]:
    """For each prompt p, (B, n_p) integer counts: B resamples of its n_p essays drawn with
    replacement within the prompt, seeded (the same draws for every model: paired)."""
    rng = np.random.default_rng([seed, 2])
    return [rng.multinomial(int(n_p), np.full(int(n_p), 1.0 / n_p), size=n_resamples) for n_p in n_per_prompt]


def essay_resampled_metrics(oof: pd.DataFrame, prompts: np.ndarray, folds: np.ndarray, counts: list[np.ndarray],
                            min_prompt_n: int) -> dict[str, np.ndarray]:
    """Every decision metric of one model (one seed) when each prompt's essays are resampled.

    oof: one row per essay; counts: from :func:`essay_resample_counts` over ``prompts`` (rows of
    each prompt in record order). Every prompt is in every replicate; its QWK, errors and hits
    are recomputed from the drawn essays. Returns {metric key: (B,) values}.
    """
    from scipy import sparse

    B, P = counts[0].shape[0], len(prompts)
    t, pr, K = _levels(oof)
    err = residuals(oof)
    _, _, step = scale_arrays(oof)
    hit = (np.abs(rounded(oof) - oof["y_true"].to_numpy(float)) <= step + 1e-9).astype(float)
    fold_col = pd.Index(folds).get_indexer(oof["fold"])
    rep = {key: np.zeros((B, P)) for key in ("n", "se", "sse", "sae", "within", "prompt_qwk")}
    single = is_single_scale(oof)
    pooled = np.zeros((B, K * K)) if single else None
    fold_conf = np.zeros((B, len(folds), K * K)) if single else None
    prompt_of = oof["prompt"].to_numpy()
    for j, p in enumerate(prompts):
        rows = np.flatnonzero(prompt_of == p)
        c = counts[j].astype(float)  # (B, n_p)
        cell = t[rows] * K + pr[rows]
        onehot = sparse.csr_matrix((np.ones(len(rows)), (np.arange(len(rows)), cell)), shape=(len(rows), K * K))
        conf = np.asarray((sparse.csr_matrix(c) @ onehot).todense())  # (B, K*K)
        rep["prompt_qwk"][:, j] = qwk_from_confusion(conf.reshape(B, K, K))
        rep["n"][:, j] = c.sum(axis=1)
        rep["se"][:, j], rep["sse"][:, j], rep["sae"][:, j] = c @ err[rows], c @ err[rows] ** 2, c @ np.abs(err[rows])
        rep["within"][:, j] = c @ hit[rows]
        if single:
            pooled += conf
            fold_conf[:, fold_col[rows[0]]] += conf
    if single:
        rep["pooled_conf"], rep["fold_conf"] = pooled.reshape(B, K, K), fold_conf.reshape(B, len(folds), K, K)
    n_prompt = pd.Series(prompt_of).value_counts().reindex(prompts).to_numpy(float)
    return replicate_metrics(rep, np.ones((B, P)), n_prompt, min_prompt_n)


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


def prompt_bootstrap(oofs: dict[str, pd.DataFrame], pairs, n_resamples: int, seed: int, min_prompt_n: int, unit: str = "prompt",
                     seeded=()) -> dict:
    """Paired bootstrap over prompts (or essays within prompts) and seeds of the gain of model A over model B.

    oofs: {model: prediction table with a ``seed`` column} on the same essays. pairs: [(name, A, B),
    ...]. unit "prompt": every model is scored on the same (B, P) resamples of whole prompts, so
    differences are paired over prompts. unit "essay_within_prompt" (few prompts, e.g. ASAP's 8):
    every prompt is kept and its essays are resampled, the same draws for every model; the
    interval then covers essay sampling and seeds given THESE prompts, not which prompts were
    sampled. Each model's seeds are resampled independently (:func:`seed_resample_index`).
    seeded: the models whose result depends on the training seed; a pair with one of them run
    with a single seed gets ``spread_unmeasured`` (its seed sd of 0 measures nothing).

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
    if unit not in UNITS:
        raise AESError(f"report.bootstrap_unit: {unit!r}; expected one of {', '.join(UNITS)}")
    if unit == "prompt":
        weights = prompt_resample_weights(len(prompts), n_resamples, seed)
    else:
        any_first = any_oof[any_oof["seed"] == any_oof["seed"].min()].sort_values("record_id", kind="stable")
        counts = essay_resample_counts(any_first["prompt"].value_counts().reindex(prompts).to_numpy(), n_resamples, seed)
    seed_rng = np.random.default_rng([seed, 1])  # its own stream: adding a model leaves the prompt draws unchanged
    ones = np.ones((1, len(prompts)))
    point, seed_sd, boot, n_seeds = {}, {}, {}, {}
    for model, oof in oofs.items():
        per_seed_point, per_seed_boot = [], []
        for _, one in oof.groupby("seed", sort=True):
            stats = prompt_summaries(one, prompts, folds)
            per_seed_point.append({k: float(v[0]) for k, v in resampled_metrics(stats, ones, min_prompt_n).items()})
            if unit == "prompt":
                per_seed_boot.append(resampled_metrics(stats, weights, min_prompt_n))
            else:  # rows in record order, as the counts were drawn
                per_seed_boot.append(essay_resampled_metrics(one.sort_values("record_id", kind="stable"), prompts, folds, counts, min_prompt_n))
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
                "spread_unmeasured": any(m in seeded and n_seeds[m] < 2 for m in (a, b)),
            }
    intervals = {}  # each model on its own: comparable across experiments that score different essays
    for model in oofs:
        intervals[model] = {}
        for metric in ("qwk.pooled", "qwk.worst_quarter", "qwk.worst_prompt", "qwk.within_prompt", "offset.rms"):
            lo, hi = _interval(boot[model][metric])
            intervals[model][metric] = {"ci_low": finite_or_none(lo), "ci_high": finite_or_none(hi)}
    return {"pairs": out, "point": {m: {k: finite_or_none(v) for k, v in d.items()} for m, d in point.items()},
            "seed_sd": {m: {k: finite_or_none(v) for k, v in d.items()} for m, d in seed_sd.items()}, "n_seeds": n_seeds,
            "intervals": intervals, "n_prompts": int(len(prompts)), "unit": UNITS[unit]}
