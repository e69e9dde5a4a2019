"""The report's inputs: the model stages' artifacts (metrics and out-of-fold predictions), checked
to be paired and fresh, and what the splits keep whole.

Conventions: ``oof`` is a prediction table of the artifact contract (one row per CV essay and
seed: record_id, fold, seed, prompt, grade, y_true, y_pred_raw, y_pred, residual and the scale
columns; :mod:`aes.core.artifacts`), each score on its own row's scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from aes.core.artifacts import read_metrics, read_predictions
from aes.core.errors import AESError
from aes.core.metrics import metric_value
from aes.core.registry import SPLITS, metrics_path, predictions_path, stage_for_objective
from aes.data.splits import load_splits


def load_model_outputs(stages, objective: str | None = None, root: Path = Path(".")) -> dict[str, dict]:
    """Read metrics + out-of-fold predictions of each stage.

    Returns {stage: {"metrics": dict, "oof": DataFrame sorted by seed, record_id}}. A missing
    file raises AESError naming the stage, the file and `dvc repro <stage>`; the candidate's stage
    gets a message that says the objective has no trained results. All stages must cover the same
    essays (the comparison is paired), every seed of a stage all of them.
    """
    out: dict[str, dict] = {}
    cand = stage_for_objective(objective) if objective is not None else None
    for stage in stages:
        for path in (metrics_path(stage, root), predictions_path(stage, root)):
            if not path.exists():
                why = f"objective '{objective}' (the candidate) has no trained results: " if stage == cand else ""
                raise AESError(f"{why}{path} of stage '{stage}' not found; run `dvc repro {stage}` first")
        oof = read_predictions(stage, root)
        oof["record_id"] = oof["record_id"].astype(str)
        oof["prompt"] = oof["prompt"].astype(str)
        oof = oof.sort_values(["seed", "record_id"], kind="stable").reset_index(drop=True)
        out[stage] = {"metrics": read_metrics(stage, root), "oof": oof}
    first = next(iter(out), None)
    for stage, item in out.items():
        a = first_seed(out[first]["oof"])
        for _, b in item["oof"].groupby("seed", sort=True):
            if len(a) != len(b) or not np.array_equal(a["record_id"].to_numpy(), b["record_id"].to_numpy()):
                raise AESError(
                    f"{predictions_path(stage, root)} (seed {b['seed'].iloc[0]}) covers different essays than "
                    f"{predictions_path(first, root)} ({len(b)} vs {len(a)} rows); re-run `dvc repro {stage} {first}` on the same data/prepared"
                )
            if not np.allclose(a["y_true"].to_numpy(), b["y_true"].to_numpy()):
                raise AESError(f"{predictions_path(stage, root)}: y_true differs from {predictions_path(first, root)} (stale stage?)")
    return out


def first_seed(oof: pd.DataFrame) -> pd.DataFrame:
    """The rows of the first (lowest) seed: one row per essay."""
    return oof[oof["seed"] == oof["seed"].min()].reset_index(drop=True)


def check_consistency(stage: str, metrics: dict, point: dict, root: Path = Path(".")) -> None:
    """The metrics file and the predictions file of a stage must tell the same story (not stale)."""
    for key in ("qwk.pooled", "qwk.within_prompt", "rmse"):
        stored = metric_value(metrics, key)
        if stored is not None and point[key] is not None and abs(stored - point[key]) > 1e-4:
            raise AESError(
                f"{metrics_path(stage, root)} says {key}={stored} but {predictions_path(stage, root)} gives {point[key]}; "
                f"one of them is stale: run `dvc repro {stage}`"
            )


def holdout_groups(root: Path = Path(".")) -> dict:
    """What the splits keep whole (prompt or topic) and, for topics, the prompts each one joins."""
    splits = load_splits(root / SPLITS)
    by = splits.get("params", {}).get("groups", "prompt")
    out = {"by": by, "n_test_prompts": len(splits["test"]["prompts"]), "test_prompts": splits["test"]["prompts"],
           "locked_test": bool(splits["test"]["n_essays"]), "protocol": splits.get("protocol", "locked test + prompt-grouped folds")}
    if "topics" in splits:
        out["n_groups"] = len(splits["topics"])
        out["multi_prompt_topics"] = {t: ps for t, ps in splits["topics"].items() if len(ps) > 1}
    return out
