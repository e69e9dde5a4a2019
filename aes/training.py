"""One fine-tuning loop for the three transformer stages (objective erm | grl | dro).

Model: a pretrained encoder, masked mean pooling over real tokens, and a linear head that
predicts the standardised score ``z = (y - mean) / std`` (mean and std of the fold's training
essays); predictions are mapped back to the raw 1-5 scale. The objective (:mod:`aes.objectives`)
turns predictions into a loss.

Two ways to train, chosen by ``finetune.trainable_layers``:

- ``k >= 0`` (CPU profile): the bottom ``num_layers - k`` layers and the embeddings are frozen, so
  they run ONCE per stage over all CV essays (``torch.inference_mode``, batches sorted by length)
  and their hidden states (n, T, H) stay in memory; each fold then trains only the top ``k``
  layers (a fresh copy of the pretrained ones) + head on those cached activations.
  BERT-like encoders only (``encoder.layer`` of self-contained layers).
- ``k = -1`` (GPU profile): the whole encoder is trained end to end from the tokens.

Discipline: a fold never looks at its validation essays while training. By default every fold
trains a fixed number of epochs; with ``finetune.inner_val_fraction > 0`` the fold's training
essays are split by prompt (:func:`aes.splits.inner_split`) and the epoch with the best inner QWK
is kept. Seeds: python, numpy, torch and the data order are seeded per fold (seed + fold), so a
fold gives the same numbers whether or not the folds before it ran in the same process.

Resumability: each finished fold is written to ``.checkpoints/<stage>/<config_hash>/fold_<k>/``
(temp folder renamed into place, ``DONE`` marker last); a re-run with the same params, splits and
essays loads those folds instead of retraining them. The checkpoint folder is removed once the
stage's outputs are written.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from aes.embedding import mean_pool  # the same pooling as the frozen-embedding baseline
from aes.errors import AESError
from aes.evaluation import make_oof_frame, write_json, write_model_outputs
from aes.metrics import qwk
from aes.objectives import make_objective
from aes.params import stage_for_objective
from aes.progress import update_progress

ESSAYS = Path("data/prepared/essays.csv")
SPLITS = Path("data/prepared/splits.json")
# Encoders whose layers are called as layer(hidden, additive_mask) with absolute positions.
BERT_LIKE = ("bert", "roberta", "xlm-roberta", "camembert", "electra")
PROGRESS_EVERY = 10  # steps between aes.progress updates
CURVE_EVERY = 10  # steps per point of the step-level training curves (window means)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_accelerator(ft: dict):
    """An ``accelerate.Accelerator`` for ``finetune.device`` / ``mixed_precision`` / ``grad_accum_steps``."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    has_gpu = torch.cuda.is_available()
    if ft["device"] == "cuda" and not has_gpu:
        raise AESError("finetune.device is 'cuda' but no CUDA GPU is visible (use 'auto' or 'cpu')")
    use_gpu = has_gpu and ft["device"] != "cpu"
    if ft["mixed_precision"] != "no" and not use_gpu:
        raise AESError(
            f"finetune.mixed_precision is '{ft['mixed_precision']}' but training runs on the CPU "
            "(no GPU visible or finetune.device: cpu); set finetune.mixed_precision: \"no\""
        )
    if ft["grad_accum_steps"] < 1:
        raise AESError(f"finetune.grad_accum_steps must be >= 1; got {ft['grad_accum_steps']}")
    # One process may run several stages (tests): accelerate keeps singletons, start them afresh.
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    return Accelerator(cpu=not use_gpu, mixed_precision=ft["mixed_precision"], gradient_accumulation_steps=ft["grad_accum_steps"])


def _check_ft(ft: dict) -> None:
    for key in ("epochs", "batch_size", "eval_batch_size", "max_length"):
        if ft[key] < 1:
            raise AESError(f"finetune.{key} must be >= 1; got {ft[key]}")
    if not 0.0 <= ft["warmup_ratio"] < 1.0:
        raise AESError(f"finetune.warmup_ratio must be in [0, 1); got {ft['warmup_ratio']}")
    if not 0.0 <= ft["inner_val_fraction"] < 1.0:
        raise AESError(f"finetune.inner_val_fraction must be in [0, 1); got {ft['inner_val_fraction']}")
    if ft["layer_lr_decay"] <= 0:
        raise AESError(f"finetune.layer_lr_decay must be > 0; got {ft['layer_lr_decay']}")


