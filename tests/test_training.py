import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from aes.features import FEATURE_GROUPS, feature_names, writing_features
from aes.baseline.linear import fits_from_json
from aes.core.artifacts import CALIBRATED_COLUMNS, PREDICTION_COLUMNS
from aes.core.errors import AESError
from aes.core.io import sha256_file
from aes.core.registry import FROZEN_PASS
from aes.core.scale import from_unit, scale_arrays
from aes.data.corpus import load_essays
from aes.data.params import load_params
from aes.data.splits import cv_essays, load_splits
from aes.finetune.checkpoints import read_checkpoint, run_name, write_checkpoint
from aes.finetune.cv import run_cv
from aes.finetune.frozen_pass import load_frozen_pass
from aes.finetune.loop import Trainer
from aes.finetune.runtime import make_accelerator
from aes.finetune.objectives import Objective
from tests.training_fixtures import ROOT, make_training_repo, run_frozen_stages, with_finetune

TRAITS = ["Cohesion", "Syntax", "Vocabulary", "Phraseology", "Grammar", "Conventions"]
CONTRACT_COLUMNS = PREDICTION_COLUMNS + [f"y_{kind}_{t}" for t in TRAITS for kind in ("true", "pred_raw")] + CALIBRATED_COLUMNS  # params.yaml's seven targets


pytestmark = pytest.mark.usefixtures("one_thread")  # the kill test passes the thread count on to its subprocesses


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_encoder):
    """A tiny repo (one seed, LP-FT on) where stage lp_cv has run: frozen pass + probes + lp_cv outputs."""
    root = tmp_path_factory.mktemp("train_repo")
    params = make_training_repo(root, tiny_encoder, features=list(FEATURE_GROUPS))  # the head reads every writing-feature group
    assert params["finetune"]["lp_ft"] and params["finetune"]["seeds"] == [7]
    run_frozen_stages(params, root)
    return root, params


def _cv(root):
    return cv_essays(load_essays(root / "data/prepared/essays.csv"), load_splits(root / "data/prepared/splits.json"))


def _trainer(root, params, objective="erm"):
    """A Trainer on the repo's CV essays, fed the stored frozen pass when it trains the top layers only (as run_cv does)."""
    cv = _cv(root)
    trainer = Trainer(params, objective, make_accelerator(params["finetune"]))
    frozen = None
    if params["finetune"]["trainable_layers"] >= 0:
        frozen = load_frozen_pass(root / FROZEN_PASS, cv["record_id"], need_hidden=True, feature_groups=params["finetune"]["features"])
    return trainer, cv, trainer.prepare(cv["text"].tolist(), frozen)


def test_embed_writes_the_frozen_pass_and_lp_cv_the_probes_and_the_contract(repo):
    root, params = repo
    cv = _cv(root)
    groups = params["finetune"]["features"]
    frozen = load_frozen_pass(root / FROZEN_PASS, cv["record_id"], need_hidden=True, feature_groups=groups)
    assert frozen.pooled.shape == (len(cv), 32) and frozen.pooled.dtype == np.float32
    # embed and finetune share model and length: the frozen baselines' embeddings ARE the pass's pooled output
    np.testing.assert_array_equal(frozen.pooled, np.load(root / "data/embeddings/embeddings.npy"))
    assert json.loads((root / "metrics/embed.json").read_text())["frozen_pass"]["shared_with_embeddings"] is True
    assert frozen.hidden.dtype == np.float16 and frozen.hidden.shape[0] == len(cv) and frozen.hidden.shape[2] == 32
    assert frozen.hidden.shape[1] == frozen.lengths.max() <= 64
    d = len(feature_names(groups))
    assert frozen.features.shape == (len(cv), d) and frozen.features.dtype == np.float32
    np.testing.assert_array_equal(frozen.features, writing_features(cv["text"].tolist(), groups)[0])  # gbm_cv's own functions
    probes = fits_from_json(json.loads((root / "models/lp_cv/probes.json").read_text()), "probes.json")
    assert sorted(probes) == [0, 1, 2] and all(len(p.weight) == 32 + d for p in probes.values())  # [pooled, writing features]
    oof = pd.read_csv(root / "data/predictions/lp_cv.csv", dtype={"record_id": str})
    assert list(oof.columns) == CONTRACT_COLUMNS and oof["record_id"].tolist() == cv["record_id"].tolist()
    assert (oof["seed"] == 0).all()  # a deterministic model: one seed
    low, high, _ = scale_arrays(cv)
    for k, probe in probes.items():  # each fold is predicted by its own probe on the pretrained pooled features
        val = (cv["fold"] == k).to_numpy()
        # (n_val, 7): one column per target, declared order, on the unit range; the table holds score points
        pred = from_unit(probe.predict_essays(frozen.pooled[val], frozen.features[val]), low[val], high[val])
        np.testing.assert_allclose(oof.loc[val, "y_pred_raw"], pred[:, 0], atol=1e-5)
        np.testing.assert_allclose(oof.loc[val, [f"y_pred_raw_{t}" for t in TRAITS]], pred[:, 1:], atol=1e-5)
    metrics = json.loads((root / "metrics/lp_cv.json").read_text())
    assert metrics["n"]["seeds"] == 1 and metrics["max_length"] == 64 and set(metrics["alpha"]) == {"0", "1", "2"}
    assert metrics["features"] == groups and metrics["n_writing_features"] == d


