"""Fine-tuning with the writing features (``finetune.features``): the head's standardisation is the
training fold's, every fold starts from the probe lp_cv fitted without it, the GRL adversary reads
the text only, and a bad group name or a stale frozen pass / probe stops the stage naming the key."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from aes.features import FEATURE_GROUPS, FeatureScaling
from aes.baseline.linear import fit_probe
from aes.core.errors import AESError
from aes.core.registry import FROZEN_PASS, MODEL_LABELS, WRITING_FEATURE_GROUPS
from aes.data.corpus import target_matrix
from aes.data.params import load_params
from aes.finetune import objectives
from aes.finetune.cv import run_cv
from aes.finetune.folds import load_cv
from aes.finetune.frozen_pass import load_frozen_pass
from aes.finetune.loop import Trainer
from aes.finetune.runtime import make_accelerator
from tests.committed import committed_text, with_param
from tests.training_fixtures import make_training_repo, run_frozen_stages, with_finetune

N_WRITING = sum(len(columns) for columns in FEATURE_GROUPS.values())  # every group's columns
ALL_GROUPS = list(FEATURE_GROUPS)
FAST = dict(epochs=1, seeds=[7], mixed_precision="no")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lp_runs(tmp_path_factory, tiny_encoder):
    """{name: (root, params)}: tiny repos where lp_cv ran with no, one and every writing-feature group."""
    runs = {}
    for name, groups in (("none", []), ("length", ["length"]), ("all", ALL_GROUPS)):
        root = tmp_path_factory.mktemp(f"ftfeat_{name}")
        params = make_training_repo(root, tiny_encoder, features=groups, **FAST)
        run_frozen_stages(params, root)
        runs[name] = (root, params)
    return runs


def _fresh_copy(root, dest):
    """A copy of lp_cv's inputs and outputs, so a test may run a fine-tuning stage without touching the shared repo."""
    for shared in ("params.yaml", "data/prepared", "data/frozen_pass", "models/lp_cv"):
        (shutil.copytree if (root / shared).is_dir() else shutil.copy)(root / shared, dest / shared)
    return dest


# ------------------------------------------------------------------ the head's statistics


@pytest.mark.parametrize("extra", [{"inner_val_fraction": 0.0}, {"inner_val_fraction": 0.3}, {"max_train_essays": 12}], ids=["fold", "inner_split", "cap"])
def test_the_heads_feature_statistics_are_the_training_essays_and_never_a_validation_essay(lp_runs, extra):
    root, base = lp_runs["all"]
    params = with_finetune(base, encoder_lr=0.0, head_lr=1e-12, **extra)
    cv = load_cv(root)
    frozen = load_frozen_pass(root / FROZEN_PASS, cv["record_id"], need_hidden=True, feature_groups=ALL_GROUPS)
    trainer = Trainer(params, "erm", make_accelerator(params["finetune"]))
    data = trainer.prepare(cv["text"].tolist(), frozen)
    x = frozen.features.astype(np.float64)
    for k in sorted(int(f) for f in cv["fold"].unique()):
        result = trainer.train_fold(cv, data, k, seed=7)
        stats = result["feature_scaling"]
        train_rows, inner_rows, val_rows = trainer.fold_rows(cv, k, 7)
        assert not set(train_rows) & set(val_rows) and not set(train_rows) & set(inner_rows)
        assert stats["groups"] == ALL_GROUPS and len(stats["names"]) == x.shape[1] == N_WRITING
        np.testing.assert_allclose(stats["mean"], x[train_rows].mean(axis=0), rtol=1e-12, atol=1e-12)
        sd = x[train_rows].std(axis=0)
        np.testing.assert_allclose(stats["sd"], np.where(sd > 1e-12, sd, 1.0), rtol=1e-12, atol=1e-12)
        with_val = np.concatenate([train_rows, val_rows])  # what the statistics would be had a validation essay slipped in
        assert not np.allclose(stats["mean"], x[with_val].mean(axis=0))
        if extra == {"inner_val_fraction": 0.0}:  # the whole training fold: exactly the statistics of lp_cv's probe for this fold
            train_fold = np.flatnonzero(cv["fold"].to_numpy() != k)
            np.testing.assert_array_equal(np.sort(train_rows), train_fold)


