"""The artifact contract: every model stage writes the same files with the same keys.

For a stage named ``<stage>``:

- ``data/predictions/<stage>.csv``: out-of-fold predictions, one row per CV essay and training
  seed, columns ``PREDICTION_COLUMNS`` for the primary target (``prepare.targets[0]``) and
  ``y_true_<trait>``, ``y_pred_raw_<trait>`` for every further target, in declared order (a DVC
  out: derived from essays, never committed); a deterministic model has one seed;
- ``metrics/<stage>.json``: :func:`aes.core.metrics.summarize_seeds` of the primary target (every
  headline metric is the mean over seeds, with ``seed_sd`` and per-seed values), ``traits``
  (:func:`summarize_traits`: per further target pooled QWK, worst-quarter QWK and RMSE, seed mean
  and sd, and their mean trait QWK) plus ``runtime_s`` (committed);
- ``data/predictions/<stage>_inner.csv``: the inner predictions (:func:`make_inner_frame`), what
  the ``inner`` calibration fits each fold's cut-points on (a DVC out); the prediction table gains
  one calibrated column per method and ``metrics/<stage>.json`` a ``calibrated`` block
  (:func:`calibration_metrics`; :mod:`aes.core.calibration`);
- ``plots/<stage>/by_prompt.csv``, ``by_grade.csv``, ``by_band.csv``: residual diagnostics of the
  primary target, each number the mean over seeds (aggregates, committed as DVC plot data).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from aes.core.calibration import CAL_PREFIX, calibrated_view, is_transductive_calibration, with_calibrations
from aes.core.errors import AESError
from aes.core.io import write_json
from aes.core.metrics import (
    diagnostics,
    is_single_scale,
    mean_over_seeds,
    metric_value,
    rounded,
    sd_over_seeds,
    summarize,
    summarize_seeds,
)
from aes.core.prepared import declared_targets
from aes.core.registry import CALIBRATIONS, inner_predictions_path, metrics_path, plots_dir, predictions_path
from aes.core.scale import SCALE_COLUMNS, from_unit, scale_arrays, to_unit

PREDICTION_COLUMNS = ["record_id", "fold", "seed", "prompt", "grade", "y_true", "y_pred_raw", "y_pred", "residual", *SCALE_COLUMNS]
CALIBRATED_COLUMNS = [CAL_PREFIX + m for m in CALIBRATIONS]  # written after the traits' columns (aes/core/calibration.py)
DIAGNOSTIC_GROUPS = {"by_prompt": "prompt", "by_grade": "grade", "by_band": "band"}
TRUE_PREFIX, PRED_PREFIX = "y_true_", "y_pred_raw_"  # + trait name: the columns of a further target
TRAIT_METRICS = {"qwk_pooled": "qwk.pooled", "qwk_worst_quarter": "qwk.worst_quarter", "rmse": "rmse"}  # traits.<t>.<key> <- summarize key


def trait_names(oof: pd.DataFrame) -> list[str]:
    """The further targets (traits) of a prediction table, in declared order (empty for a one-target model)."""
    return [c[len(PRED_PREFIX):] for c in oof.columns if c.startswith(PRED_PREFIX)]


def target_view(oof: pd.DataFrame, target: str | None) -> pd.DataFrame:
    """The prediction table with ``target``'s truth and prediction in y_true / y_pred_raw (None: the primary, as is).

    Lets every primary-target tool (metrics, bootstrap) score a trait unchanged.
    """
    if target is None:
        return oof
    if PRED_PREFIX + target not in oof.columns:
        raise AESError(f"no predictions for target {target!r}; this table has the primary target and {trait_names(oof) or 'no traits'}")
    view = oof.assign(y_true=oof[TRUE_PREFIX + target], y_pred_raw=oof[PRED_PREFIX + target])
    view["y_pred"] = rounded(view)
    view["residual"] = view["y_pred_raw"] - view["y_true"]
    return view


def make_oof_frame(essays: pd.DataFrame, fold: np.ndarray, y_pred_unit: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """Build the prediction table of one seed from the CV essays and one model's predictions.

    essays: n rows with columns record_id, prompt, grade, y (the primary score), the scale columns
    and one column per target (:func:`aes.core.prepared.declared_targets`). fold: (n,) int.
    y_pred_unit: (n,) for the primary target alone or (n, T) for every declared target, in
    declared order, on the unit range of each essay's scale (what models are trained on,
    :func:`aes.data.corpus.target_matrix`); the table holds them in score points of that scale.
    seed: the training seed that produced them (stack several with :func:`stack_seeds`).
    """
    low, high, step = scale_arrays(essays)
    y_pred_raw = from_unit(y_pred_unit, low, high)
    targets = declared_targets(essays)
    if y_pred_raw.ndim == 2 and y_pred_raw.shape[1] != len(targets):
        raise AESError(f"{y_pred_raw.shape[1]} predictions per essay for {len(targets)} targets {targets}")
    if not np.all(np.isfinite(y_pred_raw)):
        rows = ~np.isfinite(y_pred_raw) if y_pred_raw.ndim == 1 else ~np.isfinite(y_pred_raw).all(axis=1)
        bad = essays["record_id"].to_numpy()[rows][:5]
        raise AESError(f"non-finite predictions for records {list(bad)} (model diverged?)")
    pred = y_pred_raw.reshape(len(essays), -1)
    oof = pd.DataFrame(
        {
            "record_id": essays["record_id"].to_numpy(),
            "fold": np.asarray(fold, dtype=int),
            "seed": int(seed),
            "prompt": essays["prompt"].to_numpy(),
            "grade": essays["grade"].to_numpy(),
            "y_true": essays["y"].to_numpy(dtype=float),
            "y_pred_raw": pred[:, 0],
            **{c: essays[c].to_numpy(dtype=float) for c in SCALE_COLUMNS},
        }
    )
    oof["y_pred"] = rounded(oof)
    oof["residual"] = oof["y_pred_raw"] - oof["y_true"]
    further = {}
    for j in range(1, pred.shape[1]):
        further[TRUE_PREFIX + targets[j]] = essays[targets[j]].to_numpy(dtype=float)
        further[PRED_PREFIX + targets[j]] = pred[:, j]
    return pd.concat([oof[PREDICTION_COLUMNS], pd.DataFrame(further, index=oof.index)], axis=1)


def make_inner_frame(essays: pd.DataFrame, inner: dict) -> pd.DataFrame:
    """The inner predictions of a model stage as one table (columns ``PREDICTION_COLUMNS``, primary target).

    inner: {(seed, k): (rows (m,) row positions of ``essays``, pred_unit (m,) or (m, T) on the unit
    range)}: fold ``k``'s model (or its inner models) predicting essays of its own training side that
    it did not train on. ``fold`` is ``k``, the outer fold the prediction serves.
    """
    frames = [make_oof_frame(essays.iloc[np.asarray(rows, dtype=int)].reset_index(drop=True), np.full(len(rows), k),
                             np.asarray(pred).reshape(len(rows), -1)[:, 0], seed)[PREDICTION_COLUMNS]
              for (seed, k), (rows, pred) in sorted(inner.items()) if len(rows)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PREDICTION_COLUMNS)


def calibration_metrics(oof: pd.DataFrame, undefined: dict, cuts: dict, min_prompt_n: int) -> dict:
    """The ``calibrated`` block of a model's metrics: per method of :data:`aes.core.registry.CALIBRATIONS`
    {transductive, qwk {pooled, within_prompt, fold_mean, worst_prompt, worst_quarter}: means over
    seeds of the calibrated scores' QWK, seed_sd {qwk.<key>}, cut_points {fold: list} of the first
    seed (cut-point methods)}, or {why} where the method is undefined for this table."""
    block = {}
    for method in CALIBRATIONS:
        if method in undefined:
            block[method] = {"why": undefined[method]}
            continue
        summary = summarize_seeds(calibrated_view(oof, method), min_prompt_n)
        keys = ("pooled", "within_prompt", "fold_mean", "worst_prompt", "worst_quarter")
        block[method] = {"transductive": is_transductive_calibration(method),
                         "qwk": {k: summary["qwk"].get(k) for k in keys},
                         "seed_sd": {f"qwk.{k}": summary["seed_sd"].get(f"qwk.{k}") for k in keys}}
        if cuts.get(method):
            first = min(s for s, _ in cuts[method])
            block[method]["cut_points"] = {str(k): [round(float(c), 4) for c in v] for (s, k), v in sorted(cuts[method].items()) if s == first}
    return block


def stack_seeds(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One prediction table from per-seed tables (each from :func:`make_oof_frame`), seed-major."""
    seeds = [int(f["seed"].iloc[0]) for f in frames if len(f)]
    if len(set(seeds)) != len(seeds):
        raise AESError(f"prediction tables repeat a seed: {seeds}")
    return pd.concat(frames, ignore_index=True)


