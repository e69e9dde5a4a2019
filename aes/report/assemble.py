"""The report: compare every model on the same CV essays, answer Q1 and Q2, decide.

Reads the model stages' artifacts (:mod:`aes.report.inputs`), assembles the evidence (bootstrap
over prompts and seeds: :mod:`aes.report.bootstrap`; Q1, Q2, the decision and the rule:
:mod:`aes.report.verdicts`; the prompt probe that stage ``prompt_probe`` wrote:
:mod:`aes.report.probe`; raw against calibrated, and Q1/Q2 on calibrated scores: :mod:`aes.report.calibration`; headline rows and plot
tables: :mod:`aes.report.tables`) and writes metrics/report.json, reports/decision.md, plot data
and PNGs.

Q1: does fine-tuning (ERM) beat the strongest frozen model? Q2: does each invariance objective
(GRL, DRO) beat ERM? The ``decision`` block is read by stage final_test. Scores are on each
essay's own scale (score points of its prompt's grid); a *gain* is a difference signed so that
positive means "better" (higher QWK, lower RMSE).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from aes.core.metrics import metric_value, table_scale
from aes.core.registry import (
    DECISION_MD,
    DVCLIVE,
    ERM_STAGE,
    FROZEN_STAGES,
    MODEL_STAGES,
    REPORT_JSON,
    REPORT_PLOTS,
    stage_for_objective,
)
from aes.report.calibration import calibrated_answers, calibration_table, cut_point_rows
from aes.report.inputs import check_consistency, holdout_groups, load_model_outputs
from aes.report.markdown import decision_md, report_labels
from aes.report.probe import read_probes
from aes.report.tables import confusion_long, headline_row, per_prompt_qwk, per_prompt_table, residual_table
from aes.report.verdicts import bootstrap_answers, check_metrics, check_scale_rules, rule_block


def build_report(params: dict, root: Path = Path(".")) -> tuple[dict, dict]:
    """Everything the report says, from the model stages' artifacts.

    params: the full validated params (uses objective and report). Returns (report, tables):
    report is the metrics/report.json document; tables holds the aggregate DataFrames for plots.
    """
    rp, objective = params["report"], params["objective"]
    cand = stage_for_objective(objective)
    check_metrics(rp["q1_metrics"], "report.q1_metrics")
    check_metrics(rp["q2_metrics"], "report.q2_metrics")
    outputs = load_model_outputs(MODEL_STAGES, objective, root)
    oofs = {s: o["oof"] for s, o in outputs.items()}
    check_scale_rules(oofs[cand], rp)
    # Q1's reference is the strongest frozen model on Q1's first metric; pick it from the point estimates first.
    headline = rp["q1_metrics"][0]
    point = {s: {headline: metric_value(outputs[s]["metrics"], headline)} for s in MODEL_STAGES}
    boot, pairs, answers = bootstrap_answers(oofs, point, rp, objective)
    for s in MODEL_STAGES:
        check_consistency(s, outputs[s]["metrics"], boot["point"][s], root)
    models = {s: headline_row(outputs[s]["metrics"]) for s in MODEL_STAGES}
    # every model's raw and calibrated QWK (each method), and Q1/Q2 again on report.calibration's scores
    calibration = {"method": rp["calibration"], "models": calibration_table(outputs)}
    calibrated = calibrated_answers(outputs, rp, objective)
    cut_rows = cut_point_rows(outputs, rp["calibration"], lambda s: table_scale(oofs[s]).grid) if rp["calibration"] != "none" else []
    traits = {s: outputs[s]["metrics"]["traits"] for s in MODEL_STAGES if outputs[s]["metrics"].get("traits")}
    # the writing-feature groups each feature-aware model read (finetune.features, as its stage recorded it): names the models
    features = {s: outputs[s]["metrics"]["features"] for s in MODEL_STAGES if "features" in outputs[s]["metrics"]}
    # how each model's inputs were scaled (normalise): a transductive one is labelled so in every table
    inputs = {s: outputs[s]["metrics"]["inputs"] for s in MODEL_STAGES if "inputs" in outputs[s]["metrics"]}
    # the plotted table's per-model QWK columns are report.json's per_prompt_qwk; its delta columns the plotted pairs
    per_prompt = per_prompt_table(oofs, rp["min_prompt_n"], [("erm_vs_strongest_frozen", ERM_STAGE, answers["decision"]["reference"]),
                                                             *[(n, a, b) for n, a, b in pairs if n.endswith("_vs_erm")]])
    report = {
        "objective": objective,
        "targets": list(params.get("prepare", {}).get("targets", ["primary"])),  # primary first: labels the per-target table
        "stages": {"candidate": cand, "erm": ERM_STAGE, "strongest_frozen": answers["decision"]["reference"], "frozen": list(FROZEN_STAGES)},
        "candidate": {"objective": objective, "stage": cand, **{k: v for k, v in models[cand].items() if k != "seeds"}},
        "q1": answers["q1"],
        "q2": answers["q2"],
        "decision": answers["decision"],
        "models": models,
        **({"traits": traits} if traits else {}),
        **({"features": features} if features else {}),
        **({"inputs": inputs} if inputs else {}),
        "rule": rule_block(rp),
        "delta": boot["pairs"],
        "intervals": boot["intervals"],
        "seed_sd": boot["seed_sd"],
        "holdout": holdout_groups(root),
        "error_unit": outputs[cand]["metrics"].get("error_unit"),
        "bootstrap": {"unit": boot["unit"], "resamples": rp["bootstrap_resamples"], "seed": rp["bootstrap_seed"],
                      "n_prompts": boot["n_prompts"], "n_seeds": boot["n_seeds"]},
        "probe": read_probes(root),
        "adversary": adversary_summary(outputs),
        "calibration": calibration,
        "calibrated": calibrated,
        "n": outputs[cand]["metrics"].get("n", {}),
        "per_prompt_qwk": per_prompt_qwk(per_prompt, MODEL_STAGES),
    }
    tables = {
        "per_prompt_qwk": per_prompt,
        "residual_by_band": residual_table(oofs, "band"),
        "residual_by_grade": residual_table(oofs, "grade"),
        "confusion": confusion_long(oofs),
    }
    if cut_rows:  # report.calibration's cut-points per model and scored fold, first seed (plain rounding: the midpoints between grid levels)
        tables["calibration_cut_points"] = pd.DataFrame(cut_rows)
    return report, tables


def adversary_summary(outputs: dict) -> dict | None:
    """GRL's adversary on the last epoch's training batches: mean accuracy over (seed, fold) runs and
    the mean chance level (largest training prompt's share); None when grl_cv recorded neither.

    Accuracy well above chance means the reversal did not make the prompt unreadable from the
    pooled text (the adversary keeps learning it); it is measured on training prompts only."""
    train = outputs.get("grl_cv", {}).get("metrics", {}).get("train", {})
    accuracy, chance = train.get("adversary_acc") or {}, train.get("adversary_chance") or {}
    values = [v for v in accuracy.values() if v is not None]
    if not values or not chance:
        return None
    return {"accuracy_mean": round(float(np.mean(values)), 4), "accuracy_min": round(float(np.min(values)), 4),
            "accuracy_max": round(float(np.max(values)), 4), "chance_mean": round(float(np.mean(list(chance.values()))), 4),
            "runs": len(values)}


def write_report(report: dict, tables: dict, root: Path = Path(".")) -> list[Path]:
    """Write metrics/report.json, plots/report/*.csv + png/*.png and reports/decision.md."""
    from aes.core.io import write_json
    from aes.report import plots as rplots

    written = []
    pdir, png = root / REPORT_PLOTS, root / REPORT_PLOTS / "png"
    pdir.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        path = pdir / f"{name}.csv"
        table.to_csv(path, index=False, float_format="%.6f")
        written.append(path)
    labels = report_labels(report)
    models = list(MODEL_STAGES)
    written.append(rplots.plot_per_prompt_qwk(tables["per_prompt_qwk"], models, labels, png / "per_prompt_qwk.png"))
    written.append(rplots.plot_residual(tables["residual_by_band"], "band", models, labels, png / "residual_by_band.png", "true score band"))
    written.append(rplots.plot_residual(tables["residual_by_grade"], "grade", models, labels, png / "residual_by_grade.png", "grade (school year)"))
    for m in models if len(tables["confusion"]) else ():  # no confusion where prompts have different scales
        written.append(rplots.plot_confusion(tables["confusion"], m, labels[m], png / f"confusion_{m}.png"))
    for kind, ylabel in (("training_curves", "training loss"), ("adversary_accuracy", "adversary (prompt) accuracy"), ("dro_max_weight", "max DRO group weight")):
        path = rplots.plot_curves(root / DVCLIVE, models, labels, kind, png / f"{kind}.png", ylabel)
        if path is not None:
            written.append(path)
    (root / DECISION_MD).parent.mkdir(exist_ok=True)
    (root / DECISION_MD).write_text(decision_md(report))
    written.append(root / DECISION_MD)
    write_json(root / REPORT_JSON, report)
    written.append(root / REPORT_JSON)
    return written


def run_report(params: dict, root: Path = Path(".")) -> dict:
    """The report stage: build, write, return the report dict."""
    report, tables = build_report(params, root)
    write_report(report, tables, root)
    return report
