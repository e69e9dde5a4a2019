"""Stage embed's one forward pass: the embeddings and the fine-tune's frozen pass from the same run.

Sharing must change nothing but the time: the embeddings equal what the frozen baselines got from
their own pass, and the trunk and pooled output equal the fine-tune's own frozen pass.
"""

import numpy as np
import pytest

from aes.encoders.embedding import embed_texts, tokenize_texts
from aes.finetune.folds import load_cv
from aes.finetune.frozen_pass import compute_frozen_pass, embed_and_freeze, shares_embed_pass
from tests.training_fixtures import make_training_repo, one_torch_thread


@pytest.fixture(scope="module")
def essays(tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("shared_pass")
    params = make_training_repo(root, tiny_encoder, features=["length"])
    cv = load_cv(root)
    with one_torch_thread():
        yield params, cv["text"].tolist(), cv["record_id"].to_numpy()


def _own_pass(ft, texts, ids):
    with one_torch_thread():
        return compute_frozen_pass(ft, texts, ids, "test")[0]


def test_one_pass_gives_the_baselines_embeddings_and_the_fine_tunes_trunk(essays):
    params, texts, ids = essays
    embed, ft = params["embed"], params["finetune"]
    assert shares_embed_pass(embed, ft) and ft["trainable_layers"] == 1 and ft["mixed_precision"] == "no"
    embeddings, frozen, info = embed_and_freeze(embed, ft, texts, ids, "embed")
    assert info["shared"] and info["frozen_pass_s"] == 0.0
    # bit-identical to the frozen baselines' own pass: gbm_cv and linear_cv do not move
    np.testing.assert_array_equal(embeddings, embed_texts(texts, embed["model"], embed["max_length"], embed["batch_size"], device="cpu"))
    np.testing.assert_array_equal(frozen.pooled, embeddings)
    own = _own_pass(ft, texts, ids)
    np.testing.assert_array_equal(frozen.lengths, own.lengths)
    assert frozen.hidden.shape == own.hidden.shape and frozen.hidden.dtype == np.float16
    for i, n in enumerate(frozen.lengths):  # the trunk over each essay's tokens; zeros past its end
        np.testing.assert_allclose(frozen.hidden[i, :n].astype(np.float32), own.hidden[i, :n].astype(np.float32), atol=2e-3)
        assert not frozen.hidden[i, n:].any()
    np.testing.assert_allclose(frozen.pooled, own.pooled, atol=1e-4)  # the pretrained top layer over the trunk = the full model
    np.testing.assert_array_equal(frozen.features, own.features)
    assert frozen.feature_groups == own.feature_groups == ("length",)


def test_different_lengths_run_two_passes_each_as_on_its_own(essays):
    params, texts, ids = essays
    embed = {**params["embed"], "max_length": 32}
    ft = params["finetune"]
    assert not shares_embed_pass(embed, ft)
    embeddings, frozen, info = embed_and_freeze(embed, ft, texts, ids, "embed")
    assert not info["shared"]
    np.testing.assert_array_equal(embeddings, embed_texts(texts, embed["model"], 32, embed["batch_size"], device="cpu"))
    own = _own_pass(ft, texts, ids)
    np.testing.assert_array_equal(frozen.hidden, own.hidden)
    np.testing.assert_array_equal(frozen.pooled, own.pooled)


def test_the_whole_encoder_shares_the_pooled_output_and_stores_no_trunk(essays):
    params, texts, ids = essays
    ft = {**params["finetune"], "trainable_layers": -1}
    embeddings, frozen, info = embed_and_freeze(params["embed"], ft, texts, ids, "embed")
    assert info["shared"] and frozen.hidden is None
    np.testing.assert_array_equal(frozen.pooled, embeddings)
    from aes.encoders.resolve import load_encoder

    tokenizer, _ = load_encoder(ft["model"])
    np.testing.assert_array_equal(frozen.lengths, tokenize_texts(texts, tokenizer, ft["max_length"])[1])
