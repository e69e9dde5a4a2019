import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from aes.core.artifacts import CALIBRATED_COLUMNS, PREDICTION_COLUMNS, make_oof_frame, read_metrics, read_predictions, stack_seeds, write_model_outputs
from aes.core.errors import AESError
from aes.core.artifacts import with_band
from aes.core.metrics import (
    METRIC_DIRECTION,
    diagnostics,
    metric_value,
    prompt_offset,
    prompt_offset_noise,
    qwk,
    qwk_from_confusion,
    residuals,
    rmse,
    summarize,
    summarize_seeds,
    table_qwk,
    within_one_step,
    worst_share_mean,
)
from aes.core.scale import grid_labels, to_grid
from tests.report_fixtures import HALF_BANDS_SCALE, points_to_unit, with_scale

HB = HALF_BANDS_SCALE


def half_band(y) -> np.ndarray:
    """Raw scores -> ELLIPSE's half-band grid (clipped to 1-5, halves rounded up)."""
    return to_grid(y, HB.low, HB.high, HB.step)


def test_half_band_rounding_and_clipping():
    raw = [0.2, 1.24, 1.25, 2.74, 3.0, 3.76, 5.9, 4.75]
    assert half_band(raw).tolist() == [1.0, 1.0, 1.5, 2.5, 3.0, 4.0, 5.0, 5.0]


def test_qwk_hand_computed():
    # Labels (doubled) a=[2,4,6], b=[2,6,6]. Hand computation over the 3 occupied labels with
    # quadratic weights w_ij=(i-j)^2 (on doubled labels): observed disagreement = (0+4+0)/3,
    # expected = sum_ij w_ij * p_a(i) p_b(j) = (1/3)*(1/3)*0 + (1/3)*(2/3)*16 + (1/3)*(1/3)*4
    # + (1/3)*(2/3)*4 + (1/3)*(1/3)*16 + (1/3)*(2/3)*0 = (32 + 4 + 8 + 16)/9 = 60/9.
    # kappa = 1 - (4/3)/(60/9) = 1 - 12/60 = 0.8
    assert qwk([1.0, 2.0, 3.0], [1.1, 2.8, 3.2], HB) == pytest.approx(0.8)


def test_qwk_from_confusion_equals_qwk_on_the_essays():
    # Gaps in the labels (no 1.5, no 4.0 ...) are where index-based weights would go wrong.
    rng = np.random.default_rng(3)
    y_true = rng.choice([1.0, 2.0, 2.5, 3.0, 5.0], size=200)
    y_pred = y_true + rng.normal(0, 0.7, size=200)
    t, p = grid_labels(y_true, HB.low, HB.step), grid_labels(half_band(y_pred), HB.low, HB.step)
    conf = np.zeros((HB.n_levels, HB.n_levels))
    np.add.at(conf, (t, p), 1)
    assert qwk_from_confusion(conf) == pytest.approx(qwk(y_true, y_pred, HB), abs=1e-12)
    batch = np.stack([conf, conf.T, np.zeros_like(conf)])  # (3, 9, 9): batched, transposed, empty
    out = qwk_from_confusion(batch)
    assert out[0] == pytest.approx(out[1]) and np.isnan(out[2])


def test_qwk_perfect_and_undefined():
    y = np.array([1.0, 2.5, 3.0, 4.5])
    assert qwk(y, y + 0.1, HB) == pytest.approx(1.0)
    assert np.isnan(qwk([3.0, 3.0], [3.0, 3.0], HB))


def test_rmse_and_within_one_step():
    table = with_scale(pd.DataFrame({"y_true": [1.0, 2.0, 3.0], "y_pred_raw": [1.0, 2.0, 5.0]}))
    assert rmse(residuals(table)) == pytest.approx(np.sqrt(4 / 3))
    # rounded predictions 3.0, 3.5, 4.5 vs 3.0: diffs 0, 0.5, 1.5 -> 2/3 within
    table = with_scale(pd.DataFrame({"y_true": [3.0, 3.0, 3.0], "y_pred_raw": [3.1, 3.4, 4.4]}))
    assert within_one_step(table) == pytest.approx(2 / 3)


