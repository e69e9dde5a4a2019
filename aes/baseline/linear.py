"""The linear probe: ridge regression on standardised frozen features, penalty chosen on inner folds.

The standard reference for any fine-tuning claim: if a linear head on the frozen representation
scores unseen prompts as well as the fine-tuned model, fine-tuning bought nothing. Used by stage
``linear_cv`` (on the ``embed`` stage's embeddings) and by stage ``lp_cv`` (on the pooled output
of the fine-tune's own frozen encoder, as the linear-probe phase of LP-FT).

Per CV fold the penalty is chosen by ``GridSearchCV`` over ``linear.alphas`` with
``GroupKFold`` on the fold's TRAINING essays grouped by prompt, so it is chosen on prompts the
candidate model did not fit, and the validation fold is only ever predicted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from aes.core.errors import AESError

CONSTANT_SD = 1e-6  # a column whose sd is below this share of the median column sd carries no signal


@dataclass
class RidgeFit:
    """A fitted probe: ``y ~= features @ weight + bias`` in score units.

    weight: (d,) float64 on the RAW (unstandardised) features; bias: float; alpha: the chosen
    penalty; inner_rmse: {alpha: mean inner-fold RMSE}.
    """

    weight: np.ndarray
    bias: float
    alpha: float
    inner_rmse: dict

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(n,) predictions in score units for features (n, d)."""
        return np.asarray(features, dtype=np.float64) @ self.weight + self.bias


def fit_ridge(features: np.ndarray, y: np.ndarray, groups: np.ndarray, alphas, inner_folds: int) -> RidgeFit:
    """Fit StandardScaler + Ridge on (n, d) features and (n,) scores, alpha chosen by prompt-grouped CV.

    groups: (n,) prompt (or topic) of each essay; inner folds never split a group.
    """
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, y = np.asarray(features, dtype=np.float64), np.asarray(y, dtype=np.float64)
    # Near-constant columns (MiniLM has three, sd ~1e-10) would get weights ~1e30 once the
    # standardisation is undone, and a float32/bf16 head could not cancel them: leave them out.
    sd = features.std(axis=0)
    keep = sd > CONSTANT_SD * max(float(np.median(sd)), 1e-300)
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise AESError(f"linear probe: the training essays come from {n_groups} prompt(s); inner prompt-grouped folds need at least 2")
    search = GridSearchCV(
        make_pipeline(StandardScaler(), Ridge()),
        {"ridge__alpha": [float(a) for a in alphas]},
        cv=GroupKFold(n_splits=min(inner_folds, n_groups)),
        scoring="neg_root_mean_squared_error",
        refit=True,
    )
    search.fit(features[:, keep], y, groups=groups)
    scaler, ridge = search.best_estimator_[0], search.best_estimator_[-1]
    weight = np.zeros(features.shape[1])
    weight[keep] = ridge.coef_ / scaler.scale_  # undo the standardisation: one linear map on the raw features
    bias = float(ridge.intercept_ - weight[keep] @ scaler.mean_)
    inner = {float(a): float(-s) for a, s in zip(search.cv_results_["param_ridge__alpha"], search.cv_results_["mean_test_score"])}
    return RidgeFit(weight, bias, float(search.best_params_["ridge__alpha"]), inner)


def cross_validate(cv: pd.DataFrame, features: np.ndarray, alphas, inner_folds: int) -> tuple[np.ndarray, dict[int, RidgeFit]]:
    """Out-of-fold predictions (n,) and the probe of each fold {fold: RidgeFit}.

    cv: n rows with columns prompt, y, fold; features: (n, d) row-aligned with cv.
    """
    if len(features) != len(cv):
        raise AESError(f"{len(features)} feature rows for {len(cv)} CV essays")
    fold_of = cv["fold"].to_numpy()
    y, groups = cv["y"].to_numpy(dtype=float), cv["prompt"].astype(str).to_numpy()
    oof, fits = np.full(len(cv), np.nan), {}
    for k in sorted(np.unique(fold_of)):
        train, val = fold_of != k, fold_of == k
        fits[int(k)] = fit_ridge(features[train], y[train], groups[train], alphas, inner_folds)
        oof[val] = fits[int(k)].predict(features[val])
    return oof, fits


def fits_to_json(fits: dict[int, RidgeFit]) -> dict:
    """{fold: {alpha, bias, inner_rmse, weight list}}: the probes as a JSON document (models/<stage>/)."""
    return {str(k): {"alpha": f.alpha, "bias": f.bias, "inner_rmse": {f"{a:g}": r for a, r in f.inner_rmse.items()},
                     "weight": [float(w) for w in f.weight]} for k, f in sorted(fits.items())}


def fits_from_json(doc: dict, source: str) -> dict[int, RidgeFit]:
    """Inverse of :func:`fits_to_json`; AESError naming ``source`` when a fold entry is malformed."""
    fits = {}
    for k, entry in doc.items():
        try:
            fits[int(k)] = RidgeFit(np.asarray(entry["weight"], dtype=np.float64), float(entry["bias"]), float(entry["alpha"]),
                                    {float(a): r for a, r in entry.get("inner_rmse", {}).items()})
        except (KeyError, TypeError, ValueError) as err:
            raise AESError(f"{source}: fold '{k}' is not a probe (needs weight, bias, alpha): {err}") from None
    return fits
