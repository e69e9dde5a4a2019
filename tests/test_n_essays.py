"""aes.ops.n_essays: statistics of a new prompt from n of its essays, the rest of the design unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aes.baseline.gbm import build_features
from aes.core.errors import AESError
from aes.ops.n_essays import main, model_inputs, n_essays_curve, reference_rows, summarise_curve
from tests.report_fixtures import with_scale

GBM = {
    "features": ["embeddings", "length"], "n_estimators": 30, "learning_rate": 0.1, "max_depth": [1, 2], "min_child_weight": 1.0,
    "subsample": 0.8, "colsample_bytree": 0.8, "reg_lambda": 1.0, "early_stopping_rounds": 5,
    "inner_val_fraction": 0.25, "n_jobs": 1, "seeds": [7],
}


def _cv(n_prompts=6, per_prompt=12, n_folds=3, seed=0):
    rng = np.random.default_rng(seed)
    n = n_prompts * per_prompt
    prompt = np.repeat([f"P{p}" for p in range(n_prompts)], per_prompt)
    y = np.clip(np.round(rng.normal(3, 0.7, n) * 2) / 2, 1, 5)
    fold = np.repeat(np.arange(n_prompts) % n_folds, per_prompt)
    cv = with_scale(pd.DataFrame({"record_id": [f"r{i}" for i in range(n)], "prompt": prompt, "y": y, "fold": fold, "grade": 9}))
    shift = np.repeat(rng.normal(scale=3, size=n_prompts), per_prompt)[:, None]  # each prompt's own offset
    embeddings = np.column_stack([y + rng.normal(0, 0.3, n), rng.normal(size=(n, 2))]) + shift
    hand = np.column_stack([y * 10 + rng.normal(0, 2, n), rng.normal(size=n)]) + shift
    return cv, embeddings, hand


def test_model_inputs_are_gbm_cvs_feature_matrix():
    texts = ["One two three. Four five.", "A b c d e f g.\n\nMore words here now.", "Short.", "Again a text with words."]
    prompts = np.array(["a", "a", "b", "b"])
    emb = np.arange(12, dtype=np.float64).reshape(4, 3)
    normalise = {"features": "prompt_minmax", "embeddings": "prompt_mean"}
    expected, _ = build_features(emb, texts, ["embeddings", "length"], None, normalise, prompts)
    hand, _ = build_features(None, texts, ["length"])
    np.testing.assert_array_equal(model_inputs(emb, hand, prompts, normalise), expected)


def test_reference_rows_keep_every_training_row_and_n_of_each_held_out_prompt():
    prompts = np.repeat(["a", "b", "c"], 10)
    held = np.isin(prompts, ["b", "c"])
    ref = reference_rows(prompts, held, 3, np.random.default_rng(0))
    assert ref[prompts == "a"].all() and ref[prompts == "b"].sum() == 3 and ref[prompts == "c"].sum() == 3
    assert reference_rows(prompts, held, 50, np.random.default_rng(0)).all()  # n above a prompt's size: all of it


def test_the_curve_reaches_the_cv_setting_with_every_essay_and_has_every_point():
    cv, emb, hand = _cv()
    params = {"gbm": GBM, "normalise": {"features": "prompt_minmax", "embeddings": "prompt_mean"}}
    curve = n_essays_curve(cv, emb, hand, params, ns=[3, 100], draws=2, seed=7)
    assert set(curve["n"].astype(str)) == {"3", "100", "all", "alone", "inductive"}
    assert np.isfinite(curve["qwk"]).all()
    summary = {s["n"]: s for s in summarise_curve(curve)}
    # n at least every essay of each prompt is exactly the CV setting, in every draw
    assert summary["100"]["mean"] == summary["all"]["mean"] and summary["100"]["sd"] == 0
    assert summary["3"]["draws"] == 2 and summary["alone"]["draws"] == 1


def test_an_inductive_setting_or_a_one_essay_n_stops_with_the_next_step(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("aes.ops.n_essays.load_params", lambda: _params())
    with pytest.raises(AESError, match="normalise is inductive.*-S normalise.features=prompt_minmax"):
        main([])
    with pytest.raises(AESError, match="--ns: each n must be at least 2"):
        main(["-S", "normalise.features=prompt_zscore", "--ns", "1", "5"])


def _params() -> dict:
    from aes.data.params import validate
    from tests.committed import committed_params

    return validate(committed_params())