def encoder_layers(model, ft: dict):
    """The encoder's layer list (``model.encoder.layer``), checked usable for cached training."""
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    model_type = getattr(model.config, "model_type", "?")
    if layers is None or model_type not in BERT_LIKE:
        raise AESError(
            f"finetune.trainable_layers={ft['trainable_layers']} needs a BERT-like encoder (encoder.layer; "
            f"one of {', '.join(BERT_LIKE)}) but model '{ft['model']}' is '{model_type}'; "
            "use finetune.trainable_layers: -1 to train it end to end"
        )
    return layers


# --------------------------------------------------------------------------- models


def _build_modules():
    """nn.Module classes, defined lazily so that importing this module does not import torch."""
    import torch
    from torch import nn

    class TopLayersRegressor(nn.Module):
        """Top encoder layers + mean pooling + linear head over cached hidden states.

        forward(hidden_states (B, T, H), attention_mask (B, T)) -> (pooled (B, H), pred_z (B,)).
        """

        def __init__(self, layers, hidden_size: int):
            super().__init__()
            self.layers = nn.ModuleList(layers)
            self.head = nn.Linear(hidden_size, 1)

        def forward(self, hidden_states, attention_mask):
            hidden = hidden_states
            additive = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
            for layer in self.layers:
                out = layer(hidden, additive)
                hidden = out[0] if isinstance(out, tuple) else out
            pooled = mean_pool(hidden, attention_mask)
            return pooled, self.head(pooled).squeeze(-1)

        def layer_groups(self):
            """[(lr depth below the top, params)]: 0 for the top layer, 1 the one below, ..."""
            k = len(self.layers)
            return [(k - 1 - i, list(layer.parameters())) for i, layer in enumerate(self.layers)]

    class EncoderRegressor(nn.Module):
        """Whole encoder + mean pooling + linear head from tokens.

        forward(input_ids (B, T), attention_mask (B, T)) -> (pooled (B, H), pred_z (B,)).
        """

        def __init__(self, encoder, hidden_size: int):
            super().__init__()
            self.encoder = encoder
            self.head = nn.Linear(hidden_size, 1)

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            pooled = mean_pool(hidden, attention_mask)
            return pooled, self.head(pooled).squeeze(-1)

        def layer_groups(self):
            layers = getattr(getattr(self.encoder, "encoder", None), "layer", None)
            if layers is None:
                return [(0, list(self.encoder.parameters()))]
            n = len(layers)
            in_layers = {id(p) for layer in layers for p in layer.parameters()}
            embeddings = getattr(self.encoder, "embeddings", None)
            in_emb = {id(p) for p in embeddings.parameters()} if embeddings is not None else set()
            rest = [p for p in self.encoder.parameters() if id(p) not in in_layers and id(p) not in in_emb]
            groups = [(n - 1 - i, list(layer.parameters())) for i, layer in enumerate(layers)]
            if embeddings is not None:
                groups.append((n, list(embeddings.parameters())))
            return groups + [(0, rest)]

    return TopLayersRegressor, EncoderRegressor


