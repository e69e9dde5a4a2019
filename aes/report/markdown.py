"""Markdown views of the report: the results table (README, decision.md) and reports/decision.md."""

from __future__ import annotations

import numpy as np

from aes.core.registry import MODEL_LABELS, stage_for_objective


def model_labels(objective: str) -> dict[str, str]:
    """Readable names of the stages, marking the candidate."""
    labels = {**MODEL_LABELS, "frozen_embeddings": "frozen embeddings (embed stage)"}
    cand = stage_for_objective(objective)
    labels[cand] += " [candidate]"
    return labels


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
    h = report.get("holdout")
    if h:
        lines += ["", "## Holdout unit", "",
                  f"The locked test ({h['n_test_prompts']} prompts) and the CV folds keep whole **{h['by']}s** (`prepare.groups: {h['by']}`)."]
        if h["by"] == "topic":
            lines += [f"{h['n_groups']} topics; these join several prompts (prompt names alike by `prepare.topic_similarity`):", ""]
            lines += [f"- {', '.join(ps)}" for ps in h["multi_prompt_topics"].values()] or ["- none"]
    lines += ["", "Figures: `plots/report/png/`. Numbers: `metrics/report.json`.", ""]
    return "\n".join(lines)