def _oof():
    rng = np.random.default_rng(0)
    y = np.round(rng.uniform(1, 5, 60) * 2) / 2
    return with_scale(pd.DataFrame(
        {
            "fold": np.repeat([0, 1, 2], 20),
            "prompt": np.repeat(["a", "b", "c", "d", "e", "f"], 10),
            "grade": np.tile([8, 11], 30),
            "y_true": y,
            "y_pred_raw": y + rng.normal(0, 0.4, 60),
        }
    ))


def test_summarize_contract_keys_and_values():
    oof = _oof()
    m = summarize(oof, min_prompt_n=10)
    assert set(m) == {"qwk", "offset", "rmse", "mae", "within_one_step", "error_unit", "n"}
    assert m["error_unit"] == "score points"  # one scale: errors in its score points
    assert set(m["qwk"]) == {"pooled", "fold_mean", "fold_std", "worst_prompt", "worst_quarter", "median_prompt", "within_prompt", "per_fold"}
    assert set(m["offset"]) == {"rms", "noise_rms"}
    per_fold = [qwk(g.y_true, g.y_pred_raw, HB) for _, g in oof.groupby("fold")]
    assert m["qwk"]["fold_mean"] == pytest.approx(np.mean(per_fold), abs=1e-6)
    assert m["qwk"]["fold_std"] == pytest.approx(np.std(per_fold, ddof=1), abs=1e-6)
    per_prompt = sorted(qwk(g.y_true, g.y_pred_raw, HB) for _, g in oof.groupby("prompt"))
    assert m["qwk"]["worst_prompt"] == pytest.approx(per_prompt[0], abs=1e-6)
    # 6 scored prompts: the worst quarter is ceil(1.5) = 2 prompts
    assert m["qwk"]["worst_quarter"] == pytest.approx(np.mean(per_prompt[:2]), abs=1e-6)
    assert m["qwk"]["worst_prompt"] <= m["qwk"]["worst_quarter"] <= m["qwk"]["median_prompt"]
    assert m["qwk"]["within_prompt"] == pytest.approx(np.mean(per_prompt), abs=1e-6)
    assert m["n"] == {"essays": 60, "prompts": 6, "folds": 3, "prompts_scored": 6}
    # every headline metric of METRIC_DIRECTION is in the dict
    assert all(metric_value(m, key) is not None for key in METRIC_DIRECTION)
    # min_prompt_n above every prompt's size: no per-prompt QWK
    none_scored = summarize(oof, min_prompt_n=11)["qwk"]
    assert none_scored["worst_prompt"] is None and none_scored["worst_quarter"] is None


def test_worst_share_mean_hand_computed():
    assert worst_share_mean([0.9, 0.1, 0.5, 0.3]) == pytest.approx(0.1)  # ceil(0.25 * 4) = 1
    assert worst_share_mean([0.9, 0.1, 0.5, 0.3, 0.7]) == pytest.approx(0.2)  # ceil(1.25) = 2: 0.1, 0.3
    assert worst_share_mean([0.4, np.nan, 0.2]) == pytest.approx(0.2)  # NaN (unscored) prompts are skipped
    assert worst_share_mean([0.9, 0.1, 0.5, 0.3], share=0.5) == pytest.approx(0.2)
    assert worst_share_mean([0.6]) == pytest.approx(0.6)
    assert np.isnan(worst_share_mean([])) and np.isnan(worst_share_mean([np.nan]))


