"""Calibration (aes/core/calibration.py): cut-points from each model's own held-out predictions, the
other-folds alternative, label-free spread matching; none reads the scored fold; the metrics contract
and the bootstrap on calibrated scores; the inner predictions each model family writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aes.core import calibration as cal
from aes.core.artifacts import make_inner_frame, make_oof_frame, stack_seeds, write_model_outputs
from aes.core.errors import AESError
from aes.core.metrics import METRIC_DIRECTION, metric_value, qwk, summarize_seeds
from aes.core.scale import Scale
from aes.data.params import check_cross_keys, validate
from aes.report import bootstrap
from tests.committed import committed_params
from tests.report_fixtures import HALF_BANDS_SCALE as HB
from tests.report_fixtures import fake_inner, make_cv_essays, points_to_unit, seeded_oof


def _squeezed(essays: pd.DataFrame, slope: float, noise_sd: float, seed: int, rows=None) -> np.ndarray:
    """Predictions in score points compressed toward the middle (3.0) by ``slope``, with noise."""
    y = essays["y"].to_numpy(float) if rows is None else essays["y"].to_numpy(float)[rows]
    return 3.0 + slope * (y - 3.0) + np.random.default_rng(seed).normal(0.0, noise_sd, len(y))


def _model(essays: pd.DataFrame, seeds=(7, 8), slope=0.5, noise_sd=0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(OOF table, inner table) of a compressed model: per seed and fold k the inner rows are fold k+1's essays."""
    frames = [make_oof_frame(essays, essays["fold"].to_numpy(), points_to_unit(_squeezed(essays, slope, noise_sd, s)), seed=s) for s in seeds]
    return stack_seeds(frames), fake_inner(essays, noise_sd, seeds, np.random.default_rng(3))


# ---------------------------------------------------------------- cut-points


def test_monotone_cut_points_recover_the_grid_from_a_compressed_predictor():
    """A predictor that keeps the order but squeezes the scale (slope 0.4, no noise): plain rounding
    loses most levels; cut-points fitted on it are increasing and put every essay back on its grid level."""
    essays = make_cv_essays(n_prompts=10, per_prompt=60, seed=6)
    shrunk = _squeezed(essays, 0.4, 0.0, 1)
    cuts = cal.fit_cut_points(essays["y"], shrunk, HB)
    assert cuts.shape == (HB.n_levels - 1,) and np.all(np.diff(cuts) > 0)
    recovered = cal.apply_cut_points(shrunk, cuts, HB)
    np.testing.assert_array_equal(recovered, essays["y"].to_numpy(float))
    assert qwk(essays["y"], shrunk, HB) < 0.9  # rounding alone does not
    # with noise the fit still beats rounding by far, and never goes below it
    noisy = _squeezed(essays, 0.4, 0.1, 2)
    assert qwk(essays["y"], cal.apply_cut_points(noisy, cal.fit_cut_points(essays["y"], noisy, HB), HB), HB) > qwk(essays["y"], noisy, HB) + 0.05


@pytest.mark.parametrize("method", ["inner", "other_folds"])
def test_cut_points_never_see_the_scored_folds_labels_or_predictions(method):
    essays = make_cv_essays(n_prompts=10, per_prompt=40, seed=7)
    oof, inner = _model(essays)
    cuts = cal.fold_cut_points(oof, method, inner)
    assert set(cuts) == {(s, k) for s in (7, 8) for k in range(5)}
    rng = np.random.default_rng(0)
    for k in range(5):
        tampered = oof.copy()
        scored = (tampered["fold"] == k).to_numpy()
        tampered.loc[scored, "y_true"] = rng.choice(HB.grid, scored.sum())
        tampered.loc[scored, "y_pred_raw"] = rng.uniform(1.0, 5.0, scored.sum())
        after = cal.fold_cut_points(tampered, method, inner)
        for s in (7, 8):
            np.testing.assert_array_equal(cuts[(s, k)], after[(s, k)])
        if method == "other_folds":  # teeth: the other folds' cut-points did read fold k
            assert any(not np.array_equal(cuts[(s, j)], after[(s, j)]) for s in (7, 8) for j in range(5) if j != k)
    if method == "inner":  # teeth: fold k's cut-points come from fold k's inner rows
        moved = inner.copy()
        moved.loc[moved["fold"] == 0, "y_pred_raw"] = moved.loc[moved["fold"] == 0, "y_pred_raw"] * 0.5 + 1.5
        assert not np.array_equal(cal.fold_cut_points(oof, "inner", moved)[(7, 0)], cuts[(7, 0)])


