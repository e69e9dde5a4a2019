"""Markdown views of the report: the results table (README, decision.md) and reports/decision.md."""

from __future__ import annotations

import numpy as np

from aes.core.registry import ERM_STAGE, MODEL_LABELS, TRANSDUCTIVE_CALIBRATIONS, inputs_label, model_label, stage_for_objective


def model_labels(objective: str, features: dict | None = None, inputs: dict | None = None) -> dict[str, str]:
    """Readable names of the stages, marking the candidate and every transductive model.

    features: {stage: writing-feature groups its model reads} as the report records them from the
    stages' metrics (``finetune.features``); lp_cv and the fine-tunes are named "with writing
    features" when theirs is non-empty. None (a report from before the features): text-only names.
    inputs: {stage: its inputs record (:func:`aes.features.normalise.inputs_record`)}; a model that
    read held-out prompts' essays is named "[transductive: ...]" in every table.
    """
    features, inputs = features or {}, inputs or {}
    labels = {stage: model_label(stage, features.get(stage, ())) for stage in MODEL_LABELS}
    for stage, record in inputs.items():
        if record.get("transductive"):
            labels[stage] += f" [{inputs_label(record).replace(' (', ': ', 1).rstrip(')')}]"
    labels["frozen_embeddings"] = "frozen embeddings (embed stage)"
    cand = stage_for_objective(objective)
    labels[cand] += " [candidate]"
    return labels


def report_labels(report: dict) -> dict[str, str]:
    """:func:`model_labels` for a report document (metrics/report.json)."""
    return model_labels(report["objective"], report.get("features"), report.get("inputs"))


def finetune_phrase(report: dict) -> str:
    """How Q1's fine-tune is named in prose: 'fine-tuning with the writing features (ERM)' when ERM's head reads them."""
    return "fine-tuning with the writing features (ERM)" if (report.get("features") or {}).get(ERM_STAGE) else "fine-tuning (ERM)"


