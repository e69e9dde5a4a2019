"""The linear probe: ridge regression on standardised frozen features, penalty chosen on inner folds.

The standard reference for any fine-tuning claim: if a linear head on the frozen representation
scores unseen prompts as well as the fine-tuned model, fine-tuning bought nothing. Used by stage
``linear_cv`` (on the ``embed`` stage's embeddings) and by stage ``lp_cv`` (on the pooled output
of the fine-tune's own frozen encoder, as the linear-probe phase of LP-FT).

Several targets (the declared ``prepare.targets``) are one multi-output ridge: every target gets
its own penalty, chosen by ``GridSearchCV`` over ``linear.alphas`` with ``GroupKFold`` on the
fold's TRAINING essays grouped by prompt (one scorer per target), so it is chosen on prompts the
candidate model did not fit, and the validation fold is only ever predicted. A target's fit does
not depend on the other targets (ridge solves each output on its own).

With writing features (``finetune.features``, stage ``lp_cv``) the probe reads the concatenation
[pooled (H), standardised writing features (d)]; the standardisation is fitted on the probe's own
training essays and kept in the fit (:class:`aes.features.FeatureScaling`), so the probe
is applied to raw features with :meth:`RidgeFit.predict_essays`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from aes.core.errors import AESError
from aes.data.corpus import target_matrix
from aes.features import FeatureScaling

CONSTANT_SD = 1e-6  # a column whose sd is below this share of the median column sd carries no signal


@dataclass
class RidgeFit:
    """A fitted probe: ``y ~= features @ weight + bias`` on the unit range (targets from :func:`aes.data.corpus.target_matrix`).

    One target: weight (d,) float64 on the RAW (unstandardised) features, bias and alpha floats,
    inner_rmse {alpha: mean inner-fold RMSE}. T targets: weight (d, T), bias (T,) array, alpha a
    list of T penalties (one per target), inner_rmse {alpha: [T RMSEs]}. scaling: None, or the
    standardisation of the writing features appended after the H pooled columns (then d = H + its
    number of columns, and ``weight`` reads the STANDARDISED features in those rows); feature_weight:
    then the block weight each target chose (its penalty on the features is alpha / weight**2).
    """

    weight: np.ndarray
    bias: float | np.ndarray
    alpha: float | list
    inner_rmse: dict
    scaling: FeatureScaling | None = None
    feature_weight: float | list | None = None
    inner_pred: np.ndarray | None = None  # (n,) the primary target's inner-fold predictions of the training essays (not saved)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(n,) or (n, T) predictions on the unit range of each essay's scale for features (n, d)."""
        return np.asarray(features, dtype=np.float64) @ self.weight + self.bias

    def predict_essays(self, pooled: np.ndarray, writing: np.ndarray | None = None) -> np.ndarray:
        """(n,) or (n, T) predictions from the pooled text (n, H) and, for a probe with ``scaling``, the RAW writing features (n, d)."""
        return self.predict(probe_inputs(pooled, writing, self.scaling))


def probe_inputs(pooled: np.ndarray, writing: np.ndarray | None, scaling: FeatureScaling | None) -> np.ndarray:
    """The probe's input matrix: pooled (n, H) alone, or [pooled, scaling.apply(writing)] (n, H + d) float64."""
    pooled = np.asarray(pooled, dtype=np.float64)
    if scaling is None:
        return pooled
    if writing is None or len(writing) != len(pooled):
        raise AESError(f"the probe reads writing features {list(scaling.groups)} beside the pooled text; got "
                       f"{'none' if writing is None else len(writing)} feature rows for {len(pooled)} essays")
    return np.hstack([pooled, scaling.apply(writing)])


