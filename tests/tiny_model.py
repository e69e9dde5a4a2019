"""A tiny randomly initialised BERT encoder + WordPiece tokenizer, built from a config (no download)."""

from __future__ import annotations

from pathlib import Path

from tests.synthetic import WORDS


def make_tiny_encoder(folder: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Write a save_pretrained folder with a 2-layer, 32-d BERT and a matching tokenizer."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + sorted(set(WORDS)) + [
        f"prompt{i}" for i in range(50)
    ] + ["topic", "words"] + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = list(dict.fromkeys(vocab))
    # transformers 5 takes the vocabulary as a dict (vocab_file= is ignored there).
    tokenizer = BertTokenizerFast(vocab={tok: i for i, tok in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=hidden * 2, max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(folder)
    return folder
