"""LP-FT and seeds in the fold loop: fine-tuning starts from the linear probe's head (stage lp_cv),
with and without the writing features beside the pooled text (``finetune.features``), and
different seeds give different but reproducible predictions."""

import json

import numpy as np
import pytest
import torch

from aes.features import FEATURE_GROUPS, FeatureScaling
from aes.baseline.linear import fits_from_json
from aes.core.registry import FROZEN_PASS, models_dir
from aes.finetune.folds import load_cv
from aes.finetune.frozen_pass import load_frozen_pass
from aes.finetune.loop import Trainer
from aes.finetune.runtime import make_accelerator
from tests.report_fixtures import HALF_BANDS_SCALE
from tests.training_fixtures import make_training_repo, run_frozen_stages

# Probes and the trainer predict on the unit range of the 1-5 scale (aes.data.corpus.target_matrix):
# a tolerance of 0.05 score points is 0.05 * POINT there.
POINT = 1.0 / (HALF_BANDS_SCALE.high - HALF_BANDS_SCALE.low)

ALL_GROUPS = list(FEATURE_GROUPS)
N_WRITING = sum(len(columns) for columns in FEATURE_GROUPS.values())  # every group's columns


@pytest.fixture(scope="module", params=[[], ALL_GROUPS], ids=["text_only", "with_features"])
def lp_repo(request, tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("lpft_repo")
    params = make_training_repo(root, tiny_encoder, seeds=[1, 2], mixed_precision="no", lp_ft=True, epochs=1, features=request.param)
    params["linear"].update(inner_folds=2)
    run_frozen_stages(params, root)
    cv = load_cv(root)
    probes = fits_from_json(json.loads((models_dir("lp_cv", root) / "probes.json").read_text()), "probes.json")
    frozen = load_frozen_pass(root / FROZEN_PASS, cv["record_id"], need_hidden=True, feature_groups=request.param)
    return root, params, cv, probes, frozen


def _trainer(params, **finetune):
    params = {**params, "finetune": {**params["finetune"], **finetune}}
    return Trainer(params, "erm", make_accelerator(params["finetune"]))


def test_the_fine_tune_starts_from_the_probe_head(lp_repo):
    _, params, cv, probes, frozen = lp_repo
    trainer = _trainer(params)
    probe = probes[0]
    d = N_WRITING if params["finetune"]["features"] else 0
    assert probe.weight.shape == (32 + d, 7)  # one probe output per declared target, over [pooled, writing features]
    mean, std = np.linspace(2.5, 3.5, 7), np.linspace(0.4, 0.7, 7)
    model = trainer.start_model(probe, mean, std, probe.scaling)
    np.testing.assert_allclose(model.head.weight.detach().numpy(), (probe.weight / std).T, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.head.bias.detach().numpy(), (probe.bias - mean) / std, rtol=1e-5, atol=1e-6)
    # Step 0 predicts what the probe predicts on the same (pretrained) pooled features and the same writing features.
    data = trainer.prepare(cv["text"].tolist(), frozen)
    rows = np.arange(len(cv))
    z, pooled = trainer.predict(model, data, rows)
    np.testing.assert_allclose(pooled, frozen.pooled, atol=2e-2)  # hidden states are stored in float16
    np.testing.assert_allclose(z * std + mean, probe.predict_essays(frozen.pooled, frozen.features), atol=5e-2 * POINT)
    assert not torch.allclose(trainer.start_model(None, mean, std, probe.scaling).head.weight, model.head.weight)


@pytest.mark.parametrize("lp_repo", [ALL_GROUPS], indirect=True, ids=["with_features"])  # text only has no feature scaling
def test_a_head_with_its_own_feature_scaling_still_starts_at_the_probe(lp_repo):
    """The head's statistics come from the essays the fold trains on (fewer with a cap or an inner split),
    the probe's from the whole training fold: the head is mapped exactly onto the probe's predictions."""
    _, params, cv, probes, frozen = lp_repo
    trainer = _trainer(params)
    probe = probes[1]
    train = np.flatnonzero(cv["fold"].to_numpy() != 1)
    own = FeatureScaling.fit(frozen.features[train[::2]], ALL_GROUPS)  # another subset of the training fold
    assert not np.allclose(own.mean, probe.scaling.mean)
    mean, std = np.full(7, 3.0), np.full(7, 0.5)
    model = trainer.start_model(probe, mean, std, own)
    np.testing.assert_array_equal(model.feature_mean.numpy(), own.mean.astype(np.float32))  # the head standardises with its own statistics
    data = trainer.prepare(cv["text"].tolist(), frozen)
    z, _ = trainer.predict(model, data, np.arange(len(cv)))
    np.testing.assert_allclose(z * std + mean, probe.predict_essays(frozen.pooled, frozen.features), atol=5e-2 * POINT)
    # Against the head that uses the probe's own statistics (same pooled input), the mapping is exact to float32.
    z_probe, _ = trainer.predict(trainer.start_model(probe, mean, std, probe.scaling), data, np.arange(len(cv)))
    np.testing.assert_allclose(z, z_probe, atol=1e-4)


def test_train_fold_uses_the_probe_head(lp_repo):
    """With learning rates ~0 the fine-tuned fold predicts exactly what its probe predicts."""
    _, params, cv, probes, frozen = lp_repo
    trainer = _trainer(params, encoder_lr=0.0, head_lr=1e-12, warmup_ratio=0.0)
    data = trainer.prepare(cv["text"].tolist(), frozen)
    val = (cv["fold"] == 1).to_numpy()
    result = trainer.train_fold(cv, data, 1, seed=1, init_head=probes[1])
    assert result["pred_unit"].shape == (val.sum(), 7) and result["targets"] == ["Overall", "Cohesion", "Syntax", "Vocabulary", "Phraseology", "Grammar", "Conventions"]
    writing = None if frozen.features is None else frozen.features[val]
    np.testing.assert_allclose(result["pred_unit"], probes[1].predict_essays(frozen.pooled[val], writing), atol=5e-2 * POINT)
    plain = trainer.train_fold(cv, data, 1, seed=1, init_head=None)
    assert np.abs(plain["pred_unit"] - result["pred_unit"]).max() > 1e-3  # a random head predicts something else


def test_seeds_give_different_but_reproducible_predictions(lp_repo):
    _, params, cv, probes, frozen = lp_repo
    trainer = _trainer(params, encoder_lr=1e-3, head_lr=1e-2)
    data = trainer.prepare(cv["text"].tolist(), frozen)
    first = trainer.train_fold(cv, data, 0, seed=1, init_head=probes[0])["pred_unit"]
    again = trainer.train_fold(cv, data, 0, seed=1, init_head=probes[0])["pred_unit"]
    other = trainer.train_fold(cv, data, 0, seed=2, init_head=probes[0])["pred_unit"]
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-4
