"""The report: compare every model on the same CV essays, answer Q1 and Q2, decide.

This module reads the model stages' artifacts, assembles the evidence (bootstrap over prompts and
seeds: :mod:`aes.report.bootstrap`, verdicts: :mod:`aes.report.verdicts`, the prompt probe that
stage ``prompt_probe`` wrote: :mod:`aes.report.probe`, calibration: :mod:`aes.report.calibration`) and writes
metrics/report.json, reports/decision.md, plot data and PNGs.

Q1: does fine-tuning (ERM) beat the strongest frozen model? Q2: does each invariance objective
(GRL, DRO) beat ERM? The ``decision`` block (read by final_test) proceeds with the candidate
``objective`` only when Q1 says better and, for GRL or DRO, Q2 says better for it too.

Conventions: ``oof`` is a prediction table of the artifact contract (one row per CV essay and
seed: record_id, fold, seed, prompt, grade, y_true, y_pred_raw, y_pred, residual). Scores are on
the half-band scale 1.0-5.0. A *gain* is a difference signed so that positive means "better"
(higher QWK, lower RMSE).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from aes.core.artifacts import read_metrics, read_predictions, with_band
from aes.core.errors import AESError
from aes.core.metrics import (
    POOLED_METRICS,
    is_single_scale,
    metric_value,
    residuals,
    rounded,
    table_qwk,
    table_scale,
)
from aes.core.registry import (
    DECISION_MD,
    DVCLIVE,
    ERM_STAGE,
    FROZEN_STAGES,
    MODEL_STAGES,
    OBJECTIVE_STAGES,
    REPORT_JSON,
    REPORT_PLOTS,
    SEEDED_STAGES,
    SPLITS,
    metrics_path,
    predictions_path,
    stage_for_objective,
)
from aes.data.splits import load_splits
from aes.report.bootstrap import prompt_bootstrap
from aes.report.calibration import calibrated_metrics
from aes.report.markdown import decision_md, report_labels
from aes.report.probe import read_probes
from aes.report.verdicts import BETTER, check_metrics, judge

# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def load_model_outputs(stages, objective: str | None = None, root: Path = Path(".")) -> dict[str, dict]:
    """Read metrics + out-of-fold predictions of each stage.

    Returns {stage: {"metrics": dict, "oof": DataFrame sorted by seed, record_id}}. A missing
    file raises AESError naming the stage, the file and `dvc repro <stage>`; the candidate's stage
    gets a message that says the objective has no trained results. All stages must cover the same
    essays (the comparison is paired), every seed of a stage all of them.
    """
    out: dict[str, dict] = {}
    cand = stage_for_objective(objective) if objective is not None else None
    for stage in stages:
        for path in (metrics_path(stage, root), predictions_path(stage, root)):
            if not path.exists():
                why = f"objective '{objective}' (the candidate) has no trained results: " if stage == cand else ""
                raise AESError(f"{why}{path} of stage '{stage}' not found; run `dvc repro {stage}` first")
        oof = read_predictions(stage, root)
        oof["record_id"] = oof["record_id"].astype(str)
        oof["prompt"] = oof["prompt"].astype(str)
        oof = oof.sort_values(["seed", "record_id"], kind="stable").reset_index(drop=True)
        out[stage] = {"metrics": read_metrics(stage, root), "oof": oof}
    first = next(iter(out), None)
    for stage, item in out.items():
        a = first_seed(out[first]["oof"])
        for _, b in item["oof"].groupby("seed", sort=True):
            if len(a) != len(b) or not np.array_equal(a["record_id"].to_numpy(), b["record_id"].to_numpy()):
                raise AESError(
                    f"{predictions_path(stage, root)} (seed {b['seed'].iloc[0]}) covers different essays than "
                    f"{predictions_path(first, root)} ({len(b)} vs {len(a)} rows); re-run `dvc repro {stage} {first}` on the same data/prepared"
                )
            if not np.allclose(a["y_true"].to_numpy(), b["y_true"].to_numpy()):
                raise AESError(f"{predictions_path(stage, root)}: y_true differs from {predictions_path(first, root)} (stale stage?)")
    return out


def first_seed(oof: pd.DataFrame) -> pd.DataFrame:
    """The rows of the first (lowest) seed: one row per essay."""
    return oof[oof["seed"] == oof["seed"].min()].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Assembly and writers (the stage calls run_report)
# --------------------------------------------------------------------------------------------

def strongest_frozen(point: dict, headline: str = "qwk.pooled") -> str:
    """The frozen stage with the best ``headline`` QWK (mean over seeds; Q1's first metric): Q1's
    reference, the conservative choice."""
    return max(FROZEN_STAGES, key=lambda s: (point[s][headline] if point[s].get(headline) is not None else -np.inf))


def comparison_pairs(reference: str) -> list[tuple[str, str, str]]:
    """(name, A, B) pairs compared with the bootstrap: ERM vs every frozen model (Q1 reads the one vs
    ``reference``), and GRL and DRO vs ERM (Q2) and vs the reference."""
    pairs = [(f"erm_vs_{f}", ERM_STAGE, f) for f in FROZEN_STAGES]
    for objective, stage in OBJECTIVE_STAGES.items():
        if stage != ERM_STAGE:
            pairs += [(f"{objective}_vs_erm", stage, ERM_STAGE), (f"{objective}_vs_{reference}", stage, reference)]
    return pairs


def check_scale_rules(oof: pd.DataFrame, rp: dict) -> None:
    """Metrics that pool prompts (pooled QWK, fold-mean QWK) and calibration need one scale for
    every prompt; with several (ASAP) a verdict on them would read undefined numbers."""
    if is_single_scale(oof):
        return
    for key in ("q1_metrics", "q2_metrics"):
        pooled = [m for m in rp[key] if m in POOLED_METRICS]
        if pooled:
            raise AESError(f"report.{key} lists {pooled}, undefined here: the prompts have different score scales, so a QWK "
                           "pooled across them is not a metric; use qwk.within_prompt (the mean per-prompt QWK the cross-prompt "
                           "literature reports), qwk.worst_prompt or offset.rms (profiles/asap.args)")
    if rp["calibration"]:
        raise AESError("report.calibration: true, but the prompts have different score scales; cut-points fitted on other "
                       "prompts' grids cannot score an unseen prompt on its own. Set report.calibration: false (profiles/asap.args)")


def check_consistency(stage: str, metrics: dict, point: dict, root: Path = Path(".")) -> None:
    """The metrics file and the predictions file of a stage must tell the same story (not stale)."""
    for key in ("qwk.pooled", "qwk.within_prompt", "rmse"):
        stored = metric_value(metrics, key)
        if stored is not None and point[key] is not None and abs(stored - point[key]) > 1e-4:
            raise AESError(
                f"{metrics_path(stage, root)} says {key}={stored} but {predictions_path(stage, root)} gives {point[key]}; "
                f"one of them is stale: run `dvc repro {stage}`"
            )


def answer_questions(boot: dict, rp: dict, objective: str) -> dict:
    """Q1, Q2 and the decision block from the bootstrap (see the module docstring)."""
    reference = strongest_frozen(boot["point"], rp["q1_metrics"][0])
    q1 = {"reference": reference, "comparison": f"erm_vs_{reference}",
          **judge(boot["pairs"][f"erm_vs_{reference}"], rp["q1_metrics"], rp["min_gain"])}
    q2 = {o: {"comparison": f"{o}_vs_erm", "stage": OBJECTIVE_STAGES[o], **judge(boot["pairs"][f"{o}_vs_erm"], rp["q2_metrics"], rp["min_gain"])}
          for o in OBJECTIVE_STAGES if OBJECTIVE_STAGES[o] != ERM_STAGE}
    reasons = [f"Q1 (ERM vs strongest frozen `{reference}`): {q1['verdict']}"]
    proceed = q1["verdict"] == BETTER
    if objective != "erm":
        reasons.append(f"Q2 ({objective} vs ERM): {q2[objective]['verdict']}")
        proceed = proceed and q2[objective]["verdict"] == BETTER
    return {"q1": q1, "q2": q2, "decision": {"proceed": int(proceed), "verdict": "proceed" if proceed else "defer",
                                             "candidate": objective, "reference": reference, "reasons": reasons}}


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
    pairs = comparison_pairs(strongest_frozen(point, headline))
    boot = prompt_bootstrap(oofs, pairs, rp["bootstrap_resamples"], rp["bootstrap_seed"], rp["min_prompt_n"], rp["bootstrap_unit"],
                            seeded=SEEDED_STAGES)
    for s in MODEL_STAGES:
        check_consistency(s, outputs[s]["metrics"], boot["point"][s], root)
    answers = answer_questions(boot, rp, objective)
    models = {s: headline_row(outputs[s]["metrics"]) for s in MODEL_STAGES}
    calibration, cut_rows = {}, []
    if rp["calibration"]:
        for s in MODEL_STAGES:
            per_seed = [calibrated_metrics(g.reset_index(drop=True), rp["min_prompt_n"]) for _, g in oofs[s].groupby("seed", sort=True)]
            grid = table_scale(oofs[s]).grid
            for fold, cuts in per_seed[0]["cut_points"].items():
                cut_rows += [{"model": s, "fold": int(fold), "between": f"{grid[j]:g}-{grid[j + 1]:g}", "cut_point": c}
                             for j, c in enumerate(cuts)]
            calibration[s] = {}
            for k in per_seed[0]["qwk"]:
                for name, block in ((f"qwk_{k}", "qwk"), (f"qwk_{k}_uncalibrated", "qwk_uncalibrated")):
                    values = [c[block][k] for c in per_seed if c[block][k] is not None]
                    calibration[s][name] = round(float(np.mean(values)), 6) if values else None
    traits = {s: outputs[s]["metrics"]["traits"] for s in MODEL_STAGES if outputs[s]["metrics"].get("traits")}
    # the writing-feature groups each feature-aware model read (finetune.features, as its stage recorded it): names the models
    features = {s: outputs[s]["metrics"]["features"] for s in MODEL_STAGES if "features" in outputs[s]["metrics"]}
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
        "rule": {
            "q1_metrics": rp["q1_metrics"], "q2_metrics": rp["q2_metrics"], "min_gain": rp["min_gain"], "min_prompt_n": rp["min_prompt_n"],
            "text": ("per metric: inconclusive if the 95% prompt x seed bootstrap CI of the gain spans 0 or |gain| <= the "
                     f"seed-to-seed sd; else better if gain >= {rp['min_gain']:g}, otherwise not better"),
        },
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
        "n": outputs[cand]["metrics"].get("n", {}),
    }
    per_prompt = per_prompt_table(oofs, rp["min_prompt_n"], [])
    report["per_prompt_qwk"] = {s: {str(p): (round(float(q), 6) if np.isfinite(q) else None) for p, q in zip(per_prompt["prompt"], per_prompt[f"qwk_{s}"])}
                                for s in MODEL_STAGES}
    tables = {
        "per_prompt_qwk": per_prompt_table(oofs, rp["min_prompt_n"], [("erm_vs_strongest_frozen", ERM_STAGE, answers["decision"]["reference"]),
                                                                       *[(n, a, b) for n, a, b in pairs if n.endswith("_vs_erm")]]),
        "residual_by_band": residual_table(oofs, "band"),
        "residual_by_grade": residual_table(oofs, "grade"),
        "confusion": confusion_long(oofs),
    }
    if cut_rows:  # the fitted half-band cut-points per model and scored fold (plain rounding: 1.25, 1.75, ...)
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


def holdout_groups(root: Path = Path(".")) -> dict:
    """What the splits keep whole (prompt or topic) and, for topics, the prompts each one joins."""
    splits = load_splits(root / SPLITS)
    by = splits.get("params", {}).get("groups", "prompt")
    out = {"by": by, "n_test_prompts": len(splits["test"]["prompts"]), "test_prompts": splits["test"]["prompts"],
           "locked_test": bool(splits["test"]["n_essays"]), "protocol": splits.get("protocol", "locked test + prompt-grouped folds")}
    if "topics" in splits:
        out["n_groups"] = len(splits["topics"])
        out["multi_prompt_topics"] = {t: ps for t, ps in splits["topics"].items() if len(ps) > 1}
    return out


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
