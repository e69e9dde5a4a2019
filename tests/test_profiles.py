"""The GPU profile (profiles/gpu.args, `-S key=value` overrides for `dvc exp run`) must name only
known params with valid values, so a GPU run never dies on a typo after hours of queueing. The
overrides are read and applied by the same functions the smoke run and the GPU check use."""

from pathlib import Path

import pytest

from aes.core.errors import AESError
from aes.core.params import read_overrides
from aes.data.params import validate, with_overrides
from tests.committed import committed_params, committed_text

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_profile_is_valid():
    overrides = read_overrides(ROOT / "profiles" / "gpu.args")
    checked = with_overrides(validate(committed_params()), overrides, "profiles/gpu.args")  # unknown key or bad value: AESError
    assert checked["finetune"]["trainable_layers"] == -1 and checked["finetune"]["encoder_lr"] == 2.0e-5


@pytest.mark.parametrize("text, message", [
    ("-S finetune.epoch=4\n", "'finetune.epoch' is not a params key"),
    ("-S finetune.epochs=0\n", "key 'finetune.epochs' must be >= 1"),
    ("finetune.epochs=4\n", "every override must be '-S key=value'"),
])
def test_a_bad_profile_is_named(tmp_path, text, message):
    profile = tmp_path / "bad.args"
    profile.write_text(text)
    with pytest.raises(AESError, match=message):
        with_overrides(validate(committed_params()), read_overrides(profile), str(profile))


def test_asap_profile_is_valid():
    """profiles/asap.args switches to ASAP: its one score, one loss weight; every key known."""
    overrides = read_overrides(ROOT / "profiles" / "asap.args")
    checked = with_overrides(validate(committed_params()), overrides, "profiles/asap.args")
    assert checked["data"]["dataset"] == "asap" and checked["prepare"]["targets"] == ["Overall"]
    assert checked["finetune"]["target_weights"] == [1.0]


def test_whole_encoder_profile_is_valid_and_keeps_the_frozen_references():
    """profiles/whole_encoder.args trains the whole encoder (issue 16's Q2 experiment) at the strengths
    chosen on inner splits (bench/tune_strength.json), and leaves `embed` (so gbm_cv, linear_cv) alone."""
    import json

    overrides = read_overrides(ROOT / "profiles" / "whole_encoder.args")
    checked = with_overrides(validate(committed_params()), overrides, "profiles/whole_encoder.args")
    assert checked["finetune"]["trainable_layers"] == -1 and not any(key.startswith(("embed.", "gbm.", "linear.")) for key in overrides)
    tuned = json.loads(committed_text("bench/tune_strength.json"))  # what the inner splits chose, as committed
    chosen = tuned["chosen"]
    assert checked["grl"]["max_weight"] == chosen["grl"]["grl.max_weight"] and checked["dro"]["eta"] == chosen["dro"]["dro.eta"]
    assert checked["finetune"]["max_length"] == tuned["results"][0]["max_length"]
