"""The report: compare every model on the same CV essays, test the difference, decide.

Everything here is a small pure function on in-memory tables except the readers
(:func:`load_model_outputs`, :func:`load_representation`) and writers at the end.

Conventions: ``oof`` is a prediction table of the artifact contract (one row per CV essay:
record_id, fold, prompt, grade, y_true, y_pred_raw, y_pred, residual). Scores are on the
half-band scale 1.0-5.0. A *gain* is a difference signed so that positive means "better"
(higher QWK, lower RMSE).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from aes.errors import AESError
from aes.evaluation import metrics_path, predictions_path, read_metrics, read_predictions
from aes.metrics import HALF_BANDS, band_labels, qwk, summarize, to_half_band

BASELINE_STAGE = "gbm_cv"
ERM_STAGE = "finetune_cv"
OBJECTIVE_STAGES = {"erm": "finetune_cv", "grl": "grl_cv", "dro": "dro_cv"}
MODEL_STAGES = ("gbm_cv", "finetune_cv", "grl_cv", "dro_cv")

# Decision metrics: key in metrics/<stage>.json -> +1 if higher is better, -1 if lower is better.
# Every one of them can be recomputed on a bootstrap resample of prompts (see prompt_bootstrap).
METRIC_DIRECTION = {
    "qwk.pooled": +1,
    "qwk.fold_mean": +1,
    "qwk.worst_prompt": +1,
    "qwk.median_prompt": +1,
    "rmse": -1,
    "mae": -1,
    "within_half_band": +1,
}
N_BANDS = len(HALF_BANDS)  # 9 half bands 1.0..5.0


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def candidate_stage(objective: str) -> str:
    """Stage name of the candidate fine-tuning objective ('erm' -> 'finetune_cv', ...)."""
    if objective not in OBJECTIVE_STAGES:
        raise AESError(f"params.yaml: objective must be one of {', '.join(OBJECTIVE_STAGES)}; got {objective!r}")
    return OBJECTIVE_STAGES[objective]


def load_model_outputs(stages, objective: str | None = None, root: Path = Path(".")) -> dict[str, dict]:
    """Read metrics + out-of-fold predictions of each stage.

    Returns {stage: {"metrics": dict, "oof": DataFrame sorted by record_id}}. A missing file
    raises AESError naming the stage, the file and `dvc repro <stage>`; the candidate's stage gets
    a message that says the objective has no trained results. All stages must cover the same
    essays (the comparison is paired).
    """
    out: dict[str, dict] = {}
    cand = candidate_stage(objective) if objective is not None else None
    for stage in stages:
        for path in (metrics_path(stage, root), predictions_path(stage, root)):
            if not path.exists():
                why = f"objective '{objective}' (the candidate) has no trained results: " if stage == cand else ""
                raise AESError(f"{why}{path} of stage '{stage}' not found; run `dvc repro {stage}` first")
        oof = read_predictions(stage, root).sort_values("record_id", kind="stable").reset_index(drop=True)
        oof["record_id"] = oof["record_id"].astype(str)
        oof["prompt"] = oof["prompt"].astype(str)
        out[stage] = {"metrics": read_metrics(stage, root), "oof": oof}
    first = next(iter(out), None)
    for stage, item in out.items():
        a, b = out[first]["oof"], item["oof"]
        if len(a) != len(b) or not np.array_equal(a["record_id"].to_numpy(), b["record_id"].to_numpy()):
            raise AESError(
                f"{predictions_path(stage, root)} covers different essays than {predictions_path(first, root)} "
                f"({len(b)} vs {len(a)} rows); re-run `dvc repro {stage} {first}` on the same data/prepared"
            )
        if not np.allclose(a["y_true"].to_numpy(), b["y_true"].to_numpy()):
            raise AESError(f"{predictions_path(stage, root)}: y_true differs from {predictions_path(first, root)} (stale stage?)")
    return out


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


# --------------------------------------------------------------------------------------------
# Paired bootstrap over prompts
# --------------------------------------------------------------------------------------------


def qwk_from_confusion(conf: np.ndarray) -> np.ndarray:
    """Quadratic weighted kappa of confusion-count matrices.

    conf: (..., K, K) counts, rows = true band, columns = predicted band. Returns (...) floats,
    NaN where undefined (no essays, or a single label on both sides). Equals
    :func:`aes.metrics.qwk` on the essays the counts came from.
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


