"""Label-free normalisation of a model's inputs within each prompt (``params.yaml`` section ``normalise``).

Cross-prompt systems in the literature scale every handcrafted feature within each prompt, the
unseen target prompt included, from that prompt's essays and never its scores (min-max in
``get_normalized_features``, ``utils/read_data.py`` of robert1ridley/cross-prompt-trait-scoring).
Reading the held-out prompt's essays makes a model *transductive*: allowed here only as a named
setting, and every table that shows such numbers says so (:func:`aes.core.registry.inputs_label`).

- ``normalise.features``: ``training_fold`` (inductive, the default: features as computed, later
  standardised with the training fold's statistics by the model itself) | ``prompt_minmax``
  ((x - min) / (max - min) over the prompt's essays) | ``prompt_zscore`` ((x - mean) / sd over them).
- ``normalise.embeddings``: ``as_is`` | ``prompt_mean`` (the frozen pooled vector minus its prompt's
  mean vector; for the fine-tunes, their pooled representation centred the same way, see
  :mod:`aes.finetune.centring`).

Defined edge cases, never NaN: a column constant within a prompt (and so every column of a prompt
with one essay) maps to the middle of the range, 0.5 under min-max and 0 under z-score, and a
prompt's mean vector is its one essay's vector, which centres to 0.
"""

from __future__ import annotations

import numpy as np

from aes.core.errors import AESError
from aes.core.registry import EMBEDDING_NORMALISATIONS, FEATURE_NORMALISATIONS

# below this spread a column counts as constant within the prompt (features are float32: ~1e-7 relative)
_FLAT = 1e-9


def _prompt_labels(prompts, n: int, setting: str) -> np.ndarray:
    """(n,) prompt labels as strings; AESError naming ``setting`` when there are none to group by."""
    if prompts is None:
        raise AESError(f"{setting} normalises within each prompt, but the essays carry no prompt column; "
                       f"use the inductive setting or give every essay a prompt")
    labels = np.asarray(prompts, dtype=object)
    if labels.shape != (n,):
        raise AESError(f"{setting}: expected one prompt per essay ({n}); got {labels.shape}")
    missing = [i for i, p in enumerate(labels) if p is None or (isinstance(p, float) and np.isnan(p)) or str(p).strip() == ""]
    if missing:
        raise AESError(f"{setting} normalises within each prompt, but {len(missing)} essay(s) have no prompt "
                       f"(first row {missing[0]}); use the inductive setting or fill the prompt column")
    return labels.astype(str)


def within_prompt(values: np.ndarray, prompts, method: str, reference: np.ndarray | None = None,
                  setting: str = "normalise") -> np.ndarray:
    """(n, d) float64 ``values`` normalised within each prompt, from essays only (no score is read).

    values: (n, d) raw inputs; prompts: (n,) prompt of each row; method: ``minmax`` | ``zscore`` |
    ``centre`` (subtract the prompt's mean); reference: optional (n,) bool, the rows whose values
    give each prompt's statistics (default all; the n-essays curve uses a few essays of a new
    prompt). A prompt with no reference row gets its statistics from all its rows. Each row is
    normalised with its own prompt's statistics only: prompts never mix.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise AESError(f"{setting}: expected an (essays, columns) matrix; got shape {values.shape}")
    labels = _prompt_labels(prompts, len(values), setting)
    use = np.ones(len(values), dtype=bool) if reference is None else np.asarray(reference, dtype=bool)
    out = np.empty_like(values)
    for prompt in np.unique(labels):
        rows = labels == prompt
        stats = values[rows & use] if (rows & use).any() else values[rows]
        if method == "centre":
            out[rows] = values[rows] - stats.mean(axis=0)
        elif method == "minmax":
            low, span = stats.min(axis=0), stats.max(axis=0) - stats.min(axis=0)
            flat = span <= _FLAT
            out[rows] = np.where(flat, 0.5, (values[rows] - low) / np.where(flat, 1.0, span))
        elif method == "zscore":
            mean, sd = stats.mean(axis=0), stats.std(axis=0)
            flat = sd <= _FLAT
            out[rows] = np.where(flat, 0.0, (values[rows] - mean) / np.where(flat, 1.0, sd))
        else:
            raise AESError(f"{setting}: unknown method {method!r}; expected minmax, zscore or centre")
    return out


_FEATURE_METHOD = {"prompt_minmax": "minmax", "prompt_zscore": "zscore"}


def normalise_features(features: np.ndarray, prompts, setting: str, reference: np.ndarray | None = None) -> np.ndarray:
    """(n, d) float32 writing features under ``normalise.features``: as they are for ``training_fold``."""
    if setting not in FEATURE_NORMALISATIONS:
        raise AESError(f"normalise.features: unknown setting {setting!r}; expected one of {', '.join(FEATURE_NORMALISATIONS)}")
    if setting == "training_fold":
        return np.asarray(features, dtype=np.float32)
    return within_prompt(features, prompts, _FEATURE_METHOD[setting], reference, "normalise.features").astype(np.float32)


def normalise_embeddings(embeddings: np.ndarray, prompts, setting: str, reference: np.ndarray | None = None) -> np.ndarray:
    """(n, H) float32 frozen embeddings under ``normalise.embeddings``: as they are for ``as_is``."""
    if setting not in EMBEDDING_NORMALISATIONS:
        raise AESError(f"normalise.embeddings: unknown setting {setting!r}; expected one of {', '.join(EMBEDDING_NORMALISATIONS)}")
    if setting == "as_is":
        return np.asarray(embeddings, dtype=np.float32)
    return within_prompt(embeddings, prompts, "centre", reference, "normalise.embeddings").astype(np.float32)
