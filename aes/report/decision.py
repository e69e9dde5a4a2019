"""Which stage is which, and the proceed/defer rule applied to the candidate vs the baseline."""

from __future__ import annotations

from aes.core.errors import AESError
from aes.core.metrics import finite_or_none
from aes.report.bootstrap import METRIC_DIRECTION


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
        "gain": finite_or_none(gain) if gain is not None else None,
        "gain_ci_low": ci_low,
        "gain_ci_high": ci.get(metric, {}).get("ci_high"),
        "worst_prompt_drop": finite_or_none(drop) if drop is not None else None,
        "reasons": reasons or [f"gain on {metric} {_fmt(gain)} >= {min_gain:g}, CI above 0, worst-prompt drop {_fmt(drop)} within tolerance"],
    }


def _fmt(x) -> str:
    return "undefined" if x is None else f"{x:+.4f}"
