"""finetune.max_train_essays, the smoke runs' per-fold training cap: a seeded sample of the fold's
training essays (the same for the same seed), never a validation essay, 0 = off, and a cap larger
than a fold fails naming the key and the fold's size."""

import numpy as np
import pandas as pd
import pytest

from aes.core.errors import AESError
from aes.data.params import validate
from aes.finetune.cv import run_cv
from aes.finetune.folds import fold_rows
from tests.training_fixtures import make_training_repo, one_torch_thread


def _cv(n_prompts=12, per_prompt=10, n_folds=3) -> pd.DataFrame:
    prompts = np.repeat([f"p{i}" for i in range(n_prompts)], per_prompt)
    fold = np.repeat(np.arange(n_prompts) % n_folds, per_prompt)  # prompt-grouped folds
    y = np.tile(np.linspace(1, 5, per_prompt), n_prompts)
    return pd.DataFrame({"record_id": [f"e{i}" for i in range(len(prompts))], "prompt": prompts, "fold": fold, "y": y})


def _ft(cap, inner=0.0):
    return {"max_train_essays": cap, "inner_val_fraction": inner}


@pytest.mark.parametrize("inner", [0.0, 0.25])
def test_cap_picks_the_same_training_essays_for_the_same_seed_and_never_a_validation_essay(inner):
    cv = _cv()
    k = 1
    all_train, _, all_val = fold_rows(_ft(0), cv, k, seed=7)
    assert len(all_train) == 80 and len(all_val) == 40
    picks = {}
    for seed in (7, 7, 8):
        train, inner_rows, val = fold_rows(_ft(20, inner), cv, k, seed)
        capped = np.sort(np.concatenate([train, inner_rows]))
        assert len(capped) == 20 and len(np.unique(capped)) == 20  # the cap counts fit + inner essays
        assert set(capped) <= set(all_train)  # drawn from the training part only
        assert not set(capped) & set(all_val)
        np.testing.assert_array_equal(val, all_val)  # validation untouched: every essay of fold k
        assert (inner == 0) == (len(inner_rows) == 0)
        picks.setdefault(seed, []).append(capped)
    np.testing.assert_array_equal(picks[7][0], picks[7][1])  # same seed, same essays
    assert not np.array_equal(picks[7][0], picks[8][0])  # another seed, another sample


def test_cap_zero_is_off_and_a_cap_equal_to_the_fold_keeps_every_essay():
    cv = _cv()
    off = fold_rows(_ft(0), cv, 0, seed=7)[0]
    np.testing.assert_array_equal(off, np.flatnonzero(cv["fold"].to_numpy() != 0))
    np.testing.assert_array_equal(fold_rows(_ft(len(off)), cv, 0, seed=7)[0], off)


def test_cap_larger_than_the_fold_names_the_key_and_the_fold_size():
    with pytest.raises(AESError, match=r"finetune.max_train_essays=81 but fold 2 has only 80 training essays; use at most 80, or 0"):
        fold_rows(_ft(81), _cv(), 2, seed=7)


def test_schema_rejects_a_negative_cap(tmp_path, tiny_encoder):
    params = make_training_repo(tmp_path, tiny_encoder)
    assert params["finetune"]["max_train_essays"] == 0
    params["finetune"]["max_train_essays"] = -1
    with pytest.raises(AESError, match="key 'finetune.max_train_essays' must be >= 0"):
        validate(params)


def test_a_stage_with_a_too_large_cap_fails_before_any_fold_trains(tmp_path, tiny_encoder, monkeypatch):
    params = make_training_repo(tmp_path, tiny_encoder, trainable_layers=-1, lp_ft=False, max_train_essays=10_000)
    from aes.finetune import loop

    def never(*args, **kwargs):
        raise AssertionError("a fold trained before the cap was checked")

    monkeypatch.setattr(loop.Trainer, "train_fold", never)
    with one_torch_thread(), pytest.raises(AESError, match=r"finetune.max_train_essays=10000 but fold \d has only \d+ training essays"):
        run_cv(params, "erm", tmp_path)
