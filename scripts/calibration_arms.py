"""Every model's calibrated scores against its raw ones, the two cut-point methods against each other,
and Q1/Q2 on each calibration's scores, from one workspace's prediction tables (no training).

    .venv/bin/python scripts/calibration_arms.py ROOT OUT.json [--metric qwk.pooled] [--unit prompt]
    .venv/bin/python scripts/calibration_arms.py ../runs/asap bench/asap_prompt_spread.json --metric qwk.within_prompt --unit essay_within_prompt

ROOT is a repository whose model stages have run (``data/predictions/<stage>.csv``). Each
comparison is :func:`aes.report.compare.compare_predictions` (the report's paired bootstrap and
verdict rule; 2000 resamples, seed 11) on ``--metric``. A method a table cannot use (cut-points on
ASAP's several grids; ``inner`` on a table written before calibration) is listed with the reason.
"""

import argparse
import json
import subprocess
import time
from pathlib import Path

from aes.core.errors import AESError
from aes.core.registry import ERM_STAGE, FROZEN_STAGES, MODEL_STAGES, OBJECTIVE_STAGES, SEEDED_STAGES
from aes.core.metrics import metric_value, summarize_seeds
from aes.report.compare import compare_predictions, read_prediction_table, scored_view

METHODS = ("inner", "other_folds", "prompt_spread")

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("root", type=Path)
parser.add_argument("out", type=Path)
parser.add_argument("--metric", default="qwk.pooled")
parser.add_argument("--unit", default="prompt", choices=("prompt", "essay_within_prompt"))
args = parser.parse_args()

tables = {s: read_prediction_table(args.root / "data" / "predictions" / f"{s}.csv") for s in MODEL_STAGES}


def compare(a: str, b: str, scores: tuple[str, str]) -> dict:
    """Gain of stage a (scores[0]) over stage b (scores[1]) on the metric, its CI and the verdict."""
    r = compare_predictions(tables[a], tables[b], None, 2000, 11, 20, (f"{a}:{scores[0]}", f"{b}:{scores[1]}"), args.unit,
                            [args.metric], 0.01, seeded=a in SEEDED_STAGES or b in SEEDED_STAGES, scores=scores)
    names = list(r["point"])
    d = r["delta"][args.metric]
    return {"a": r["point"][names[0]][args.metric], "b": r["point"][names[1]][args.metric], "gain": d["gain"],
            "ci": [d["ci_low"], d["ci_high"]], "seed_spread": d["seed_spread"], "verdict": r["verdict"]["verdict"]}


started = time.perf_counter()
commit = subprocess.run(["git", "-C", str(args.root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
out = {"workspace_commit": commit, "metric": args.metric, "unit": args.unit, "resamples": 2000, "bootstrap_seed": 11,
       "method_vs_raw": {}, "inner_vs_other_folds": {}, "questions": {}, "undefined": {}}
usable = []
for method in METHODS:
    try:
        for stage in MODEL_STAGES:
            out["method_vs_raw"].setdefault(stage, {})[method] = compare(stage, stage, (method, "raw"))
        usable.append(method)
    except AESError as err:
        out["undefined"][method] = str(err)
        for stage in MODEL_STAGES:
            out["method_vs_raw"].get(stage, {}).pop(method, None)
    print(method, "done" if method in usable else "undefined", flush=True)
if {"inner", "other_folds"} <= set(usable):
    out["inner_vs_other_folds"] = {s: compare(s, s, ("inner", "other_folds")) for s in MODEL_STAGES}
for scores in ["raw", *usable]:
    # Q1's reference: the strongest frozen model on these scores, as the report picks it
    frozen = max(FROZEN_STAGES, key=lambda s: metric_value(summarize_seeds(scored_view(tables[s], scores), 20), args.metric))
    q = {"reference": frozen, "q1_erm_vs_reference": compare(ERM_STAGE, frozen, (scores, scores))}
    for objective, stage in OBJECTIVE_STAGES.items():
        if stage != ERM_STAGE:
            q[f"q2_{objective}_vs_erm"] = compare(stage, ERM_STAGE, (scores, scores))
    out["questions"][scores] = q
    print(scores, "questions done", flush=True)
out["seconds"] = round(time.perf_counter() - started, 1)
args.out.write_text(json.dumps(out, indent=2) + "\n")
print(json.dumps(out["questions"], indent=1)[:3000])
