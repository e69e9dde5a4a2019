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


@pytest.fixture(scope="module")
def one_thread():
    """torch on one intra-op thread for the rest of the module (:func:`tests.training_fixtures.one_torch_thread`)."""
    from tests.training_fixtures import one_torch_thread

    with one_torch_thread():
        yield