def test_stage_writes_the_contract_and_is_bit_identical_on_rerun(repo, tmp_path):
    root, base = repo
    params = with_finetune(base, seeds=[7, 8])
    metrics = run_cv(params, "grl", root)
    first = (root / "data/predictions/grl_cv.csv").read_bytes()
    reps = np.load(root / "data/representations/grl_cv.npy")
    again_root = tmp_path / "again"
    for shared in ("data/prepared", "data/frozen_pass", "models/lp_cv"):  # the inputs, lp_cv's outputs included
        shutil.copytree(root / shared, again_root / shared)
    run_cv(params, "grl", again_root)
    assert (again_root / "data/predictions/grl_cv.csv").read_bytes() == first  # same params -> same bytes
    assert np.array_equal(np.load(again_root / "data/representations/grl_cv.npy"), reps)
    for path in sorted((root / "models/grl_cv").rglob("*")):  # the DVC out too: no wall-clock times in it
        if path.is_file():
            assert (again_root / path.relative_to(root)).read_bytes() == path.read_bytes(), path.name

    cv = _cv(root)
    oof = pd.read_csv(root / "data/predictions/grl_cv.csv", dtype={"record_id": str})
    assert list(oof.columns) == CONTRACT_COLUMNS and oof["seed"].tolist() == [7] * len(cv) + [8] * len(cv)
    assert set(metrics["traits"]) == {*TRAITS, "mean_qwk_pooled", "mean_qwk_pooled_sd"}
    for _, per_seed in oof.groupby("seed"):
        assert per_seed["record_id"].tolist() == cv["record_id"].tolist() and per_seed["fold"].tolist() == cv["fold"].tolist()
        assert np.isfinite(per_seed["y_pred_raw"]).all() and per_seed["y_pred_raw"].std() > 0
    assert np.abs(oof.loc[oof.seed == 7, "y_pred_raw"].to_numpy() - oof.loc[oof.seed == 8, "y_pred_raw"].to_numpy()).max() > 1e-4
    ids = pd.read_csv(root / "data/representations/grl_cv_ids.csv", dtype={"record_id": str})
    assert reps.shape == (len(cv), 32) and reps.dtype == np.float32 and ids["record_id"].tolist() == cv["record_id"].tolist()
    runs = {f"{s}/{k}" for s in (7, 8) for k in range(3)}
    assert set(metrics["train"]["adversary_acc"]) == set(metrics["train"]["train_loss"]) == set(metrics["train"]["adversary_chance"]) == runs
    for k in range(3):  # the adversary's chance level: the share of fold k's largest training prompt
        assert metrics["train"]["adversary_chance"][f"7/{k}"] == pytest.approx(cv.loc[cv["fold"] != k, "prompt"].value_counts(normalize=True).max())
    assert metrics["n"]["seeds"] == 2 and set(metrics["seeds"]) == {"7", "8"} and metrics["seed_sd"]["qwk.pooled"] is not None
    assert metrics["resumed_runs"] == [] and metrics["lp_ft"] is True
    assert metrics["frozen_pass_sha256"] == sha256_file(root / "data/frozen_pass/hidden.npy")
    for seed in (7, 8):
        for k in range(3):
            folder = root / f"models/grl_cv/seed_{seed}/fold_{k}"
            assert (folder / "weights.safetensors").exists()
            config = json.loads((folder / "config.json").read_text())
            assert config["objective"] == "grl" and config["seed"] == seed and config["lp_ft"] is True
            assert config["features"] == base["finetune"]["features"] and len(config["feature_scaling"]["mean"]) == sum(len(FEATURE_GROUPS[g]) for g in config["features"])
    assert not list((root / "models/grl_cv").glob("fold_*"))  # no folder of the old one-seed layout
    assert (root / "dvclive/grl_cv/plots/metrics/fold0/adversary_acc.tsv").exists()
    assert not (root / ".checkpoints/grl_cv").exists()  # removed once the outputs are written