def test_prompt_spread_reads_no_score_of_the_scored_fold_and_only_its_own_predictions():
    essays = make_cv_essays(n_prompts=10, per_prompt=40, seed=8)
    oof, _ = _model(essays, seeds=(7,))
    before = cal.spread_match(oof)
    tampered = oof.copy()
    scored = (tampered["fold"] == 2).to_numpy()
    tampered.loc[scored, "y_true"] = 1.0
    np.testing.assert_array_equal(cal.spread_match(tampered)[scored], before[scored])
    assert not np.array_equal(cal.spread_match(tampered)[~scored], before[~scored])  # teeth: other folds take their spread from fold 2's scores
    # the stretched predictions of one prompt have the training prompts' mean within-prompt sd (before clipping and rounding)
    assert before.std() > oof["y_pred_raw"].std() and set(np.unique(before)) <= set(HB.grid)


def test_prompt_spread_works_across_grids_where_cut_points_cannot():
    essays = make_cv_essays(n_prompts=6, per_prompt=30, seed=9)
    essays.loc[essays["prompt"] == essays["prompt"].iloc[0], ["score_low", "score_high", "score_step"]] = (0.0, 3.0, 1.0)
    first = essays["prompt"] == essays["prompt"].iloc[0]
    essays.loc[first, "y"] = np.clip(np.round(essays.loc[first, "y"] - 2.0), 0, 3)
    oof = make_oof_frame(essays, essays["fold"].to_numpy(), np.clip(np.random.default_rng(1).normal(0.5, 0.1, len(essays)), 0, 1))
    with_cal, undefined, _ = cal.with_calibrations(oof, None)
    assert set(undefined) == {"inner", "other_folds"} and "different score scales" in undefined["other_folds"]
    spread = with_cal["y_cal_prompt_spread"]
    assert spread.notna().all() and set(spread[first]) <= {0.0, 1.0, 2.0, 3.0}
    with pytest.raises(AESError, match="calibration 'inner': the prompts have different score scales"):
        cal.fold_cut_points(oof, "inner", None)


# ---------------------------------------------------------------- the metrics contract and the bootstrap


def test_every_model_writes_calibrated_metrics_with_their_seed_spread(tmp_path):
    essays = make_cv_essays(n_prompts=10, per_prompt=40, seed=10)
    oof, inner = _model(essays, seeds=(7, 8, 9))
    metrics = write_model_outputs("gbm_cv", oof, 1.0, 20, root=tmp_path, inner=inner)
    block = metrics["calibrated"]
    assert set(block) == {"inner", "other_folds", "prompt_spread"}
    assert block["prompt_spread"]["transductive"] and not block["inner"]["transductive"]
    for method in block:
        view = cal.calibrated_view(pd.read_csv(tmp_path / "data/predictions/gbm_cv.csv"), method)
        direct = summarize_seeds(view, 20)
        for key in ("pooled", "within_prompt", "worst_quarter"):
            assert block[method]["qwk"][key] == pytest.approx(direct["qwk"][key], abs=1e-6)
            assert block[method]["seed_sd"][f"qwk.{key}"] == pytest.approx(direct["seed_sd"][f"qwk.{key}"], abs=1e-6) and direct["seed_sd"][f"qwk.{key}"] > 0
    assert block["inner"]["qwk"]["pooled"] > metrics["qwk"]["pooled"] + 0.05  # the squeeze is undone
    assert set(block["inner"]["cut_points"]) == {str(k) for k in range(5)}  # first seed's, per fold
    saved_inner = pd.read_csv(tmp_path / "data/predictions/gbm_cv_inner.csv")
    assert len(saved_inner) == len(inner) and set(saved_inner["seed"]) == {7, 8, 9}
    # a model without inner predictions: 'inner' says why, the others are there
    no_inner = write_model_outputs("finetune_cv", oof, 1.0, 20, root=tmp_path)["calibrated"]
    assert "finetune.inner_val_fraction" in no_inner["inner"]["why"] and "qwk" in no_inner["other_folds"]
    with pytest.raises(AESError, match="no 'inner' calibrated scores"):
        cal.calibrated_view(pd.read_csv(tmp_path / "data/predictions/finetune_cv.csv"), "inner")