def prompt_summaries(oof: pd.DataFrame, prompts: np.ndarray, folds: np.ndarray) -> dict[str, np.ndarray]:
    """Per-prompt sufficient statistics of one model.

    prompts: (P,) prompt names; folds: (F,) fold ids. Returns conf (P, 9, 9) half-band confusion
    counts, n (P,), sse / sae / within (P,) sums of squared error, absolute error and
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
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "qwk.pooled": qwk_from_confusion(pooled_conf),
            "qwk.fold_mean": fold_mean,
            "qwk.worst_prompt": np.where(np.isfinite(worst), worst, np.nan),
            "qwk.median_prompt": median,
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


def prompt_bootstrap(oofs: dict[str, pd.DataFrame], pairs, n_resamples: int, seed: int, min_prompt_n: int) -> dict:
    """Paired bootstrap over prompts of the gain of model A over model B.

    oofs: {model: oof} on the same essays. pairs: [(name, A, B), ...]. Every model is scored on
    the same (B, P) prompt resamples, so differences are paired. Returns {"pairs": {name: {metric:
    {"delta", "gain", "ci_low", "ci_high", "p_not_better", "n_valid"}}}, "point": {model: {metric:
    value}}, "n_prompts": P}: delta = A - B on the original data, gain = delta signed so positive is
    better, ci_* = 95% percentile interval of the gain over resamples where it is defined,
    p_not_better = share of those resamples with gain <= 0.
    """
    any_oof = next(iter(oofs.values()))
    prompts = np.array(sorted(any_oof["prompt"].unique()))
    folds = np.array(sorted(any_oof["fold"].unique()))
    weights = prompt_resample_weights(len(prompts), n_resamples, seed)
    ones = np.ones((1, len(prompts)))
    point, boot = {}, {}
    for model, oof in oofs.items():
        stats = prompt_summaries(oof, prompts, folds)
        point[model] = {k: float(v[0]) for k, v in resampled_metrics(stats, ones, min_prompt_n).items()}
        boot[model] = resampled_metrics(stats, weights, min_prompt_n)
    out: dict = {}
    for name, a, b in pairs:
        out[name] = {}
        for metric, sign in METRIC_DIRECTION.items():
            gains = sign * (boot[a][metric] - boot[b][metric])
            valid = gains[np.isfinite(gains)]
            delta = point[a][metric] - point[b][metric]
            lo, hi = (np.percentile(valid, [2.5, 97.5]) if len(valid) else (np.nan, np.nan))
            out[name][metric] = {
                "delta": _r(delta),
                "gain": _r(sign * delta),
                "ci_low": _r(lo),
                "ci_high": _r(hi),
                "p_not_better": _r(float(np.mean(valid <= 0)) if len(valid) else np.nan),
                "n_valid": int(len(valid)),
            }
    return {"pairs": out, "point": {m: {k: _r(v) for k, v in d.items()} for m, d in point.items()}, "n_prompts": int(len(prompts))}


def _r(x) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


# --------------------------------------------------------------------------------------------
# Prompt-leakage probe
# --------------------------------------------------------------------------------------------


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
        "accuracy": _r(scores.mean()),
        "accuracy_sd": _r(scores.std(ddof=1)) if len(scores) > 1 else None,
        "chance": _r(pd.Series(y).value_counts(normalize=True).iloc[0]),
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
        "accuracy": _r(np.average([per_fold[k] for k in per_fold], weights=w)),
        "chance": _r(np.average(chances, weights=w)),
        "per_fold": per_fold,
        "n_essays": int(w.sum()),
        "n_prompts": int(n_prompts),
        "dropped_prompts": sorted(dropped),
    }


# --------------------------------------------------------------------------------------------
# Calibration: monotone half-band cut-points fitted on other folds only
# --------------------------------------------------------------------------------------------

DEFAULT_CUTS = (HALF_BANDS[:-1] + HALF_BANDS[1:]) / 2  # (8,) 1.25 .. 4.75 = plain rounding


def apply_cut_points(y_pred_raw, cuts: np.ndarray) -> np.ndarray:
    """Map raw predictions (n,) to half bands (n,) with 8 increasing cut-points (8,).

    A prediction above cuts[j-1] and at most cuts[j] gets band HALF_BANDS[j].
    """
    return HALF_BANDS[np.searchsorted(np.asarray(cuts, dtype=float), np.asarray(y_pred_raw, dtype=float), side="left")]


def fit_cut_points(y_true, y_pred_raw, n_grid: int = 40, n_passes: int = 3) -> np.ndarray:
    """Cut-points (8,) that maximise QWK of ``apply_cut_points(y_pred_raw)`` against y_true (n,).

    Coordinate ascent from plain rounding (1.25..4.75): each cut-point in turn tries n_grid values
    between its neighbours and keeps the best (ties keep the current value), n_passes times.
    Deterministic; training QWK never goes below that of plain rounding.
    """
    y_true, x = np.asarray(y_true, dtype=float), np.asarray(y_pred_raw, dtype=float)
    t = band_labels(y_true) - 2
    cuts = DEFAULT_CUTS.copy()

    def score(c):
        p = np.searchsorted(c, x, side="left")
        conf = np.bincount(t * N_BANDS + p, minlength=N_BANDS * N_BANDS).reshape(N_BANDS, N_BANDS)
        v = qwk_from_confusion(conf)
        return -np.inf if not np.isfinite(v) else float(v)

    best = score(cuts)
    lo_all, hi_all = min(x.min(), 1.0) - 0.01, max(x.max(), 5.0) + 0.01
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
    """Calibrated half-band predictions (n,) for an OOF table, fold by fold.

    For fold k the cut-points are fitted on the rows of the OTHER folds (y_true, y_pred_raw)
    and applied to fold k's y_pred_raw; fold k's labels are never seen. Approximation: the
    other folds' predictions come from other folds' models (each is out-of-fold for its own
    model), not from fold k's model on its training essays. Returns (y_cal, {fold: cuts list}).
    """
    y_cal = np.full(len(oof), np.nan)
    cuts_by_fold = {}
    fold = oof["fold"].to_numpy()
    for k in np.unique(fold):
        train, score = fold != k, fold == k
        cuts = fit(oof["y_true"].to_numpy(float)[train], oof["y_pred_raw"].to_numpy(float)[train])
        y_cal[score] = apply_cut_points(oof["y_pred_raw"].to_numpy(float)[score], cuts)
        cuts_by_fold[str(int(k))] = [round(float(c), 4) for c in cuts]
    return y_cal, cuts_by_fold


def calibrated_metrics(oof: pd.DataFrame, min_prompt_n: int) -> dict:
    """QWK (pooled, fold_mean, worst_prompt) of fold-wise calibrated and of raw predictions, plus cut-points."""
    y_cal, cuts = calibrate_oof(oof)
    cal, raw = summarize(oof.assign(y_pred_raw=y_cal), min_prompt_n), summarize(oof, min_prompt_n)
    keys = ("pooled", "fold_mean", "worst_prompt")
    return {"qwk": {k: cal["qwk"][k] for k in keys}, "qwk_uncalibrated": {k: raw["qwk"][k] for k in keys}, "cut_points": cuts}


# --------------------------------------------------------------------------------------------
# Decision
# --------------------------------------------------------------------------------------------


def check_decision_metric(key: str) -> None:
    """AESError listing the valid keys unless ``key`` is a known decision metric."""
    if key not in METRIC_DIRECTION:
        raise AESError(
            f"params.yaml: report.decision_metric '{key}' is not a known metric; valid keys: {', '.join(METRIC_DIRECTION)}"
        )


def metric_value(metrics: dict, key: str):
    """Value of a dotted key ('qwk.pooled') in a metrics dict; AESError lists the valid keys."""
    check_decision_metric(key)
    value = metrics
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise AESError(f"metrics file lacks key '{key}'; valid keys: {', '.join(METRIC_DIRECTION)}")
        value = value[part]
    return value


def decide(candidate: dict, baseline: dict, ci: dict, metric: str, min_gain: float, max_worst_prompt_drop: float) -> dict:
    """Proceed iff the candidate beats the baseline on ``metric`` by >= min_gain, the bootstrap CI of
    that gain lies above 0, and the worst-prompt QWK drops by at most max_worst_prompt_drop.

    candidate, baseline: metrics dicts (contract keys). ci: {metric: {"ci_low", ...}} for the pair
    candidate - baseline (from :func:`prompt_bootstrap`). Returns a flat-ish dict with proceed (0/1),
    verdict, the three checks (0/1), the numbers they used and human-readable reasons.
    """
    check_decision_metric(metric)
    sign = METRIC_DIRECTION[metric]
    cand_v, base_v = metric_value(candidate, metric), metric_value(baseline, metric)
    gain = None if cand_v is None or base_v is None else sign * (cand_v - base_v)
    ci_low = ci.get(metric, {}).get("ci_low")
    cw, bw = metric_value(candidate, "qwk.worst_prompt"), metric_value(baseline, "qwk.worst_prompt")
    drop = None if cw is None or bw is None else bw - cw
    gain_ok = gain is not None and gain >= min_gain - 1e-12
    ci_ok = ci_low is not None and ci_low > 0
    worst_ok = drop is not None and drop <= max_worst_prompt_drop + 1e-12
    reasons = []
    if not gain_ok:
        reasons.append(f"gain on {metric} {_fmt(gain)} < min_gain {min_gain:g}")
    if not ci_ok:
        reasons.append(f"95% bootstrap CI lower bound of the gain {_fmt(ci_low)} is not above 0")
    if not worst_ok:
        reasons.append(f"worst-prompt QWK drop {_fmt(drop)} > max_worst_prompt_drop {max_worst_prompt_drop:g}")
    proceed = gain_ok and ci_ok and worst_ok
    return {
        "proceed": int(proceed),
        "verdict": "proceed" if proceed else "defer",
        "gain_ok": int(gain_ok),
        "ci_ok": int(ci_ok),
        "worst_prompt_ok": int(worst_ok),
        "gain": _r(gain) if gain is not None else None,
        "gain_ci_low": ci_low,
        "gain_ci_high": ci.get(metric, {}).get("ci_high"),
        "worst_prompt_drop": _r(drop) if drop is not None else None,
        "reasons": reasons or [f"gain on {metric} {_fmt(gain)} >= {min_gain:g}, CI above 0, worst-prompt drop {_fmt(drop)} within tolerance"],
    }


def _fmt(x) -> str:
    return "undefined" if x is None else f"{x:+.4f}"


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def headline_row(metrics: dict) -> dict:
    """The headline numbers of one model: pooled / fold-mean / worst-prompt QWK, RMSE, MAE."""
    return {
        "qwk_pooled": metrics["qwk"].get("pooled"),
        "qwk_fold_mean": metrics["qwk"].get("fold_mean"),
        "qwk_fold_std": metrics["qwk"].get("fold_std"),
        "qwk_worst_prompt": metrics["qwk"].get("worst_prompt"),
        "qwk_median_prompt": metrics["qwk"].get("median_prompt"),
        "rmse": metrics.get("rmse"),
        "mae": metrics.get("mae"),
        "within_half_band": metrics.get("within_half_band"),
    }


def per_prompt_table(oofs: dict[str, pd.DataFrame], min_prompt_n: int, pairs) -> pd.DataFrame:
    """One row per prompt: prompt, fold, n, qwk_<model> per model, delta_<pair> per pair.

    QWK is NaN for prompts with fewer than min_prompt_n essays. pairs: [(name, A, B)].
    """
    any_oof = next(iter(oofs.values()))
    base = any_oof.groupby("prompt", sort=True).agg(fold=("fold", "first"), n=("record_id", "size")).reset_index()
    for model, oof in oofs.items():
        q = oof.groupby("prompt", sort=True).apply(lambda g: qwk(g["y_true"], g["y_pred_raw"]), include_groups=False)
        base[f"qwk_{model}"] = np.where(base["n"] >= min_prompt_n, q.reindex(base["prompt"]).to_numpy(), np.nan)
    for name, a, b in pairs:
        base[f"delta_{name}"] = base[f"qwk_{a}"] - base[f"qwk_{b}"]
    return base


def residual_table(oofs: dict[str, pd.DataFrame], by: str) -> pd.DataFrame:
    """Wide mean residual (y_pred_raw - y_true) per value of ``by`` ('y_true' -> 'band', 'grade').

    Returns columns <by>, n, then one column per model.
    """
    name = "band" if by == "y_true" else by
    any_oof = next(iter(oofs.values()))
    out = any_oof.groupby(by, sort=True).size().rename("n").reset_index().rename(columns={by: name})
    for model, oof in oofs.items():
        out[model] = oof.groupby(by, sort=True)["residual"].mean().to_numpy()
    return out


def confusion_long(oofs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Aggregate confusion counts, long format: model, y_true, y_pred, count (all 81 cells per model).

    Scores are written as text ('3.5') so plot tools treat them as ordered categories.
    """
    rows = []
    for model, oof in oofs.items():
        t = band_labels(oof["y_true"]) - 2
        p = band_labels(to_half_band(oof["y_pred_raw"])) - 2
        conf = np.bincount(t * N_BANDS + p, minlength=N_BANDS * N_BANDS).reshape(N_BANDS, N_BANDS)
        for i, yt in enumerate(HALF_BANDS):
            for j, yp in enumerate(HALF_BANDS):
                rows.append({"model": model, "y_true": f"{yt:.1f}", "y_pred": f"{yp:.1f}", "count": int(conf[i, j])})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Assembly and writers (the stage calls run_report)