def test_fine_tuning_needs_the_outputs_of_embed_and_lp_cv(repo, tmp_path):
    root, params = repo
    bare = tmp_path / "bare"
    shutil.copytree(root / "data/prepared", bare / "data/prepared")
    with pytest.raises(AESError, match=r"lp_cv/probes.json: not found; finetune.lp_ft .*run `dvc repro lp_cv`"):
        run_cv(params, "erm", bare)
    with pytest.raises(AESError, match=r"frozen_pass/record_ids.csv: not found; .*stage embed: run `dvc repro embed`"):
        run_cv(with_finetune(params, lp_ft=False), "erm", bare)
    assert not (bare / "data/predictions").exists()


@pytest.mark.parametrize("objective", ["erm", "grl", "dro"])
def test_training_lowers_the_training_loss(repo, objective):
    root, params = repo
    trainer, cv, data = _trainer(root, with_finetune(params, epochs=10, encoder_lr=3e-3, head_lr=3e-2), objective)
    result = trainer.train_fold(cv, data, 0, seed=7)
    losses = [e["train_mse"] for e in result["epochs"]]  # mean MSE (standardised target) per epoch
    assert losses[-1] < 0.8 * losses[0], losses
    assert result["pooled"].shape == ((cv["fold"] == 0).sum(), 32)


def test_a_fold_never_sees_its_validation_essays(repo, monkeypatch):
    root, params = repo
    trainer, cv, data = _trainer(root, with_finetune(params, inner_val_fraction=0.3))
    seen, phase = [], {"predict": False}
    backbone_kind = type(trainer.backbone)
    original_inputs, original_predict = backbone_kind.batch_inputs, Trainer.predict

    def spy_inputs(self, data, rows):
        seen.append((phase["predict"], set(np.asarray(rows).tolist())))
        return original_inputs(self, data, rows)

    def spy_predict(self, model, data, rows):
        phase["predict"] = True
        seen.append(("predict", set(np.asarray(rows).tolist())))
        try:
            return original_predict(self, model, data, rows)
        finally:
            phase["predict"] = False

    monkeypatch.setattr(backbone_kind, "batch_inputs", spy_inputs)
    monkeypatch.setattr(Trainer, "predict", spy_predict)
    result = trainer.train_fold(cv, data, 1, seed=7)
    val = set(np.flatnonzero(cv["fold"] == 1).tolist())
    predicts = [rows for tag, rows in seen if tag == "predict"]
    trained = set().union(*(rows for tag, rows in seen if tag is False))
    assert predicts[-1] == val and not any(p & val for p in predicts[:-1])  # inner evals use inner essays only
    assert not trained & val and not trained & predicts[0]  # inner essays are not trained on either
    assert len(result["epochs"]) == 2 and all("inner_qwk" in e for e in result["epochs"])
    # the inner split depends on the seed too: another seed holds out other inner essays
    inner = [trainer.fold_rows(cv, 1, s)[1] for s in (7, 8, 9)]
    assert not all(np.array_equal(inner[0], other) for other in inner[1:])


