"""Constructed model outputs for report / final_test tests (no training, no real essays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from aes.core.artifacts import make_oof_frame, write_model_outputs
from aes.core.io import write_json

# Prediction noise (sd, score points) per stage: smaller noise = better model.
DEFAULT_NOISE = {"gbm_cv": 0.55, "finetune_cv": 0.45, "grl_cv": 0.42, "dro_cv": 0.35}


def make_cv_essays(n_prompts: int = 15, per_prompt: int = 40, n_folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """CV essays without text: record_id, prompt, grade, y (half bands), fold (prompt-grouped)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        for i in range(per_prompt):
            rows.append({"record_id": f"r{p:02d}{i:04d}", "prompt": f"Prompt {p:02d}", "grade": int(rng.choice([8, 9, 10, 11, 12])),
                         "y": float(np.clip(np.round(rng.normal(3.0, 0.7) * 2) / 2, 1.0, 5.0)), "fold": p % n_folds})
    return pd.DataFrame(rows)


def write_fake_workspace(root: Path, noise: dict | None = None, seed: int = 0, stages=None, representations: bool = True,
                         curves: bool = True, n_prompts: int = 15, per_prompt: int = 40) -> pd.DataFrame:
    """Write metrics/, data/predictions/, data/embeddings/, data/representations/ and dvclive/ under root.

    Representations: frozen embeddings encode the prompt strongly; fine-tuned ones weakly.
    Returns the CV essays.
    """
    root = Path(root)
    noise = {**DEFAULT_NOISE, **(noise or {})}
    essays = make_cv_essays(n_prompts, per_prompt, seed=seed)
    rng = np.random.default_rng(seed + 1)
    n = len(essays)
    for stage in stages or DEFAULT_NOISE:
        pred = essays["y"].to_numpy() + rng.normal(0.0, noise[stage], n)
        write_model_outputs(stage, make_oof_frame(essays, essays["fold"].to_numpy(), pred), 1.0, 20, root=root)
    splits = {"dataset_sha256": "fake", "params": {"groups": "prompt"}, "test": {"prompts": ["Prompt T"], "record_ids": []},
              "folds": [{"fold": int(k), "val_prompts": sorted(essays.loc[essays["fold"] == k, "prompt"].unique().tolist())}
                        for k in sorted(essays["fold"].unique())]}
    write_json(root / "data/prepared/splits.json", splits)
    if representations:
        prompt_code = pd.factorize(essays["prompt"])[0]
        centers = rng.normal(0, 1, (n_prompts, 16))
        emb = centers[prompt_code] * 3 + rng.normal(0, 1, (n, 16))
        (root / "data/embeddings").mkdir(parents=True, exist_ok=True)
        np.save(root / "data/embeddings/embeddings.npy", emb)
        essays[["record_id"]].to_csv(root / "data/embeddings/record_ids.csv", index=False)
        (root / "data/representations").mkdir(parents=True, exist_ok=True)
        for stage in ("finetune_cv", "grl_cv", "dro_cv"):
            rep = centers[prompt_code] * (0.05 if stage == "grl_cv" else 0.5) + rng.normal(0, 1, (n, 16))
            order = rng.permutation(n)  # files need not be in essay order
            np.save(root / f"data/representations/{stage}.npy", rep[order])
            essays[["record_id"]].iloc[order].to_csv(root / f"data/representations/{stage}_ids.csv", index=False)
    if curves:
        for stage in ("finetune_cv", "grl_cv", "dro_cv"):
            for k in range(2):
                d = root / f"dvclive/{stage}/plots/metrics/fold{k}"
                d.mkdir(parents=True, exist_ok=True)
                steps = np.arange(20)
                pd.DataFrame({"step": steps, "train_loss": 1.5 * np.exp(-steps / 8) + 0.2 + 0.05 * k}).to_csv(d / "train_loss.tsv", sep="\t", index=False)
                if stage == "grl_cv":
                    pd.DataFrame({"step": steps, "adversary_acc": 0.3 - 0.01 * steps}).to_csv(d / "adversary_acc.tsv", sep="\t", index=False)
                if stage == "dro_cv":
                    pd.DataFrame({"step": steps, "dro_max_weight": 0.1 + 0.01 * steps}).to_csv(d / "dro_max_weight.tsv", sep="\t", index=False)
    return essays
