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
training essays and kept in the fit (:class:`aes.baseline.features.FeatureScaling`), so the probe
is applied to raw features with :meth:`RidgeFit.predict_essays`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from aes.baseline.features import FeatureScaling
from aes.core.errors import AESError

CONSTANT_SD = 1e-6  # a column whose sd is below this share of the median column sd carries no signal


@dataclass
class RidgeFit:
    """A fitted probe: ``y ~= features @ weight + bias`` in score units.

    One target: weight (d,) float64 on the RAW (unstandardised) features, bias and alpha floats,
    inner_rmse {alpha: mean inner-fold RMSE}. T targets: weight (d, T), bias (T,) array, alpha a
    list of T penalties (one per target), inner_rmse {alpha: [T RMSEs]}. scaling: None, or the
    standardisation of the writing features appended after the H pooled columns (then d = H + its
    number of columns, and ``weight`` reads the STANDARDISED features in those rows).
    """

    weight: np.ndarray
    bias: float | np.ndarray
    alpha: float | list
    inner_rmse: dict
    scaling: FeatureScaling | None = None

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(n,) or (n, T) predictions in score units for features (n, d)."""
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
              writing: np.ndarray | None = None, writing_groups=()) -> RidgeFit:
    """:func:`fit_ridge` on the pooled text (n, H), or with ``writing`` (n, d raw writing features of
    ``writing_groups``) on [pooled, standardised writing]; the standardisation is fitted on these same
    (training) essays and returned in the fit's ``scaling``."""
    scaling = FeatureScaling.fit(writing, writing_groups) if writing is not None else None
    fit = fit_ridge(probe_inputs(pooled, writing, scaling), y, groups, alphas, inner_folds)
    fit.scaling = scaling
    return fit


def _target_rmse(j: int):
    """A scorer (negative RMSE, higher is better) of output ``j`` of a one- or multi-output model."""
    from sklearn.metrics import make_scorer, root_mean_squared_error

    def score(y_true, y_pred):
        return root_mean_squared_error(np.reshape(y_true, (len(y_true), -1))[:, j], np.reshape(y_pred, (len(y_pred), -1))[:, j])

    return make_scorer(score, greater_is_better=False)