def fit_probe(pooled: np.ndarray, y: np.ndarray, groups: np.ndarray, alphas, inner_folds: int,
              writing: np.ndarray | None = None, writing_groups=(), feature_weights=(1.0,)) -> RidgeFit:
    """:func:`fit_ridge` on the pooled text (n, H), or with ``writing`` (n, d raw writing features of
    ``writing_groups``) on [pooled, standardised writing]; the standardisation is fitted on these same
    (training) essays and returned in the fit's ``scaling``, and the feature block's penalty is
    chosen among ``feature_weights`` (``linear.feature_weights``) beside the penalty itself."""
    scaling = FeatureScaling.fit(writing, writing_groups) if writing is not None else None
    block_start = None if scaling is None else np.shape(pooled)[1]
    fit = fit_ridge(probe_inputs(pooled, writing, scaling), y, groups, alphas, inner_folds, block_start, feature_weights)
    fit.scaling = scaling
    return fit


def fit_essay_probe(essays: pd.DataFrame, pooled: np.ndarray, writing: np.ndarray | None, writing_groups,
                    linear: dict) -> RidgeFit:
    """:func:`fit_probe` on ``essays`` with the params section ``linear`` (alphas, inner folds, feature
    weights): every declared target's unit-range score (n, T) from :func:`aes.data.corpus.target_matrix`,
    inner folds grouped by prompt; ``pooled`` (n, H) and ``writing`` (n, d) or None row-aligned with ``essays``."""
    return fit_probe(pooled, target_matrix(essays), essays["prompt"].astype(str).to_numpy(), linear["alphas"],
                     linear["inner_folds"], writing, writing_groups, linear["feature_weights"])


def _target_rmse(j: int):
    """A scorer (negative RMSE, higher is better) of output ``j`` of a one- or multi-output model."""
    from sklearn.metrics import make_scorer, root_mean_squared_error

    def score(y_true, y_pred):
        return root_mean_squared_error(np.reshape(y_true, (len(y_true), -1))[:, j], np.reshape(y_pred, (len(y_pred), -1))[:, j])

    return make_scorer(score, greater_is_better=False)


class _BlockWeight:
    """Multiplies the standardised columns from ``start`` on by ``weight`` (a pipeline step between the
    scaler and the ridge): the ridge penalty on those columns becomes alpha / weight**2."""

    def __init__(self, start: int, weight: float):
        self.start, self.weight = start, weight

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        X = np.array(X, dtype=np.float64, copy=True)
        X[:, self.start :] *= self.weight
        return X

    def get_params(self, deep=True):
        return {"start": self.start, "weight": self.weight}

    def set_params(self, **params):
        for key, value in params.items():
            setattr(self, key, value)
        return self


