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

from aes.core.artifacts import PREDICTION_COLUMNS
from aes.core.errors import AESError
from aes.core.params import load_params
from aes.data.corpus import load_essays
from aes.data.splits import cv_essays, load_splits
from aes.finetune.cv import run_cv
from aes.finetune.loop import Trainer, make_accelerator
from aes.finetune.objectives import Objective
from tests.training_fixtures import ROOT, make_training_repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("train_repo")
    params = make_training_repo(root, tiny_encoder)
    return root, params


def _variant(params, **finetune):
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in params.items()}
    out["finetune"].update(finetune)
    return out


def _trainer(root, params, objective="erm"):
    cv = cv_essays(load_essays(root / "data/prepared/essays.csv"), load_splits(root / "data/prepared/splits.json"))
    trainer = Trainer(params, objective, make_accelerator(params["finetune"]))
    return trainer, cv, trainer.prepare(cv["text"].tolist())


def test_stage_writes_the_contract_and_is_bit_identical_on_rerun(repo, tmp_path):
    root, params = repo
    metrics = run_cv(params, "grl", root)
    first = (root / "data/predictions/grl_cv.csv").read_bytes()
    reps = np.load(root / "data/representations/grl_cv.npy")
    again_root = tmp_path / "again"
    shutil.copytree(root / "data/prepared", again_root / "data/prepared")
    run_cv(params, "grl", again_root)
    assert (again_root / "data/predictions/grl_cv.csv").read_bytes() == first  # same params -> same bytes
    assert np.array_equal(np.load(again_root / "data/representations/grl_cv.npy"), reps)
    for path in sorted((root / "models/grl_cv").rglob("*")):  # the DVC out too: no wall-clock times in it
        if path.is_file():
            assert (again_root / path.relative_to(root)).read_bytes() == path.read_bytes(), path.name

    cv = cv_essays(load_essays(root / "data/prepared/essays.csv"), load_splits(root / "data/prepared/splits.json"))
    oof = pd.read_csv(root / "data/predictions/grl_cv.csv", dtype={"record_id": str})
    assert list(oof.columns) == PREDICTION_COLUMNS and oof["record_id"].tolist() == cv["record_id"].tolist()
    assert np.isfinite(oof["y_pred_raw"]).all() and oof["y_pred_raw"].std() > 0
    ids = pd.read_csv(root / "data/representations/grl_cv_ids.csv", dtype={"record_id": str})
    assert reps.shape == (len(cv), 32) and reps.dtype == np.float32 and ids["record_id"].tolist() == cv["record_id"].tolist()
    assert set(metrics["train"]["adversary_acc"]) == {"0", "1", "2"}
    for k in range(3):
        assert (root / f"models/grl_cv/fold_{k}/weights.safetensors").exists()
        assert json.loads((root / f"models/grl_cv/fold_{k}/config.json").read_text())["objective"] == "grl"
    assert (root / "dvclive/grl_cv/plots/metrics/fold0/adversary_acc.tsv").exists()
    assert not (root / ".checkpoints/grl_cv").exists()  # removed once the outputs are written


@pytest.mark.parametrize("objective", ["erm", "grl", "dro"])
def test_training_lowers_the_training_loss(repo, objective):
    root, params = repo
    trainer, cv, data = _trainer(root, _variant(params, epochs=10, encoder_lr=3e-3, head_lr=3e-2), objective)
    result = trainer.train_fold(cv, data, 0)
    losses = [e["train_mse"] for e in result["epochs"]]  # mean MSE (standardised target) per epoch
    assert losses[-1] < 0.8 * losses[0], losses
    assert result["pooled"].shape == ((cv["fold"] == 0).sum(), 32)


def test_a_fold_never_sees_its_validation_essays(repo, monkeypatch):
    root, params = repo
    trainer, cv, data = _trainer(root, _variant(params, inner_val_fraction=0.3))
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
    result = trainer.train_fold(cv, data, 1)
    val = set(np.flatnonzero(cv["fold"] == 1).tolist())
    predicts = [rows for tag, rows in seen if tag == "predict"]
    trained = set().union(*(rows for tag, rows in seen if tag is False))
    assert predicts[-1] == val and not any(p & val for p in predicts[:-1])  # inner evals use inner essays only
    assert not trained & val and not trained & predicts[0]  # inner essays are not trained on either
    assert len(result["epochs"]) == 2 and all("inner_qwk" in e for e in result["epochs"])


