"""Frozen baseline: XGBoost regression on essay embeddings and handcrafted writing features.

Per CV fold and seed the model trains on the other folds. An inner split of that training data,
grouped by prompt (:func:`aes.data.splits.inner_split`), chooses the tree depth (among
``gbm.max_depth``) and, by early stopping, the number of trees, so both are chosen on prompts the
model did not train on; the validation fold is only ever predicted. The chosen depth is then
refitted on the whole training fold with the chosen number of trees.

Several targets (``prepare.targets``), ``gbm.multi_strategy``:

- ``primary_choice`` (default): the primary target's model is exactly the one-target model above
  (its depth and number of trees chosen on the inner split); ONE further XGBoost
  (``one_output_per_tree``) fits every trait on the whole training fold with that depth and that
  number of trees. No inner search per trait: the traits cost one refit each, not three fits.
- ``multi_output_tree`` / ``one_output_per_tree``: ONE joint model for all targets whose depth
  and early stopping read the RMSE over all targets on the inner split (vector leaves, or one tree
  per target per round). Measured on the real CV essays (n_jobs=1, one seed x 5 folds, busy
  2-core machine): vector leaves did not finish in 10 min of CPU against 43 s for Overall alone,
  so they are not the default (bench numbers in the commit that made primary_choice the default).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from aes.core.errors import AESError
from aes.core.progress import update_progress
from aes.core.registry import EMBEDDINGS_SWITCH
from aes.data.splits import inner_split


def build_features(embeddings: np.ndarray, texts, switches: list[str], repair: Callable[[str], str] | None = None,
                   normalise: Mapping | None = None, prompts=None, reference: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """Feature matrix (n, d) float32 and its d column names.

    switches: ``gbm.features`` (validated by the params schema: distinct names from
    :data:`aes.core.registry.GBM_FEATURE_SWITCHES`): ``embeddings`` adds the (n, H) frozen
    embeddings (first), every other name a group of handcrafted writing features computed from
    ``texts`` (n,), in ``FEATURE_GROUPS`` order, whatever the order of ``switches``; ``repair``: the
    dataset's ``text_repair`` (None: the texts as they are). ``normalise``: the ``normalise`` params
    section (None: inputs as computed); a per-prompt setting scales each block within each prompt of
    ``prompts`` (n,) from that prompt's essays (``reference`` (n,) bool: only those rows' values;
    default all), never a score.
    """
    from aes.features import writing_features

    names = [f"emb_{j}" for j in range(embeddings.shape[1])] if EMBEDDINGS_SWITCH in switches else []
    groups = [g for g in switches if g != EMBEDDINGS_SWITCH]
    hand = None
    if groups:
        hand, hand_names = writing_features(list(texts), groups, repair)
        names += hand_names
    kept = embeddings if EMBEDDINGS_SWITCH in switches else None
    return stack_inputs(kept, hand, prompts, normalise, reference), names


def stack_inputs(embeddings: np.ndarray | None, hand: np.ndarray | None, prompts=None, normalise: Mapping | None = None,
                 reference: np.ndarray | None = None) -> np.ndarray:
    """(n, d) float32 feature matrix from raw blocks: the embeddings (n, H), then the writing features
    (n, d_w) (either None to leave it out), each under its ``normalise`` setting (None: inputs as computed)
    with per-prompt statistics of ``prompts`` (n,) from the ``reference`` rows (n,) bool only (default all).

    :func:`build_features` computes the writing features from the texts and calls this; the n-essays curve
    (:mod:`aes.ops.n_essays`) calls it directly, to rescale one precomputed block under many references."""
    from aes.features.normalise import normalise_embeddings, normalise_features

    normalise = normalise or {"features": "training_fold", "embeddings": "as_is"}
    blocks = []
    if embeddings is not None:
        blocks.append(normalise_embeddings(embeddings, prompts, normalise["embeddings"], reference))
    if hand is not None:
        blocks.append(normalise_features(hand, prompts, normalise["features"], reference))
    return np.hstack(blocks).astype(np.float32)


def make_regressor(params: dict, max_depth: int, seed: int, early_stopping: bool, n_estimators: int | None = None,
                   n_targets: int = 1) -> xgb.XGBRegressor:
    """An XGBRegressor configured from the ``gbm`` params section (seeded, histogram trees).

    n_targets > 1: a multi-output regressor with ``gbm.multi_strategy`` (primary_choice's trait model: one_output_per_tree).
    """
    strategy = params.get("multi_strategy", "primary_choice")
    multi = {"multi_strategy": "one_output_per_tree" if strategy == "primary_choice" else strategy} if n_targets > 1 else {}
    return xgb.XGBRegressor(
        **multi,
        n_estimators=n_estimators or params["n_estimators"],
        learning_rate=params["learning_rate"],
        max_depth=max_depth,
        min_child_weight=params["min_child_weight"],
        subsample=params["subsample"],
        colsample_bytree=params["colsample_bytree"],
        reg_lambda=params["reg_lambda"],
        early_stopping_rounds=params["early_stopping_rounds"] if early_stopping else None,
        n_jobs=params["n_jobs"],
        random_state=seed,
        tree_method="hist",
        objective="reg:squarederror",
        eval_metric="rmse",
    )


def fit_fold(train: pd.DataFrame, X_train: np.ndarray, params: dict, seed: int) -> tuple[xgb.XGBRegressor, dict, tuple]:
    """Fit on one CV training fold (rows of ``train``: prompt and the declared targets; X_train: (n, d)) with one seed.

    Every depth in ``gbm.max_depth`` is fitted on the inner-training part of a prompt-grouped
    inner split with early stopping on the other part; the depth with the lowest inner RMSE (over
    all targets) and its number of trees are refitted on all of ``train``. The model predicts
    (m,) for one target, (m, T) for T. Returns (model, {max_depth, n_trees, inner_rmse: {depth: rmse}},
    (stop_idx, inner_pred)): the early-stopping slice's positions in ``train`` and the chosen depth's
    early-stopped model's predictions of them, made without training on them (the inner predictions
    that the ``inner`` calibration fits cut-points on).
    """
    from aes.data.corpus import target_matrix

    y_all = target_matrix(train)
    joint = y_all.shape[1] > 1 and params.get("multi_strategy", "primary_choice") != "primary_choice"
    y = y_all if joint else y_all[:, 0]  # the inner choice reads all targets (joint) or the primary (a plain regressor)
    n_targets = y_all.shape[1] if joint else 1
    fit_idx, stop_idx = inner_split(train, params["inner_val_fraction"], seed)
    inner, inner_pred = {}, {}
    for depth in params["max_depth"]:
        model = make_regressor(params, depth, seed, early_stopping=True, n_targets=n_targets)
        model.fit(X_train[fit_idx], y[fit_idx], eval_set=[(X_train[stop_idx], y[stop_idx])], verbose=False)
        rmse_curve = model.evals_result()["validation_0"]["rmse"]
        inner[depth] = (float(min(rmse_curve)), best_iteration(model))
        inner_pred[depth] = model.predict(X_train[stop_idx], iteration_range=(0, inner[depth][1]))
    depth = min(inner, key=lambda d: (inner[d][0], d))  # ties: the shallower tree
    n_trees = inner[depth][1]
    model = make_regressor(params, depth, seed, early_stopping=False, n_estimators=n_trees, n_targets=n_targets).fit(X_train, y, verbose=False)
    if y_all.shape[1] > 1 and not joint:  # primary_choice: the traits at the primary's depth and number of trees
        traits = make_regressor(params, depth, seed, early_stopping=False, n_estimators=n_trees, n_targets=y_all.shape[1] - 1)
        traits = traits.fit(X_train, y_all[:, 1:] if y_all.shape[1] > 2 else y_all[:, 1], verbose=False)
        model = PrimaryAndTraits(model, traits)
    choice = {"max_depth": depth, "n_trees": n_trees, "inner_rmse": {str(d): round(r, 6) for d, (r, _) in inner.items()}}
    return model, choice, (stop_idx, inner_pred[depth])


@dataclass
class PrimaryAndTraits:
    """``gbm.multi_strategy: primary_choice``: the primary target's regressor and one regressor for the traits."""

    primary: xgb.XGBRegressor
    traits: xgb.XGBRegressor

    def predict(self, X) -> np.ndarray:
        """(m, T) predictions, primary first, for features X (m, d)."""
        return np.column_stack([self.primary.predict(X), self.traits.predict(X).reshape(len(X), -1)])

    def __getattr__(self, name):  # max_depth, get_booster, ...: the primary's
        if name in ("primary", "traits"):  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.primary, name)


