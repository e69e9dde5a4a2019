"""lp_cv: the linear probe per fold on the fine-tune's frozen pass (LP-FT's first phase).

Reads the frozen pass of stage embed (data/frozen_pass), fits the ridge probe per fold on the
pretrained model's pooled output and the writing features (models/lp_cv/probes.json) and writes
the model artifact contract for it: the frozen reference with the same model, input length and
features as the fine-tune.
"""

from aes.core.errors import stage_main
from aes.core.metrics import headline_text
from aes.core.registry import LP_STAGE
from aes.data.params import load_params
from aes.finetune.lp import run_lp_cv


@stage_main
def main() -> None:
    metrics = run_lp_cv(load_params())
    print(f"{LP_STAGE}: {headline_text(metrics)}, alpha per fold {list(metrics['alpha'].values())}")


if __name__ == "__main__":
    main()
