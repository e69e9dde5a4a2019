"""aes.ops.n_essays: statistics of a new prompt from n of its essays, the rest of the design unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from aes.baseline.gbm import build_features, stack_inputs
from aes.core.errors import AESError
from aes.ops.n_essays import main, n_essays_curve, reference_rows, summarise_curve
from tests.report_fixtures import GBM, gbm_cv_frame

def _cv(n_prompts=6, per_prompt=12, n_folds=3, seed=0):
    """gbm_cv_frame's essays, with embeddings and writing features that each prompt shifts by its own offset."""
    cv, features = gbm_cv_frame(n_prompts, per_prompt, n_folds, seed)
    rng = np.random.default_rng(seed + 1)
    shift = np.repeat(rng.normal(scale=3, size=n_prompts), per_prompt)[:, None]  # each prompt's own offset
    embeddings = features[:, 1:4].astype(np.float64) + shift
    hand = np.column_stack([features[:, 1] * 10, features[:, 4]]).astype(np.float64) + shift
    return cv, embeddings, hand


def test_stack_inputs_of_raw_blocks_is_gbm_cvs_feature_matrix():
    texts = ["One two three. Four five.", "A b c d e f g.\n\nMore words here now.", "Short.", "Again a text with words."]
    prompts = np.array(["a", "a", "b", "b"])
    emb = np.arange(12, dtype=np.float64).reshape(4, 3)
    normalise = {"features": "prompt_minmax", "embeddings": "prompt_mean"}
    expected, _ = build_features(emb, texts, ["embeddings", "length"], None, normalise, prompts)
    hand, _ = build_features(None, texts, ["length"])
    np.testing.assert_array_equal(stack_inputs(emb, hand, prompts, normalise), expected)


def test_reference_rows_keep_every_training_row_and_n_of_each_held_out_prompt():
    prompts = np.repeat(["a", "b", "c"], 10)
    held = np.isin(prompts, ["b", "c"])
    ref = reference_rows(prompts, held, 3, np.random.default_rng(0))
    assert ref[prompts == "a"].all() and ref[prompts == "b"].sum() == 3 and ref[prompts == "c"].sum() == 3
    assert reference_rows(prompts, held, 50, np.random.default_rng(0)).all()  # n above a prompt's size: all of it


def test_the_curve_reaches_the_cv_setting_with_every_essay_and_has_every_point():
    cv, emb, hand = _cv()
    params = {"gbm": GBM | {"n_estimators": 30}, "normalise": {"features": "prompt_minmax", "embeddings": "prompt_mean"}}
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
