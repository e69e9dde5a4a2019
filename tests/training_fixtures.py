"""A tiny repository for the fine-tuning tests: params.yaml + prepared essays + splits.json."""

from __future__ import annotations

import contextlib
from pathlib import Path

from aes.core.io import sha256_file, write_json
from aes.data.clean import validate_and_clean
from aes.data.ellipse import ELLIPSE
from aes.data.params import load_params
from aes.data.registry import prepare_settings
from aes.data.splits import build_splits
from tests.committed import committed_params
from tests.synthetic import make_ellipse_frame
from tests.yamlio import dump_yaml

ROOT = Path(__file__).resolve().parents[1]


def make_training_repo(root: Path, model: Path, n_prompts: int = 8, per_prompt: int = 6, **finetune) -> dict:
    """Write ``root/params.yaml`` and ``root/data/prepared/{essays.csv,splits.json}``; return the params.

    CV: 3 prompt-grouped folds over the non-test prompts; the finetune section is shrunk to the
    tiny encoder (64 tokens, 2 epochs, one seed, full precision: bf16 autocast on a CPU is slow
    and not what these tests check) and updated with ``finetune``. The ridge probes of lp_cv
    use 2 inner folds. ``embed`` names the same tiny encoder and length, so stage embed's one forward
    pass is also the fine-tune's frozen pass. No stage has run: call :func:`run_frozen_stages` before
    :func:`aes.finetune.cv.run_cv` (the fine-tuning stages read embed's frozen pass and lp_cv's probes).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    params = committed_params()
    params["prepare"]["ellipse"].update(n_folds=3, test_candidates=20, test_fraction=0.25)
    params["finetune"].update(model=str(model), max_length=64, batch_size=8, eval_batch_size=16, epochs=2,
                              trainable_layers=1, encoder_lr=1e-3, head_lr=1e-2, warmup_ratio=0.0,
                              seeds=[7], mixed_precision="no")
    params["finetune"].update(finetune)
    params["embed"].update(model=str(model), max_length=params["finetune"]["max_length"], batch_size=16, mixed_precision="no")
    params["linear"].update(inner_folds=2)
    params["report"].update(min_prompt_n=3)
    (root / "params.yaml").write_text(dump_yaml(params))
    corpus = make_ellipse_frame(n_prompts=n_prompts, per_prompt=per_prompt, seed=3, words=(200, 240))
    corpus["source_file"], corpus["source_row"] = "synthetic.csv", range(1, len(corpus) + 1)
    settings = prepare_settings(params)
    essays, _ = validate_and_clean(corpus, settings, ELLIPSE)
    prepared = root / "data" / "prepared"
    prepared.mkdir(parents=True, exist_ok=True)
    essays.to_csv(prepared / "essays.csv", index=False)
    write_json(prepared / "splits.json", build_splits(essays, settings, sha256_file(prepared / "essays.csv")))
    return load_params(root / "params.yaml")


def run_frozen_stages(params: dict, root: Path) -> dict:
    """Stages embed (embeddings + the frozen pass) and lp_cv (the probes) in ``root``; lp_cv's metrics."""
    from aes.finetune.embed import run_embed
    from aes.finetune.lp import run_lp_cv

    run_embed(params, root)
    return run_lp_cv(params, root)


@contextlib.contextmanager
def one_torch_thread():
    """Run torch on one intra-op thread, then restore the count.

    The tiny test encoder gains nothing from several threads, and on a busy 2-core machine they
    spin-wait for each other: training is then 5-10x slower than on one thread.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def with_finetune(params: dict, **finetune) -> dict:
    """A copy of ``params`` (every section copied one level deep, so editing the copy leaves the
    original alone) with the ``finetune`` keys overridden."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in params.items()}
    out["finetune"].update(finetune)
    return out
