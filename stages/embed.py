"""embed: the frozen encoder over the CV essays (the locked test is never read).

Writes the mean-pooled embeddings of the frozen baselines (data/embeddings) and the fine-tune's
frozen pass (data/frozen_pass: pooled output, trunk hidden states, writing features), in ONE
forward pass when ``embed`` and ``finetune`` name the same model and max_length.
"""

from aes.core.errors import stage_main
from aes.core.registry import EMBED
from aes.data.params import load_params
from aes.finetune.embed import run_embed


@stage_main
def main() -> None:
    metrics = run_embed(load_params())
    shared = metrics["frozen_pass"]["shared_with_embeddings"]
    print(f"{EMBED}: {metrics['n_essays']} CV essays -> {metrics['dim']}-d in {metrics['runtime_s']:.0f} s; the fine-tune's frozen pass "
          + ("came from the same forward pass" if shared else f"ran on its own ({metrics['frozen_pass']['own_pass_s']:.0f} s)"))


if __name__ == "__main__":
    main()