def test_calibrated_metrics_under_bootstrap_weights_equal_the_expanded_resample():
    """Cut-points are fitted once per fold, so a calibrated score is a fixed column: a prompt drawn k
    times counts as k prompts, exactly as for raw scores."""
    essays = make_cv_essays(n_prompts=8, per_prompt=25, seed=11)
    oof, inner = _model(essays, seeds=(7,))
    view = cal.calibrated_view(cal.with_calibrations(oof, inner)[0], "inner")
    prompts = np.array(sorted(view["prompt"].unique()))
    stats = bootstrap.prompt_summaries(view, prompts, np.array(sorted(view["fold"].unique())))
    for weights in ([2, 0, 1, 3, 0, 1, 1, 0], [1] * 8, [0, 0, 4, 0, 0, 0, 4, 0]):
        expanded = pd.concat([view[view["prompt"] == p].assign(prompt=f"{p}#{c}") for p, w in zip(prompts, weights) for c in range(w)],
                             ignore_index=True)
        direct = summarize_seeds(expanded, 20)
        resampled = bootstrap.resampled_metrics(stats, np.array([weights]), 20)
        for key in METRIC_DIRECTION:
            assert resampled[key][0] == pytest.approx(metric_value(direct, key), abs=1e-5), (weights, key)


# ---------------------------------------------------------------- the inner predictions of each model family


def test_ridge_inner_predictions_come_from_inner_folds_that_never_fit_them():
    from aes.baseline.linear import cross_validate, inner_predictions

    essays = make_cv_essays(n_prompts=12, per_prompt=20, seed=12)
    x = np.random.default_rng(0).normal(0, 1, (len(essays), 6)) + essays["y"].to_numpy()[:, None] * 0.3
    _, fits = cross_validate(essays, x, alphas=[1.0], inner_folds=3)
    inner = inner_predictions(essays, fits)
    rows, pred = inner[(0, 0)]
    np.testing.assert_array_equal(rows, np.flatnonzero(essays["fold"].to_numpy() != 0))  # fold 0's training side, every essay
    # one inner group's own labels never reach its own inner predictions (one penalty: nothing to choose)
    train = essays.iloc[rows].reset_index(drop=True)
    group = train["prompt"] == train["prompt"].iloc[0]
    tampered = essays.copy()
    tampered.loc[tampered.index[rows[group.to_numpy()]], "y"] = 5.0
    _, fits_t = cross_validate(tampered, x, alphas=[1.0], inner_folds=3)
    np.testing.assert_allclose(inner_predictions(tampered, fits_t)[(0, 0)][1][group.to_numpy()], pred[group.to_numpy()], atol=1e-12)
    frame = make_inner_frame(essays, inner)
    assert set(frame["fold"]) == set(range(5)) and len(frame) == sum(len(r) for r, _ in inner.values())


