import pandas as pd
import pytest

from aes.core.errors import AESError
from aes.data.splits import build_splits, cv_essays, inner_split, locked_test_essays
from tests.synthetic import make_ellipse_frame

PARAMS = {"test_fraction": 0.2, "test_candidates": 200, "n_folds": 4, "seed": 3}


def _essays(n_prompts=20, per_prompt=12, seed=0):
    raw = make_ellipse_frame(n_prompts=n_prompts, per_prompt=per_prompt, seed=seed)
    # uneven prompt sizes, like ELLIPSE (3 to 192 essays per prompt)
    raw = raw[raw.index % per_prompt < 3 + (raw["prompt"].str[-1].astype(int) % 4) * 3]
    frame = pd.DataFrame({"record_id": raw.text_id_kaggle, "prompt": raw.prompt, "y": raw.Overall, "grade": raw.grade})
    return frame.assign(score_low=1.0, score_high=5.0, score_step=0.5).reset_index(drop=True)  # ELLIPSE's one scale


def test_no_prompt_in_two_folds_and_none_shared_with_test():
    essays = _essays()
    splits = build_splits(essays, PARAMS, "sha")
    test_prompts = set(splits["test"]["prompts"])
    cv = cv_essays(essays, splits)
    assert not test_prompts & set(cv["prompt"])
    assert cv.groupby("prompt")["fold"].nunique().max() == 1
    assert len(cv) + splits["test"]["n_essays"] == len(essays)
    assert sorted(cv["fold"].unique()) == [0, 1, 2, 3]
    assert set(locked_test_essays(essays, splits)["prompt"]) == test_prompts
    assert 0.1 < splits["test"]["share"] < 0.3


def test_splits_deterministic_from_seed():
    essays = _essays()
    assert build_splits(essays, PARAMS, "sha") == build_splits(essays, PARAMS, "sha")
    other = build_splits(essays, PARAMS | {"seed": 4}, "sha")
    assert other != build_splits(essays, PARAMS, "sha")


def test_too_few_prompts_for_folds():
    essays = _essays(n_prompts=4)
    with pytest.raises(AESError, match="prepare.ellipse.n_folds=4 but only"):  # named as the settings' section
        build_splits(essays, PARAMS, "sha", section="prepare.ellipse")


def test_inner_split_grouped():
    essays = _essays()
    tr, va = inner_split(essays, 0.25, seed=1)
    assert not set(essays.prompt.iloc[tr]) & set(essays.prompt.iloc[va])
    assert len(tr) + len(va) == len(essays)
    with pytest.raises(AESError, match="at least 2 prompts"):
        inner_split(essays[essays.prompt == essays.prompt.iloc[0]], 0.25, seed=1)


def test_splits_mismatch_detected():
    essays = _essays()
    splits = build_splits(essays, PARAMS, "sha")
    with pytest.raises(AESError, match="re-run `dvc repro prepare`"):
        cv_essays(essays.iloc[5:], splits)


def test_locked_test_protocol_needs_one_scale():
    essays = _essays()
    essays.loc[essays["prompt"] == essays["prompt"].iloc[0], "score_high"] = 6.0
    with pytest.raises(AESError, match="the locked-test protocol needs one score scale for every essay; the essays have 2"):
        build_splits(essays, PARAMS, "sha")
    with pytest.raises(AESError, match=r"score-scale column\(s\) \['score_low', 'score_high', 'score_step'\]"):
        build_splits(_essays().drop(columns=["score_low", "score_high", "score_step"]), PARAMS, "sha")