# --------------------------------------------------------------------------------------------

README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def model_labels(objective: str) -> dict[str, str]:
    """Readable names of the stages, marking the candidate."""
    labels = {"gbm_cv": "baseline (embeddings + XGBoost)", "finetune_cv": "fine-tune ERM", "grl_cv": "fine-tune GRL", "dro_cv": "fine-tune group DRO",
              "frozen_embeddings": "frozen embeddings (embed stage)"}
    cand = OBJECTIVE_STAGES[objective]
    labels[cand] += " [candidate]"
    return labels


def comparison_pairs(objective: str) -> list[tuple[str, str, str]]:
    """(name, A, B) pairs compared with the bootstrap: candidate-baseline, candidate-erm, erm-baseline.

    When the candidate is ERM itself, candidate_vs_erm is left out (it would be identically 0).
    """
    cand = candidate_stage(objective)
    pairs = [("candidate_vs_baseline", cand, BASELINE_STAGE)]
    if cand != ERM_STAGE:
        pairs.append(("candidate_vs_erm", cand, ERM_STAGE))
    pairs.append(("erm_vs_baseline", ERM_STAGE, BASELINE_STAGE))
    return pairs


def check_consistency(stage: str, metrics: dict, point: dict, root: Path = Path(".")) -> None:
    """The metrics file and the predictions file of a stage must tell the same story (not stale)."""
    for key in ("qwk.pooled", "rmse"):
        stored = metric_value(metrics, key)
        if stored is not None and point[key] is not None and abs(stored - point[key]) > 1e-4:
            raise AESError(
                f"{metrics_path(stage, root)} says {key}={stored} but {predictions_path(stage, root)} gives {point[key]}; "
                f"one of them is stale: run `dvc repro {stage}`"
            )


