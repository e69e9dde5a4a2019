"""Paired comparison of two prediction tables of the same stage from two experiments.

E.g. a seven-output fine-tune against an Overall-only one (``finetune.target_weights=[1,0,0,0,0,0,0]``),
same folds and seeds: does training on all seven scores change the fine-tune's Overall? Both
tables are scored on the same prompt resamples (and each one's seeds resampled) by the report's
own bootstrap (:func:`aes.report.bootstrap.prompt_bootstrap`), on the primary target or any trait
both tables predict (:func:`aes.core.artifacts.target_view`), on raw or calibrated scores
(``scores``: e.g. one model's ``prompt_spread`` scores against its own raw ones).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from aes.core.artifacts import PREDICTION_COLUMNS, target_view
from aes.core.calibration import cal_column, calibrate, calibrated_view
from aes.core.errors import AESError
from aes.core.metrics import METRIC_DIRECTION
from aes.report.bootstrap import prompt_bootstrap


def read_prediction_table(path: str | Path) -> pd.DataFrame:
    """A data/predictions/<stage>.csv file (the artifact contract), sorted by seed and record_id."""
    path = Path(path)
    if not path.is_file():
        raise AESError(f"{path}: predictions file not found (a data/predictions/<stage>.csv of some experiment)")
    oof = pd.read_csv(path, dtype={"record_id": str, "prompt": str})
    missing = [c for c in PREDICTION_COLUMNS if c not in oof.columns]
    if missing:
        raise AESError(f"{path}: missing columns {missing}; expected a prediction table with {PREDICTION_COLUMNS}")
    return oof.sort_values(["seed", "record_id"], kind="stable").reset_index(drop=True)


def check_same_essays(a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str]) -> None:
    """Both tables score the same CV essays in the same folds with the same truth (paired), else AESError."""
    first = {n: t[t["seed"] == t["seed"].min()].set_index("record_id") for n, t in zip(names, (a, b))}
    ta, tb = first[names[0]], first[names[1]]
    if set(ta.index) != set(tb.index):
        raise AESError(f"{names[0]} and {names[1]} score different essays ({len(ta)} vs {len(tb)}, "
                       f"{len(set(ta.index) ^ set(tb.index))} not in both); compare runs on the same data/prepared")
    tb = tb.loc[ta.index]
    if not np.array_equal(ta["fold"].to_numpy(), tb["fold"].to_numpy()):
        raise AESError(f"{names[0]} and {names[1]} put essays in different CV folds; compare runs on the same splits")
    if not np.allclose(ta["y_true"].to_numpy(float), tb["y_true"].to_numpy(float)):
        raise AESError(f"{names[0]} and {names[1]} disagree on the true scores (different primary target?)")
    for name, t in zip(names, (a, b)):
        sizes = t.groupby("seed").size()
        if (sizes != len(ta)).any():
            raise AESError(f"{name}: seed(s) {sizes[sizes != len(ta)].index.tolist()} do not cover every essay once")


SCORES = ("raw", "inner", "other_folds", "prompt_spread")  # what a table is scored on: raw predictions or a calibration's


def scored_view(oof: pd.DataFrame, scores: str) -> pd.DataFrame:
    """The primary target's table on ``scores``: raw, or a calibration's grid scores (columns the model
    stage wrote; a table written before them gets other_folds / prompt_spread computed here, which
    need no inner predictions)."""
    if scores == "raw":
        return oof
    if scores not in SCORES:
        raise AESError(f"unknown scores {scores!r}; expected one of {', '.join(SCORES)}")
    if cal_column(scores) not in oof.columns:
        if scores == "inner":
            raise AESError("this predictions file has no inner-calibrated scores (written before calibration); re-run its stage")
        oof = oof.assign(**{cal_column(scores): calibrate(oof, scores)[0]})
    return calibrated_view(oof, scores)


def compare_predictions(a: pd.DataFrame, b: pd.DataFrame, target: str | None = None, n_resamples: int = 2000, seed: int = 11,
                        min_prompt_n: int = 20, names: tuple[str, str] = ("A", "B"), unit: str = "prompt",
                        verdict_metrics=(), min_gain: float = 0.01, seeded: bool = True, scores: tuple[str, str] = ("raw", "raw")) -> dict:
    """Gain of A over B with its 95% prompt (or essay-within-prompt: ``unit``) x seed bootstrap CI on every headline metric.

    a, b: prediction tables of the same essays and folds (one row per essay and seed); ``seeded``:
    their models depend on the training seed, so a one-seed table leaves the seed spread unmeasured,
    as in the report (False for the deterministic ridge probes).
    target: None for the primary target, or a trait both predict; scores: what A and B are scored on
    (:func:`scored_view`; calibrated scores are the primary target's). Returns {"target", "unit",
    "n_prompts", "n_seeds": {A, B}, "point": {name: {metric: seed mean}}, "seed_sd", "delta":
    {metric: {delta, gain, ci_low, ci_high, p_not_better, n_valid, seed_spread}}}
    (:func:`prompt_bootstrap`'s keys) and, with ``verdict_metrics``, the report's verdict on them
    ("verdict": :func:`aes.report.verdicts.judge`).
    """
    from aes.report.verdicts import judge

    if names[0] == names[1]:
        names = (f"{names[0]} (A)", f"{names[1]} (B)")
    check_same_essays(a, b, names)
    if target is not None and scores != ("raw", "raw"):
        raise AESError(f"calibrated scores are the primary target's; compare trait {target!r} on raw scores")
    views = {names[0]: scored_view(target_view(a, target), scores[0]), names[1]: scored_view(target_view(b, target), scores[1])}
    boot = prompt_bootstrap(views, [("a_vs_b", *names)], n_resamples, seed, min_prompt_n, unit, seeded=names if seeded else ())
    out = {"target": target or "primary", "scores": list(scores), "unit": unit, "n_prompts": boot["n_prompts"], "n_seeds": boot["n_seeds"],
           "point": boot["point"], "seed_sd": boot["seed_sd"], "delta": boot["pairs"]["a_vs_b"]}
    if verdict_metrics:
        out["verdict"] = judge(out["delta"], list(verdict_metrics), min_gain)
    return out


def comparison_md(result: dict, names: tuple[str, str], metrics=tuple(METRIC_DIRECTION)) -> str:
    """A Markdown table of :func:`compare_predictions`' result for ``metrics``."""
    a, b = names if names[0] != names[1] else (f"{names[0]} (A)", f"{names[1]} (B)")
    unit = result.get("unit", "prompt").replace("_", " ")
    lines = [f"Target: {result['target']}; {result['n_prompts']} prompts; seeds {result['n_seeds'][a]} (A) and {result['n_seeds'][b]} (B). "
             "Gain = A - B signed so that positive is better.", "",
             f"| metric | A | B | gain | 95% CI of gain ({unit} x seed) | seed sd | share of resamples gain <= 0 |",
             "|---|---|---|---|---|---|---|"]
    fmt = lambda x, d=4: "–" if x is None else f"{x:.{d}f}"  # noqa: E731
    for m in metrics:
        d = result["delta"][m]
        lines.append(f"| {m} | {fmt(result['point'][a][m])} | {fmt(result['point'][b][m])} | {fmt(d['gain'])} "
                     f"| [{fmt(d['ci_low'])}, {fmt(d['ci_high'])}] | {fmt(d['seed_spread'])} | {fmt(d['p_not_better'], 3)} |")
    if "verdict" in result:
        v = result["verdict"]
        lines += ["", f"A vs B on {', '.join(v['metrics'])}: **{v['verdict']}** ("
                  + "; ".join(f"{m}: {x['why']}" for m, x in v["metrics"].items()) + ")"]
    return "\n".join(lines)
