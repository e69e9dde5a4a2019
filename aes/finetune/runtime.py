"""Where and how a fine-tuning model runs: the accelerator (device, mixed precision, gradient
accumulation) and batched prediction, shared by the frozen pass, the fold loop and the locked test."""

from __future__ import annotations

import numpy as np

from aes.core.errors import AESError
from aes.encoders.embedding import check_bf16
from aes.finetune.backbones import Backbone, Prepared


def make_accelerator(ft: dict):
    """An ``accelerate.Accelerator`` for ``finetune.device`` / ``mixed_precision`` / ``grad_accum_steps``."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    has_gpu = torch.cuda.is_available()
    if ft["device"] == "cuda" and not has_gpu:
        raise AESError("finetune.device is 'cuda' but no CUDA GPU is visible (use 'auto' or 'cpu')")
    use_gpu = has_gpu and ft["device"] != "cpu"
    if ft["mixed_precision"] == "fp16" and not use_gpu:
        raise AESError(
            "finetune.mixed_precision is 'fp16' but training runs on the CPU (no GPU visible or finetune.device: cpu); "
            "use \"bf16\" (CPU autocast, fast on CPUs with AVX512-BF16 or AMX) or \"no\""
        )
    if ft["mixed_precision"] == "bf16":
        check_bf16("finetune.mixed_precision", "cuda" if use_gpu else "cpu")
    # One process may run several stages (tests): accelerate keeps singletons, start them afresh.
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    return Accelerator(cpu=not use_gpu, mixed_precision=ft["mixed_precision"], gradient_accumulation_steps=ft["grad_accum_steps"])


def predict_batches(model, backbone: Backbone, data: Prepared, rows: np.ndarray, batch_size: int, accelerator):
    """(pred_z (m, T), pooled (m, H)) float32 numpy for essay rows (m,), in that order; longest essays first.

    T: the model's outputs (one per target).
    """
    import torch

    model.eval()
    pred = np.zeros((len(rows), model.head.out_features), dtype=np.float32)
    pooled = np.zeros((len(rows), backbone.hidden_size), dtype=np.float32)
    order = np.argsort(-data.lengths[rows], kind="stable")
    # A text-only model (the pristine one that gives a probe its pooled inputs) ignores the essays' writing features.
    reads_features = getattr(accelerator.unwrap_model(model), "n_features", 0) > 0
    with torch.inference_mode(), accelerator.autocast():
        for start in range(0, len(rows), batch_size):
            pos = order[start : start + batch_size]
            batch = backbone.batch_inputs(data, rows[pos])
            if not reads_features:
                batch.pop("features", None)
            inputs = {k: v.to(accelerator.device) for k, v in batch.items()}
            p, z = model(**inputs)
            pooled[pos] = p.float().cpu().numpy()
            pred[pos] = z.float().cpu().numpy().reshape(len(pos), -1)
    return pred, pooled