def run_probes(oof: pd.DataFrame, stages, n_folds: int, seed: int, root: Path = Path(".")) -> dict:
    """Prompt-leakage probe on the frozen embeddings and each fine-tuned model's representation.

    Two numbers per representation: "within_fold" (the comparable one: each CV fold's essays,
    whose fine-tuned vectors come from one model) and "all_essays" (all CV essays at once; for
    fine-tuned models it mixes five models' vectors, so it can exceed the within-fold figure for
    reasons that have nothing to do with the prompt). A representation whose files are missing gets {"status": "missing ..."} instead of numbers.
    """
    ids, prompts, folds = oof["record_id"].to_numpy(), oof["prompt"].to_numpy(), oof["fold"].to_numpy()
    sources = {"frozen_embeddings": (root / "data/embeddings/embeddings.npy", root / "data/embeddings/record_ids.csv")}
    for stage in stages:
        if stage != BASELINE_STAGE:
            sources[stage] = (root / f"data/representations/{stage}.npy", root / f"data/representations/{stage}_ids.csv")
    out = {}
    for name, (npy, ids_csv) in sources.items():
        x = load_representation(npy, ids_csv, ids)
        if x is None:
            warnings.warn(f"prompt probe: {npy} or {ids_csv} not found; skipping {name}", stacklevel=2)
            out[name] = {"status": f"missing {npy}"}
            continue
        try:
            out[name] = {
                "within_fold": prompt_probe_within_folds(x, prompts, folds, n_folds, seed),
                "all_essays": prompt_probe(x, prompts, n_folds, seed),
            }
        except AESError as err:  # too few essays per prompt: report it, do not stop the report
            warnings.warn(f"prompt probe skipped for {name}: {err}", stacklevel=2)
            out[name] = {"status": f"skipped: {err}"}
    return out