def _pipeline(alpha=1.0, block_start: int | None = None, weight: float = 1.0):
    """StandardScaler (+ the block weight when ``block_start`` is set) + Ridge(alpha)."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [StandardScaler()] + ([_BlockWeight(block_start, weight)] if block_start is not None else []) + [Ridge(alpha=alpha)]
    return make_pipeline(*steps)


def fit_ridge(features: np.ndarray, y: np.ndarray, groups: np.ndarray, alphas, inner_folds: int,
              block_start: int | None = None, block_weights=(1.0,)) -> RidgeFit:
    """Fit StandardScaler + Ridge on (n, d) features and (n,) or (n, T) scores, one alpha per target
    chosen by prompt-grouped CV (lowest mean inner-fold RMSE of that target).

    groups: (n,) prompt (or topic) of each essay; inner folds never split a group.
    block_start, block_weights: with ``block_start`` set, the standardised columns from
    ``block_start`` on (the writing features beside the pooled text) are multiplied by a weight w
    from ``block_weights`` (``linear.feature_weights``), i.e. penalised by alpha / w**2 instead of
    alpha: 32 features beside 384 pooled dimensions need a weaker penalty than the one the pooled
    block wants. Each target takes its own (w, alpha) on the same inner folds (the first of equals,
    in ``block_weights`` then ``linear.alphas`` order); the chosen weights are in ``feature_weight``.
    ``inner_pred``: the primary target's predictions of every training essay by the inner-fold
    model (the chosen weight and penalty) that did not fit it: the ``inner`` calibration's input.
    """
    from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_predict

    features, y = np.asarray(features, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n_targets = 1 if y.ndim == 1 else y.shape[1]
    # Near-constant columns (MiniLM has three, sd ~1e-10) would get weights ~1e30 once the
    # standardisation is undone, and a float32/bf16 head could not cancel them: leave them out.
    sd = features.std(axis=0)
    keep = sd > CONSTANT_SD * max(float(np.median(sd)), 1e-300)
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise AESError(f"linear probe: the training essays come from {n_groups} prompt(s); inner prompt-grouped folds need at least 2")
    # the block's first column among the kept ones (dropped constant columns shift it)
    start = None if block_start is None else int(keep[:block_start].sum())
    weights = [1.0] if block_start is None else [float(w) for w in block_weights]
    # One search per block weight scores every target at every penalty (a multi-output ridge per
    # candidate and inner fold); each target then takes its own best (weight, penalty).
    scores, candidates = [], []
    for w in weights:
        search = GridSearchCV(
            _pipeline(block_start=start, weight=w),
            {"ridge__alpha": [float(a) for a in alphas]},
            cv=GroupKFold(n_splits=min(inner_folds, n_groups)),  # deterministic: the same folds as inner_cv below
            scoring={str(j): _target_rmse(j) for j in range(n_targets)},
            refit=False,
        )
        search.fit(features[:, keep], y, groups=groups)
        candidates += [(w, float(a)) for a in search.cv_results_["param_ridge__alpha"]]
        scores.append(np.column_stack([search.cv_results_[f"mean_test_{j}"] for j in range(n_targets)]))  # (A, T) negative RMSE
    scores = np.vstack(scores)  # (W * A, T), weight-major
    chosen = [candidates[int(i)] for i in np.argmax(scores, axis=0)]  # (w, alpha) per target
    y2 = y.reshape(len(y), -1)
    weight, bias = np.zeros((features.shape[1], n_targets)), np.zeros(n_targets)
    for w in dict.fromkeys(c[0] for c in chosen):  # one multi-output ridge per chosen block weight
        cols = [j for j, c in enumerate(chosen) if c[0] == w]
        alpha = np.array([chosen[j][1] for j in cols])
        model = _pipeline(alpha if len(cols) > 1 else float(alpha[0]), start, w).fit(features[:, keep], y2[:, cols] if len(cols) > 1 else y2[:, cols[0]])
        scaler, ridge = model[0], model[-1]
        column_weight = np.ones(int(keep.sum()))
        if start is not None:
            column_weight[start:] = w
        # undo the block weight and the standardisation: one linear map on the raw features
        weight[np.ix_(keep, cols)] = (ridge.coef_.reshape(len(cols), -1) * column_weight / scaler.scale_).T
        bias[cols] = np.reshape(ridge.intercept_, -1) - weight[np.ix_(keep, cols)].T @ scaler.mean_
    alphas_chosen = [c[1] for c in chosen]
    inner_cv = GroupKFold(n_splits=min(inner_folds, n_groups))
    inner_pred = cross_val_predict(_pipeline(chosen[0][1], start, chosen[0][0]), features[:, keep], y2[:, 0], groups=groups, cv=inner_cv)
    # inner RMSE per penalty, at each target's chosen block weight
    inner = {a: [float(-scores[candidates.index((chosen[j][0], a)), j]) for j in range(n_targets)] for _, a in candidates[: len(alphas)]}
    feature_weight = None if block_start is None else [c[0] for c in chosen]
    if y.ndim == 1:
        return RidgeFit(weight[:, 0], float(bias[0]), alphas_chosen[0], {a: r[0] for a, r in inner.items()},
                        feature_weight=None if feature_weight is None else feature_weight[0], inner_pred=inner_pred)
    return RidgeFit(weight, bias, alphas_chosen, inner, feature_weight=feature_weight, inner_pred=inner_pred)


def cross_validate(cv: pd.DataFrame, features: np.ndarray, alphas, inner_folds: int, writing: np.ndarray | None = None,
                   writing_groups=(), feature_weights=(1.0,)) -> tuple[np.ndarray, dict[int, RidgeFit]]:
    """Out-of-fold predictions (n, T) of every declared target and the probe of each fold {fold: RidgeFit}.

    cv: n rows with columns prompt, fold and the target columns (:func:`aes.data.corpus.declared_targets`);
    features: (n, d) row-aligned with cv. writing: None, or (n, d_w) raw writing features of
    ``writing_groups`` appended after ``features``, standardised per fold on that fold's training
    essays only, the feature block's penalty chosen among ``feature_weights`` (:func:`fit_probe`).
    """

    if len(features) != len(cv) or (writing is not None and len(writing) != len(cv)):
        raise AESError(f"{len(features)} feature rows ({'no' if writing is None else len(writing)} writing-feature rows) for {len(cv)} CV essays")
    fold_of = cv["fold"].to_numpy()
    y, groups = target_matrix(cv), cv["prompt"].astype(str).to_numpy()
    oof, fits = np.full(y.shape, np.nan), {}
    for k in sorted(np.unique(fold_of)):
        train, val = fold_of != k, fold_of == k
        w_train, w_val = (None, None) if writing is None else (writing[train], writing[val])
        fits[int(k)] = fit_probe(features[train], y[train], groups[train], alphas, inner_folds, w_train, writing_groups, feature_weights)
        oof[val] = fits[int(k)].predict_essays(features[val], w_val)
    return oof, fits


def inner_predictions(cv: pd.DataFrame, fits: dict[int, RidgeFit], seed: int = 0) -> dict:
    """{(seed, k): (row positions of fold k's training essays in ``cv``, (m,) their inner-fold predictions)}
    of :func:`cross_validate`'s probes: the ``inner`` calibration's input (:func:`aes.core.artifacts.make_inner_frame`).
    ``seed``: the prediction table's seed (a ridge probe has one, 0)."""
    fold_of = cv["fold"].to_numpy()
    return {(seed, int(k)): (np.flatnonzero(fold_of != k), f.inner_pred) for k, f in sorted(fits.items())}


def fits_to_json(fits: dict[int, RidgeFit]) -> dict:
    """{fold: {alpha, bias, inner_rmse, weight[, writing_features]}}: the probes as a JSON document (models/<stage>/).

    weight is a list of d numbers (one target) or of d lists of T numbers; alpha and bias a number or T numbers;
    writing_features the fold's feature standardisation ({groups, names, mean, sd}) when the probe reads them.
    """
    return {str(k): {"alpha": f.alpha, "bias": np.asarray(f.bias).tolist(), "inner_rmse": {f"{a:g}": r for a, r in f.inner_rmse.items()},
                     "weight": np.asarray(f.weight, dtype=float).tolist(),
                     **({"writing_features": f.scaling.to_json(), "feature_weight": f.feature_weight} if f.scaling is not None else {})}
            for k, f in sorted(fits.items())}


def fits_from_json(doc: dict, source: str) -> dict[int, RidgeFit]:
    """Inverse of :func:`fits_to_json`; AESError naming ``source`` when a fold entry is malformed."""
    fits = {}
    for k, entry in doc.items():
        try:
            bias = np.asarray(entry["bias"], dtype=np.float64)
            fits[int(k)] = RidgeFit(np.asarray(entry["weight"], dtype=np.float64), float(bias) if bias.ndim == 0 else bias,
                                    float(entry["alpha"]) if np.ndim(entry["alpha"]) == 0 else [float(a) for a in entry["alpha"]],
                                    {float(a): r for a, r in entry.get("inner_rmse", {}).items()},
                                    FeatureScaling.from_json(entry["writing_features"], f"{source} fold '{k}'") if "writing_features" in entry else None,
                                    entry.get("feature_weight"))
        except (KeyError, TypeError, ValueError) as err:
            raise AESError(f"{source}: fold '{k}' is not a probe (needs weight, bias, alpha): {err}") from None
    return fits