def test_gbm_inner_predictions_are_the_early_stopping_slice_of_the_training_side():
    from aes.baseline.gbm import cross_validate
    from tests.report_fixtures import GBM, gbm_cv_frame

    cv, x = gbm_cv_frame()
    _, _, _, inner = cross_validate(cv, x, GBM, seed=7)
    for (seed, k), (rows, pred) in inner.items():
        assert seed == 7 and len(rows) == len(pred) > 0
        assert (cv["fold"].to_numpy()[rows] != k).all()  # the training side only
        assert cv.iloc[rows]["prompt"].nunique() < cv.loc[cv["fold"] != k, "prompt"].nunique()  # whole prompts, a slice


def test_params_name_the_calibration_and_need_an_inner_slice_for_inner():
    params = committed_params()
    params["report"]["calibration"], params["finetune"]["inner_val_fraction"] = "inner", 0.2
    assert validate(params)["report"]["calibration"] == "inner"
    params["report"]["calibration"] = True  # the old boolean
    with pytest.raises(AESError, match="key 'report.calibration' must be str, got True"):
        validate(params)
    params["report"]["calibration"], params["finetune"]["inner_val_fraction"] = "inner", 0.0
    with pytest.raises(AESError, match="'report.calibration' is 'inner'.*'finetune.inner_val_fraction' is 0"):
        check_cross_keys(validate(params))
    params["report"]["calibration"] = "other_folds"
    assert check_cross_keys(validate(params))["report"]["calibration"] == "other_folds"


def test_scales_of_other_kinds_are_refused_by_name():
    with pytest.raises(AESError, match="unknown calibration 'isotonic'"):
        cal.cal_column("isotonic")
    with pytest.raises(AESError, match="at least one prediction"):
        cal.fit_cut_points([], [], Scale(1.0, 5.0, 0.5))
    essays = make_cv_essays(n_prompts=10, per_prompt=20, seed=13)
    oof = seeded_oof(essays, 0.4, (7,), np.random.default_rng(0))
    with pytest.raises(AESError, match="no inner predictions for seed 7, fold 0"):
        cal.fold_cut_points(oof, "inner", oof.iloc[:0])


def test_compare_heads_scores_one_table_calibrated_against_raw(tmp_path):
    from aes.report.compare import compare_predictions, read_prediction_table

    essays = make_cv_essays(n_prompts=10, per_prompt=30, seed=14)
    oof, inner = _model(essays, seeds=(7, 8))
    write_model_outputs("gbm_cv", oof, 1.0, 20, root=tmp_path, inner=inner)
    table = read_prediction_table(tmp_path / "data/predictions/gbm_cv.csv")
    result = compare_predictions(table, table, None, 200, 0, 20, ("gbm_cv", "gbm_cv"), scores=("inner", "raw"), verdict_metrics=["qwk.pooled"])
    a, b = list(result["point"])
    assert result["scores"] == ["inner", "raw"]
    assert result["point"][a]["qwk.pooled"] == pytest.approx(summarize_seeds(cal.calibrated_view(table, "inner"), 20)["qwk"]["pooled"], abs=1e-5)
    assert result["point"][b]["qwk.pooled"] == pytest.approx(summarize_seeds(table, 20)["qwk"]["pooled"], abs=1e-5)
    assert result["delta"]["qwk.pooled"]["gain"] > 0.05 and result["verdict"]["verdict"] == "better"  # the squeeze is undone
    # a table written before calibration: the methods that need no inner predictions are computed on the spot
    old = table.drop(columns=[c for c in table.columns if c.startswith("y_cal_")])
    assert compare_predictions(old, old, None, 50, 0, 20, ("x", "x"), scores=("prompt_spread", "raw"))["delta"]["qwk.pooled"]["gain"] is not None
    with pytest.raises(AESError, match="no inner-calibrated scores"):
        compare_predictions(old, old, None, 50, 0, 20, ("x", "x"), scores=("inner", "raw"))
