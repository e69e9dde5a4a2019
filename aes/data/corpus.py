"""The prepared essays that every stage after ``prepare`` reads: their columns, targets and loader.

``data/prepared/essays.csv`` holds :data:`~aes.core.prepared.PREPARED_COLUMNS`, one column per
``prepare.targets`` entry (named as the score, in declared order, primary first), then the score
scale of the row's prompt (:data:`aes.core.scale.SCALE_COLUMNS`). Which columns are the targets is
a pure function of those columns (:func:`aes.core.prepared.declared_targets`, in ``aes.core`` so
that the model artifacts can use it); :func:`target_matrix` is what models train on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from aes.core.errors import AESError
from aes.core.prepared import PREPARED_COLUMNS, declared_targets
from aes.core.registry import ESSAYS
from aes.core.scale import scale_arrays, to_unit

NO_GRADE = -1  # the grade of an essay whose corpus records none (ASAP), and of a missing one

__all__ = ["NO_GRADE", "PREPARED_COLUMNS", "declared_targets", "load_essays", "target_matrix"]


def target_matrix(essays: pd.DataFrame, targets: list[str] | None = None) -> np.ndarray:
    """(n, T) float64 training targets: the scores of ``targets`` (default :func:`declared_targets`,
    primary first) min-max normalised to [0, 1] on each essay's own scale (its prompt's range).

    Every model trains on these and predicts them; :func:`aes.core.artifacts.make_oof_frame` maps
    predictions back to score points. One scale for all prompts (ELLIPSE) makes this an affine map.
    """
    targets = declared_targets(essays) if targets is None else targets
    low, high, _ = scale_arrays(essays)
    return to_unit(essays[list(targets)].to_numpy(dtype=np.float64), low, high)


def load_essays(path: str | Path = ESSAYS) -> pd.DataFrame:
    """Read prepared essays (columns ``PREPARED_COLUMNS``)."""
    path = Path(path)
    if not path.exists():
        raise AESError(f"{path}: prepared essays not found; run `dvc repro prepare` first")
    frame = pd.read_csv(path, dtype={"record_id": str, "prompt": str, "text": str}, keep_default_na=False)
    missing = [c for c in PREPARED_COLUMNS if c not in frame.columns]
    if missing:
        raise AESError(f"{path}: missing columns {missing}; expected {PREPARED_COLUMNS} (re-run prepare)")
    return frame
