"""The GPU profile's code path (profiles/gpu.args) on the tiny random model: the whole encoder,
LP-FT from the lp_cv probe on the pretrained pooled output, layer-wise LR decay, the inner epoch
choice, the smoke cap; gradient checkpointing for encoders transformers cannot checkpoint (MPNet
in transformers 5: found by the real-weights smoke run, aes.ops.smoke), with and without LoRA; an
fp16 checkpoint (the GPU check's MiniLM copy) loads as fp32; bf16 without native support fails."""

import math

import numpy as np
import pytest
import torch
from transformers import BertModel

from aes.core.errors import AESError
from aes.core.registry import FROZEN_PASS
from aes.encoders import embedding
from aes.encoders.resolve import load_encoder
from aes.finetune.cv import run_cv
from aes.finetune.folds import load_cv
from aes.finetune.loop import Trainer
from aes.finetune.runtime import make_accelerator
from aes.finetune.modules import enable_gradient_checkpointing
from tests.tiny_model import make_tiny_encoder
from tests.training_fixtures import make_training_repo, run_frozen_stages, with_finetune

PROFILE = dict(trainable_layers=-1, lp_ft=True, layer_lr_decay=0.9, inner_val_fraction=0.3, epochs=2,
               encoder_lr=1e-3, head_lr=1e-2, warmup_ratio=0.1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def profile_repo(tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("gpu_profile_repo")
    params = make_training_repo(root, tiny_encoder, max_train_essays=16, **PROFILE)
    run_frozen_stages(params, root)
    return root, params


def test_lp_cv_and_every_objective_run_the_whole_encoder_profile(profile_repo):
    root, params = profile_repo
    assert not (root / FROZEN_PASS / "hidden.npy").exists()  # whole encoder: only the pooled output is stored
    for objective in ("erm", "grl", "dro"):
        metrics = run_cv(params, objective, root)
        train = metrics["train"]
        assert all(math.isfinite(v) for v in train["train_loss"].values()), objective
        assert set(train["inner_qwk"]) == set(train["best_epoch"]) and all(e in (0, 1) for e in train["best_epoch"].values())
        assert math.isfinite(metrics["qwk"]["pooled"]) and "frozen_pass_sha256" not in metrics


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_without_transformers_support_trains(profile_repo, monkeypatch, lora):
    root, params = profile_repo
    monkeypatch.setattr(BertModel, "supports_gradient_checkpointing", False)  # as MPNetModel in transformers 5
    calls = []
    import torch.utils.checkpoint as ckpt

    real = ckpt.checkpoint
    monkeypatch.setattr(ckpt, "checkpoint", lambda *a, **k: calls.append(k.get("use_reentrant")) or real(*a, **k))
    p = with_finetune(params, gradient_checkpointing=True, lora=lora, max_train_essays=12)
    trainer = Trainer(p, "erm", make_accelerator(p["finetune"]))
    cv = load_cv(root)
    data = trainer.prepare(cv["text"].tolist())
    result = trainer.train_fold(cv, data, 0, seed=7)
    assert calls and set(calls) == {False}  # every layer checkpointed, non-reentrant
    assert all(math.isfinite(e["train_mse"]) for e in result["epochs"]) and np.isfinite(result["pred_unit"]).all()
    if lora:  # the adapters trained: gradients reached them through the checkpointed layers
        before = trainer.start_model(None, 0.0, 1.0).state_dict()
        moved = [n for n, t in result["state"].items() if "lora_B" in n and not torch.equal(t, before[n])]
        assert moved


def test_checkpointed_layers_give_the_same_gradients(tiny_encoder):
    _, plain = load_encoder(str(tiny_encoder), dropout=0.0)  # dropout off: the two passes must match exactly
    _, wrapped = load_encoder(str(tiny_encoder), dropout=0.0)
    wrapped.supports_gradient_checkpointing = False  # take the torch.utils.checkpoint fallback
    enable_gradient_checkpointing(wrapped, "tiny")
    assert set(dict(plain.named_parameters())) == set(dict(wrapped.named_parameters()))  # names unchanged
    ids = torch.randint(5, 60, (2, 12))
    mask = torch.ones_like(ids)
    for model in (plain, wrapped):
        model.train()
        model(input_ids=ids, attention_mask=mask).last_hidden_state.pow(2).mean().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), wrapped.named_parameters()):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_an_fp16_checkpoint_loads_as_fp32(tmp_path):
    folder = make_tiny_encoder(tmp_path / "tiny16")
    BertModel.from_pretrained(folder).half().save_pretrained(folder)
    _, model = load_encoder(str(folder))
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_bf16_on_hardware_without_native_bf16_names_the_key(profile_repo, monkeypatch):
    _, params = profile_repo
    monkeypatch.setattr(embedding, "cpu_bf16_supported", lambda: False)
    with pytest.raises(AESError, match=r"finetune.mixed_precision is 'bf16' but this CPU has no native bfloat16.*finetune.mixed_precision: no"):
        make_accelerator(with_finetune(params, mixed_precision="bf16", device="cpu")["finetune"])
    with pytest.raises(AESError, match=r"embed.mixed_precision is 'bf16'.*embed.mixed_precision: no"):
        embedding.embed_texts(["an essay"], "no-such-model", 16, 1, device="cpu", bf16=True)
    make_accelerator(with_finetune(params, mixed_precision="no", device="cpu")["finetune"])  # fp32 stays allowed


def test_cuda_without_a_gpu_names_the_key(profile_repo):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    _, params = profile_repo
    with pytest.raises(AESError, match=r"finetune.device is 'cuda' but no CUDA GPU is visible \(use 'auto' or 'cpu'\)"):
        make_accelerator(with_finetune(params, device="cuda")["finetune"])