def _apply_lora(module, ft: dict):
    """Inject LoRA adapters into ``module`` (in place) and freeze all its non-adapter weights."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = list(ft["lora_target_modules"])
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise AESError(f"finetune.lora_target_modules must be a non-empty list of module names; got {targets!r}")
    names = {name.rsplit(".", 1)[-1] for name, _ in module.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in module.named_modules() if type(m).__name__ == "Linear"})
        raise AESError(
            f"finetune.lora_target_modules: {missing} not found in the trained part of model '{ft['model']}'; "
            f"its linear modules are {linear}"
        )
    config = LoraConfig(r=ft["lora_r"], lora_alpha=ft["lora_alpha"], lora_dropout=ft["lora_dropout"], target_modules=targets)
    module = inject_adapter_in_model(config, module)
    for name, param in module.named_parameters():
        param.requires_grad = "lora_" in name
    return module


@dataclass
class Prepared:
    """The CV essays ready for training: tokens, and for cached training the frozen trunk's output.

    input_ids, attention_mask: (n, T) long, padded to the longest essay (T <= max_length).
    lengths: (n,) tokens per essay. hidden: (n, T, H) float32 cached trunk output, or None.
    """

    input_ids: object
    attention_mask: object
    lengths: np.ndarray
    hidden: object = None


class Trainer:
    """Holds the pretrained weights once per stage and trains one fold at a time from them."""

    def __init__(self, params: dict, objective: str, accelerator):
        from aes.models import load_encoder

        self.params, self.ft, self.objective_name = params, params["finetune"], objective
        self.stage = stage_for_objective(objective)
        _check_ft(self.ft)
        self.accelerator = accelerator
        self.tokenizer, encoder = load_encoder(self.ft["model"], dropout=self.ft["dropout"])
        self.hidden_size = int(encoder.config.hidden_size)
        k = self.ft["trainable_layers"]
        self.cached = k >= 0
        if self.cached:
            layers = encoder_layers(encoder, self.ft)
            if k > len(layers):
                raise AESError(f"finetune.trainable_layers={k} but model '{self.ft['model']}' has only {len(layers)} layers")
            self.n_bottom = len(layers) - k
            self.trunk = encoder  # the bottom layers run once (compute_trunk); then only these copies train
            self.pristine = copy.deepcopy(list(layers[self.n_bottom:]))
        else:
            if k != -1:
                raise AESError(f"finetune.trainable_layers must be -1 (all) or >= 0; got {k}")
            self.trunk = None
            self.pristine = encoder
        n_trainable = k if self.cached else len(getattr(getattr(encoder, "encoder", None), "layer", []) or [])
        if self.ft["reinit_top_layers"] < 0 or self.ft["reinit_top_layers"] > max(n_trainable, 0):
            raise AESError(
                f"finetune.reinit_top_layers={self.ft['reinit_top_layers']} must be between 0 and the number of "
                f"trained layers ({n_trainable})"
            )
        self._init_weights = encoder._init_weights
        self._modules = _build_modules()

    # ---------------------------------------------------------------- data

    def prepare(self, texts: list[str]) -> Prepared:
        """Tokenise (datasets.map, batched) and, for cached training, run the frozen trunk once."""
        from aes.embedding import tokenize_texts

        max_length = self.ft["max_length"]
        limit = getattr((self.trunk if self.cached else self.pristine).config, "max_position_embeddings", None)
        if limit and max_length > limit:
            raise AESError(f"finetune.max_length={max_length} exceeds model '{self.ft['model']}' limit of {limit} tokens")
        dataset = tokenize_texts(list(texts), self.tokenizer, max_length)
        lengths = np.asarray(dataset["length"], dtype=int)
        dataset = dataset.remove_columns([c for c in dataset.column_names if c not in ("input_ids", "attention_mask")])
        padded = self.tokenizer.pad(dataset[:], padding="longest", return_tensors="pt")
        prepared = Prepared(padded["input_ids"], padded["attention_mask"], lengths)
        if self.cached:
            prepared.hidden = self.compute_trunk(prepared)
        return prepared

    def compute_trunk(self, data: Prepared):
        """Hidden states (n, T, H) float32 after the embeddings + the frozen bottom layers."""
        import torch
        from torch import nn
        from tqdm.auto import tqdm

        device = self.accelerator.device
        model = self.trunk
        full_layers = model.encoder.layer
        n, width = data.input_ids.shape
        out = torch.zeros((n, width, self.hidden_size), dtype=torch.float32)
        order = np.argsort(-data.lengths, kind="stable")  # longest first: little padding per batch
        bs = self.ft["eval_batch_size"]
        model.encoder.layer = nn.ModuleList(list(full_layers[: self.n_bottom]))
        try:
            model.to(device).eval()
            with torch.inference_mode(), tqdm(total=n, desc=f"{self.stage} frozen layers", unit="essay") as bar:
                for start in range(0, n, bs):
                    rows_np = order[start : start + bs]
                    rows = torch.as_tensor(rows_np)
                    t = int(data.lengths[rows_np].max())
                    ids = data.input_ids[rows, :t].to(device)
                    mask = data.attention_mask[rows, :t].to(device)
                    out[rows, :t] = model(input_ids=ids, attention_mask=mask).last_hidden_state.float().cpu()
                    bar.update(len(rows))
                    update_progress(stage=self.stage, phase="frozen layers", step=min(start + bs, n), total_steps=n)
        finally:
            model.encoder.layer = full_layers
            model.to("cpu")
        return out

    def batch_inputs(self, data: Prepared, rows):
        """Model inputs for essay rows (B,), trimmed to the longest essay among them."""
        import torch

        rows = torch.as_tensor(rows)
        t = int(data.lengths[rows.numpy()].max())
        mask = data.attention_mask[rows, :t]
        if self.cached:
            return {"hidden_states": data.hidden[rows, :t], "attention_mask": mask}
        return {"input_ids": data.input_ids[rows, :t], "attention_mask": mask}

    # ---------------------------------------------------------------- model

    def fresh_model(self):
        """A regressor starting from the pretrained weights (re-initialised / LoRA as configured)."""
        TopLayersRegressor, EncoderRegressor = self._modules
        ft = self.ft
        if self.cached:
            model = TopLayersRegressor(copy.deepcopy(self.pristine), self.hidden_size)
            layers = list(model.layers)
        else:
            encoder = copy.deepcopy(self.pristine)
            if ft["gradient_checkpointing"]:
                encoder.gradient_checkpointing_enable()
            model = EncoderRegressor(encoder, self.hidden_size)
            layers = list(getattr(getattr(encoder, "encoder", None), "layer", []) or [])
        for layer in layers[len(layers) - ft["reinit_top_layers"] :] if ft["reinit_top_layers"] else []:
            for module in layer.modules():
                self._init_weights(module)
        if ft["lora"]:
            if self.cached:
                model.layers = _apply_lora(model.layers, ft)
            else:
                model.encoder = _apply_lora(model.encoder, ft)
        return model

    def optimizer(self, model, objective):
        """AdamW: encoder_lr * layer_lr_decay**depth per layer, head_lr for the head, plus the objective's groups."""
        import torch

        ft = self.ft
        groups = []

        def add(params, lr, name):
            params = [p for p in params if p.requires_grad]
            decay = [p for p in params if p.ndim >= 2]  # weight matrices; no decay for biases / LayerNorm
            no_decay = [p for p in params if p.ndim < 2]
            if decay:
                groups.append({"params": decay, "lr": lr, "weight_decay": ft["weight_decay"], "name": name})
            if no_decay:
                groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": name + ".no_decay"})

        for depth, params in model.layer_groups():
            add(params, ft["encoder_lr"] * ft["layer_lr_decay"] ** depth, f"encoder.depth{depth}")
        add(model.head.parameters(), ft["head_lr"], "head")
        for group in objective.param_groups():
            add(group["params"], group["lr"], group["name"])
        return torch.optim.AdamW(groups, lr=ft["encoder_lr"], weight_decay=ft["weight_decay"])

    # ---------------------------------------------------------------- predict

    def predict(self, model, data: Prepared, rows: np.ndarray):
        """(pred_z (m,), pooled (m, H)) float32 numpy for essay rows (m,), in that order."""
        import torch

        model.eval()
        pred = np.zeros(len(rows), dtype=np.float32)
        pooled = np.zeros((len(rows), self.hidden_size), dtype=np.float32)
        order = np.argsort(-data.lengths[rows], kind="stable")
        bs = self.ft["eval_batch_size"]
        with torch.inference_mode(), self.accelerator.autocast():
            for start in range(0, len(rows), bs):
                pos = order[start : start + bs]
                inputs = {k: v.to(self.accelerator.device) for k, v in self.batch_inputs(data, rows[pos]).items()}
                p, z = model(**inputs)
                pooled[pos] = p.float().cpu().numpy()
                pred[pos] = z.float().cpu().numpy()
        return pred, pooled

    # ---------------------------------------------------------------- train

    def steps_per_epoch(self, n_train: int) -> int:
        return math.ceil(n_train / self.ft["batch_size"])

    def train_fold(self, cv: pd.DataFrame, data: Prepared, k: int, bar=None, log_epoch=None, log_step=None) -> dict:
        """Train on the essays with ``fold != k``; predict the essays with ``fold == k``.

        Returns dict with pred_raw (n_val,), pooled (n_val, H) float32, state (trainable tensors),
        target_mean/std, epochs (list of per-epoch log dicts), best_epoch.
        """
        import torch
        from transformers import get_linear_schedule_with_warmup

        from aes.splits import inner_split

        ft, acc = self.ft, self.accelerator
        fold_of = cv["fold"].to_numpy()
        train_rows = np.flatnonzero(fold_of != k)
        val_rows = np.flatnonzero(fold_of == k)
        if len(train_rows) == 0:
            raise AESError(f"fold {k}: the training part has no essays (every CV essay is in fold {k})")
        inner_rows = np.array([], dtype=int)
        if ft["inner_val_fraction"] > 0:
            fit_pos, inner_pos = inner_split(cv.iloc[train_rows].reset_index(drop=True), ft["inner_val_fraction"], ft["seed"] + k)
            train_rows, inner_rows = train_rows[fit_pos], train_rows[inner_pos]
        y = cv["y"].to_numpy(dtype=np.float64)
        mean, std = float(y[train_rows].mean()), float(y[train_rows].std())
        std = std if std > 1e-8 else 1.0
        prompts = sorted(cv["prompt"].iloc[train_rows].unique())
        group_of = {p: g for g, p in enumerate(prompts)}
        group = cv["prompt"].map(group_of).fillna(-1).to_numpy(dtype=np.int64)
        sizes = [int((group[train_rows] == g).sum()) for g in range(len(prompts))]

        seed_everything(ft["seed"] + k)
        model = self.fresh_model()
        objective = make_objective(self.objective_name, self.params, sizes, self.hidden_size, k)
        optimizer = self.optimizer(model, objective)
        per_epoch = math.ceil(self.steps_per_epoch(len(train_rows)) / ft["grad_accum_steps"])
        total_updates = per_epoch * ft["epochs"]
        scheduler = get_linear_schedule_with_warmup(optimizer, round(ft["warmup_ratio"] * total_updates), total_updates)
        target_z = torch.as_tensor((y - mean) / std, dtype=torch.float32)
        group_t = torch.as_tensor(group)

        def collate(rows):
            rows = np.asarray(rows)
            batch = self.batch_inputs(data, rows)
            batch["target_z"] = target_z[rows]
            batch["group"] = group_t[rows]
            return batch

        generator = torch.Generator().manual_seed(ft["seed"] + k)
        loader = torch.utils.data.DataLoader(
            train_rows.tolist(), batch_size=ft["batch_size"], shuffle=True, generator=generator, collate_fn=collate
        )
        model, optimizer, loader = acc.prepare(model, optimizer, loader)
        objective.to(acc.device)

        total_steps = len(loader) * ft["epochs"]
        step, epochs, best = 0, [], {"qwk": -math.inf, "epoch": None, "state": None}
        history, window = [], []  # step-level curve points; batch logs since the last point
        for epoch in range(ft["epochs"]):
            model.train()
            for batch in loader:
                with acc.accumulate(model):
                    target, grp = batch.pop("target_z"), batch.pop("group")
                    with acc.autocast():
                        pooled, pred = model(**batch)
                        loss, batch_logs = objective.loss(pred, target, pooled, grp, step / total_steps)
                    if not torch.isfinite(loss.detach()):
                        raise AESError(
                            f"{self.stage}: non-finite training loss ({float(loss.detach())}) at fold {k}, epoch {epoch}, "
                            f"step {step}; lower finetune.encoder_lr / head_lr or check the data"
                        )
                    acc.backward(loss)
                    optimizer.step()
                    if acc.sync_gradients:
                        scheduler.step()
                    optimizer.zero_grad()
                step += 1
                window.append(batch_logs)
                if step % CURVE_EVERY == 0 or step == total_steps:
                    history.append(_curve_point(step, window))
                    window = []
                    if log_step is not None:
                        log_step(k, history[-1])
                if bar is not None:
                    bar.update(1)
                if step % PROGRESS_EVERY == 0 or step == total_steps:
                    if bar is not None:  # stage-wide counts and ETA
                        eta = bar.format_dict.get("elapsed", 0) / max(bar.n, 1) * (bar.total - bar.n)
                        update_progress(stage=self.stage, fold=int(k), epoch=epoch, step=bar.n, total_steps=bar.total, eta_s=round(eta, 1))
                    else:
                        update_progress(stage=self.stage, fold=int(k), epoch=epoch, step=step, total_steps=total_steps)
            logs = {"epoch": epoch, "step": step, **objective.epoch_logs()}
            if len(inner_rows):
                inner_z, _ = self.predict(model, data, inner_rows)
                logs["inner_qwk"] = float(qwk(y[inner_rows], inner_z * std + mean))
                if logs["inner_qwk"] > best["qwk"]:
                    best = {"qwk": logs["inner_qwk"], "epoch": epoch, "state": trainable_state(acc.unwrap_model(model))}
            epochs.append(logs)
            if log_epoch is not None:
                log_epoch(k, logs)

        model = acc.unwrap_model(model)
        if best["state"] is not None:
            model.load_state_dict(best["state"], strict=False)
        best_epoch = best["epoch"] if best["epoch"] is not None else ft["epochs"] - 1
        val_z, val_pooled = self.predict(model, data, val_rows)
        result = {
            "pred_raw": (val_z.astype(np.float64) * std + mean),
            "pooled": val_pooled,
            "state": trainable_state(model),
            "target_mean": mean,
            "target_std": std,
            "epochs": epochs,
            "best_epoch": best_epoch,
            "prompts": prompts,
            "history": history,
        }
        acc.free_memory()
        return result