def test_lora_trains_only_adapters_and_reinit_changes_the_top_layer(repo):
    root, params = repo
    trainer, cv, data = _trainer(root, with_finetune(params, lora=True, lora_target_modules=["query", "value"], epochs=1))
    result = trainer.train_fold(cv, data, 0, seed=7)
    assert result["state"] and all("lora_" in name or name.startswith("head.") for name in result["state"])
    trainer, _, _ = _trainer(root, with_finetune(params, reinit_top_layers=1))
    fresh = trainer.backbone.fresh_model().layers[0].state_dict()
    pristine = trainer.backbone.pristine[0].state_dict()
    assert not torch.equal(fresh["attention.self.query.weight"], pristine["attention.self.query.weight"])


def test_full_encoder_with_gradient_accumulation(repo):
    root, params = repo
    trainer, cv, data = _trainer(root, with_finetune(params, trainable_layers=-1, grad_accum_steps=2, epochs=1, layer_lr_decay=0.8))
    assert data.hidden is None and data.input_ids is not None  # trains from tokens: the stored frozen pass is not used
    result = trainer.train_fold(cv, data, 2, seed=7)
    assert np.isfinite(result["pred_unit"]).all()
    assert any(name.startswith("encoder.embeddings") for name in result["state"])


def test_checkpoints_are_per_seed_and_fold(tmp_path):
    result = {"pred_unit": np.array([3.0, 3.5]), "pooled": np.ones((2, 4), dtype=np.float32),
              "state": {"head.weight": torch.ones(1, 4)}, "target_mean": 3.0, "target_std": 0.5, "epochs": [{"epoch": 0, "train_mse": 1.0}],
              "best_epoch": 0, "prompts": ["a", "b"], "history": [], "fold_s": 1.5}
    assert run_name(7, 2) == "seed_7_fold_2"
    write_checkpoint(tmp_path, run_name(7, 2), result)
    assert (tmp_path / "seed_7_fold_2" / "DONE").exists() and not list(tmp_path.glob(".*tmp*"))
    back = read_checkpoint(tmp_path, "seed_7_fold_2")
    np.testing.assert_array_equal(back["pred_unit"], result["pred_unit"])
    np.testing.assert_array_equal(back["pooled"], result["pooled"])
    assert torch.equal(back["state"]["head.weight"], result["state"]["head.weight"])
    assert back["target_std"] == 0.5 and back["epochs"] == result["epochs"] and back["fold_s"] == 1.5
    assert read_checkpoint(tmp_path, run_name(8, 2)) is None  # another seed of the same fold is not done
    assert back["inner_rows"].size == 0 and back["inner_unit"].size == 0  # a run without an inner slice
    for file in ("inner_rows.npy", "inner_unit.npy"):  # written before the inner slice existed: read as empty
        (tmp_path / "seed_7_fold_2" / file).unlink()
    old = read_checkpoint(tmp_path, "seed_7_fold_2")
    assert old["inner_rows"].dtype == np.int64 and old["inner_rows"].size == 0 and old["inner_unit"].size == 0
    (tmp_path / "seed_7_fold_2" / "DONE").unlink()  # killed before the marker: not a finished run
    assert read_checkpoint(tmp_path, "seed_7_fold_2") is None


