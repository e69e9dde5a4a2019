import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory):
    """Path of a tiny random BERT folder usable wherever a `model` param is expected."""
    from tests.tiny_model import make_tiny_encoder

    return make_tiny_encoder(tmp_path_factory.mktemp("tiny_encoder"))