def trainable_state(model) -> dict:
    """The trained tensors only (top layers / adapters + head), detached copies on the CPU."""
    return {name: p.detach().cpu().clone().contiguous() for name, p in model.named_parameters() if p.requires_grad}


# --------------------------------------------------------------------------- checkpoints


def config_hash(params: dict, objective: str, splits_bytes: bytes, essays_bytes: bytes) -> str:
    """sha256 over the finetune + objective params, splits.json bytes and essays.csv bytes."""
    digest = hashlib.sha256()
    cfg = {"objective": objective, "finetune": params["finetune"], objective: params.get(objective, {})}
    digest.update(json.dumps(cfg, sort_keys=True).encode())
    digest.update(hashlib.sha256(splits_bytes).digest())
    digest.update(hashlib.sha256(essays_bytes).digest())
    return digest.hexdigest()[:16]


def _fold_info(result: dict, with_timing: bool = True) -> dict:
    keys = ("target_mean", "target_std", "epochs", "best_epoch", "prompts", "history") + (("fold_s",) if with_timing else ())
    return {k: result.get(k) for k in keys}


def _curve_point(step: int, window: list[dict]) -> dict:
    """One step-level curve point: window means of the batch logs (the last DRO weight)."""
    point = {"step": step, "train_loss": float(np.mean([b["mse"] for b in window]))}
    if "adversary_acc" in window[-1]:
        point["adversary_acc"] = float(np.mean([b["adversary_acc"] for b in window]))
        point["grl_weight"] = window[-1]["grl_weight"]
    if "dro_max_weight" in window[-1]:
        point["dro_max_weight"] = window[-1]["dro_max_weight"]
    return point


