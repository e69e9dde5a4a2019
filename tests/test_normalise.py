"""Prompt-normalised inputs (``normalise``): label-free, per prompt, never mixing prompts, defined on
degenerate prompts, honoured by every consumer, and labelled transductive wherever it is on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aes.baseline.gbm import build_features
from aes.core.errors import AESError
from aes.core.registry import (
    EMBEDDING_NORMALISATIONS,
    FEATURE_NORMALISATIONS,
    FROZEN_PASS,
    inputs_label,
    inputs_record,
    is_transductive,
)
from aes.data.params import load_params
from aes.features.normalise import (
    normalise_embeddings,
    normalise_features,
    within_prompt,
)
from aes.finetune.centring import PromptCentring, centre_predictions
from aes.report.markdown import model_labels
from tests.committed import committed_text, with_param

PER_PROMPT = [s for s in FEATURE_NORMALISATIONS if s != "training_fold"]


def _table(seed: int = 0, n_prompts: int = 4, per_prompt: int = 9, d: int = 5):
    rng = np.random.default_rng(seed)
    prompts = np.repeat([f"p{i}" for i in range(n_prompts)], per_prompt)
    # each prompt with its own location and spread: what the normalisation must remove
    values = rng.normal(size=(len(prompts), d)) * rng.uniform(0.5, 4, size=(n_prompts, d)).repeat(per_prompt, axis=0)
    values += rng.normal(scale=10, size=(n_prompts, d)).repeat(per_prompt, axis=0)
    return values, prompts


@pytest.mark.parametrize("setting", PER_PROMPT)
def test_a_prompts_normalised_features_ignore_any_increasing_affine_change_of_its_raw_features(setting):
    values, prompts = _table()
    base = normalise_features(values, prompts, setting)
    rng = np.random.default_rng(1)
    changed = values.copy()
    for p in np.unique(prompts):
        rows = prompts == p
        changed[rows] = values[rows] * rng.uniform(0.1, 10, size=values.shape[1]) + rng.normal(scale=50, size=values.shape[1])
    np.testing.assert_allclose(normalise_features(changed, prompts, setting), base, atol=1e-5)


def test_embedding_centring_ignores_any_shift_of_a_prompt():
    values, prompts = _table()
    shifted = values + np.where(prompts[:, None] == "p2", 7.0, 0.0)
    np.testing.assert_allclose(normalise_embeddings(shifted, prompts, "prompt_mean"),
                               normalise_embeddings(values, prompts, "prompt_mean"), atol=1e-5)
    for p in np.unique(prompts):  # each prompt's mean vector is removed
        np.testing.assert_allclose(normalise_embeddings(values, prompts, "prompt_mean")[prompts == p].mean(axis=0), 0, atol=1e-5)


@pytest.mark.parametrize("method", ["minmax", "zscore", "centre"])
def test_statistics_never_mix_prompts(method):
    values, prompts = _table()
    base = within_prompt(values, prompts, method)
    other = values.copy()
    other[prompts != "p0"] = np.random.default_rng(5).normal(scale=100, size=other[prompts != "p0"].shape)
    out = within_prompt(other, prompts, method)
    np.testing.assert_array_equal(out[prompts == "p0"], base[prompts == "p0"])


def test_the_inductive_settings_leave_inputs_as_computed():
    values, prompts = _table()
    np.testing.assert_array_equal(normalise_features(values, prompts, "training_fold"), values.astype(np.float32))
    np.testing.assert_array_equal(normalise_embeddings(values, None, "as_is"), values.astype(np.float32))


def test_reference_rows_alone_give_a_prompts_statistics():
    """The n-essays curve: statistics from a few essays of a prompt, applied to all of them."""
    values, prompts = _table()
    reference = np.zeros(len(values), dtype=bool)
    reference[np.flatnonzero(prompts == "p1")[:3]] = True
    out = within_prompt(values, prompts, "centre", reference)
    rows = prompts == "p1"
    np.testing.assert_allclose(out[rows], values[rows] - values[np.flatnonzero(rows)[:3]].mean(axis=0))
    # a prompt without reference rows falls back on all its essays
    np.testing.assert_allclose(out[prompts == "p0"], within_prompt(values, prompts, "centre")[prompts == "p0"])


def test_a_one_essay_prompt_and_a_constant_column_give_the_documented_middle_never_nan():
    values = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [9.0, 4.0]])
    prompts = np.array(["a", "a", "a", "solo"])
    minmax = within_prompt(values, prompts, "minmax")
    zscore = within_prompt(values, prompts, "zscore")
    centred = within_prompt(values, prompts, "centre")
    assert np.isfinite(minmax).all() and np.isfinite(zscore).all() and np.isfinite(centred).all()
    np.testing.assert_array_equal(minmax[:3, 1], 0.5)  # constant within prompt a
    np.testing.assert_array_equal(minmax[3], 0.5)  # the one essay of prompt solo: every column
    np.testing.assert_array_equal(zscore[3], 0.0)
    np.testing.assert_array_equal(zscore[:3, 1], 0.0)
    np.testing.assert_array_equal(centred[3], 0.0)
    np.testing.assert_allclose(minmax[:3, 0], [0.0, 0.5, 1.0])


@pytest.mark.parametrize("prompts", [None, ["a", "", "b"], ["a", None, "b"]], ids=["no_column", "blank", "missing"])
def test_per_prompt_settings_on_data_without_prompts_name_the_setting(prompts):
    with pytest.raises(AESError, match="normalise.features.*prompt"):
        normalise_features(np.ones((3, 2)), prompts, "prompt_minmax")
    with pytest.raises(AESError, match="normalise.embeddings.*prompt"):
        normalise_embeddings(np.ones((3, 2)), prompts, "prompt_mean")


def test_an_unknown_setting_value_gets_the_choices_and_a_misspelt_key_did_you_mean(tmp_path):
    path, text = tmp_path / "params.yaml", committed_text("params.yaml")
    for key, value, expected in (("normalise.features", "prompt_minmx", "one of training_fold, prompt_minmax, prompt_zscore"),
                                 ("normalise.embeddings", "centred", "one of as_is, prompt_mean")):
        path.write_text(with_param(text, key, value))
        with pytest.raises(AESError, match=expected):
            load_params(path)
    path.write_text(text.replace("\n  features: training_fold", "\n  featurs: training_fold", 1))
    with pytest.raises(AESError, match="did you mean 'normalise.features'|did you mean 'features'"):
        load_params(path)


def test_changing_every_score_changes_no_normalised_input():
    """The consumers' inputs are functions of texts and prompts alone: scores never reach a statistic."""
    rng = np.random.default_rng(2)
    texts = [" ".join(rng.choice(["alpha", "beta", "gamma", "delta.", "epsilon,"], size=rng.integers(20, 80))) for _ in range(24)]
    cv = pd.DataFrame({"text": texts, "prompt": np.repeat(["p0", "p1", "p2"], 8), "y": rng.uniform(1, 5, 24)})
    emb = rng.normal(size=(24, 6))
    normalise = {"features": "prompt_minmax", "embeddings": "prompt_mean"}
    before, _ = build_features(emb, cv["text"], ["embeddings", "length", "lexical"], None, normalise, cv["prompt"])
    rescored = cv.assign(y=rng.uniform(1, 5, 24)[::-1])
    after, _ = build_features(emb, rescored["text"], ["embeddings", "length", "lexical"], None, normalise, rescored["prompt"])
    np.testing.assert_array_equal(before, after)
    assert not np.allclose(before, build_features(emb, cv["text"], ["embeddings", "length", "lexical"])[0])


