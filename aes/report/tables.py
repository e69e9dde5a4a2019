"""The report's tables: each model's headline row, and the aggregate tables behind the plots
(per-prompt QWK, mean residual by score band and by grade, confusion counts).

``oofs`` maps each stage to its prediction table (:mod:`aes.report.inputs`); every number is over
essays and seeds unless a docstring says the first seed. Scores are on each row's own scale.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from aes.core.artifacts import with_band
from aes.core.metrics import residuals, rounded, table_qwk, table_scale
from aes.report.inputs import first_seed


def headline_row(metrics: dict) -> dict:
    """The headline numbers of one model (means over seeds) and the seed-to-seed sd of the QWKs."""
    sd = metrics.get("seed_sd", {})
    return {
        "qwk_pooled": metrics["qwk"].get("pooled"),
        "qwk_pooled_seed_sd": sd.get("qwk.pooled"),
        "qwk_fold_mean": metrics["qwk"].get("fold_mean"),
        "qwk_fold_std": metrics["qwk"].get("fold_std"),
        "qwk_worst_quarter": metrics["qwk"].get("worst_quarter"),
        "qwk_worst_quarter_seed_sd": sd.get("qwk.worst_quarter"),
        "qwk_worst_prompt": metrics["qwk"].get("worst_prompt"),
        "qwk_median_prompt": metrics["qwk"].get("median_prompt"),
        "qwk_within_prompt": metrics["qwk"].get("within_prompt"),
        "qwk_within_prompt_seed_sd": sd.get("qwk.within_prompt"),
        "offset_rms": metrics.get("offset", {}).get("rms"),
        "offset_rms_seed_sd": sd.get("offset.rms"),
        "offset_noise_rms": metrics.get("offset", {}).get("noise_rms"),
        "rmse": metrics.get("rmse"),
        "mae": metrics.get("mae"),
        "within_one_step": metrics.get("within_one_step"),
        "n_seeds": metrics.get("n", {}).get("seeds", 1),
        "seeds": {s: m["qwk"]["pooled"] if m["qwk"]["pooled"] is not None else m["qwk"].get("within_prompt")
                  for s, m in metrics.get("seeds", {}).items()},
    }


def per_prompt_table(oofs: dict[str, pd.DataFrame], min_prompt_n: int, pairs) -> pd.DataFrame:
    """One row per prompt: prompt, fold, n, qwk_<model> per model, delta_<pair> per pair.

    QWK (mean over seeds) is NaN for prompts with fewer than min_prompt_n essays. pairs: [(name, A, B)].
    """
    any_oof = first_seed(next(iter(oofs.values())))
    base = any_oof.groupby("prompt", sort=True).agg(fold=("fold", "first"), n=("record_id", "size")).reset_index()
    for model, oof in oofs.items():
        per_seed = oof.groupby(["seed", "prompt"], sort=True)[list(oof.columns)].apply(table_qwk)
        q = per_seed.groupby(level="prompt").mean()
        base[f"qwk_{model}"] = np.where(base["n"] >= min_prompt_n, q.reindex(base["prompt"]).to_numpy(), np.nan)
    for name, a, b in pairs:
        base[f"delta_{name}"] = base[f"qwk_{a}"] - base[f"qwk_{b}"]
    return base


def per_prompt_qwk(table: pd.DataFrame, stages) -> dict[str, dict[str, float | None]]:
    """{stage: {prompt: QWK (mean over seeds, 6 decimals) or None}} from :func:`per_prompt_table`'s qwk_<stage> columns."""
    return {s: {str(p): (round(float(q), 6) if np.isfinite(q) else None) for p, q in zip(table["prompt"], table[f"qwk_{s}"])}
            for s in stages}


def residual_table(oofs: dict[str, pd.DataFrame], by: str) -> pd.DataFrame:
    """Wide mean residual (:func:`aes.core.metrics.residuals`, over essays and seeds) per value of
    ``by`` ('band': the true score, or its tenth of the prompt's range with several scales; 'grade').

    Returns columns <by>, n (essays), then one column per model.
    """
    any_oof = with_band(first_seed(next(iter(oofs.values()))))
    out = any_oof.groupby(by, sort=True).size().rename("n").reset_index()
    for model, oof in oofs.items():
        oof = with_band(oof).assign(residual=residuals(oof))
        out[model] = oof.groupby(by, sort=True)["residual"].mean().to_numpy()
    return out


def confusion_long(oofs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Aggregate confusion counts of the first seed, long format: model, y_true, y_pred, count (every
    cell of the grid per model). Only where every prompt shares one scale; otherwise an empty table.

    Scores are written as text ('3.5') so plot tools treat them as ordered categories.
    """
    oofs = {m: first_seed(o) for m, o in oofs.items()}
    rows = []
    for model, oof in oofs.items():
        scale = table_scale(oof)
        if scale is None:
            return pd.DataFrame(columns=["model", "y_true", "y_pred", "count"])
        grid = scale.grid
        conf = pd.crosstab(pd.Categorical(oof["y_true"], grid), pd.Categorical(rounded(oof), grid), dropna=False).to_numpy()
        for i, yt in enumerate(grid):
            for j, yp in enumerate(grid):
                rows.append({"model": model, "y_true": f"{yt:.1f}", "y_pred": f"{yp:.1f}", "count": int(conf[i, j])})
    return pd.DataFrame(rows)