def save_fold(folder: Path, result: dict, with_timing: bool = True) -> None:
    """Write one fold's weights (safetensors) + fold.json (target scaling, epochs, prompts, curves).

    with_timing=False leaves the wall-clock time out, so the DVC out is byte-identical across re-runs.
    """
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(result["state"], str(folder / "weights.safetensors"))
    (folder / "fold.json").write_text(json.dumps(_fold_info(result, with_timing), indent=2) + "\n")


def write_checkpoint(root: Path, k: int, result: dict) -> None:
    """Atomically write fold ``k`` under ``root``: temp folder, rename, then the DONE marker."""
    final = root / f"fold_{k}"
    tmp = root / f".fold_{k}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_fold(tmp, result)
    np.save(tmp / "pred_raw.npy", np.asarray(result["pred_raw"], dtype=np.float64))
    np.save(tmp / "pooled.npy", np.asarray(result["pooled"], dtype=np.float32))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    (final / "DONE").write_text("ok\n")


def read_checkpoint(root: Path, k: int) -> dict | None:
    """Fold ``k``'s result if its DONE marker exists, else None."""
    from safetensors.torch import load_file

    folder = root / f"fold_{k}"
    if not (folder / "DONE").exists():
        return None
    info = json.loads((folder / "fold.json").read_text())
    return {
        **info,
        "pred_raw": np.load(folder / "pred_raw.npy"),
        "pooled": np.load(folder / "pooled.npy"),
        "state": load_file(str(folder / "weights.safetensors")),
    }


