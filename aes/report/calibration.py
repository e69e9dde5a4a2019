"""The report's calibration: every model's raw and calibrated QWK side by side, and Q1/Q2 on calibrated scores.

Each model stage writes its calibrated scores for every method (:mod:`aes.core.calibration`) in its
prediction table and their QWK in ``metrics/<stage>.json`` (``calibrated``). Here the report
collects them into one comparison, and judges Q1 and Q2 a second time on the scores of the method
``report.calibration`` names, with the same paired bootstrap, rule and metrics as the raw verdicts.
The locked-test gate reads the raw verdicts (the ``decision`` block; docs/calibration.md says why).
"""

from __future__ import annotations

import pandas as pd

from aes.core.calibration import calibrated_view, is_transductive_calibration
from aes.core.errors import AESError
from aes.core.metrics import metric_value
from aes.core.registry import CALIBRATIONS, MODEL_STAGES
from aes.report.verdicts import bootstrap_answers

QWK_KEYS = ("pooled", "within_prompt", "fold_mean", "worst_prompt", "worst_quarter")


def calibration_table(outputs: dict) -> dict:
    """{stage: {raw: {qwk key: mean, <key>_sd}, <method>: the same, or {why}; <method>.transductive}} from each stage's metrics.

    outputs: :func:`aes.report.inputs.load_model_outputs`. A stage written before calibration was
    part of the contract gets {why} for every method.
    """
    table = {}
    for stage, out in outputs.items():
        m = out["metrics"]
        row = {"raw": {k: metric_value(m, f"qwk.{k}") for k in QWK_KEYS} | {f"{k}_sd": m.get("seed_sd", {}).get(f"qwk.{k}") for k in QWK_KEYS}}
        for method in CALIBRATIONS:
            block = (m.get("calibrated") or {}).get(method) or {"why": "the stage's metrics predate calibration; re-run it"}
            if "why" in block:
                row[method] = {"why": block["why"]}
                continue
            row[method] = {"transductive": block["transductive"], **block["qwk"],
                           **{f"{k}_sd": block["seed_sd"].get(f"qwk.{k}") for k in QWK_KEYS}}
        table[stage] = row
    return table


def cut_point_rows(outputs: dict, method: str, grid_of) -> list[dict]:
    """Rows {model, fold, between, cut_point} of ``method``'s cut-points (first seed) for every stage that has them.

    grid_of: stage -> the grid (K,) of its table (cut-point j sits between grid[j] and grid[j+1]).
    """
    rows = []
    for stage, out in outputs.items():
        cuts = ((out["metrics"].get("calibrated") or {}).get(method) or {}).get("cut_points") or {}
        grid = grid_of(stage) if cuts else None
        for fold, values in cuts.items():
            rows += [{"model": stage, "fold": int(fold), "between": f"{grid[j]:g}-{grid[j + 1]:g}", "cut_point": c} for j, c in enumerate(values)]
    return rows


def calibrated_oofs(outputs: dict, method: str) -> dict[str, pd.DataFrame]:
    """{stage: its prediction table with ``method``'s calibrated scores as y_pred_raw}; AESError naming the stage that has none."""
    views = {}
    for stage, out in outputs.items():
        why = ((out["metrics"].get("calibrated") or {}).get(method) or {}).get("why")
        if why or "calibrated" not in out["metrics"]:
            raise AESError(f"report.calibration: {method}, but stage {stage} has no {method!r} calibrated scores: "
                           f"{why or 'its outputs predate calibration'}. Re-run `dvc repro {stage}`, or choose another report.calibration")
        views[stage] = calibrated_view(out["oof"], method)
    return views


def calibrated_answers(outputs: dict, rp: dict, objective: str) -> dict | None:
    """Q1 and Q2 on ``report.calibration``'s scores (None for ``none``): {method, transductive, q1, q2, delta, intervals, point}.

    The same pairs, bootstrap (resamples, seed, unit) and rule as the raw verdicts; Q1's reference is
    the strongest frozen model on the calibrated scores.
    """
    method = rp["calibration"]
    if method == "none":
        return None
    views = calibrated_oofs(outputs, method)
    headline = rp["q1_metrics"][0]
    point = {s: {headline: metric_value({"qwk": outputs[s]["metrics"]["calibrated"][method]["qwk"]}, headline)} for s in MODEL_STAGES}
    boot, _, answers = bootstrap_answers(views, point, rp, objective)
    return {"method": method, "transductive": is_transductive_calibration(method), "q1": answers["q1"], "q2": answers["q2"],
            "reference": answers["decision"]["reference"], "delta": boot["pairs"], "intervals": boot["intervals"], "point": boot["point"]}
