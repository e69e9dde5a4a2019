"""The standardisation of the writing features that a probe or a fine-tuned head reads beside the text."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from aes.core.errors import AESError
from aes.features.registry import canonical_groups, feature_names


@dataclass(frozen=True)
class FeatureScaling:
    """How a model standardises the writing features it reads beside the text: z = (x - mean) / sd.

    Fitted on one CV training fold only (never its validation essays) and stored with that fold's
    probe or fine-tuned model. groups: the feature groups (``FEATURE_GROUPS`` order); names: the d
    column names; mean, sd: (d,) float64 in the features' own units (sd 1.0 where a column is
    constant on the training fold, so it standardises to 0 there instead of dividing by 0).
    """

    groups: tuple[str, ...]
    names: tuple[str, ...]
    mean: np.ndarray
    sd: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, groups: Iterable[str]) -> FeatureScaling:
        """Mean and population sd of each column of ``features`` (n, d): the training essays' raw features."""
        features = np.asarray(features, dtype=np.float64)
        names = feature_names(groups)
        if features.ndim != 2 or features.shape[1] != len(names) or len(features) == 0:
            raise AESError(f"writing features: expected (n >= 1, {len(names)}) values for groups {canonical_groups(groups)}; got {features.shape}")
        sd = features.std(axis=0)
        return cls(tuple(canonical_groups(groups)), tuple(names), features.mean(axis=0), np.where(sd > 1e-12, sd, 1.0))

    def apply(self, features: np.ndarray) -> np.ndarray:
        """(n, d) float64 standardised features for raw features (n, d)."""
        return (np.asarray(features, dtype=np.float64) - self.mean) / self.sd

    def to_json(self) -> dict:
        return {"groups": list(self.groups), "names": list(self.names), "mean": self.mean.tolist(), "sd": self.sd.tolist()}

    @classmethod
    def from_json(cls, doc: dict, source: str) -> FeatureScaling:
        """Inverse of :meth:`to_json`; AESError naming ``source`` when the entry is malformed."""
        try:
            out = cls(tuple(doc["groups"]), tuple(doc["names"]), np.asarray(doc["mean"], dtype=np.float64),
                      np.asarray(doc["sd"], dtype=np.float64))
        except (KeyError, TypeError, ValueError) as err:
            raise AESError(f"{source}: writing-feature scaling needs groups, names, mean, sd: {err}") from None
        if not (len(out.names) == len(out.mean) == len(out.sd)):
            raise AESError(f"{source}: writing-feature scaling has {len(out.names)} names, {len(out.mean)} means, {len(out.sd)} sds")
        return out