def test_metric_value_reads_dotted_keys():
    m = {"qwk": {"pooled": 0.7, "per_fold": {"0": 0.5}}, "rmse": 0.4, "gone": None}
    assert metric_value(m, "qwk.pooled") == 0.7 and metric_value(m, "rmse") == 0.4
    assert metric_value(m, "qwk.per_fold.0") == 0.5
    assert metric_value(m, "qwk.worst_quarter") is None and metric_value(m, "mae") is None
    assert metric_value(m, "rmse.pooled") is None  # a leaf has no children
    assert metric_value(m, "gone") is None
    assert set(METRIC_DIRECTION) >= {"qwk.pooled", "qwk.worst_quarter", "qwk.worst_prompt", "rmse"}
    assert METRIC_DIRECTION["qwk.worst_quarter"] == +1 and METRIC_DIRECTION["rmse"] == -1 and METRIC_DIRECTION["mae"] == -1


def _essays(oof):
    return with_scale(pd.DataFrame({"record_id": [f"r{i}" for i in range(len(oof))], "prompt": oof["prompt"], "grade": oof["grade"],
                                    "y": oof["y_true"]}))


def test_summarize_seeds_means_over_seeds():
    base = _oof()
    rng = np.random.default_rng(1)
    essays = _essays(base)
    frames = [make_oof_frame(essays, base["fold"], points_to_unit(base["y_true"] + rng.normal(0, sd, len(base))), seed)
              for seed, sd in ((7, 0.3), (8, 0.6), (9, 0.9))]
    oof = stack_seeds(frames)
    assert list(oof.columns) == PREDICTION_COLUMNS and len(oof) == 3 * len(base)
    assert oof["seed"].tolist() == [7] * 60 + [8] * 60 + [9] * 60  # seed-major
    m = summarize_seeds(oof, min_prompt_n=10)
    per_seed = [summarize(f, min_prompt_n=10) for f in frames]
    assert m["n"] == {"essays": 60, "prompts": 6, "folds": 3, "prompts_scored": 6, "seeds": 3}
    for key in (*METRIC_DIRECTION, "qwk.fold_std", "qwk.per_fold.1"):
        values = [metric_value(s, key) for s in per_seed]
        assert metric_value(m, key) == pytest.approx(np.mean(values), abs=1e-6), key
        if key in METRIC_DIRECTION:
            assert m["seed_sd"][key] == pytest.approx(np.std(values, ddof=1), abs=1e-6), key
    assert set(m["seed_sd"]) == set(METRIC_DIRECTION)
    assert m["seed_sd"]["rmse"] > 0.1  # the seeds were built to disagree
    assert set(m["seeds"]) == {"7", "8", "9"}
    assert m["seeds"]["9"]["rmse"] == per_seed[2]["rmse"] and m["seeds"]["7"]["qwk"] == per_seed[0]["qwk"]
    # the mean over seeds is not the ensemble (mean prediction) metric
    ensemble = oof.groupby("record_id", sort=False)["y_pred_raw"].mean().to_numpy()
    assert m["rmse"] > rmse(ensemble - base["y_true"].to_numpy()) + 1e-3


def test_summarize_seeds_with_one_seed_equals_summarize():
    base = _oof()
    oof = make_oof_frame(_essays(base), base["fold"], points_to_unit(base["y_pred_raw"]), seed=3)
    np.testing.assert_allclose(oof["y_pred_raw"], base["y_pred_raw"], atol=1e-12)  # unit range in, score points out
    m, one = summarize_seeds(oof, min_prompt_n=10), summarize(oof, min_prompt_n=10)
    for key in (*METRIC_DIRECTION, "qwk.fold_std"):
        assert metric_value(m, key) == pytest.approx(metric_value(one, key), abs=1e-6), key
    assert m["n"]["seeds"] == 1 and set(m["seeds"]) == {"3"}
    assert all(sd == 0.0 for sd in m["seed_sd"].values())


def test_stack_seeds_rejects_a_repeated_seed():
    base = _oof()
    frame = make_oof_frame(_essays(base), base["fold"], points_to_unit(base["y_pred_raw"]), seed=4)
    with pytest.raises(AESError, match="repeat a seed"):
        stack_seeds([frame, frame.copy()])


