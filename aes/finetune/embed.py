"""Stage embed: the frozen baselines' embeddings and the fine-tune's frozen pass over the CV essays.

One forward pass when ``embed`` and ``finetune`` share model and length (:mod:`aes.finetune.frozen_pass`),
with the essays' writing features when ``finetune.features`` names groups. Nothing here trains:
the stage depends on the encoder, the frozen pass and the writing features, not on the fold loop
or its objectives.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from aes.core.io import write_json
from aes.core.machine import compute_fingerprint
from aes.core.registry import EMBED, EMBED_METRICS, EMBEDDINGS, FROZEN_PASS
from aes.data.registry import dataset_of
from aes.encoders.embedding import resolve_device
from aes.encoders.store import save_embeddings
from aes.finetune.folds import load_cv
from aes.finetune.frozen_pass import embed_and_freeze, save_frozen_pass


def run_embed(params: dict, root: Path = Path(".")) -> dict:
    """Stage embed: the frozen baselines' embeddings (data/embeddings) and the fine-tune's frozen pass
    (data/frozen_pass) over the CV essays, one forward pass when they share model and length; returns
    the metrics (metrics/embed.json). The locked test is never read."""
    embed, ft = params["embed"], params["finetune"]
    cv = load_cv(root)
    started = time.perf_counter()
    embeddings, frozen, info = embed_and_freeze(embed, ft, cv["text"].tolist(), cv["record_id"], EMBED,
                                             dataset_of(params).text_repair)
    runtime_s = time.perf_counter() - started  # includes loading the encoder(s) and the writing features
    save_embeddings(root / EMBEDDINGS, embeddings, cv["record_id"])
    save_frozen_pass(root / FROZEN_PASS, frozen)
    metrics = {
        "n_essays": int(len(cv)), "dim": int(embeddings.shape[1]), "model": embed["model"],
        "max_length": embed["max_length"], "mixed_precision": embed["mixed_precision"], "runtime_s": round(runtime_s, 1),
        "essays_per_s": round(len(cv) / runtime_s, 2), "compute": compute_fingerprint(embed["mixed_precision"], resolve_device("auto")),
        "frozen_pass": {"shared_with_embeddings": info["shared"], "own_pass_s": info["frozen_pass_s"], "max_length": ft["max_length"],
                        "trainable_layers": ft["trainable_layers"], "mean_tokens": round(float(np.mean(frozen.lengths)), 1),
                        "features": list(frozen.feature_groups),
                        "n_writing_features": 0 if frozen.features is None else int(frozen.features.shape[1])},
    }
    write_json(root / EMBED_METRICS, metrics)
    return metrics