def with_band(oof: pd.DataFrame) -> pd.DataFrame:
    """The table with a column ``band``: the true score where every row shares one scale, else its
    position on its prompt's range in tenths (0.0 = the lowest score, 1.0 = the highest)."""
    if is_single_scale(oof):
        return oof.assign(band=oof["y_true"].to_numpy(float))
    low, high, _ = scale_arrays(oof)
    return oof.assign(band=np.round(to_unit(oof["y_true"], low, high), 1))


def seed_mean_diagnostics(oof: pd.DataFrame, by: str) -> pd.DataFrame:
    """:func:`aes.core.metrics.diagnostics` per seed, averaged over seeds (n = essays per group)."""
    oof = with_band(oof) if by == "band" else oof
    per_seed = [diagnostics(g, by) for _, g in oof.groupby("seed", sort=True)]
    return pd.concat(per_seed).groupby(by, sort=True).mean(numeric_only=True).reset_index().astype({"n": int})


def summarize_traits(oof: pd.DataFrame, min_prompt_n: int) -> dict:
    """Per-trait metrics of a prediction table with a ``seed`` column ({} without traits).

    Returns {trait: {qwk_pooled, qwk_worst_quarter, rmse, and each with _sd}, ..., mean_qwk_pooled,
    mean_qwk_pooled_sd}: every number the mean over seeds of that seed's value, _sd the sample sd
    over seeds (0 for one seed); mean_qwk_pooled is each seed's mean pooled QWK over the traits.
    QWK rounds to each row's grid (the traits share the primary target's scale).
    """
    traits = trait_names(oof)
    if not traits:
        return {}
    per_seed = {t: [summarize(target_view(g, t), min_prompt_n) for _, g in oof.groupby("seed", sort=True)] for t in traits}

    def mean_sd(values) -> tuple:
        return mean_over_seeds(values), sd_over_seeds(values)

    out: dict = {}
    for t in traits:
        out[t] = {}
        for key, dotted in TRAIT_METRICS.items():
            out[t][key], out[t][f"{key}_sd"] = mean_sd([metric_value(m, dotted) for m in per_seed[t]])
    n_seeds = len(per_seed[traits[0]])
    seed_means = []
    for s in range(n_seeds):
        values = [per_seed[t][s]["qwk"]["pooled"] for t in traits]
        seed_means.append(float(np.mean(values)) if all(v is not None for v in values) else None)
    out["mean_qwk_pooled"], out["mean_qwk_pooled_sd"] = mean_sd(seed_means)
    return out