def test_make_oof_frame_rejects_non_finite_predictions():
    base = _oof()
    bad = base["y_pred_raw"].to_numpy().copy()
    bad[5] = np.nan
    with pytest.raises(AESError, match="non-finite predictions for records \\['r5'\\]"):
        make_oof_frame(_essays(base), base["fold"], points_to_unit(bad))


def test_write_model_outputs_contract_for_several_seeds(tmp_path):
    base = _oof()
    rng = np.random.default_rng(2)
    frames = [make_oof_frame(_essays(base), base["fold"], points_to_unit(base["y_true"] + rng.normal(0, 0.5, 60)), s) for s in (0, 1)]
    oof = stack_seeds(frames)
    metrics = write_model_outputs("demo_cv", oof, runtime_s=1.234, min_prompt_n=10, extra={"note": "x"}, root=tmp_path)
    assert metrics["runtime_s"] == 1.2 and metrics["note"] == "x" and metrics["n"]["seeds"] == 2
    assert read_metrics("demo_cv", tmp_path) == metrics
    back = read_predictions("demo_cv", tmp_path)
    assert list(back.columns) == PREDICTION_COLUMNS + CALIBRATED_COLUMNS and len(back) == 120 and sorted(back["seed"].unique()) == [0, 1]
    by_prompt = pd.read_csv(tmp_path / "plots" / "demo_cv" / "by_prompt.csv")
    assert by_prompt["model"].eq("demo_cv").all() and by_prompt["n"].tolist() == [10] * 6  # essays, not essays x seeds
    # each diagnostic is the mean over seeds of that seed's value
    per_seed = [diagnostics(f, "prompt").set_index("prompt") for f in frames]
    expected = (per_seed[0]["mae"] + per_seed[1]["mae"]) / 2
    np.testing.assert_allclose(by_prompt.set_index("prompt")["mae"], expected, atol=1e-5)
    by_band = pd.read_csv(tmp_path / "plots" / "demo_cv" / "by_band.csv")
    assert "band" in by_band.columns and by_band["n"].sum() == 60
    with pytest.raises(AESError, match="lacks columns \\['seed'\\]"):
        write_model_outputs("demo_cv", oof.drop(columns="seed"), 1.0, 10, root=tmp_path)
    with pytest.raises(AESError, match="predictions of stage 'other_cv' not found"):
        read_predictions("other_cv", tmp_path)


def test_diagnostics_by_band():
    oof = with_band(_oof())
    np.testing.assert_array_equal(oof["band"], oof["y_true"])  # one scale: the band is the true score
    d = diagnostics(oof, "band")
    assert d["n"].sum() == 60
    row = d[d["band"] == d["band"].iloc[0]].iloc[0]
    grp = oof[oof.y_true == row["band"]]
    assert row["mean_residual"] == pytest.approx((grp.y_pred_raw - grp.y_true).mean())


# ---------------------------------------------------------------- offset and within-prompt agreement


