"""The linear probe (aes/baseline/linear.py): recovers a known linear signal, chooses its penalty
on inner prompt-grouped folds of the training part only, and round-trips through JSON."""

import numpy as np
import pandas as pd
import pytest

from aes.baseline.linear import cross_validate, fit_ridge, fits_from_json, fits_to_json
from aes.core.errors import AESError
from aes.core.scale import SCALE_COLUMNS
from tests.report_fixtures import with_scale


def _synthetic(n_prompts=12, per_prompt=40, dim=20, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_prompts * per_prompt, dim)) * rng.uniform(0.5, 5.0, size=dim)  # unequal feature scales
    weight = rng.normal(size=dim)
    y = x @ weight + 3.0 + noise * rng.normal(size=len(x))
    prompts = np.repeat([f"p{i}" for i in range(n_prompts)], per_prompt)
    folds = np.repeat(np.arange(n_prompts) % 3, per_prompt)
    # the frame carries a score scale (models train on target_matrix's unit range: an affine map of y,
    # which changes neither correlations nor which penalty wins)
    return x, y, weight, with_scale(pd.DataFrame({"prompt": prompts, "y": y, "fold": folds}))


def test_probe_recovers_a_known_linear_signal():
    x, y, weight, frame = _synthetic()
    fit = fit_ridge(x, y, frame["prompt"].to_numpy(), alphas=[1e-3, 1.0, 1e3], inner_folds=4)
    assert fit.alpha == 1e-3  # almost no noise: the weakest penalty wins on the inner folds
    np.testing.assert_allclose(fit.weight, weight, rtol=0.02, atol=0.01)  # in raw feature units, standardisation undone
    assert fit.bias == pytest.approx(3.0, abs=0.05)
    assert set(fit.inner_rmse) == {1e-3, 1.0, 1e3} and fit.inner_rmse[1e-3] < fit.inner_rmse[1e3]


def test_cross_validation_predicts_each_fold_from_the_others():
    x, y, _, frame = _synthetic(noise=0.5)
    oof, fits = cross_validate(frame, x, alphas=[0.1, 10.0], inner_folds=3)
    assert oof.shape == (len(frame), 1)  # a hand-made frame with only y: one target
    assert sorted(fits) == [0, 1, 2] and np.isfinite(oof).all()
    assert np.corrcoef(oof[:, 0], y)[0, 1] > 0.95
    val = frame["fold"].to_numpy() == 1
    np.testing.assert_allclose(oof[val], fits[1].predict(x[val]))
    # Changing fold 1's scores cannot change fold 1's probe (its penalty and weights see only folds 0 and 2).
    poisoned = frame.assign(y=np.where(val, 100.0, frame["y"]))
    _, fits_poisoned = cross_validate(poisoned, x, alphas=[0.1, 10.0], inner_folds=3)
    np.testing.assert_array_equal(fits_poisoned[1].weight, fits[1].weight)
    assert fits_poisoned[1].alpha == fits[1].alpha


def test_probe_json_round_trip_and_bad_entries():
    x, _, _, frame = _synthetic()
    _, fits = cross_validate(frame, x, alphas=[1.0], inner_folds=3)
    back = fits_from_json(fits_to_json(fits), "probes.json")
    for k in fits:
        np.testing.assert_allclose(back[k].predict(x), fits[k].predict(x))
    with pytest.raises(AESError, match=r"probes.json: fold '0' is not a probe"):
        fits_from_json({"0": {"bias": 1.0}}, "probes.json")


def test_one_training_prompt_is_a_clear_error():
    x, y, _, _ = _synthetic(n_prompts=1)
    with pytest.raises(AESError, match="1 prompt"):
        fit_ridge(x, y, np.array(["p0"] * len(y)), alphas=[1.0], inner_folds=3)


def test_constant_columns_get_zero_weight_not_a_huge_one():
    """MiniLM has near-constant pooled dimensions (sd ~1e-10): undoing the standardisation must not
    turn them into weights ~1e30 that a float32 head cannot cancel."""
    x, y, _, frame = _synthetic()
    x = np.hstack([x, np.full((len(x), 1), 0.25), 0.25 + 1e-10 * np.random.default_rng(1).normal(size=(len(x), 1))])
    fit = fit_ridge(x, y, frame["prompt"].to_numpy(), alphas=[1.0], inner_folds=3)
    assert fit.weight[-2] == 0.0 and fit.weight[-1] == 0.0
    assert np.abs(fit.weight).max() < 100
    pred32 = x.astype(np.float32) @ fit.weight.astype(np.float32) + np.float32(fit.bias)
    np.testing.assert_allclose(pred32, fit.predict(x), atol=1e-3)


def test_multi_output_probe_predicts_every_target_in_order_with_its_own_penalty():
    """Three declared targets: one column each, in declared order; each target's fit and penalty equal a one-target fit."""
    x, y, _, frame = _synthetic(noise=0.5)
    rng = np.random.default_rng(5)
    noisy = rng.normal(3.0, 1.0, len(y))  # unrelated to the features: wants the strong penalty
    frame = frame.assign(Overall=y, Grammar=noisy, Cohesion=-y)
    oof, fits = cross_validate(frame, x, alphas=[0.01, 1000.0], inner_folds=3)
    assert oof.shape == (len(frame), 3)
    for j, target in enumerate(["Overall", "Grammar", "Cohesion"]):
        one, one_fits = cross_validate(frame[["prompt", "fold", target, *SCALE_COLUMNS]], x, alphas=[0.01, 1000.0], inner_folds=3)
        np.testing.assert_allclose(oof[:, j], one[:, 0], atol=1e-8)
        assert [f.alpha[j] for f in fits.values()] == [f.alpha[0] for f in one_fits.values()]
    assert fits[0].alpha[0] == 0.01 and fits[0].alpha[1] == 1000.0
    back = fits_from_json(fits_to_json(fits), "probes.json")
    np.testing.assert_allclose(back[1].predict(x), fits[1].predict(x))