def fit_ridge(features: np.ndarray, y: np.ndarray, groups: np.ndarray, alphas, inner_folds: int) -> RidgeFit:
    """Fit StandardScaler + Ridge on (n, d) features and (n,) or (n, T) scores, one alpha per target
    chosen by prompt-grouped CV (lowest mean inner-fold RMSE of that target).

    groups: (n,) prompt (or topic) of each essay; inner folds never split a group.
    """
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, y = np.asarray(features, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n_targets = 1 if y.ndim == 1 else y.shape[1]
    # Near-constant columns (MiniLM has three, sd ~1e-10) would get weights ~1e30 once the
    # standardisation is undone, and a float32/bf16 head could not cancel them: leave them out.
    sd = features.std(axis=0)
    keep = sd > CONSTANT_SD * max(float(np.median(sd)), 1e-300)
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise AESError(f"linear probe: the training essays come from {n_groups} prompt(s); inner prompt-grouped folds need at least 2")
    # One search scores every target at every penalty (a multi-output ridge per candidate and inner
    # fold); each target then takes its own best penalty (the first of equals, in linear.alphas order).
    search = GridSearchCV(
        make_pipeline(StandardScaler(), Ridge()),
        {"ridge__alpha": [float(a) for a in alphas]},
        cv=GroupKFold(n_splits=min(inner_folds, n_groups)),
        scoring={str(j): _target_rmse(j) for j in range(n_targets)},
        refit=False,
    )
    search.fit(features[:, keep], y, groups=groups)
    candidates = [float(a) for a in search.cv_results_["param_ridge__alpha"]]
    scores = np.column_stack([search.cv_results_[f"mean_test_{j}"] for j in range(n_targets)])  # (A, T) negative RMSE
    chosen = [candidates[int(i)] for i in np.argmax(scores, axis=0)]
    model = make_pipeline(StandardScaler(), Ridge(alpha=np.array(chosen) if n_targets > 1 else chosen[0]))
    model.fit(features[:, keep], y)
    scaler, ridge = model[0], model[-1]
    weight = np.zeros((features.shape[1], n_targets))
    weight[keep] = (ridge.coef_.reshape(n_targets, -1) / scaler.scale_).T  # undo the standardisation: one linear map on the raw features
    bias = np.reshape(ridge.intercept_, -1) - weight[keep].T @ scaler.mean_
    if y.ndim == 1:
        return RidgeFit(weight[:, 0], float(bias[0]), chosen[0], {a: float(-s[0]) for a, s in zip(candidates, scores)})
    return RidgeFit(weight, bias, chosen, {a: [float(-v) for v in s] for a, s in zip(candidates, scores)})


def cross_validate(cv: pd.DataFrame, features: np.ndarray, alphas, inner_folds: int, writing: np.ndarray | None = None,
                   writing_groups=()) -> tuple[np.ndarray, dict[int, RidgeFit]]:
    """Out-of-fold predictions (n, T) of every declared target and the probe of each fold {fold: RidgeFit}.

    cv: n rows with columns prompt, fold and the target columns (:func:`aes.data.corpus.declared_targets`);
    features: (n, d) row-aligned with cv. writing: None, or (n, d_w) raw writing features of
    ``writing_groups`` appended after ``features``, standardised per fold on that fold's training
    essays only (:func:`fit_probe`).
    """
    from aes.data.corpus import target_matrix

    if len(features) != len(cv) or (writing is not None and len(writing) != len(cv)):
        raise AESError(f"{len(features)} feature rows ({'no' if writing is None else len(writing)} writing-feature rows) for {len(cv)} CV essays")
    fold_of = cv["fold"].to_numpy()
    y, groups = target_matrix(cv), cv["prompt"].astype(str).to_numpy()
    oof, fits = np.full(y.shape, np.nan), {}
    for k in sorted(np.unique(fold_of)):
        train, val = fold_of != k, fold_of == k
        w_train, w_val = (None, None) if writing is None else (writing[train], writing[val])
        fits[int(k)] = fit_probe(features[train], y[train], groups[train], alphas, inner_folds, w_train, writing_groups)
        oof[val] = fits[int(k)].predict_essays(features[val], w_val)
    return oof, fits


def fits_to_json(fits: dict[int, RidgeFit]) -> dict:
    """{fold: {alpha, bias, inner_rmse, weight[, writing_features]}}: the probes as a JSON document (models/<stage>/).

    weight is a list of d numbers (one target) or of d lists of T numbers; alpha and bias a number or T numbers;
    writing_features the fold's feature standardisation ({groups, names, mean, sd}) when the probe reads them.
    """
    return {str(k): {"alpha": f.alpha, "bias": np.asarray(f.bias).tolist(), "inner_rmse": {f"{a:g}": r for a, r in f.inner_rmse.items()},
                     "weight": np.asarray(f.weight, dtype=float).tolist(),
                     **({"writing_features": f.scaling.to_json()} if f.scaling is not None else {})} for k, f in sorted(fits.items())}


def fits_from_json(doc: dict, source: str) -> dict[int, RidgeFit]:
    """Inverse of :func:`fits_to_json`; AESError naming ``source`` when a fold entry is malformed."""
    fits = {}
    for k, entry in doc.items():
        try:
            bias = np.asarray(entry["bias"], dtype=np.float64)
            fits[int(k)] = RidgeFit(np.asarray(entry["weight"], dtype=np.float64), float(bias) if bias.ndim == 0 else bias,
                                    float(entry["alpha"]) if np.ndim(entry["alpha"]) == 0 else [float(a) for a in entry["alpha"]],
                                    {float(a): r for a, r in entry.get("inner_rmse", {}).items()},
                                    FeatureScaling.from_json(entry["writing_features"], f"{source} fold '{k}'") if "writing_features" in entry else None)
        except (KeyError, TypeError, ValueError) as err:
            raise AESError(f"{source}: fold '{k}' is not a probe (needs weight, bias, alpha): {err}") from None
    return fits
