"""finetune_cv | grl_cv | dro_cv: fine-tune the encoder with one objective, prompt-grouped CV.

Usage: python -m stages.train_cv --objective erm|grl|dro  (stage finetune_cv, grl_cv, dro_cv).
Reads the frozen pass and the linear probes of stage lp_cv. Writes the model artifact contract
(aes/core/artifacts.py), models/<stage>/seed_<s>/fold_<k>/,
data/representations/<stage>.npy + <stage>_ids.csv and DVCLive curves at dvclive/<stage>.
"""

import argparse

from aes.core.errors import stage_main
from aes.core.metrics import headline_text
from aes.core.registry import stage_for_objective
from aes.data.params import load_params
from aes.finetune.cv import run_cv


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", required=True, help="erm | grl | dro")
    parser.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    args = parser.parse_args()
    stage = stage_for_objective(args.objective)  # AESError for an unknown objective
    metrics = run_cv(load_params(args.params), args.objective)
    print(f"{stage}: {headline_text(metrics)}, runtime {metrics['runtime_s']:.0f}s")


if __name__ == "__main__":
    main()