# --------------------------------------------------------------------------- the stage


class _Curves:
    """DVCLive curves at dvclive/<stage>, x = optimizer step within the fold, one folder per fold.

    Step-level: ``train_loss`` (mean MSE on the standardised target over the last CURVE_EVERY
    steps), ``adversary_acc`` and ``grl_weight`` (grl), ``dro_max_weight`` (dro). Epoch-level,
    at the epoch's last step: ``epoch_train_loss``, ``epoch_adversary_acc``, ``dro_worst_group_loss``,
    ``inner_qwk``. Skipped with a warning if dvclive is not installed.
    """

    def __init__(self, stage: str, root: Path):
        try:
            from dvclive import Live
        except ImportError:
            warnings.warn("dvclive is not installed: training curves are not written", stacklevel=2)
            self.live = None
            return
        self.live = Live(str(root / "dvclive" / stage), dvcyaml=False, save_dvc_exp=False, report=None)

    def _log(self, k: int, step: int, values: dict) -> None:
        self.live.step = int(step)
        for name, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.live.log_metric(f"fold{k}/{name}", float(value), plot=True)

    def log_step(self, k: int, point: dict) -> None:
        if self.live is not None:
            self._log(k, point["step"], {n: v for n, v in point.items() if n != "step"})

    def log_epoch(self, k: int, logs: dict) -> None:
        if self.live is None:
            return
        renamed = {"train_mse": "epoch_train_loss", "adversary_acc": "epoch_adversary_acc", "adversary_ce": "epoch_adversary_ce"}
        skip = ("epoch", "step", "dro_worst_group", "dro_max_weight")
        self._log(k, logs["step"], {renamed.get(n, n): v for n, v in logs.items() if n not in skip})

    def replay(self, k: int, result: dict) -> None:
        """Log a resumed fold's stored curves, so a resumed stage writes the same curves."""
        for point in result.get("history") or []:
            self.log_step(k, point)
        for logs in result["epochs"]:
            self.log_epoch(k, logs)

    def end(self) -> None:
        if self.live is not None:
            self.live.end()