def write_model_outputs(
    stage: str, oof: pd.DataFrame, runtime_s: float, min_prompt_n: int, extra: dict | None = None, root: Path = Path("."),
    inner: pd.DataFrame | None = None,
) -> dict:
    """Write predictions, inner predictions, metrics and diagnostics for one model stage; return the metrics dict.

    ``extra`` adds stage-specific keys (e.g. adversary accuracy) next to the contract keys.
    ``inner``: the stage's inner predictions (:func:`make_inner_frame`; None: it has none, and the
    ``inner`` calibration is undefined for it).
    """
    missing = [c for c in PREDICTION_COLUMNS if c not in oof.columns]
    if missing:
        raise AESError(f"{stage}: prediction table lacks columns {missing}")
    oof, undefined, cuts = with_calibrations(oof, inner)
    metrics = summarize_seeds(oof, min_prompt_n)
    metrics["calibrated"] = calibration_metrics(oof, undefined, cuts, min_prompt_n)
    traits = summarize_traits(oof, min_prompt_n)
    if traits:
        metrics["traits"] = traits
    metrics["runtime_s"] = round(float(runtime_s), 1)
    if extra:
        metrics.update(extra)

    pred_path = predictions_path(stage, root)
    pred_path.parent.mkdir(parents=True, exist_ok=True)
    oof.to_csv(pred_path, index=False, float_format="%.6f")
    inner_path = inner_predictions_path(stage, root)
    (inner if inner is not None else pd.DataFrame(columns=PREDICTION_COLUMNS)).to_csv(inner_path, index=False, float_format="%.6f")

    pdir = plots_dir(stage, root)
    pdir.mkdir(parents=True, exist_ok=True)
    for name, column in DIAGNOSTIC_GROUPS.items():
        diag = seed_mean_diagnostics(oof, column)
        diag.insert(0, "model", stage)
        diag.to_csv(pdir / f"{name}.csv", index=False, float_format="%.6f")

    write_json(metrics_path(stage, root), metrics)
    return metrics


def read_predictions(stage: str, root: Path = Path(".")) -> pd.DataFrame:
    """Read a stage's out-of-fold predictions, with a clear error if the stage has not run."""
    path = predictions_path(stage, root)
    if not path.exists():
        raise AESError(f"{path}: predictions of stage '{stage}' not found; run `dvc repro {stage}` first")
    oof = pd.read_csv(path)
    missing = [c for c in PREDICTION_COLUMNS if c not in oof.columns]
    if missing:
        raise AESError(f"{path}: missing columns {missing}; expected {PREDICTION_COLUMNS}")
    return oof


def read_metrics(stage: str, root: Path = Path(".")) -> dict:
    path = metrics_path(stage, root)
    if not path.exists():
        raise AESError(f"{path}: metrics of stage '{stage}' not found; run `dvc repro {stage}` first")
    return json.loads(path.read_text())
