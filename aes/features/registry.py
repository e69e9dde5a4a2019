"""The writing-feature table: which groups, in which column order, computed for many essays."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from aes.features.groups import FEATURE_GROUPS, GROUP_FUNCTIONS
from aes.features.text import split_essay


def canonical_groups(groups: Iterable[str]) -> list[str]:
    """The writing-feature groups among ``groups`` in ``FEATURE_GROUPS`` order (the column layout of
    :func:`writing_features`; order in params.yaml and repeats do not matter). ValueError for an unknown name."""
    wanted = set(groups)
    unknown = wanted - set(FEATURE_GROUPS)
    if unknown:
        raise ValueError(f"unknown feature group(s) {sorted(unknown)}; expected some of {list(FEATURE_GROUPS)}")
    return [name for name in FEATURE_GROUPS if name in wanted]


def feature_names(groups: Iterable[str]) -> list[str]:
    """Column names of :func:`writing_features` for ``groups`` (d names, ``FEATURE_GROUPS`` order)."""
    return [column for name in canonical_groups(groups) for column in FEATURE_GROUPS[name]]


def writing_features(texts: Sequence[str], groups: Iterable[str],
                     repair: Callable[[str], str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Handcrafted features of each essay.

    texts: (n,) essay strings; groups: names from ``FEATURE_GROUPS`` (not ``"embeddings"``; any order,
    repeats ignored); repair: the dataset's ``text_repair`` (:class:`aes.data.dataset.Dataset`),
    applied to each text once before it is split, None to read the texts as they are. Returns ``(X, names)``: X is (n, d) float32 with the columns of the requested
    groups in ``FEATURE_GROUPS`` order (so the layout does not depend on the order in params.yaml),
    names the d column names. Deterministic; empty texts give finite values (zeros).
    """
    selected = canonical_groups(groups)
    names = feature_names(selected)
    rows = []
    for text in texts:
        essay = split_essay(text if repair is None else repair(str(text)))
        rows.append([value for name in selected for value in GROUP_FUNCTIONS[name](essay)])
    features = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(names))
    # every ratio is guarded already; this is a last line of defence so no NaN ever reaches the booster
    return np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0), names