def _train_summary(objective: str, results: list[dict]) -> dict:
    """Per-fold last-epoch training diagnostics for metrics/<stage>.json."""
    keys = {"erm": [], "grl": ["adversary_acc"], "dro": ["dro_max_weight", "dro_worst_group_loss"]}[objective]
    summary = {"train_loss": {str(k): r["epochs"][-1]["train_mse"] for k, r in enumerate(results)}}
    for key in keys:
        summary[key] = {str(k): r["epochs"][-1].get(key) for k, r in enumerate(results)}
    summary["best_epoch"] = {str(k): r["best_epoch"] for k, r in enumerate(results)}
    if any("inner_qwk" in e for r in results for e in r["epochs"]):
        summary["inner_qwk"] = {
            str(k): float(np.nanmax([e.get("inner_qwk", np.nan) for e in r["epochs"]] + [-np.inf])) for k, r in enumerate(results)
        }
    summary["fold_s"] = {str(k): r.get("fold_s") for k, r in enumerate(results)}
    return summary


def run_cv(params: dict, objective: str, root: Path = Path(".")) -> dict:
    """Run the whole stage for ``objective`` in the repository ``root``; return its metrics."""
    from tqdm.auto import tqdm

    from aes.data import load_essays
    from aes.splits import cv_essays, load_splits

    stage = stage_for_objective(objective)
    ft = params["finetune"]
    started = time.perf_counter()
    essays_path, splits_path = root / ESSAYS, root / SPLITS
    cv = cv_essays(load_essays(essays_path), load_splits(splits_path))
    folds = sorted(int(f) for f in cv["fold"].unique())
    if len(folds) < 2:
        raise AESError(f"{stage} needs at least 2 CV folds; got {len(folds)}")
    accelerator = make_accelerator(ft)
    chash = config_hash(params, objective, splits_path.read_bytes(), essays_path.read_bytes())
    ckpt_root = root / ".checkpoints" / stage / chash
    ckpt_root.mkdir(parents=True, exist_ok=True)
    results: dict[int, dict] = {}
    for k in folds:
        done = read_checkpoint(ckpt_root, k)
        if done is not None:
            print(f"{stage}: resuming fold {k} from {ckpt_root / f'fold_{k}'}", flush=True)
            results[k] = done
    curves = _Curves(stage, root)
    for k in sorted(results):
        curves.replay(k, results[k])

    todo = [k for k in folds if k not in results]
    if todo:
        trainer = Trainer(params, objective, accelerator)
        data = trainer.prepare(cv["text"].tolist())
        n_train = {k: int((cv["fold"] != k).sum()) for k in todo}
        if ft["inner_val_fraction"] > 0:  # the inner split removes about this share of training essays
            n_train = {k: math.ceil(n * (1 - ft["inner_val_fraction"])) for k, n in n_train.items()}
        total = sum(trainer.steps_per_epoch(n) * ft["epochs"] for n in n_train.values())
        with tqdm(total=total, desc=f"{stage} train", unit="step") as bar:
            for k in todo:
                bar.set_postfix(fold=k)
                fold_started = time.perf_counter()
                results[k] = trainer.train_fold(cv, data, k, bar=bar, log_epoch=curves.log_epoch, log_step=curves.log_step)
                results[k]["fold_s"] = round(time.perf_counter() - fold_started, 1)
                write_checkpoint(ckpt_root, k, results[k])
    curves.end()

    # Assemble the out-of-fold outputs: every CV essay once, predicted by its own fold's model.
    fold_of = cv["fold"].to_numpy()
    pred = np.full(len(cv), np.nan)
    reps = None
    for k in folds:
        rows = np.flatnonzero(fold_of == k)
        pred[rows] = results[k]["pred_raw"]
        if reps is None:
            reps = np.zeros((len(cv), results[k]["pooled"].shape[1]), dtype=np.float32)
        reps[rows] = results[k]["pooled"]
    models_dir = root / "models" / stage
    shutil.rmtree(models_dir, ignore_errors=True)
    for k in folds:
        save_fold(models_dir / f"fold_{k}", results[k], with_timing=False)  # times are in metrics/<stage>.json
        write_json(models_dir / f"fold_{k}" / "config.json", {
            "stage": stage, "objective": objective, "model": ft["model"], "trainable_layers": ft["trainable_layers"],
            "lora": ft["lora"], "max_length": ft["max_length"], "target_mean": results[k]["target_mean"],
            "target_std": results[k]["target_std"], "config_hash": chash,
            "weights": "weights.safetensors: trained top layers / LoRA adapters (names as in the training module) + head",
        })
    rep_dir = root / "data" / "representations"
    rep_dir.mkdir(parents=True, exist_ok=True)
    tmp = rep_dir / f"{stage}.tmp.npy"
    np.save(tmp, reps)
    tmp.replace(rep_dir / f"{stage}.npy")
    pd.DataFrame({"record_id": cv["record_id"].astype(str), "fold": fold_of}).to_csv(rep_dir / f"{stage}_ids.csv", index=False)
    oof = make_oof_frame(cv, fold_of, pred)
    extra = {"train": _train_summary(objective, [results[k] for k in folds]), "resumed_folds": [k for k in folds if k not in todo]}
    metrics = write_model_outputs(stage, oof, time.perf_counter() - started, params["report"]["min_prompt_n"], extra=extra, root=root)
    # The outputs are written: the stage's checkpoints (this config and any stale ones) are done with.
    shutil.rmtree(root / ".checkpoints" / stage, ignore_errors=True)
    try:
        (root / ".checkpoints").rmdir()  # only when no other stage has checkpoints there
    except OSError:
        pass
    return metrics
