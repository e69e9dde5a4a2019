import numpy as np
import pandas as pd
import pytest
import torch

from aes.core.errors import AESError
from aes.encoders.embedding import embed_texts, mean_pool
from aes.encoders.store import load_embeddings, save_embeddings
from tests.synthetic import WORDS


def _texts(n=7, seed=0):
    rng = np.random.default_rng(seed)
    # very different lengths, in no particular order, so length sorting reorders them
    return [" ".join(rng.choice(WORDS, size=int(k))) for k in rng.permutation([3, 60, 12, 1, 35, 90, 7][:n])]


def test_mean_pool_matches_hand_computed_values():
    hidden = torch.tensor(
        [[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],  # third position is padding
         [[5.0, -1.0], [7.0, 7.0], [9.0, 1.0]]]
    )
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    pooled = mean_pool(hidden, mask)
    expected = torch.tensor([[2.0, 3.0], [7.0, 7.0 / 3.0]])
    assert pooled.shape == (2, 2)
    torch.testing.assert_close(pooled, expected)


def test_mean_pool_all_padding_row_is_zero_not_nan():
    pooled = mean_pool(torch.ones(1, 2, 3), torch.zeros(1, 2, dtype=torch.long))
    assert torch.equal(pooled, torch.zeros(1, 3))


def test_embed_keeps_input_order_despite_length_sorting(tiny_encoder):
    texts = _texts()
    together = embed_texts(texts, str(tiny_encoder), max_length=128, batch_size=3)
    assert together.shape == (len(texts), 32) and together.dtype == np.float32
    # each text alone (no padding, no reordering) must give the same row
    alone = np.vstack([embed_texts([t], str(tiny_encoder), max_length=128, batch_size=1) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert len({row.tobytes() for row in together}) == len(texts)  # rows differ, so order matters
    reversed_rows = embed_texts(texts[::-1], str(tiny_encoder), max_length=128, batch_size=3)
    np.testing.assert_allclose(reversed_rows, together[::-1], atol=1e-5)


def test_embed_is_deterministic(tiny_encoder):
    texts = _texts()
    first = embed_texts(texts, str(tiny_encoder), max_length=64, batch_size=2)
    assert np.array_equal(first, embed_texts(texts, str(tiny_encoder), max_length=64, batch_size=2))


def test_texts_are_truncated_to_max_length(tiny_encoder):
    base = " ".join(["school"] * 40)
    longer = base + " " + " ".join(["phone"] * 40)
    short, long_ = embed_texts([base, longer], str(tiny_encoder), max_length=16, batch_size=2)
    np.testing.assert_allclose(short, long_, atol=1e-6)  # only the first 16 tokens count


def test_bad_inputs_raise_aes_error(tiny_encoder, tmp_path):
    with pytest.raises(AESError, match="not found"):
        embed_texts(["some text"], str(tmp_path / "no_such_model"), max_length=32, batch_size=2)
    with pytest.raises(AESError, match="max_length=4096 exceeds"):
        embed_texts(["some text"], str(tiny_encoder), max_length=4096, batch_size=2)
    with pytest.raises(AESError, match="item 1"):
        embed_texts(["ok", None], str(tiny_encoder), max_length=32, batch_size=2)


def test_saved_embeddings_load_aligned_by_record_id(tmp_path):
    emb = np.arange(12, dtype=np.float32).reshape(4, 3)
    save_embeddings(tmp_path, emb, ["a", "b", "007", "d"])
    loaded = load_embeddings(tmp_path, pd.Series(["d", "007", "a"]))
    np.testing.assert_array_equal(loaded, emb[[3, 2, 0]])  # "007" stays a string id
    with pytest.raises(AESError, match="stale"):
        load_embeddings(tmp_path, ["a", "zzz"])
    with pytest.raises(AESError, match="not found"):
        load_embeddings(tmp_path / "missing", ["a"])
