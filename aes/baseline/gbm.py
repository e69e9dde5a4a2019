"""Frozen-embedding baseline: XGBoost regression on essay embeddings (+ optional text statistics).

Per CV fold the model trains on the other folds. Early stopping watches an inner split of that
training data, grouped by prompt (:func:`aes.data.splits.inner_split`), so the number of trees is
chosen on prompts the model did not train on, and the validation fold is only ever predicted.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from aes.core.errors import AESError
from aes.core.progress import update_progress
from aes.data.splits import inner_split

TEXT_STAT_NAMES = ["n_words", "n_sentences", "n_paragraphs", "mean_word_length", "type_token_ratio"]
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")
_HAS_WORD = re.compile(r"\w")
_PARAGRAPH_BREAK = re.compile(r"\s*\n\s*")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")  # letters, with an inner apostrophe (don't)


def text_stats(texts) -> np.ndarray:
    """Simple statistics of each text: (n, 5) float32 in the order ``TEXT_STAT_NAMES``.

    n_words: whitespace tokens; n_sentences: pieces with a letter or digit between runs of . ! ?
    followed by a space or the end (so "3.5" does not split);
    n_paragraphs: non-empty lines; mean_word_length: letters per alphabetic word;
    type_token_ratio: distinct / all alphabetic words, lower-cased.
    """
    rows = []
    for text in texts:
        text = str(text)
        words = _WORD.findall(text.lower())
        rows.append([
            len(text.split()),
            sum(1 for s in _SENTENCE_END.split(text) if _HAS_WORD.search(s)),
            sum(1 for block in _PARAGRAPH_BREAK.split(text.strip()) if block),
            float(np.mean([len(w) for w in words])) if words else 0.0,
            len(set(words)) / len(words) if words else 0.0,
        ])
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), len(TEXT_STAT_NAMES))


def build_features(embeddings: np.ndarray, texts, use_text_stats: bool) -> np.ndarray:
    """Feature matrix (n, H [+5]) float32: the embeddings, then the text statistics if asked."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if not use_text_stats:
        return embeddings
    return np.hstack([embeddings, text_stats(texts)])


def make_regressor(params: dict, early_stopping: bool) -> xgb.XGBRegressor:
    """An XGBRegressor configured from the ``gbm`` params section (seeded, histogram trees)."""
    return xgb.XGBRegressor(
        n_estimators=params["n_estimators"],
        learning_rate=params["learning_rate"],
        max_depth=params["max_depth"],
        min_child_weight=params["min_child_weight"],
        subsample=params["subsample"],
        colsample_bytree=params["colsample_bytree"],
        reg_lambda=params["reg_lambda"],
        early_stopping_rounds=params["early_stopping_rounds"] if early_stopping else None,
        n_jobs=params["n_jobs"],
        random_state=params["seed"],
        tree_method="hist",
        objective="reg:squarederror",
        eval_metric="rmse",
    )


def fit_fold(train: pd.DataFrame, X_train: np.ndarray, params: dict) -> xgb.XGBRegressor:
    """Fit on one CV training fold (rows of ``train``: prompt, y; X_train: (n, d)).

    With ``early_stopping_rounds > 0`` and ``inner_val_fraction > 0``, a prompt-grouped inner
    split of ``train`` is held out for early stopping; otherwise all ``n_estimators`` trees are
    grown on all of ``train``.
    """
    y = train["y"].to_numpy(dtype=float)
    use_es = params["early_stopping_rounds"] > 0 and params["inner_val_fraction"] > 0
    model = make_regressor(params, early_stopping=use_es)
    if not use_es:
        return model.fit(X_train, y, verbose=False)
    fit_idx, stop_idx = inner_split(train, params["inner_val_fraction"], params["seed"])
    return model.fit(X_train[fit_idx], y[fit_idx], eval_set=[(X_train[stop_idx], y[stop_idx])], verbose=False)


def best_iteration(model: xgb.XGBRegressor) -> int:
    """Number of trees used for prediction (the early-stopping choice, or all of them)."""
    try:
        return int(model.best_iteration) + 1
    except AttributeError:
        return int(model.get_booster().num_boosted_rounds())


def cross_validate(cv: pd.DataFrame, features: np.ndarray, params: dict) -> tuple[np.ndarray, list[xgb.XGBRegressor]]:
    """Out-of-fold predictions (n,) for the CV essays and the per-fold models (fold order).

    cv: n rows with columns prompt, y, fold (0..k-1); features: (n, d) row-aligned with cv.
    """
    if len(features) != len(cv):
        raise AESError(f"{len(features)} feature rows for {len(cv)} CV essays")
    folds = sorted(cv["fold"].unique())
    if len(folds) < 2:
        raise AESError(f"gbm_cv needs at least 2 CV folds; got {len(folds)}")
    oof = np.full(len(cv), np.nan)
    models = []
    for k in folds:
        val = (cv["fold"] == k).to_numpy()
        update_progress(stage="gbm_cv", fold=int(k), folds=len(folds))
        model = fit_fold(cv[~val].reset_index(drop=True), features[~val], params)
        oof[val] = model.predict(features[val])  # sklearn API: uses the best iteration
        models.append(model)
    return oof, models


def save_models(models: list[xgb.XGBRegressor], folder: Path) -> None:
    """Write ``fold_<k>.json`` per model (xgboost's portable JSON format)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("fold_*.json"):
        stale.unlink()
    for k, model in enumerate(models):
        model.save_model(folder / f"fold_{k}.json")
