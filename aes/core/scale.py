"""Score scales: each essay's score lives on its prompt's own grid, declared by the dataset.

ELLIPSE has one scale for every prompt (1.0-5.0 in half bands); ASAP has one integer range per
prompt (2-12, 1-6, 0-3, ... 0-60). Tables that carry scores (prepared essays, out-of-fold
predictions) carry each row's scale in the columns ``SCALE_COLUMNS``, so every metric is a pure
function of the table. Models train on ``to_unit`` scores (min-max normalised per prompt, the
cross-prompt literature's convention) and map predictions back with ``from_unit``; QWK rounds
them to the row's grid with ``to_grid``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from aes.core.errors import AESError

SCALE_COLUMNS = ("score_low", "score_high", "score_step")


@dataclass(frozen=True)
class Scale:
    """One score grid: low, low + step, ..., high (high - low a multiple of step)."""

    low: float
    high: float
    step: float

    def __post_init__(self):
        if not (self.high > self.low and self.step > 0):
            raise AESError(f"score scale {self.low}-{self.high} step {self.step}: expected low < high and step > 0")
        levels = (self.high - self.low) / self.step
        if abs(levels - round(levels)) > 1e-9:
            raise AESError(f"score scale {self.low}-{self.high}: the range is not a whole number of steps of {self.step}")

    @property
    def n_levels(self) -> int:
        return int(round((self.high - self.low) / self.step)) + 1

    @property
    def grid(self) -> np.ndarray:
        """(n_levels,) the scores of the grid, ascending."""
        return self.low + self.step * np.arange(self.n_levels)

    def on_grid(self, y) -> np.ndarray:
        """(n,) bool: the score is one of the grid's values (NaN is not)."""
        y = np.asarray(y, dtype=float)
        k = (y - self.low) / self.step
        with np.errstate(invalid="ignore"):
            return np.isfinite(y) & (y >= self.low - 1e-9) & (y <= self.high + 1e-9) & (np.abs(k - np.rint(k)) < 1e-6)

    def describe(self) -> str:
        step = f"{self.step:g}"
        return f"{self.low:g}-{self.high:g} in steps of {step}"


def scale_arrays(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low, high, step), each (n,) float, of every row of a table with ``SCALE_COLUMNS``."""
    missing = [c for c in SCALE_COLUMNS if c not in frame.columns]
    if missing:
        raise AESError(f"table without the score-scale column(s) {missing}; expected {list(SCALE_COLUMNS)} (re-run prepare)")
    return tuple(frame[c].to_numpy(dtype=float) for c in SCALE_COLUMNS)


def to_unit(y, low, high) -> np.ndarray:
    """Scores (n,) or (n, T) -> [0, 1] of each row's range: (y - low) / (high - low)."""
    y = np.asarray(y, dtype=float)
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    if y.ndim == 2:
        low, high = low[:, None], high[:, None]
    return (y - low) / (high - low)


def from_unit(u, low, high) -> np.ndarray:
    """Inverse of :func:`to_unit`: unit-range values (n,) or (n, T) -> score points of each row's scale."""
    u = np.asarray(u, dtype=float)
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    if u.ndim == 2:
        low, high = low[:, None], high[:, None]
    return low + u * (high - low)


def to_grid(y, low, high, step) -> np.ndarray:
    """Clip raw scores (n,) to each row's [low, high] and round to its grid (halves round up)."""
    y = np.clip(np.asarray(y, dtype=float), low, high)
    # floor(x + 0.5) rounds halves up, unlike np.round's banker's rounding (2.25 -> 2.5 on half bands).
    return low + np.floor((y - low) / step + 0.5) * step


def grid_labels(y, low, step) -> np.ndarray:
    """Grid scores (n,) -> integer level 0..n_levels-1 of each row's grid (for kappa and stratifying)."""
    return np.rint((np.asarray(y, dtype=float) - low) / step).astype(int)