def test_a_model_is_labelled_transductive_only_by_the_settings_it_reads():
    both = {"features": "prompt_minmax", "embeddings": "as_is"}
    assert is_transductive(both) and not is_transductive({"features": "training_fold", "embeddings": "as_is"})
    assert inputs_record(both, reads_features=False)["transductive"] is False  # a probe on embeddings alone
    record = inputs_record(both)
    assert record["transductive"] and inputs_label(record) == "transductive (features min-max per prompt)"
    labels = model_labels("dro", inputs={"gbm_cv": record, "linear_cv": inputs_record(both, reads_features=False)})
    assert labels["gbm_cv"].endswith("[transductive: features min-max per prompt]")
    assert "transductive" not in labels["linear_cv"]
    assert set(EMBEDDING_NORMALISATIONS) == {"as_is", "prompt_mean"}


# ------------------------------------------------------------------ the fine-tunes' prompt centring


def test_centring_predictions_after_the_pass_equals_a_head_that_read_centred_pooled_text():
    import torch

    rng = np.random.default_rng(4)
    head = torch.nn.Linear(6 + 2, 3)
    pooled, features = rng.normal(size=(10, 6)).astype(np.float32), rng.normal(size=(10, 2)).astype(np.float32)
    prompts = np.array(["a"] * 4 + ["b"] * 5 + ["c"])
    with torch.no_grad():
        raw = head(torch.as_tensor(np.hstack([pooled, features]))).numpy()
        centred_inputs = normalise_embeddings(pooled, prompts, "prompt_mean")
        expected = head(torch.as_tensor(np.hstack([centred_inputs, features]))).numpy()
    np.testing.assert_allclose(centre_predictions(head.weight.detach().numpy(), raw, pooled, prompts), expected, atol=1e-5)