def _cell(x, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def _pm(mean, sd) -> str:
    return f"{_cell(mean)} ± {_cell(sd)}"


def results_table_md(report: dict) -> str:
    """Markdown table of every model's headline metrics, mean ± sd over seeds (README and decision.md)."""
    labels = report_labels(report)
    lines = ["| model | seeds | QWK pooled | worst-quarter QWK | within-prompt QWK | prompt offset (noise) | QWK fold mean ± sd over folds "
             "| worst-prompt QWK | RMSE |",
             "|---|---|---|---|---|---|---|---|---|"]
    for stage, m in report["models"].items():
        lines.append(f"| {labels[stage]} | {m['n_seeds']} | {_pm(m['qwk_pooled'], m['qwk_pooled_seed_sd'])} "
                     f"| {_pm(m['qwk_worst_quarter'], m['qwk_worst_quarter_seed_sd'])} "
                     f"| {_pm(m.get('qwk_within_prompt'), m.get('qwk_within_prompt_seed_sd'))} "
                     f"| {_pm(m.get('offset_rms'), m.get('offset_rms_seed_sd'))} ({_cell(m.get('offset_noise_rms'))}) "
                     f"| {_pm(m['qwk_fold_mean'], m['qwk_fold_std'])} | {_cell(m['qwk_worst_prompt'])} | {_cell(m['rmse'])} |")
    return "\n".join(lines)


COMPACT_HEADLINE = {"qwk.pooled": "QWK pooled", "qwk.within_prompt": "mean per-prompt QWK"}


def compact_table_md(report: dict) -> str:
    """The front page's table: per model its seeds, the headline QWK (Q1's first metric), the
    within-prompt and worst-quarter QWK and the prompt offset with its noise reference, mean ± sd over seeds."""
    labels, headline = report_labels(report), report["rule"]["q1_metrics"][0]
    columns = [(headline, COMPACT_HEADLINE.get(headline, headline))]
    columns += [(k, name) for k, name in (("qwk.within_prompt", "within-prompt QWK"), ("qwk.worst_quarter", "worst-quarter QWK"))
                if k != headline]
    calibrated = calibrated_column(report)
    lines = ["| model | seeds | " + " | ".join(name for _, name in columns) + (f" | {calibrated[0]}" if calibrated else "")
             + " | prompt offset (noise) |", "|---" * (len(columns) + 3 + bool(calibrated)) + "|"]
    for stage, m in report["models"].items():
        cells = " | ".join(_pm(m.get(k.replace(".", "_")), m.get(k.replace(".", "_") + "_seed_sd")) for k, _ in columns)
        if calibrated:
            cells += f" | {calibrated[1][stage]}"
        lines.append(f"| {labels[stage]} | {m['n_seeds']} | {cells} | {_cell(m.get('offset_rms'))} ({_cell(m.get('offset_noise_rms'))}) |")
    return "\n".join(lines)


def calibrated_column(report: dict) -> tuple[str, dict] | None:
    """(header, {stage: cell}) of the headline QWK on ``report.calibration``'s scores, mean ± sd over
    seeds; None without a calibration (or for reports that predate it)."""
    cal = report.get("calibration")
    if not isinstance(cal, dict) or cal.get("method", "none") == "none" or not cal.get("models"):
        return None
    method, key = cal["method"], report["rule"]["q1_metrics"][0].removeprefix("qwk.")
    name = COMPACT_HEADLINE.get(f"qwk.{key}", key)
    cells = {s: ("–" if "why" in row[method] else _pm(row[method].get(key), row[method].get(f"{key}_sd"))) for s, row in cal["models"].items()}
    transductive = " [transductive]" if (report.get("calibrated") or {}).get("transductive") else ""
    return f"{name}, calibrated ({method.replace('_', ' ')}){transductive}", cells


def calibrated_verdicts_line(report: dict) -> str:
    """One sentence with Q1 and Q2 on calibrated scores ('' without them)."""
    cal = report.get("calibrated")
    if not cal:
        return ""
    q2 = ", ".join(f"{o.upper()} vs ERM **{q['verdict']}**" for o, q in cal["q2"].items())
    return (f" On calibrated scores (`report.calibration: {cal['method']}`{', transductive' if cal['transductive'] else ''}; "
            f"what a deployment would use): Q1 (ERM vs `{cal['reference']}`) **{cal['q1']['verdict']}**; Q2: {q2}.")


def offset_md(report: dict) -> list[str]:
    """decision.md: each model's per-prompt offset and within-prompt QWK with their own 95% intervals."""
    labels = report_labels(report)
    lines = ["## Two parts of an unseen-prompt error", "",
             "Prompt offset: for each unseen prompt, the mean of prediction - truth; the essay-weighted root mean square over "
             f"prompts ({report.get('error_unit') or 'score points'}). Noise: the offset expected if each fold's residuals were shuffled across its prompts "
             "(a fold of one prompt: the sampling variance of that prompt's mean residual; `aes.core.metrics.prompt_offset_noise`); "
             "an offset above it is a shift of whole prompts. Within-prompt QWK: "
             f"the mean per-prompt QWK over prompts with at least {report['rule'].get('min_prompt_n', 'min_prompt_n')} essays "
             f"(ranking within a prompt). Means over seeds; 95% intervals from the {report['bootstrap']['unit']} bootstrap.", "",
             "| model | prompt offset [95% CI] | noise reference | offset - noise | within-prompt QWK [95% CI] |", "|---|---|---|---|---|"]
    for stage, m in report["models"].items():
        ci = report.get("intervals", {}).get(stage, {})
        off, wq = ci.get("offset.rms", {}), ci.get("qwk.within_prompt", {})
        excess = None if m.get("offset_rms") is None or m.get("offset_noise_rms") is None else m["offset_rms"] - m["offset_noise_rms"]
        lines.append(f"| {labels[stage]} | {_cell(m.get('offset_rms'))} [{_cell(off.get('ci_low'))}, {_cell(off.get('ci_high'))}] "
                     f"| {_cell(m.get('offset_noise_rms'))} | {_cell(excess)} "
                     f"| {_cell(m.get('qwk_within_prompt'))} [{_cell(wq.get('ci_low'))}, {_cell(wq.get('ci_high'))}] |")
    return lines


def traits_table_md(report: dict) -> str | None:
    """Markdown table of every model's pooled QWK per target (seed means) and its mean trait QWK
    (mean over the traits, mean ± sd over seeds); None when no model predicts traits."""
    traits = report.get("traits") or {}
    first = next((t for t in traits.values() if t), None)
    if first is None:
        return None
    labels = report_labels(report)
    names = [k for k in first if not k.startswith("mean_")]
    primary = report.get("targets", ["primary"])[0]
    lines = [f"| model | {primary} (primary) | " + " | ".join(names) + " | mean trait QWK |", "|---" * (len(names) + 3) + "|"]
    for stage, m in report["models"].items():
        t = traits.get(stage) or {}
        cells = " | ".join(_cell(t.get(n, {}).get("qwk_pooled")) for n in names)
        lines.append(f"| {labels[stage]} | {_cell(m['qwk_pooled'])} | {cells} | {_pm(t.get('mean_qwk_pooled'), t.get('mean_qwk_pooled_sd'))} |")
    return "\n".join(lines)


def _verdict_head(report: dict) -> list[str]:
    """The header of a verdict table (:func:`_verdict_rows`)."""
    return [f"| comparison | metric | model | reference | gain | 95% CI of gain ({report['bootstrap']['unit']}) | seed sd | verdict | why |",
            "|---|---|---|---|---|---|---|---|---|"]


def _verdict_rows(name: str, judged: dict, models: dict, a: str, b: str) -> list[str]:
    rows = []
    for metric, v in judged["metrics"].items():
        key = metric.replace(".", "_")  # qwk.pooled -> qwk_pooled, offset.rms -> offset_rms
        rows.append(f"| {name} | {metric} | {_cell(models[a].get(key))} | {_cell(models[b].get(key))} | {_cell(v['gain'], 4)} "
                    f"| [{_cell(v['ci_low'], 4)}, {_cell(v['ci_high'], 4)}] | {_cell(v['seed_spread'], 4)} | **{v['outcome']}** | {v['why']} |")
    return rows


def verdicts_md(report: dict) -> list[str]:
    """The Q1 and Q2 sections of decision.md."""
    labels, models = report_labels(report), report["models"]
    q1, stages = report["q1"], report["stages"]
    head = _verdict_head(report)
    lines = [f"## Q1: does {finetune_phrase(report)} beat the strongest frozen model? **{q1['verdict'].upper()}**", "",
             f"Strongest frozen model (best {report['rule']['q1_metrics'][0]} among {', '.join(f'`{s}`' for s in stages['frozen'])}): "
             f"`{q1['reference']}`, {labels[q1['reference']]}.", "", *head,
             *_verdict_rows("ERM vs " + q1["reference"], q1, models, stages["erm"], q1["reference"]), "",
             "## Q2: does prompt invariance beat ERM?", ""]
    cand = report["objective"]
    if cand in report["q2"]:
        lines += [f"Headline candidate (`objective: {cand}`): **{cand.upper()} vs ERM: {report['q2'][cand]['verdict'].upper()}**.", ""]
    else:
        lines += ["Headline candidate (`objective: erm`): ERM itself, so Q2 has no headline; both invariance objectives below.", ""]
    lines += [f"- **{o.upper()}** vs ERM: **{q['verdict']}**" for o, q in report["q2"].items()]
    lines += ["", *head]
    for o, q in report["q2"].items():
        lines += _verdict_rows(f"{o.upper()} vs ERM", q, models, q["stage"], stages["erm"])
    return lines


CALIBRATION_NAMES = {
    "inner": "monotone cut-points fitted on each fold's own model's predictions of held-out essays from its training side",
    "other_folds": "monotone cut-points fitted on the other folds' out-of-fold predictions (other folds' models)",
    "prompt_spread": "each unseen prompt's predictions stretched to the training prompts' score spread, label-free [transductive]",
}


def calibrated_verdicts_md(report: dict) -> list[str]:
    """decision.md: Q1 and Q2 judged again on ``report.calibration``'s calibrated scores ([] when none)."""
    cal = report.get("calibrated")
    if not cal:
        return []
    labels = report_labels(report)
    models = {s: {k.replace(".", "_"): v for k, v in p.items()} for s, p in cal["point"].items()}
    head = _verdict_head(report)
    q2 = "; ".join(f"{o.upper()} vs ERM **{q['verdict']}**" for o, q in cal["q2"].items())
    lines = [f"## Q1 and Q2 on calibrated scores (`report.calibration: {cal['method']}`){' [transductive]' if cal['transductive'] else ''}", "",
             f"The scores a deployment would use: {CALIBRATION_NAMES[cal['method']]}. Same rule, metrics and bootstrap as above. "
             f"**Q1: {cal['q1']['verdict']}** (ERM vs the strongest frozen model on calibrated scores, `{cal['reference']}`, "
             f"{labels[cal['reference']]}); **Q2:** {q2}. The locked-test gate reads the raw verdicts above.", "", *head,
             *_verdict_rows("ERM vs " + cal["reference"], cal["q1"], models, report["stages"]["erm"], cal["reference"])]
    for o, q in cal["q2"].items():
        lines += _verdict_rows(f"{o.upper()} vs ERM", q, models, q["stage"], report["stages"]["erm"])
    return lines + [""]


def calibration_md(report: dict, heading: str = "##") -> list[str]:
    """decision.md (and, one level down, the results page): every model's QWK raw and under each
    calibration, mean ± sd over seeds."""
    cal = report.get("calibration") or {}
    table = cal.get("models") if isinstance(cal, dict) else None
    if not table:
        return []
    labels = report_labels(report)
    methods = [m for m in CALIBRATION_NAMES if any("why" not in row.get(m, {"why": ""}) for row in table.values())]
    if not methods:
        return []
    names = {m: m.replace("_", " ") + (" [transductive]" if m in TRANSDUCTIVE_CALIBRATIONS else "") for m in methods}
    lines = ["", f"{heading} Calibration: raw against each method", "",
             *[f"- **{m.replace('_', ' ')}**: {CALIBRATION_NAMES[m]}." for m in methods],
             f"- `report.calibration: {cal['method']}` names the method of the calibrated verdicts.", "",
             "| model | " + " | ".join(f"{k} QWK: raw | " + " | ".join(names[m] for m in methods) for k in ("pooled", "within-prompt")) + " |",
             "|---" * (1 + 2 * (1 + len(methods))) + "|"]
    for stage, row in table.items():
        cells = []
        for key in ("pooled", "within_prompt"):
            cells.append(_pm(row["raw"].get(key), row["raw"].get(f"{key}_sd")))
            cells += ["–" if "why" in row.get(m, {"why": ""}) else _pm(row[m].get(key), row[m].get(f"{key}_sd")) for m in methods]
        lines.append(f"| {labels[stage]} | " + " | ".join(cells) + " |")
    lines += ["", "Mean ± sd over seeds; every calibrated score is on the grid, and no method reads the scored fold's scores."]
    return lines


def headline_name(report: dict) -> str:
    """What the headline QWK is: Q1's first metric, in words."""
    key = report["rule"]["q1_metrics"][0]
    return {"qwk.pooled": "Pooled QWK", "qwk.within_prompt": "Mean per-prompt QWK"}.get(key, key)


def locked_test_md(report: dict) -> list[str]:
    """The decision line: the locked-test gate, or why there is none."""
    d, h = report["decision"], report.get("holdout") or {}
    if h.get("locked_test") is False or h.get("n_test_prompts") == 0:  # reports written before the flag: no test prompts
        return [f"**Locked test: none.** The dataset's protocol ({h.get('protocol', 'leave one prompt out')}) scores every prompt "
                "out of fold and leaves no prompt to lock, as in the published results; the gate does not apply."]
    why_raw = (" The gate reads the raw verdicts: the locked test scores the final models' raw predictions rounded to the grid, "
               "because a model trained on every CV essay has no held-out predictions of its own to fit cut-points on."
               if report.get("calibrated") else "")
    return [f"**Locked test: {d['verdict'].upper()}** with candidate objective `{report['objective']}` "
            f"(proceed needs Q1 better and, for GRL/DRO, Q2 better): " + "; ".join(d["reasons"]) + "." + why_raw]


def per_prompt_md(report: dict, max_prompts: int = 12) -> list[str]:
    """A models x prompts table of per-prompt QWK (mean over seeds) with the mean and the worst
    prompt: the cross-prompt literature's table. Only for data sets with few prompts."""
    per_prompt = report.get("per_prompt_qwk") or {}
    first = next(iter(per_prompt.values()), {})
    if not first or len(first) > max_prompts:
        return []
    prompts = list(first)
    lines = ["## QWK per unseen prompt, mean over seeds (each prompt on its own scale)", "",
             "| model | " + " | ".join(prompts) + " | mean | worst |", "|---" * (len(prompts) + 3) + "|"]
    return [*lines, *per_prompt_rows(report, model_labels(report["objective"], None, report.get("inputs"))), ""]


def per_prompt_rows(report: dict, labels: dict, with_seeds: bool = False) -> list[str]:
    """One Markdown row per model of ``report["per_prompt_qwk"]``: its QWK on each prompt (mean over
    seeds), the mean over prompts ± sd over seeds, and the worst prompt; ``with_seeds`` adds the
    number of seeds to the label."""
    per_prompt = report["per_prompt_qwk"]
    prompts = list(next(iter(per_prompt.values()), {}))
    rows = []
    for stage, q in per_prompt.items():
        m = report["models"][stage]
        label = labels[stage] + (f" ({m['n_seeds']} seed{'s' if m['n_seeds'] > 1 else ''})" if with_seeds else "")
        rows.append(f"| {label} | " + " | ".join(_cell(q.get(p)) for p in prompts)
                    + f" | {_pm(m.get('qwk_within_prompt'), m.get('qwk_within_prompt_seed_sd'))} | {_cell(m.get('qwk_worst_prompt'))} |")
    return rows


def holdout_md(h: dict | None) -> list[str]:
    """decision.md's "Holdout unit" section from the report's ``holdout`` record (none: no section):
    what the locked test, if the protocol has one, and the CV folds keep whole."""
    if not h:
        return []
    if h.get("locked_test") is False or h.get("n_test_prompts") == 0:  # reports written before the flag: no test prompts
        return ["", "## Holdout unit", "", f"No locked test: the protocol ({h.get('protocol', 'leave one prompt out')}) holds out "
                f"each {h['by']} whole in a CV fold of its own."]
    lines = ["", "## Holdout unit", "", f"The locked test ({h['n_test_prompts']} prompts) and the CV folds keep whole **{h['by']}s** "
             f"(`groups: {h['by']}` in the dataset's `prepare` section: `prepare.ellipse.groups` on ELLIPSE)."]
    if h["by"] == "topic":
        lines += [f"{h['n_groups']} topics; these join several prompts (prompt names alike by `prepare.ellipse.topic_similarity`):", ""]
        lines += [f"- {', '.join(ps)}" for ps in h["multi_prompt_topics"].values()] or ["- none"]
    return lines


def decision_md(report: dict) -> str:
    """The readable decision document (reports/decision.md)."""
    rule, labels = report["rule"], report_labels(report)
    b = report["bootstrap"]
    lines = [
        "# Fine-tuning vs frozen baselines on unseen prompts: two questions, two verdicts",
        "",
        f"Rule (params.yaml `report`): {rule['text']}. Q1 metrics: {', '.join(rule['q1_metrics'])}; "
        f"Q2 metrics: {', '.join(rule['q2_metrics'])}; several metrics give better only if none says not better.",
        "",
        *verdicts_md(report),
        "",
        *calibrated_verdicts_md(report),
        *locked_test_md(report),
        "",
        "## Out-of-fold results, mean ± sd over seeds (prompt-grouped CV; every prompt unseen by the model that scored it)",
        "",
        results_table_md(report),
        "",
        *per_prompt_md(report),
        *offset_md(report),
        "",
        *(["## Every target: pooled QWK per target, mean over seeds (same CV, same half-band QWK)", "",
           traits_table_md(report), "",
           "Mean trait QWK = mean over the traits (not the primary) of each seed's pooled QWK, then mean ± sd over seeds. "
           "Q1, Q2, the calibration and the locked test read the primary target only.", ""] if traits_table_md(report) else []),
        *([f"{headline_name(report)} per seed: " + "; ".join(f"{labels[s]} " + ", ".join(f"{seed}: {_cell(v)}" for seed, v in m["seeds"].items())
                                                             for s, m in report["models"].items() if m["n_seeds"] > 1) + ".", ""]
          if any(m["n_seeds"] > 1 for m in report["models"].values()) else []),
        f"## Every paired difference, 95% bootstrap CI ({b['unit']}; {b['resamples']} resamples, {b['n_prompts']} prompts, seed {b['seed']})",
        "",
        "Gain = difference signed so that positive is better (for RMSE: first model's RMSE is lower). Seed sd = the larger "
        "of the two models' seed-to-seed sd.",
        "",
        "| comparison | metric | difference | gain | 95% CI of gain | seed sd | share of resamples gain <= 0 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, metrics in report["delta"].items():
        for key in ("qwk.pooled", "qwk.worst_quarter", "qwk.within_prompt", "offset.rms", "qwk.fold_mean", "qwk.worst_prompt", "rmse"):
            v = metrics[key]
            lines.append(f"| {name.replace('_', ' ')} | {key} | {_cell(v['delta'], 4)} | {_cell(v['gain'], 4)} "
                         f"| [{_cell(v['ci_low'], 4)}, {_cell(v['ci_high'], 4)}] | {_cell(v['seed_spread'], 4)} | {_cell(v['p_not_better'], 3)} |")
    lines += ["", "## Prompt-leakage probe", "",
              "Linear classifier (standardised features, logistic regression, stratified CV within the CV essays) predicting "
              "the prompt. Accuracy near chance = the representation carries little prompt identity. What it cannot show: the topic "
              "is in the words, so every representation names its prompt whether or not the scorer uses it; whether a model "
              "shifts an unseen prompt's scores is the prompt offset above.", "",
              "| representation | within-fold accuracy | within-fold chance | all-CV-essays accuracy | all-CV chance | prompts | dropped prompts |",
              "|---|---|---|---|---|---|---|"]
    for name, p in report["probe"].items():
        if "within_fold" in p:
            w, a = p["within_fold"], p["all_essays"]
            lines.append(f"| {labels.get(name, name)} | {_cell(w['accuracy'])} | {_cell(w['chance'])} | {_cell(a['accuracy'])} ± {_cell(a['accuracy_sd'])} "
                         f"| {_cell(a['chance'])} | {a['n_prompts']} | {', '.join(a['dropped_prompts']) or 'none'} |")
        else:
            lines.append(f"| {labels.get(name, name)} | {p.get('status')} | | | | | |")
    lines += ["", "Within-fold: the probe runs inside each CV fold (one fine-tuned model per fold; first seed), the comparable figure. "
              "All-CV-essays: one probe over every CV essay; for fine-tuned models the vectors come from a different "
              "model per fold, which a probe can tell apart, so read that column for the frozen embeddings only."]
    if any(p.get("embeddings") == "prompt_mean" for p in report["probe"].values()):
        lines += ["", "Every representation was centred on its prompt's mean before the probe (`normalise.embeddings: prompt_mean`, "
                  "transductive), as the models read it: the probe measures the prompt identity that reaches the scorer."]
    adversary = report.get("adversary")
    if adversary:  # what the reversal did to the prompt's readability on the training prompts
        lines += ["", f"GRL's adversary on the last epoch's training batches ({adversary['runs']} seed x fold runs): prompt accuracy "
                  f"{_cell(adversary['accuracy_mean'])} (range {_cell(adversary['accuracy_min'])}-{_cell(adversary['accuracy_max'])}) "
                  f"against a chance level of {_cell(adversary['chance_mean'])} (the largest training prompt's share)."]
    lines += calibration_md(report)
    lines += holdout_md(report.get("holdout"))
    lines += ["", "Figures: `plots/report/png/`. Numbers: `metrics/report.json`.", ""]
    return "\n".join(lines)