def test_lora_trains_only_adapters_and_reinit_changes_the_top_layer(repo):
    root, params = repo
    trainer, cv, data = _trainer(root, _variant(params, lora=True, lora_target_modules=["query", "value"], epochs=1))
    result = trainer.train_fold(cv, data, 0)
    assert result["state"] and all("lora_" in name or name.startswith("head.") for name in result["state"])
    trainer, _, _ = _trainer(root, _variant(params, reinit_top_layers=1))
    fresh = trainer.backbone.fresh_model().layers[0].state_dict()
    pristine = trainer.backbone.pristine[0].state_dict()
    assert not torch.equal(fresh["attention.self.query.weight"], pristine["attention.self.query.weight"])


def test_full_encoder_with_gradient_accumulation(repo):
    root, params = repo
    trainer, cv, data = _trainer(root, _variant(params, trainable_layers=-1, grad_accum_steps=2, epochs=1, layer_lr_decay=0.8))
    assert data.hidden is None
    result = trainer.train_fold(cv, data, 2)
    assert np.isfinite(result["pred_raw"]).all()
    assert any(name.startswith("encoder.embeddings") for name in result["state"])


def test_bad_input_names_the_param(repo, monkeypatch):
    root, params = repo
    with pytest.raises(AESError, match="unknown objective 'mse'"):
        run_cv(params, "mse", root)
    with pytest.raises(AESError, match="finetune.lora_target_modules.*'nope'"):
        _trainer(root, _variant(params, lora=True, lora_target_modules=["nope"]))[0].backbone.fresh_model()
    with pytest.raises(AESError, match="finetune.trainable_layers=5"):
        _trainer(root, _variant(params, trainable_layers=5))
    if not torch.cuda.is_available():
        with pytest.raises(AESError, match="finetune.device"):
            make_accelerator(_variant(params, device="cuda")["finetune"])
        with pytest.raises(AESError, match="finetune.mixed_precision"):
            make_accelerator(_variant(params, mixed_precision="bf16")["finetune"])

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


def test_kill_minus_9_after_fold_0_then_resume(tmp_path, tiny_encoder):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    # enough epochs that a fold takes seconds, so the kill lands between fold 0 and the end
    make_training_repo(killed, tiny_encoder, epochs=15)
    shutil.copytree(killed, clean)
    cmd = [sys.executable, str(ROOT / "stages/train_cv.py"), "--objective", "dro"]
    env = os.environ | {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(cmd, cwd=killed, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    ckpt = killed / ".checkpoints/dro_cv"
    while not list(ckpt.glob("*/fold_0/DONE")):
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.time() < deadline, "fold 0 never finished"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "data/predictions/dro_cv.csv").exists(), "the stage finished before the kill"
    done_at = next(ckpt.glob("*/fold_0/DONE")).stat().st_mtime_ns

    rerun = subprocess.run(cmd, cwd=killed, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming fold 0" in rerun.stdout
    metrics = json.loads((killed / "metrics/dro_cv.json").read_text())
    assert 0 in metrics["resumed_folds"] and 2 not in metrics["resumed_folds"]
    assert not ckpt.exists()

    run_cv(load_params(clean / "params.yaml"), "dro", clean)  # uninterrupted, same params and data
    assert (killed / "data/predictions/dro_cv.csv").read_bytes() == (clean / "data/predictions/dro_cv.csv").read_bytes()
    assert np.array_equal(np.load(killed / "data/representations/dro_cv.npy"), np.load(clean / "data/representations/dro_cv.npy"))
    assert done_at > 0


def test_cached_training_needs_a_bert_like_encoder(repo, tmp_path, tiny_encoder):
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    root, params = repo
    folder = tmp_path / "distil"
    AutoTokenizer.from_pretrained(str(tiny_encoder)).save_pretrained(folder)
    DistilBertModel(DistilBertConfig(vocab_size=200, dim=16, n_layers=1, n_heads=2, hidden_dim=32)).save_pretrained(folder)
    with pytest.raises(AESError, match="use finetune.trainable_layers: -1"):
        _trainer(root, _variant(params, model=str(folder)))


def test_curves_are_skipped_with_a_warning_without_dvclive(tmp_path, monkeypatch):
    from aes.finetune.callbacks import DVCLiveCurves

    monkeypatch.setitem(sys.modules, "dvclive", None)  # import dvclive -> ImportError
    with pytest.warns(UserWarning, match="dvclive is not installed"):
        curves = DVCLiveCurves(tmp_path / "dvclive" / "finetune_cv")
    curves.on_epoch_end(0, {"epoch": 0, "step": 5, "train_mse": 1.0})
    curves.on_curve_point(0, {"step": 5, "train_loss": 1.0})
    curves.end()
    assert not (tmp_path / "dvclive").exists()