def best_iteration(model: xgb.XGBRegressor) -> int:
    """Number of trees used for prediction (the early-stopping choice, or all of them)."""
    try:
        return int(model.best_iteration) + 1
    except AttributeError:
        return int(model.get_booster().num_boosted_rounds())


def cross_validate(cv: pd.DataFrame, features: np.ndarray, params: dict, seed: int) -> tuple[np.ndarray, list[xgb.XGBRegressor], list[dict], dict]:
    """Out-of-fold predictions (n, T) of every declared target, the per-fold models and their choices
    (fold order) and the inner predictions {(seed, k): (row positions of cv, predictions)} (:func:`fit_fold`).

    cv: n rows with columns prompt, fold (0..k-1) and the targets (:func:`aes.data.corpus.declared_targets`);
    features: (n, d) row-aligned with cv.
    """
    from aes.data.corpus import declared_targets

    if len(features) != len(cv):
        raise AESError(f"{len(features)} feature rows for {len(cv)} CV essays")
    folds = sorted(cv["fold"].unique())
    if len(folds) < 2:
        raise AESError(f"gbm_cv needs at least 2 CV folds; got {len(folds)}")
    oof = np.full((len(cv), len(declared_targets(cv))), np.nan)
    models, choices, inner = [], [], {}
    for k in folds:
        val = (cv["fold"] == k).to_numpy()
        update_progress(stage="gbm_cv", seed=int(seed), fold=int(k), folds=len(folds))
        model, choice, (stop_idx, stop_pred) = fit_fold(cv[~val].reset_index(drop=True), features[~val], params, seed)
        oof[val] = model.predict(features[val]).reshape(int(val.sum()), -1)
        models.append(model)
        choices.append(choice)
        inner[(int(seed), int(k))] = (np.flatnonzero(~val)[stop_idx], stop_pred)
    return oof, models, choices, inner


def save_models(models: dict[int, list[xgb.XGBRegressor]], folder: Path) -> None:
    """Write ``seed_<s>/fold_<k>.json`` per model (xgboost's portable JSON format); models: {seed: [fold models]}."""
    import shutil

    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    for seed, fold_models in models.items():
        (folder / f"seed_{seed}").mkdir(parents=True, exist_ok=True)
        for k, model in enumerate(fold_models):
            if isinstance(model, PrimaryAndTraits):  # fold_<k>.json: the primary target; fold_<k>_traits.json: the rest
                model.traits.save_model(folder / f"seed_{seed}" / f"fold_{k}_traits.json")
                model = model.primary
            model.save_model(folder / f"seed_{seed}" / f"fold_{k}.json")