def test_the_running_prompt_means_start_at_the_training_essays_and_follow_the_batches():
    import torch

    pooled = np.arange(12, dtype=np.float32).reshape(6, 2)
    group = np.array([0, 0, 1, 1, -1, 0])
    centring = PromptCentring.from_pooled(pooled, group, 2, rows=np.array([0, 1, 2, 3]))  # row 5 not a training row
    np.testing.assert_allclose(centring.means.numpy(), [[1, 2], [5, 6]])
    centring.update(torch.tensor([[11.0, 12.0], [100.0, 100.0]]), torch.tensor([0, -1]))  # -1: no training prompt, ignored
    np.testing.assert_allclose(centring.means.numpy(), [[0.9 * 1 + 0.1 * 11, 0.9 * 2 + 0.1 * 12], [5, 6]], rtol=1e-6)
    np.testing.assert_allclose(centring.offsets(torch.tensor([1, 0])).numpy()[0], [5, 6])


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("normalise", [{"features": "prompt_zscore", "embeddings": "prompt_mean"},
                                       {"features": "prompt_minmax", "embeddings": "as_is"}], ids=["zscore_centred", "minmax"])
def test_a_fine_tune_trains_and_scores_on_normalised_inputs_within_the_fold_contract(tmp_path, tiny_encoder, normalise):
    from aes.finetune.cv import run_cv
    from aes.finetune.folds import load_cv
    from aes.finetune.frozen_pass import load_frozen_pass
    from aes.finetune.loop import Trainer
    from aes.finetune.runtime import make_accelerator
    from tests.training_fixtures import make_training_repo, run_frozen_stages
    from tests.yamlio import dump_yaml

    params = make_training_repo(tmp_path, tiny_encoder, features=["length", "lexical"], epochs=1)
    params["normalise"] = normalise
    (tmp_path / "params.yaml").write_text(dump_yaml(params))
    lp = run_frozen_stages(params, tmp_path)
    assert lp["inputs"]["transductive"]
    cv = load_cv(tmp_path)
    trainer = Trainer(params, "erm", make_accelerator(params["finetune"]))
    frozen = load_frozen_pass(tmp_path / FROZEN_PASS, cv["record_id"], need_hidden=True, feature_groups=["length", "lexical"])
    raw = frozen.features.copy()
    data = trainer.prepare(cv["text"].tolist(), frozen, prompts=cv["prompt"])
    np.testing.assert_allclose(data.features, normalise_features(raw, cv["prompt"], normalise["features"]), atol=1e-6)
    for k in sorted(cv["fold"].unique()):
        train_rows, _, val_rows = trainer.fold_rows(cv, int(k), 7)
        assert not set(cv["prompt"].iloc[train_rows]) & set(cv["prompt"].iloc[val_rows])  # no validation prompt in training
    metrics = run_cv(params, "erm", tmp_path)
    assert metrics["inputs"]["transductive"] and np.isfinite(metrics["qwk"]["pooled"])