def _two_prompt_oof(shift_a: float, shift_b: float, n: int = 40, noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = np.round(rng.uniform(1, 5, 2 * n) * 2) / 2
    shift = np.repeat([shift_a, shift_b], n)
    return with_scale(pd.DataFrame({"fold": np.repeat([0, 1], n), "prompt": np.repeat(["a", "b"], n), "y_true": y,
                                    "y_pred_raw": y + shift + rng.normal(0, noise, 2 * n) if noise else y + shift}))


def test_offset_is_zero_for_exact_prompt_means_and_the_shift_for_a_shifted_model():
    assert prompt_offset(_two_prompt_oof(0.0, 0.0)) == pytest.approx(0.0)
    # residuals that cancel within each prompt: errors, but no per-prompt offset
    exact_means = _two_prompt_oof(0.0, 0.0)
    exact_means["y_pred_raw"] += np.tile([0.3, -0.3], 40)
    assert prompt_offset(exact_means) == pytest.approx(0.0, abs=1e-12)
    assert prompt_offset(_two_prompt_oof(0.5, 0.5)) == pytest.approx(0.5)
    assert prompt_offset(_two_prompt_oof(0.5, -0.5)) == pytest.approx(0.5)  # sign does not cancel across prompts
    assert prompt_offset(_two_prompt_oof(0.6, 0.0)) == pytest.approx(np.sqrt(0.6**2 / 2))  # essay-weighted


def test_within_prompt_qwk_equals_sklearn_per_prompt():
    oof = _two_prompt_oof(0.2, -0.3, noise=0.5, seed=3).assign(grade=8)
    expected = []
    for _, g in oof.groupby("prompt"):
        a, b = np.rint(g["y_true"] * 2).astype(int), np.rint(half_band(g["y_pred_raw"]) * 2).astype(int)
        expected.append(cohen_kappa_score(a, b, weights="quadratic"))
    assert summarize(oof, min_prompt_n=10)["qwk"]["within_prompt"] == pytest.approx(np.mean(expected), abs=1e-6)


def test_noise_reference_is_the_shuffle_expectation_and_shrinks_as_prompts_grow():
    rng = np.random.default_rng(5)

    def pure_noise(per_prompt: int) -> pd.DataFrame:  # 2 folds x 6 prompts, residuals unrelated to the prompt
        n = 12 * per_prompt
        y = np.full(n, 3.0)
        return with_scale(pd.DataFrame({"fold": np.repeat([0, 1], n // 2), "prompt": np.repeat([f"p{i}" for i in range(12)], per_prompt),
                                        "y_true": y, "y_pred_raw": y + rng.normal(0, 0.5, n)}))

    small = pure_noise(10)
    shuffled = []
    for _ in range(400):  # the definition: residuals shuffled across prompts within each fold
        s = small.copy()
        for _, idx in s.groupby("fold").groups.items():
            s.loc[idx, "y_pred_raw"] = rng.permutation(s.loc[idx, "y_pred_raw"].to_numpy())
        shuffled.append(prompt_offset(s) ** 2)
    assert prompt_offset_noise(small) == pytest.approx(np.sqrt(np.mean(shuffled)), rel=0.05)
    assert prompt_offset_noise(pure_noise(40)) < prompt_offset_noise(pure_noise(10)) < prompt_offset_noise(pure_noise(3))
    # a real per-prompt shift lies far above the noise reference
    shifted = pure_noise(40)
    shifted["y_pred_raw"] += np.repeat(rng.choice([-0.4, 0.4], 12), 40)
    assert prompt_offset(shifted) > 3 * prompt_offset_noise(pure_noise(40))


# ---------------------------------------------------------------- several score scales (issue 15: ASAP's per-prompt ranges)

ASAP_RANGES = ((2, 12), (1, 6), (0, 3), (0, 4), (0, 30), (0, 60))  # ASAP prompts 1, 2, 3-4, 5-6, 7, 8: integer scores


@pytest.mark.parametrize(("low", "high"), ASAP_RANGES)
def test_unit_round_trip_and_grid_rounding_are_exact_on_every_asap_grid_value(low, high):
    from aes.core.scale import Scale, from_unit, to_unit

    scale = Scale(float(low), float(high), 1.0)
    y = scale.grid
    assert y.tolist() == list(range(low, high + 1)) and scale.n_levels == high - low + 1
    lo, hi = np.full(len(y), scale.low), np.full(len(y), scale.high)
    unit = to_unit(y, lo, hi)
    assert unit[0] == 0.0 and unit[-1] == 1.0 and np.all(np.diff(unit) > 0)
    back = from_unit(unit, lo, hi)
    np.testing.assert_allclose(back, y, rtol=0, atol=1e-12)  # the identity, up to float rounding
    assert to_grid(back, lo, hi, np.ones(len(y))).tolist() == y.tolist()  # ... and exactly once rounded to the grid
    assert to_grid(y, lo, hi, np.ones(len(y))).tolist() == y.tolist()  # a grid value is its own grid value
    assert scale.on_grid(y).all() and not scale.on_grid(y[:-1] + 0.5).any()


def test_unit_round_trip_per_row_on_a_table_of_every_asap_range():
    from aes.core.scale import from_unit, to_unit

    y = np.concatenate([np.arange(lo, hi + 1, dtype=float) for lo, hi in ASAP_RANGES])
    low = np.concatenate([np.full(hi - lo + 1, float(lo)) for lo, hi in ASAP_RANGES])
    high = np.concatenate([np.full(hi - lo + 1, float(hi)) for lo, hi in ASAP_RANGES])
    step = np.ones(len(y))
    unit = to_unit(y, low, high)
    assert unit.min() == 0.0 and unit.max() == 1.0
    np.testing.assert_allclose(from_unit(unit, low, high), y, rtol=0, atol=1e-12)
    assert np.array_equal(to_grid(from_unit(unit, low, high), low, high, step), y)
    # (n, T) matrices: each row's range applies to all its columns
    two = np.column_stack([y, y])
    np.testing.assert_allclose(from_unit(to_unit(two, low, high), low, high), two, rtol=0, atol=1e-12)


def _two_scale_oof(n: int = 60, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Prompt "a" scored 0-3 and prompt "b" scored 0-60 (one prompt per fold), with predictions whose
    grid value is known: an integer near the truth plus less than half a point of noise.
    Returns the table and {prompt: (true integer labels, predicted integer labels, low, high)}."""
    from aes.core.scale import Scale

    rng = np.random.default_rng(seed)
    frames, labels = [], {}
    for fold, (prompt, scale) in enumerate((("a", Scale(0.0, 3.0, 1.0)), ("b", Scale(0.0, 60.0, 1.0)))):
        span = int(scale.high - scale.low)
        y = rng.integers(0, span + 1, n).astype(float)
        step_err = rng.integers(-max(1, span // 6), max(1, span // 6) + 1, n)
        pred_int = np.clip(y + step_err, scale.low, scale.high)
        frames.append(with_scale(pd.DataFrame({"record_id": [f"{prompt}{i:03d}" for i in range(n)], "fold": fold, "prompt": prompt,
                                               "grade": 9, "y_true": y, "y_pred_raw": pred_int + rng.uniform(-0.45, 0.45, n)}), scale))
        labels[prompt] = (y.astype(int), pred_int.astype(int), int(scale.low), int(scale.high))
    return pd.concat(frames, ignore_index=True), labels


def test_per_prompt_qwk_on_two_scales_equals_sklearn_and_pooled_qwk_is_undefined():
    from aes.core.metrics import RANGE_SHARE, per_group_qwk

    oof, labels = _two_scale_oof()
    expected = {p: cohen_kappa_score(t, q, weights="quadratic", labels=np.arange(lo, hi + 1)) for p, (t, q, lo, hi) in labels.items()}
    assert 0.3 < min(expected.values()) < max(expected.values()) < 1.0  # informative, imperfect, different
    per_prompt = per_group_qwk(oof, "prompt")
    for p in ("a", "b"):
        assert per_prompt[p] == pytest.approx(expected[p], abs=1e-12), p
    assert np.isnan(table_qwk(oof))  # no QWK pools a 0-3 prompt with a 0-60 one
    m = summarize(oof, min_prompt_n=10)
    assert m["qwk"]["pooled"] is None
    # fold-mean QWK is a pooled metric too (POOLED_METRICS): undefined on several scales, even with one prompt per fold
    assert m["qwk"]["fold_mean"] is None and m["qwk"]["fold_std"] is None
    assert m["qwk"]["per_fold"] == {"0": pytest.approx(expected["a"], abs=1e-6), "1": pytest.approx(expected["b"], abs=1e-6)}
    assert m["qwk"]["within_prompt"] == pytest.approx(np.mean(list(expected.values())), abs=1e-6)
    assert m["qwk"]["worst_prompt"] == pytest.approx(min(expected.values()), abs=1e-6)
    assert m["n"]["prompts_scored"] == 2
    # errors are shares of each prompt's range, so the 0-60 prompt does not swamp the 0-3 one
    assert m["error_unit"] == RANGE_SHARE
    share = (oof["y_pred_raw"] - oof["y_true"]) / (oof["score_high"] - oof["score_low"])
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean(share**2)), abs=1e-6)
    assert m["mae"] == pytest.approx(np.mean(np.abs(share)), abs=1e-6)
    # one prompt on its own is one scale again: its pooled QWK is that prompt's QWK
    assert summarize(oof[oof["prompt"] == "b"], min_prompt_n=10)["qwk"]["pooled"] == pytest.approx(expected["b"], abs=1e-6)


def test_noise_reference_of_leave_one_prompt_out_is_the_sampling_variance_of_each_prompt_mean():
    """One prompt per fold: the reference is sqrt(sum_p n_p * (s2_p / n_p) / N), s2_p the prompt's
    residual variance (ddof=1): the offset a prompt with no true shift shows from its essays alone."""
    from aes.core.scale import Scale

    def lopo(per_prompt: int, seed: int, scales=(Scale(1.0, 5.0, 0.5),) * 4) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        frames = []
        for p, scale in enumerate(scales):
            n = per_prompt + 7 * p  # prompts of different sizes
            y = scale.grid[rng.integers(0, scale.n_levels, n)]
            err = rng.normal(0.2 * (p - 1.5), 0.1 * (p + 1), n) * (scale.high - scale.low) / 4  # its own shift and spread
            frames.append(with_scale(pd.DataFrame({"fold": p, "prompt": f"p{p}", "y_true": y, "y_pred_raw": y + err}), scale))
        return pd.concat(frames, ignore_index=True)

    def expected(oof: pd.DataFrame) -> float:
        share = residuals(oof)
        by = pd.DataFrame({"prompt": oof["prompt"], "err": share}).groupby("prompt")["err"]
        n_p, s2_p = by.size(), by.var(ddof=1)
        return float(np.sqrt((n_p * s2_p / n_p).sum() / n_p.sum()))

    one_scale = lopo(20, 1)
    assert prompt_offset_noise(one_scale) == pytest.approx(expected(one_scale), rel=1e-12)
    # in points on one scale: the plain residual variance of each prompt
    s2 = one_scale.assign(e=one_scale["y_pred_raw"] - one_scale["y_true"]).groupby("prompt")["e"].var(ddof=1)
    assert prompt_offset_noise(one_scale) == pytest.approx(np.sqrt(s2.sum() / len(one_scale)), rel=1e-12)
    asap = lopo(20, 2, scales=(Scale(2.0, 12.0, 1.0), Scale(0.0, 3.0, 1.0), Scale(0.0, 30.0, 1.0), Scale(0.0, 60.0, 1.0)))
    assert prompt_offset_noise(asap) == pytest.approx(expected(asap), rel=1e-12)  # in shares of each range
    assert summarize(asap, min_prompt_n=5)["offset"]["noise_rms"] == pytest.approx(expected(asap), abs=1e-6)
    # more essays per prompt: a smaller reference (s2_p / n_p); the real shifts (offset) stay
    sizes = (10, 40, 160, 640)
    noise = [prompt_offset_noise(lopo(n, 3)) for n in sizes]
    assert noise[0] > noise[1] > noise[2] > noise[3]
    assert noise[3] < 0.25 * noise[0]  # ~sqrt(20 / 650): the reference falls as 1 / sqrt(n_p)
    assert prompt_offset(lopo(640, 3)) > 5 * noise[3]
