"""The artifact contract: every model stage writes the same files with the same keys.

For a stage named ``<stage>``:

- ``data/predictions/<stage>.csv``: out-of-fold predictions, one row per CV essay and training
  seed, columns ``PREDICTION_COLUMNS`` (a DVC out: derived from essays, never committed); a
  deterministic model has one seed;
- ``metrics/<stage>.json``: :func:`aes.core.metrics.summarize_seeds` (every headline metric is the
  mean over seeds, with ``seed_sd`` and per-seed values) plus ``runtime_s`` (committed);
- ``plots/<stage>/by_prompt.csv``, ``by_grade.csv``, ``by_band.csv``: residual diagnostics, each
  number the mean over seeds (aggregates, committed as DVC plot data).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from aes.core.errors import AESError
from aes.core.io import write_json
from aes.core.metrics import diagnostics, summarize_seeds, to_half_band
from aes.core.registry import metrics_path, plots_dir, predictions_path

PREDICTION_COLUMNS = ["record_id", "fold", "seed", "prompt", "grade", "y_true", "y_pred_raw", "y_pred", "residual"]
DIAGNOSTIC_GROUPS = {"by_prompt": "prompt", "by_grade": "grade", "by_band": "y_true"}


def make_oof_frame(essays: pd.DataFrame, fold: np.ndarray, y_pred_raw: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """Build the prediction table of one seed from the CV essays (record_id, prompt, grade, y) and predictions.

    essays: n rows with columns record_id, prompt, grade, y. fold: (n,) int. y_pred_raw: (n,) float.
    seed: the training seed that produced them (stack several with :func:`stack_seeds`).
    """
    y_pred_raw = np.asarray(y_pred_raw, dtype=float)
    if not np.all(np.isfinite(y_pred_raw)):
        bad = essays["record_id"].to_numpy()[~np.isfinite(y_pred_raw)][:5]
        raise AESError(f"non-finite predictions for records {list(bad)} (model diverged?)")
    oof = pd.DataFrame(
        {
            "record_id": essays["record_id"].to_numpy(),
            "fold": np.asarray(fold, dtype=int),
            "seed": int(seed),
            "prompt": essays["prompt"].to_numpy(),
            "grade": essays["grade"].to_numpy(),
            "y_true": essays["y"].to_numpy(dtype=float),
            "y_pred_raw": y_pred_raw,
        }
    )
    oof["y_pred"] = to_half_band(oof["y_pred_raw"])
    oof["residual"] = oof["y_pred_raw"] - oof["y_true"]
    return oof[PREDICTION_COLUMNS]


def stack_seeds(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One prediction table from per-seed tables (each from :func:`make_oof_frame`), seed-major."""
    seeds = [int(f["seed"].iloc[0]) for f in frames if len(f)]
    if len(set(seeds)) != len(seeds):
        raise AESError(f"prediction tables repeat a seed: {seeds}")
    return pd.concat(frames, ignore_index=True)


def seed_mean_diagnostics(oof: pd.DataFrame, by: str) -> pd.DataFrame:
    """:func:`aes.core.metrics.diagnostics` per seed, averaged over seeds (n = essays per group)."""
    per_seed = [diagnostics(g, by) for _, g in oof.groupby("seed", sort=True)]
    return pd.concat(per_seed).groupby(by, sort=True).mean(numeric_only=True).reset_index().astype({"n": int})


def write_model_outputs(
    stage: str, oof: pd.DataFrame, runtime_s: float, min_prompt_n: int, extra: dict | None = None, root: Path = Path(".")
) -> dict:
    """Write predictions, metrics and diagnostics for one model stage; return the metrics dict.

    ``extra`` adds stage-specific keys (e.g. adversary accuracy) next to the contract keys.
    """
    missing = [c for c in PREDICTION_COLUMNS if c not in oof.columns]
    if missing:
        raise AESError(f"{stage}: prediction table lacks columns {missing}")
    metrics = summarize_seeds(oof, min_prompt_n)
    metrics["runtime_s"] = round(float(runtime_s), 1)
    if extra:
        metrics.update(extra)

    pred_path = predictions_path(stage, root)
    pred_path.parent.mkdir(parents=True, exist_ok=True)
    oof.to_csv(pred_path, index=False, float_format="%.6f")

    pdir = plots_dir(stage, root)
    pdir.mkdir(parents=True, exist_ok=True)
    for name, column in DIAGNOSTIC_GROUPS.items():
        diag = seed_mean_diagnostics(oof, column)
        if column == "y_true":
            diag = diag.rename(columns={"y_true": "band"})
        diag.insert(0, "model", stage)
        diag.to_csv(pdir / f"{name}.csv", index=False, float_format="%.6f")

    write_json(metrics_path(stage, root), metrics)
    return metrics


def read_predictions(stage: str, root: Path = Path(".")) -> pd.DataFrame:
    """Read a stage's out-of-fold predictions, with a clear error if the stage has not run."""
    path = predictions_path(stage, root)
    if not path.exists():
        raise AESError(f"{path}: predictions of stage '{stage}' not found; run `dvc repro {stage}` first")
    oof = pd.read_csv(path)
    missing = [c for c in PREDICTION_COLUMNS if c not in oof.columns]
    if missing:
        raise AESError(f"{path}: missing columns {missing}; expected {PREDICTION_COLUMNS}")
    return oof


def read_metrics(stage: str, root: Path = Path(".")) -> dict:
    path = metrics_path(stage, root)
    if not path.exists():
        raise AESError(f"{path}: metrics of stage '{stage}' not found; run `dvc repro {stage}` first")
    return json.loads(path.read_text())