def test_bad_input_names_the_param(repo, monkeypatch):
    root, params = repo
    with pytest.raises(AESError, match="unknown objective 'mse'"):
        run_cv(params, "mse", root)
    with pytest.raises(AESError, match="finetune.lora_target_modules.*'nope'"):
        _trainer(root, with_finetune(params, lora=True, lora_target_modules=["nope"]))[0].backbone.fresh_model()
    with pytest.raises(AESError, match="finetune.trainable_layers=5"):
        _trainer(root, with_finetune(params, trainable_layers=5))
    if not torch.cuda.is_available():
        with pytest.raises(AESError, match="finetune.device"):
            make_accelerator(with_finetune(params, device="cuda")["finetune"])
        with pytest.raises(AESError, match="finetune.mixed_precision is 'fp16' but training runs on the CPU"):
            make_accelerator(with_finetune(params, mixed_precision="fp16")["finetune"])
    # bf16 is allowed everywhere (CPU autocast)
    assert str(make_accelerator(with_finetune(params, mixed_precision="bf16")["finetune"]).mixed_precision) == "bf16"

    def nan_loss(self, pred_z, target_z, pooled, group, progress):
        return pred_z.sum() * float("nan"), {}

    monkeypatch.setattr(Objective, "loss", nan_loss)
    with pytest.raises(AESError, match="finetune_cv: non-finite training loss.*fold 0, epoch 0, step 0"):
        run_cv(params, "erm", root)


def test_stage_script_rejects_an_unknown_objective(repo):
    root, _ = repo
    proc = subprocess.run([sys.executable, str(ROOT / "stages/train_cv.py"), "--objective", "xyz"], cwd=root,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown objective 'xyz'" in proc.stderr


def test_kill_minus_9_after_the_first_run_then_resume(tmp_path, tiny_encoder):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    # 2 seeds x 3 folds: five runs are left after the first, so the kill lands between the first run and the end
    params = make_training_repo(killed, tiny_encoder, epochs=4, seeds=[7, 8])
    run_frozen_stages(params, killed)
    shutil.copytree(killed, clean)
    cmd = [sys.executable, str(ROOT / "stages/train_cv.py"), "--objective", "dro"]
    env = os.environ | {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(cmd, cwd=killed, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    ckpt = killed / ".checkpoints/dro_cv"
    while not list(ckpt.glob("*/seed_7_fold_0/DONE")):
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.time() < deadline, "the first run (seed 7, fold 0) never finished"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "data/predictions/dro_cv.csv").exists(), "the stage finished before the kill"
    assert not list(ckpt.glob("*/seed_8_fold_2/DONE")), "the last run finished before the kill"

    rerun = subprocess.run(cmd, cwd=killed, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming seed 7 fold 0" in rerun.stdout
    metrics = json.loads((killed / "metrics/dro_cv.json").read_text())
    assert "seed_7_fold_0" in metrics["resumed_runs"] and "seed_8_fold_2" not in metrics["resumed_runs"]
    assert not ckpt.exists()

    run_cv(load_params(clean / "params.yaml"), "dro", clean)  # uninterrupted, same params and data
    assert (killed / "data/predictions/dro_cv.csv").read_bytes() == (clean / "data/predictions/dro_cv.csv").read_bytes()
    assert np.array_equal(np.load(killed / "data/representations/dro_cv.npy"), np.load(clean / "data/representations/dro_cv.npy"))
    oof = pd.read_csv(killed / "data/predictions/dro_cv.csv")
    assert sorted(oof["seed"].unique()) == [7, 8]


def test_cached_training_needs_a_bert_like_encoder(repo, tmp_path, tiny_encoder):
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    root, params = repo
    folder = tmp_path / "distil"
    AutoTokenizer.from_pretrained(str(tiny_encoder)).save_pretrained(folder)
    DistilBertModel(DistilBertConfig(vocab_size=200, dim=16, n_layers=1, n_heads=2, hidden_dim=32)).save_pretrained(folder)
    with pytest.raises(AESError, match="use finetune.trainable_layers: -1"):
        _trainer(root, with_finetune(params, model=str(folder)))


def test_curves_are_skipped_with_a_warning_without_dvclive(tmp_path, monkeypatch):
    from aes.finetune.callbacks import DVCLiveCurves

    monkeypatch.setitem(sys.modules, "dvclive", None)  # import dvclive -> ImportError
    with pytest.warns(UserWarning, match="dvclive is not installed"):
        curves = DVCLiveCurves(tmp_path / "dvclive" / "finetune_cv")
    curves.on_epoch_end(0, {"epoch": 0, "step": 5, "train_mse": 1.0})
    curves.on_curve_point(0, {"step": 5, "train_loss": 1.0})
    curves.end()
    assert not (tmp_path / "dvclive").exists()