def test_lp_cv_standardises_each_folds_features_on_that_folds_training_essays(lp_runs):
    import json

    from aes.baseline.linear import fits_from_json

    root, _ = lp_runs["all"]
    cv = load_cv(root)
    x = load_frozen_pass(root / FROZEN_PASS, cv["record_id"], need_hidden=False, feature_groups=ALL_GROUPS).features.astype(np.float64)
    probes = fits_from_json(json.loads((root / "models/lp_cv/probes.json").read_text()), "probes.json")
    for k, probe in probes.items():
        train = (cv["fold"] != k).to_numpy()
        np.testing.assert_allclose(probe.scaling.mean, x[train].mean(axis=0), rtol=1e-12)
        assert not np.allclose(probe.scaling.mean, x.mean(axis=0))  # all essays, the validation fold included, would differ


# ------------------------------------------------------------------ run_cv: fold k starts from the probe fitted without fold k


@pytest.mark.parametrize("name", ["none", "all"])
def test_run_cv_hands_each_fold_the_probe_fitted_without_that_fold(lp_runs, name, tmp_path, monkeypatch):
    """A probe of another fold was trained on fold k's labels; fold k must start from the one fitted on fold != k."""
    root, base = lp_runs[name]
    root = _fresh_copy(root, tmp_path)
    params = with_finetune(base, encoder_lr=0.0, head_lr=1e-12)
    cv = load_cv(root)
    groups = params["finetune"]["features"]
    frozen = load_frozen_pass(root / FROZEN_PASS, cv["record_id"], need_hidden=False, feature_groups=groups)
    handed = {}
    real = Trainer.train_fold

    def spy(self, cv_, data, k, seed, init_head=None, callbacks=()):
        handed[k] = init_head
        return real(self, cv_, data, k, seed, init_head=init_head, callbacks=callbacks)

    monkeypatch.setattr(Trainer, "train_fold", spy)
    run_cv(params, "erm", root)
    folds = sorted(int(f) for f in cv["fold"].unique())
    assert sorted(handed) == folds
    y, prompts, lin = target_matrix(cv), cv["prompt"].astype(str).to_numpy(), params["linear"]
    for k in folds:
        train = (cv["fold"] != k).to_numpy()
        own = fit_probe(frozen.pooled[train], y[train], prompts[train], lin["alphas"], lin["inner_folds"],
                        None if frozen.features is None else frozen.features[train], groups, lin["feature_weights"])
        np.testing.assert_allclose(handed[k].weight, own.weight, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(handed[k].bias, own.bias, rtol=1e-6, atol=1e-9)
        for other in folds:  # the test can tell the probes apart: any other fold's would fail above
            if other != k:
                assert not np.allclose(handed[other].weight, own.weight)
        if groups:
            np.testing.assert_allclose(handed[k].scaling.mean, own.scaling.mean, rtol=1e-12)
        else:
            assert handed[k].scaling is None


# ------------------------------------------------------------------ GRL: the adversary reads the text only


def test_the_grl_adversary_reads_the_pooled_text_only(lp_runs, monkeypatch):
    root, base = lp_runs["all"]
    params = with_finetune(base)
    cv = load_cv(root)
    frozen = load_frozen_pass(root / FROZEN_PASS, cv["record_id"], need_hidden=True, feature_groups=ALL_GROUPS)
    trainer = Trainer(params, "grl", make_accelerator(params["finetune"]))
    widths = []
    real = objectives.GradientReversal.loss

    def spy(self, pred_z, target_z, pooled, group, progress):
        widths.append((pooled.shape[-1], self.adversary[0].in_features))
        return real(self, pred_z, target_z, pooled, group, progress)

    monkeypatch.setattr(objectives.GradientReversal, "loss", spy)
    result = trainer.train_fold(cv, trainer.prepare(cv["text"].tolist(), frozen), 0, seed=7)
    assert widths and set(widths) == {(32, 32)}  # pooled text (H = 32), not H + the writing features
    assert result["state"]["head.weight"].shape == (7, 32 + N_WRITING)  # while the head reads both
    assert np.isfinite(result["pred_unit"]).all()


# ------------------------------------------------------------------ bad input


def test_the_registry_names_the_feature_groups_of_the_feature_code():
    assert WRITING_FEATURE_GROUPS == tuple(FEATURE_GROUPS)


@pytest.mark.parametrize("raw, message", [
    ("[length, spelng]", r"key 'finetune.features' has unknown item 'spelng' \(did you mean 'spelling'\?\); known: length, lexical, "
                         r"sophistication, spelling, readability, complexity, punctuation"),
    ("[embeddings, length]", r"key 'finetune.features' has unknown item 'embeddings'; known: length, lexical"),
    ("[length, length]", r"key 'finetune.features' repeats 'length'"),
    ("length", r"key 'finetune.features' must be list"),
])
def test_an_unknown_feature_group_is_named_at_params_load(tmp_path, raw, message):
    path = tmp_path / "params.yaml"
    path.write_text(with_param(committed_text("params.yaml"), "finetune.features", raw))
    with pytest.raises(AESError, match=message):
        load_params(path)


def test_text_only_is_an_empty_list(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(with_param(committed_text("params.yaml"), "finetune.features", "[]"))
    assert load_params(path)["finetune"]["features"] == []


def _never_train(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a fold trained on a stale frozen pass or probe")

    monkeypatch.setattr(Trainer, "train_fold", never)


PROBES = r"models/lp_cv/probes.json: the probe of fold 0"
PASS = r"frozen_pass: the stored frozen pass"


@pytest.mark.parametrize("stored, asked, lp_ft, file, made, rerun", [
    ("none", ALL_GROUPS, True, PROBES, r"no writing features", "lp_cv"),
    ("none", ALL_GROUPS, False, PASS, r"no writing features", "embed"),
    ("length", ALL_GROUPS, True, PROBES, r"writing features \['length'\]", "lp_cv"),
    ("length", ALL_GROUPS, False, PASS, r"writing features \['length'\]", "embed"),
    ("all", [], True, PROBES, r"writing features \['length', 'lexical'", "lp_cv"),
])
def test_a_stale_probe_or_frozen_pass_names_the_key_and_the_stage_to_rerun(lp_runs, monkeypatch, stored, asked, lp_ft, file, made, rerun):
    """The probes are lp_cv's (re-run lp_cv); the writing features are stored with embed's frozen pass (re-run embed)."""
    root, base = lp_runs[stored]
    params = with_finetune(base, features=asked, lp_ft=lp_ft)
    _never_train(monkeypatch)
    wanted = r"\[\] \(the text only\)" if not asked else r"\['length', 'lexical', 'sophistication'"
    with pytest.raises(AESError, match=rf"{file}: made with {made}.* but finetune.features asks for {wanted}.*; re-run `dvc repro {rerun}`"):
        run_cv(params, "erm", root)


def test_the_whole_encoder_profile_reads_the_stored_features_and_names_stale_ones(lp_runs, monkeypatch):
    root, base = lp_runs["none"]
    _never_train(monkeypatch)
    with pytest.raises(AESError, match=r"frozen_pass: the stored frozen pass: made with no writing features but finetune.features asks for"
                                       r".*re-run `dvc repro embed`"):
        run_cv(with_finetune(base, trainable_layers=-1, lp_ft=False, features=["length"]), "erm", root)


def test_a_probe_without_features_never_reaches_torch_as_a_shape_error(lp_runs):
    """Called directly (as final_test, smoke and tune do), the loop names the key too."""
    import json

    from aes.baseline.linear import fits_from_json

    root, base = lp_runs["none"]
    text_probe = fits_from_json(json.loads((root / "models/lp_cv/probes.json").read_text()), "probes.json")[0]
    trainer = Trainer(with_finetune(base, features=ALL_GROUPS), "erm", make_accelerator(base["finetune"]))
    scaling = FeatureScaling.fit(np.random.default_rng(0).normal(size=(10, N_WRITING)), ALL_GROUPS)
    with pytest.raises(AESError, match=r"finetune_cv: the linear probe of stage lp_cv: made with no writing features but "
                                       r"finetune.features asks for \['length'.*re-run `dvc repro lp_cv`"):
        trainer.start_model(text_probe, np.full(7, 3.0), np.full(7, 0.5), scaling)


# ------------------------------------------------------------------ the probe: a penalty of its own for the feature block


def _block_data(n_prompts=8, per_prompt=30, seed=0):
    """Pooled noise (n, 40) and 4 'length' features that carry the score: y = features @ b + noise."""
    rng = np.random.default_rng(seed)
    n = n_prompts * per_prompt
    pooled, writing = rng.normal(size=(n, 40)), rng.normal(loc=300.0, scale=80.0, size=(n, 4))
    y = 3.0 + (writing - 300.0) / 80.0 @ np.array([0.4, -0.2, 0.1, 0.3]) + rng.normal(scale=0.1, size=n)
    return pooled, writing, y, np.repeat([f"p{i}" for i in range(n_prompts)], per_prompt)


def test_the_feature_block_gets_its_own_penalty_and_the_weights_fold_back_exactly():
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    pooled, writing, y, prompts = _block_data()
    one = fit_probe(pooled, y, prompts, [10.0, 1000.0], 4, writing, ["length"], feature_weights=[1.0])
    both = fit_probe(pooled, y, prompts, [10.0, 1000.0], 4, writing, ["length"], feature_weights=[1.0, 10.0])
    # the pooled noise wants alpha 1000, which shrinks the 4 informative features unless their block is weighted up
    assert both.alpha == 1000.0 and both.feature_weight == 10.0 and one.feature_weight == 1.0
    assert both.inner_rmse[1000.0] < one.inner_rmse[1000.0]
    # the stored map reads [pooled, standardised features] and equals the weighted pipeline it came from
    x = np.hstack([pooled, both.scaling.apply(writing)])
    scaler = StandardScaler().fit(x)
    z = scaler.transform(x)
    z[:, 40:] *= 10.0
    np.testing.assert_allclose(both.predict_essays(pooled, writing), Ridge(alpha=1000.0).fit(z, y).predict(z), atol=1e-9)


def test_each_target_takes_its_own_feature_weight():
    pooled, writing, y, prompts = _block_data()
    text_target = 3.0 + pooled[:, :5] @ np.full(5, 0.3) + np.random.default_rng(1).normal(scale=0.1, size=len(y))
    both = np.column_stack([y, text_target])  # one target read from the features, one from the pooled text
    fit = fit_probe(pooled, both, prompts, [10.0, 1000.0], 4, writing, ["length"], feature_weights=[1.0, 10.0])
    assert fit.feature_weight == [10.0, 1.0] and fit.alpha == [1000.0, 10.0]
    for j in range(2):  # a target's fit does not depend on the other's, whatever weight each chose
        alone = fit_probe(pooled, both[:, j], prompts, [10.0, 1000.0], 4, writing, ["length"], feature_weights=[1.0, 10.0])
        np.testing.assert_allclose(fit.predict_essays(pooled, writing)[:, j], alone.predict_essays(pooled, writing), atol=1e-9)


def test_a_feature_weight_must_be_positive(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(with_param(committed_text("params.yaml"), "linear.feature_weights", "[1.0, 0.0]"))
    with pytest.raises(AESError, match=r"key 'linear.feature_weights' must be > 0"):
        load_params(path)


# ------------------------------------------------------------------ report wording


def test_the_report_names_the_fine_tune_with_writing_features():
    from aes.report.markdown import finetune_phrase, model_labels

    with_features = {"lp_cv": ALL_GROUPS, "finetune_cv": ALL_GROUPS, "grl_cv": ALL_GROUPS, "dro_cv": ALL_GROUPS}
    labels = model_labels("dro", with_features)
    assert labels["finetune_cv"] == "fine-tune ERM with writing features"
    assert labels["dro_cv"] == "fine-tune group DRO with writing features [candidate]"
    assert labels["lp_cv"] == "frozen: linear probe + writing features at the fine-tune's length (LP phase)"
    assert labels["gbm_cv"] == MODEL_LABELS["gbm_cv"]
    text_only = model_labels("dro", {stage: [] for stage in with_features})
    assert text_only["finetune_cv"] == MODEL_LABELS["finetune_cv"] and model_labels("erm")["lp_cv"] == MODEL_LABELS["lp_cv"]
    assert finetune_phrase({"features": with_features}) == "fine-tuning with the writing features (ERM)"
    assert finetune_phrase({}) == finetune_phrase({"features": {"finetune_cv": []}}) == "fine-tuning (ERM)"
