import numpy as np
import pandas as pd
import pytest

from aes.core.metrics import HALF_BANDS, band_labels, diagnostics, qwk, qwk_from_confusion, rmse, summarize, to_half_band, within_half_band


def test_half_band_rounding_and_clipping():
    raw = [0.2, 1.24, 1.25, 2.74, 3.0, 3.76, 5.9, 4.75]
    assert to_half_band(raw).tolist() == [1.0, 1.0, 1.5, 2.5, 3.0, 4.0, 5.0, 5.0]


def test_qwk_hand_computed():
    # Labels (doubled) a=[2,4,6], b=[2,6,6]. Hand computation over the 3 occupied labels with
    # quadratic weights w_ij=(i-j)^2 (on doubled labels): observed disagreement = (0+4+0)/3,
    # expected = sum_ij w_ij * p_a(i) p_b(j) = (1/3)*(1/3)*0 + (1/3)*(2/3)*16 + (1/3)*(1/3)*4
    # + (1/3)*(2/3)*4 + (1/3)*(1/3)*16 + (1/3)*(2/3)*0 = (32 + 4 + 8 + 16)/9 = 60/9.
    # kappa = 1 - (4/3)/(60/9) = 1 - 12/60 = 0.8
    assert qwk([1.0, 2.0, 3.0], [1.1, 2.8, 3.2]) == pytest.approx(0.8)


def test_qwk_from_confusion_equals_qwk_on_the_essays():
    # Gaps in the labels (no 1.5, no 4.0 ...) are where index-based weights would go wrong.
    rng = np.random.default_rng(3)
    y_true = rng.choice([1.0, 2.0, 2.5, 3.0, 5.0], size=200)
    y_pred = y_true + rng.normal(0, 0.7, size=200)
    t, p = band_labels(y_true) - 2, band_labels(to_half_band(y_pred)) - 2
    conf = np.zeros((len(HALF_BANDS), len(HALF_BANDS)))
    np.add.at(conf, (t, p), 1)
    assert qwk_from_confusion(conf) == pytest.approx(qwk(y_true, y_pred), abs=1e-12)
    batch = np.stack([conf, conf.T, np.zeros_like(conf)])  # (3, 9, 9): batched, transposed, empty
    out = qwk_from_confusion(batch)
    assert out[0] == pytest.approx(out[1]) and np.isnan(out[2])


def test_qwk_perfect_and_undefined():
    y = np.array([1.0, 2.5, 3.0, 4.5])
    assert qwk(y, y + 0.1) == pytest.approx(1.0)
    assert np.isnan(qwk([3.0, 3.0], [3.0, 3.0]))


def test_rmse_and_within_half_band():
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(np.sqrt(4 / 3))
    # rounded predictions 3.0, 3.5, 4.5 vs 3.0: diffs 0, 0.5, 1.5 -> 2/3 within
    assert within_half_band([3.0, 3.0, 3.0], [3.1, 3.4, 4.4]) == pytest.approx(2 / 3)


def _oof():
    rng = np.random.default_rng(0)
    y = np.round(rng.uniform(1, 5, 60) * 2) / 2
    return pd.DataFrame(
        {
            "fold": np.repeat([0, 1, 2], 20),
            "prompt": np.repeat(["a", "b", "c", "d", "e", "f"], 10),
            "grade": np.tile([8, 11], 30),
            "y_true": y,
            "y_pred_raw": y + rng.normal(0, 0.4, 60),
        }
    )


def test_summarize_contract_keys_and_values():
    oof = _oof()
    m = summarize(oof, min_prompt_n=10)
    assert set(m) == {"qwk", "rmse", "mae", "within_half_band", "n"}
    assert set(m["qwk"]) == {"pooled", "fold_mean", "fold_std", "worst_prompt", "median_prompt", "per_fold"}
    per_fold = [qwk(g.y_true, g.y_pred_raw) for _, g in oof.groupby("fold")]
    assert m["qwk"]["fold_mean"] == pytest.approx(np.mean(per_fold), abs=1e-6)
    assert m["qwk"]["fold_std"] == pytest.approx(np.std(per_fold, ddof=1), abs=1e-6)
    per_prompt = [qwk(g.y_true, g.y_pred_raw) for _, g in oof.groupby("prompt")]
    assert m["qwk"]["worst_prompt"] == pytest.approx(min(per_prompt), abs=1e-6)
    assert m["n"] == {"essays": 60, "prompts": 6, "folds": 3, "prompts_scored": 6}
    # min_prompt_n above every prompt's size: no per-prompt QWK
    assert summarize(oof, min_prompt_n=11)["qwk"]["worst_prompt"] is None


def test_diagnostics_by_band():
    oof = _oof()
    d = diagnostics(oof, "y_true")
    assert d["n"].sum() == 60
    row = d[d["y_true"] == d["y_true"].iloc[0]].iloc[0]
    grp = oof[oof.y_true == row["y_true"]]
    assert row["mean_residual"] == pytest.approx((grp.y_pred_raw - grp.y_true).mean())
