"""The two questions' verdicts: better / not better / inconclusive, from a gain, its CI and the seed spread.

Q1: does fine-tuning (ERM; its head reads the writing features beside the text when
``finetune.features`` names groups) beat the strongest frozen model (the best pooled QWK among the
frozen stages: the choice that favours the baseline)? Q2: does each invariance objective (GRL, DRO)
beat ERM? Each is judged on every metric the params list (``report.q1_metrics`` /
``report.q2_metrics``), from the paired prompt x seed bootstrap (:mod:`aes.report.bootstrap`).

The rule, for a gain signed so that positive is better:

1. the 95% CI spans 0                                  -> inconclusive (by CI)
2. else |gain| <= the seed-to-seed sd (seed_spread)    -> inconclusive (by seed spread);
   a seeded model (XGBoost, a fine-tune) run with ONE seed has no measured sd -> inconclusive
3. else gain > 0 and gain >= min_gain                  -> better
4. else                                                -> not better (worse, or a real gain below min_gain)

Several metrics combine into one verdict per comparison: better if at least one metric says
better and none says not better; not better if at least one says not better and none says
better; otherwise inconclusive (mixed or all inconclusive).

The decision (:func:`answer_questions`, read by stage final_test) proceeds with the candidate
``objective`` only when Q1 says better and, for GRL or DRO, Q2 says better for it too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from aes.core.errors import AESError
from aes.core.metrics import METRIC_DIRECTION, POOLED_METRICS, is_single_scale
from aes.core.registry import ERM_STAGE, FROZEN_STAGES, OBJECTIVE_STAGES, SEEDED_STAGES
from aes.report.bootstrap import prompt_bootstrap

BETTER, NOT_BETTER, INCONCLUSIVE = "better", "not better", "inconclusive"


def check_metrics(keys, param: str) -> list[str]:
    """``keys`` if every one is a known metric, else AESError naming ``param`` and the valid keys."""
    unknown = [k for k in keys if k not in METRIC_DIRECTION]
    if unknown or not keys:
        raise AESError(f"params.yaml: {param} names unknown metric(s) {unknown or '(none given)'}; valid keys: {', '.join(METRIC_DIRECTION)}")
    return list(keys)


def verdict(gain, ci_low, ci_high, seed_spread, min_gain: float, spread_unmeasured: bool = False) -> dict:
    """One metric's verdict. All inputs in the metric's units; None when undefined.
    spread_unmeasured: a model of the pair depends on its seed but was run with one seed, so a
    gain outside the CI may still be a lucky seed.

    Returns {"outcome", "why", "gain", "ci_low", "ci_high", "seed_spread"}.
    """
    numbers = {"gain": gain, "ci_low": ci_low, "ci_high": ci_high, "seed_spread": seed_spread}
    if gain is None or ci_low is None or ci_high is None:
        return {"outcome": INCONCLUSIVE, "why": "the gain or its CI is undefined", **numbers}
    spread = seed_spread or 0.0
    if ci_low <= 0 <= ci_high:
        why, outcome = f"95% CI [{ci_low:+.4f}, {ci_high:+.4f}] spans 0", INCONCLUSIVE
    elif abs(gain) <= spread:
        why, outcome = f"|gain| {abs(gain):.4f} is within the seed-to-seed sd {spread:.4f}", INCONCLUSIVE
    elif spread_unmeasured:
        why, outcome = (f"gain {gain:+.4f} with CI [{ci_low:+.4f}, {ci_high:+.4f}] off 0, but a seeded model ran one seed: "
                        "the seed-to-seed sd is unmeasured"), INCONCLUSIVE
    elif gain > 0 and gain >= min_gain - 1e-12:
        why, outcome = f"gain {gain:+.4f} >= min_gain {min_gain:g}, CI above 0, beyond the seed sd {spread:.4f}", BETTER
    elif gain > 0:
        why, outcome = f"a real but small gain {gain:+.4f} < min_gain {min_gain:g}", NOT_BETTER
    else:
        why, outcome = f"worse: gain {gain:+.4f}, CI [{ci_low:+.4f}, {ci_high:+.4f}] below 0", NOT_BETTER
    return {"outcome": outcome, "why": why, **numbers}


def combine(outcomes) -> str:
    """One verdict from several metrics' outcomes (rule in the module docstring)."""
    outcomes = list(outcomes)
    if BETTER in outcomes and NOT_BETTER not in outcomes:
        return BETTER
    if NOT_BETTER in outcomes and BETTER not in outcomes:
        return NOT_BETTER
    return INCONCLUSIVE


def judge(pair: dict, metrics, min_gain: float) -> dict:
    """Verdict of one bootstrap pair (``prompt_bootstrap(...)["pairs"][name]``) on ``metrics``.

    Returns {"verdict": combined outcome, "metrics": {metric: :func:`verdict` dict}}.
    """
    per_metric = {m: verdict(pair[m]["gain"], pair[m]["ci_low"], pair[m]["ci_high"], pair[m]["seed_spread"], min_gain,
                             pair[m].get("spread_unmeasured", False)) for m in metrics}
    return {"verdict": combine(v["outcome"] for v in per_metric.values()), "metrics": per_metric}


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
    if rp["calibration"] in ("inner", "other_folds"):
        raise AESError(f"report.calibration: {rp['calibration']}, but the prompts have different score scales; cut-points fitted on "
                       "other prompts' grids cannot score an unseen prompt on its own. Set report.calibration: prompt_spread "
                       "(label-free, transductive) or none (profiles/asap.args)")


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


def answer_questions(boot: dict, rp: dict, objective: str) -> dict:
    """Q1, Q2 and the decision block from the bootstrap (``prompt_bootstrap(...)``; see the module docstring)."""
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


def bootstrap_answers(oofs: dict, point: dict, rp: dict, objective: str) -> tuple[dict, list, dict]:
    """The paired bootstrap of every comparison and the answers to Q1 and Q2 for one kind of scores.

    oofs: {stage: prediction table scored as it stands (raw, or a calibrated view)}; point: {stage:
    {Q1's first metric: its value}}, which picks Q1's reference (:func:`strongest_frozen`). Returns
    (``prompt_bootstrap(...)``, the compared pairs, :func:`answer_questions`)."""
    pairs = comparison_pairs(strongest_frozen(point, rp["q1_metrics"][0]))
    boot = prompt_bootstrap(oofs, pairs, rp["bootstrap_resamples"], rp["bootstrap_seed"], rp["min_prompt_n"], rp["bootstrap_unit"],
                            seeded=SEEDED_STAGES)
    return boot, pairs, answer_questions(boot, rp, objective)


def rule_block(rp: dict) -> dict:
    """The rule as report.json states it: the metrics, thresholds and the rule in words."""
    return {
        "q1_metrics": rp["q1_metrics"], "q2_metrics": rp["q2_metrics"], "min_gain": rp["min_gain"], "min_prompt_n": rp["min_prompt_n"],
        "text": ("per metric: inconclusive if the 95% prompt x seed bootstrap CI of the gain spans 0 or |gain| <= the "
                 "seed-to-seed sd (the larger of the two models') or a model that depends on its seed ran one seed (its seed sd "
                 f"unmeasured); else better if gain >= {rp['min_gain']:g}, otherwise not better"),
    }