def build_report(params: dict, root: Path = Path(".")) -> tuple[dict, dict]:
    """Everything the report says, from the four model stages' artifacts.

    params: the full validated params (uses objective and report). Returns (report, tables):
    report is the metrics/report.json document; tables holds the aggregate DataFrames for plots.
    """
    rp, objective = params["report"], params["objective"]
    cand = candidate_stage(objective)
    check_decision_metric(rp["decision_metric"])
    outputs = load_model_outputs(MODEL_STAGES, objective, root)
    oofs = {s: o["oof"] for s, o in outputs.items()}
    pairs = comparison_pairs(objective)
    boot = prompt_bootstrap(oofs, pairs, rp["bootstrap_resamples"], rp["bootstrap_seed"], rp["min_prompt_n"])
    for s in MODEL_STAGES:
        check_consistency(s, outputs[s]["metrics"], boot["point"][s], root)
    # The decision uses the recomputed point estimates (same numbers the CIs are built around).
    as_metrics = {s: _nest(boot["point"][s]) for s in MODEL_STAGES}
    decision = decide(as_metrics[cand], as_metrics[BASELINE_STAGE], boot["pairs"]["candidate_vs_baseline"],
                      rp["decision_metric"], rp["min_gain"], rp["max_worst_prompt_drop"])
    models = {s: headline_row(outputs[s]["metrics"]) for s in MODEL_STAGES}
    calibration, cut_rows = {}, []
    if rp["calibration"]:
        for s in MODEL_STAGES:
            cal = calibrated_metrics(oofs[s], rp["min_prompt_n"])
            for fold, cuts in cal["cut_points"].items():
                cut_rows += [{"model": s, "fold": int(fold), "between": f"{HALF_BANDS[j]:.1f}-{HALF_BANDS[j + 1]:.1f}", "cut_point": c}
                             for j, c in enumerate(cuts)]
            calibration[s] = {
                **{f"qwk_{k}": v for k, v in cal["qwk"].items()},
                **{f"qwk_{k}_uncalibrated": v for k, v in cal["qwk_uncalibrated"].items()},
            }
    report = {
        "objective": objective,
        "stages": {"candidate": cand, "erm": ERM_STAGE, "baseline": BASELINE_STAGE},
        "candidate": {"objective": objective, "stage": cand, **models[cand]},
        "erm": {"stage": ERM_STAGE, **models[ERM_STAGE]},
        "baseline": {"stage": BASELINE_STAGE, **models[BASELINE_STAGE]},
        "models": models,
        "decision": decision,
        "rule": {
            "metric": rp["decision_metric"],
            "min_gain": rp["min_gain"],
            "max_worst_prompt_drop": rp["max_worst_prompt_drop"],
            "text": (f"proceed iff gain({rp['decision_metric']}, candidate - baseline) >= {rp['min_gain']:g} "
                     f"AND its 95% paired prompt-bootstrap CI lower bound > 0 "
                     f"AND worst-prompt QWK drop <= {rp['max_worst_prompt_drop']:g}"),
        },
        "delta": boot["pairs"],
        "bootstrap": {"unit": "prompt", "resamples": rp["bootstrap_resamples"], "seed": rp["bootstrap_seed"], "n_prompts": boot["n_prompts"]},
        "probe": run_probes(oofs[BASELINE_STAGE], MODEL_STAGES, rp["probe_folds"], rp["bootstrap_seed"], root),
        "calibration": calibration,
        "n": outputs[cand]["metrics"].get("n", {}),
    }
    tables = {
        "per_prompt_qwk": per_prompt_table(oofs, rp["min_prompt_n"], pairs),
        "residual_by_band": residual_table(oofs, "y_true"),
        "residual_by_grade": residual_table(oofs, "grade"),
        "confusion": confusion_long(oofs),
    }
    if cut_rows:  # the fitted half-band cut-points per model and scored fold (plain rounding: 1.25, 1.75, ...)
        tables["calibration_cut_points"] = pd.DataFrame(cut_rows)
    return report, tables


