"""Paired prompt x seed bootstrap of the difference between two prediction files of one stage.

    python -m aes.ops.compare_heads A.csv B.csv [--target Overall|Cohesion|...] [--metrics qwk.pooled rmse] [--unit ...] [--verdict ...]
        [--scores raw|inner|other_folds|prompt_spread raw|...]

A and B are data/predictions/<stage>.csv of two experiments on the same folds and seeds, e.g. the
seven-output fine-tune and an Overall-only one (`dvc exp run -S 'finetune.target_weights=[1,0,0,0,0,0,0]'`,
its file taken with `dvc exp show`/`git show` or copied aside). Prints a Markdown table of the gain
of A over B with its 95% CI and the report's verdict (better / not better / inconclusive) on
``--verdict`` metrics; --json writes the numbers. Resamples, seed, unit, verdict metrics and min_gain
default to params.yaml's report section (the report's own bootstrap and rule), e.g. the same fine-tune
with and without prompt-normalised inputs (``normalise``), on ASAP with its profile's settings.
``--scores`` scores A and B on raw or calibrated scores (aes/core/calibration.py), so one file
against itself with ``--scores prompt_spread raw`` measures what a calibration does to that model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aes.core.errors import stage_main
from aes.core.metrics import METRIC_DIRECTION
from aes.core.registry import MODEL_STAGES, SEEDED_STAGES
from aes.report.compare import SCORES, compare_predictions, comparison_md, read_prediction_table


def is_seeded(path: Path) -> bool:
    """Whether the predictions file's model depends on its training seed: a file named after a stage
    (``data/predictions/<stage>.csv``) is as that stage is (the ridge probes are not); any other name counts as seeded."""
    return path.stem not in MODEL_STAGES or path.stem in SEEDED_STAGES


@stage_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m aes.ops.compare_heads", description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="predictions file A (the gain is A - B)")
    parser.add_argument("b", type=Path, help="predictions file B")
    parser.add_argument("--target", default=None, help="a trait both files predict (default: the primary target)")
    parser.add_argument("--metrics", nargs="*", default=["qwk.pooled", "qwk.worst_quarter", "rmse"], choices=list(METRIC_DIRECTION))
    parser.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default: params.yaml report.bootstrap_resamples)")
    parser.add_argument("--seed", type=int, default=None, help="bootstrap seed (default: params.yaml report.bootstrap_seed)")
    parser.add_argument("--min-prompt-n", type=int, default=None, help="default: params.yaml report.min_prompt_n")
    parser.add_argument("--unit", choices=("prompt", "essay_within_prompt"), default=None,
                        help="what the bootstrap resamples besides seeds (default: params.yaml report.bootstrap_unit)")
    parser.add_argument("--verdict", nargs="*", default=None, choices=list(METRIC_DIRECTION),
                        help="metrics the report's verdict rule reads (default: params.yaml report.q2_metrics)")
    parser.add_argument("--scores", nargs=2, default=["raw", "raw"], choices=SCORES, metavar="SCORES",
                        help=f"what A and B are scored on, one of {', '.join(SCORES)} each (default: raw raw)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    report = {"bootstrap_resamples": 2000, "bootstrap_seed": 11, "min_prompt_n": 20, "bootstrap_unit": "prompt",
              "q2_metrics": ["qwk.pooled"], "min_gain": 0.01}
    if args.params.exists():
        from aes.data.params import load_params

        report = load_params(args.params)["report"]
    names = (str(args.a), str(args.b))
    result = compare_predictions(read_prediction_table(args.a), read_prediction_table(args.b), args.target,
                                 args.resamples or report["bootstrap_resamples"],
                                 report["bootstrap_seed"] if args.seed is None else args.seed,
                                 args.min_prompt_n or report["min_prompt_n"], names, args.unit or report["bootstrap_unit"],
                                 report["q2_metrics"] if args.verdict is None else args.verdict, report["min_gain"],
                                 seeded=is_seeded(args.a) or is_seeded(args.b), scores=tuple(args.scores))
    print(f"A = {args.a} ({args.scores[0]} scores)\nB = {args.b} ({args.scores[1]} scores)\n")
    print(comparison_md(result, names, args.metrics))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