def _nest(flat: dict) -> dict:
    """{'qwk.pooled': v, 'rmse': w} -> {'qwk': {'pooled': v}, 'rmse': w}."""
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _cell(x, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def results_table_md(report: dict) -> str:
    """Markdown table of the headline metrics of every model (README and decision.md)."""
    labels = model_labels(report["objective"])
    lines = ["| model | QWK pooled | QWK fold mean ± sd | worst-prompt QWK | RMSE |", "|---|---|---|---|---|"]
    for stage, m in report["models"].items():
        lines.append(f"| {labels[stage]} | {_cell(m['qwk_pooled'])} | {_cell(m['qwk_fold_mean'])} ± {_cell(m['qwk_fold_std'])} "
                     f"| {_cell(m['qwk_worst_prompt'])} | {_cell(m['rmse'])} |")
    return "\n".join(lines)


def decision_md(report: dict) -> str:
    """The readable decision document (reports/decision.md)."""
    d, rule, labels = report["decision"], report["rule"], model_labels(report["objective"])
    b = report["bootstrap"]
    lines = [
        "# Decision: fine-tuned candidate vs frozen-embedding baseline",
        "",
        f"**Verdict: {d['verdict'].upper()}** (candidate objective `{report['objective']}` = stage `{report['stages']['candidate']}`).",
        "",
        f"Rule (params.yaml `report`): {rule['text']}.",
        "",
        *[f"- {r}" for r in d["reasons"]],
        "",
        "## Out-of-fold results (prompt-grouped CV; every prompt unseen by the model that scored it)",
        "",
        results_table_md(report),
        "",
        f"## Paired differences, 95% bootstrap CI over prompts ({b['resamples']} resamples of {b['n_prompts']} prompts, seed {b['seed']})",
        "",
        "Gain = difference signed so that positive is better (for RMSE: first model's RMSE is lower).",
        "",
        "| comparison | metric | difference | gain | 95% CI of gain | share of resamples gain <= 0 |",
        "|---|---|---|---|---|---|",
    ]
    for name, metrics in report["delta"].items():
        for key in ("qwk.pooled", "qwk.fold_mean", "qwk.worst_prompt", "rmse"):
            v = metrics[key]
            lines.append(f"| {name.replace('_', ' ')} | {key} | {_cell(v['delta'], 4)} | {_cell(v['gain'], 4)} "
                         f"| [{_cell(v['ci_low'], 4)}, {_cell(v['ci_high'], 4)}] | {_cell(v['p_not_better'], 3)} |")
    lines += ["", "## Prompt-leakage probe", "",
              "Linear probe (standardised features, logistic regression, stratified CV within the CV essays) predicting "
              "the prompt. Accuracy near chance = the representation carries little prompt identity.", "",
              "| representation | within-fold accuracy | within-fold chance | all-CV-essays accuracy | all-CV chance | prompts | dropped prompts |",
              "|---|---|---|---|---|---|---|"]
    for name, p in report["probe"].items():
        if "within_fold" in p:
            w, a = p["within_fold"], p["all_essays"]
            lines.append(f"| {labels.get(name, name)} | {_cell(w['accuracy'])} | {_cell(w['chance'])} | {_cell(a['accuracy'])} ± {_cell(a['accuracy_sd'])} "
                         f"| {_cell(a['chance'])} | {a['n_prompts']} | {', '.join(a['dropped_prompts']) or 'none'} |")
        else:
            lines.append(f"| {labels.get(name, name)} | {p.get('status')} | | | | | |")
    lines += ["", "Within-fold: the probe runs inside each CV fold (one fine-tuned model per fold), the comparable figure. "
              "All-CV-essays: one probe over every CV essay; for fine-tuned models the vectors come from a different "
              "model per fold, which a probe can tell apart, so read that column for the frozen embeddings only."]
    if report["calibration"]:
        lines += ["", "## Calibration (monotone half-band cut-points)", "",
                  "Cut-points maximise QWK on the out-of-fold predictions of the *other* folds and are applied to the "
                  "scored fold. Approximation: those predictions come from the other folds' models, not from the "
                  "scored fold's model on its own training essays.", "",
                  "| model | QWK pooled raw → calibrated | fold mean raw → calibrated | worst prompt raw → calibrated |", "|---|---|---|---|"]
        for stage, c in report["calibration"].items():
            lines.append(f"| {labels[stage]} | {_cell(c['qwk_pooled_uncalibrated'])} → {_cell(c['qwk_pooled'])} "
                         f"| {_cell(c['qwk_fold_mean_uncalibrated'])} → {_cell(c['qwk_fold_mean'])} "
                         f"| {_cell(c['qwk_worst_prompt_uncalibrated'])} → {_cell(c['qwk_worst_prompt'])} |")
    lines += ["", "Figures: `plots/report/png/`. Numbers: `metrics/report.json`.", ""]
    return "\n".join(lines)


def update_readme(readme: Path, report: dict) -> bool:
    """Replace the text between the results markers of README.md; False (with a warning) if absent."""
    if not readme.exists():
        warnings.warn(f"{readme} not found; results table not written there", stacklevel=2)
        return False
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        warnings.warn(f"{readme} lacks the markers {README_START} ... {README_END}; left unchanged", stacklevel=2)
        return False
    d = report["decision"]
    body = (f"\n{results_table_md(report)}\n\nDecision (`{report['rule']['metric']}`, candidate `{report['objective']}`): "
            f"**{d['verdict']}** — {'; '.join(d['reasons'])}. Details: [reports/decision.md](reports/decision.md).\n")
    readme.write_text(text[: start + len(README_START)] + body + text[end:])
    return True


def write_report(report: dict, tables: dict, root: Path = Path(".")) -> list[Path]:
    """Write metrics/report.json, plots/report/*.csv + png/*.png, reports/decision.md and README's table."""
    from aes import report_plots as rplots
    from aes.evaluation import write_json

    written = []
    pdir, png = root / "plots/report", root / "plots/report/png"
    pdir.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        path = pdir / f"{name}.csv"
        table.to_csv(path, index=False, float_format="%.6f")
        written.append(path)
    labels = model_labels(report["objective"])
    models = list(MODEL_STAGES)
    written.append(rplots.plot_per_prompt_qwk(tables["per_prompt_qwk"], models, labels, png / "per_prompt_qwk.png"))
    written.append(rplots.plot_residual(tables["residual_by_band"], "band", models, labels, png / "residual_by_band.png", "true score band"))
    written.append(rplots.plot_residual(tables["residual_by_grade"], "grade", models, labels, png / "residual_by_grade.png", "grade (school year)"))
    for m in models:
        written.append(rplots.plot_confusion(tables["confusion"], m, labels[m], png / f"confusion_{m}.png"))
    for kind, ylabel in (("training_curves", "training loss"), ("adversary_accuracy", "adversary (prompt) accuracy"), ("dro_max_weight", "max DRO group weight")):
        path = rplots.plot_curves(root / "dvclive", models, labels, kind, png / f"{kind}.png", ylabel)
        if path is not None:
            written.append(path)
    (root / "reports").mkdir(exist_ok=True)
    (root / "reports/decision.md").write_text(decision_md(report))
    written.append(root / "reports/decision.md")
    write_json(root / "metrics/report.json", report)
    written.append(root / "metrics/report.json")
    if update_readme(root / "README.md", report):
        written.append(root / "README.md")
    return written


def run_report(params: dict, root: Path = Path(".")) -> dict:
    """The report stage: build, write, return the report dict."""
    report, tables = build_report(params, root)
    write_report(report, tables, root)
    return report
