"""One fold loop for the three fine-tuning stages (objective erm | grl | dro).

Model: a backbone (:mod:`aes.finetune.backbones`), masked mean pooling and a linear head with one
output per target (the prepared essays' ``prepare.targets``, primary first) that predicts each
standardised score ``z = (y - mean) / std`` (mean and std of that target over the fold's
training essays); predictions are mapped back to the raw 1-5 scale. The loss weights of the
targets are ``finetune.target_weights``. The objective
(:mod:`aes.finetune.objectives`) turns predictions into a loss; callbacks
(:mod:`aes.finetune.callbacks`) hear about steps, curve points and epochs.

Discipline: a fold never looks at its validation essays while training. By default every fold
trains a fixed number of epochs; with ``finetune.inner_val_fraction > 0`` the fold's training
essays are split by prompt (:func:`aes.data.splits.inner_split`) and the epoch with the best inner
QWK is kept. Seeds: every fold trains once per seed in ``finetune.seeds``; python, numpy, torch
and the data order are seeded with :func:`run_seed` (seed, fold), so a (seed, fold) run gives the same numbers
whether or not other runs came before it in the same process.

LP-FT (Kumar et al. 2022): with an ``init_head`` (the fold's linear probe from stage ``lp_cv``) the
head starts at the probe's weights, so step 0 predicts what the probe predicts and fine-tuning
begins from a good head instead of a random one.

Writing features (``finetune.features``): the head reads [pooled, standardised writing features];
the standardisation (:class:`aes.features.FeatureScaling`) is fitted on the essays the
fold trains on, never its validation essays, and returned with the fold's result. The probe
carries its own scaling (fitted on the same training fold); :func:`head_from_probe` maps it onto
the head's exactly, so LP-FT starts at the probe's predictions, features part included.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd

from aes.core.errors import AESError
from aes.core.metrics import headline_qwk, scored_rows
from aes.core.registry import stage_for_objective
from aes.encoders.embedding import check_bf16
from aes.finetune.backbones import Backbone, Prepared, make_backbone
from aes.finetune.callbacks import CURVE_EVERY, Callback, curve_point
from aes.finetune.modules import trainable_state
from aes.finetune.objectives import make_objective


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_seed(seed: int, k: int) -> int:
    """The RNG seed of training fold ``k`` with ``seed``: distinct for every (seed, fold) pair of a run."""
    return seed * 1000 + k


def cap_training_rows(train_rows: np.ndarray, cap: int, seed: int, k: int) -> np.ndarray:
    """At most ``cap`` of a fold's training row positions (``finetune.max_train_essays``; 0 = all).

    train_rows: (n,) positions of fold ``k``'s training essays (never its validation essays, so
    the cap cannot touch them). Returns (min(cap, n),) positions in their original order: a
    uniform sample drawn with ``seed`` (the run's :func:`run_seed`), so the same seed and fold
    always train on the same essays. A cap larger than the fold is a mistake (a smoke run that
    silently trains on everything), so it fails naming the key and the fold's size.
    """
    if cap == 0:
        return train_rows
    if cap > len(train_rows):
        raise AESError(
            f"finetune.max_train_essays={cap} but fold {k} has only {len(train_rows)} training essays; "
            f"use at most {len(train_rows)}, or 0 to train on all of them"
        )
    picked = np.random.default_rng(seed).choice(len(train_rows), size=cap, replace=False)
    return train_rows[np.sort(picked)]


def fold_rows(ft: dict, cv: pd.DataFrame, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, inner validation, validation) row positions of fold ``k`` of ``cv`` with ``seed``.

    Inner is empty unless ``finetune.inner_val_fraction`` > 0; with ``finetune.max_train_essays``
    > 0, train + inner hold that many of the fold's training essays. Validation is every essay of fold ``k``.
    """
    from aes.data.splits import inner_split

    fold_of = cv["fold"].to_numpy()
    train_rows, val_rows = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
    if len(train_rows) == 0:
        raise AESError(f"fold {k}: the training part has no essays (every CV essay is in fold {k})")
    # The cap comes first, so the inner split (if any) divides the capped essays.
    train_rows = cap_training_rows(train_rows, ft["max_train_essays"], run_seed(seed, k), k)
    inner_rows = np.array([], dtype=int)
    if ft["inner_val_fraction"] > 0:
        fit_pos, inner_pos = inner_split(cv.iloc[train_rows].reset_index(drop=True), ft["inner_val_fraction"], run_seed(seed, k))
        train_rows, inner_rows = train_rows[fit_pos], train_rows[inner_pos]
    return train_rows, inner_rows, val_rows


def make_accelerator(ft: dict):
    """An ``accelerate.Accelerator`` for ``finetune.device`` / ``mixed_precision`` / ``grad_accum_steps``."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    has_gpu = torch.cuda.is_available()
    if ft["device"] == "cuda" and not has_gpu:
        raise AESError("finetune.device is 'cuda' but no CUDA GPU is visible (use 'auto' or 'cpu')")
    use_gpu = has_gpu and ft["device"] != "cpu"
    if ft["mixed_precision"] == "fp16" and not use_gpu:
        raise AESError(
            "finetune.mixed_precision is 'fp16' but training runs on the CPU (no GPU visible or finetune.device: cpu); "
            "use \"bf16\" (CPU autocast, fast on CPUs with AVX512-BF16 or AMX) or \"no\""
        )
    if ft["mixed_precision"] == "bf16":
        check_bf16("finetune.mixed_precision", "cuda" if use_gpu else "cpu")
    # One process may run several stages (tests): accelerate keeps singletons, start them afresh.
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    return Accelerator(cpu=not use_gpu, mixed_precision=ft["mixed_precision"], gradient_accumulation_steps=ft["grad_accum_steps"])


def predict_batches(model, backbone: Backbone, data: Prepared, rows: np.ndarray, batch_size: int, accelerator):
    """(pred_z (m, T), pooled (m, H)) float32 numpy for essay rows (m,), in that order; longest essays first.

    T: the model's outputs (one per target).
    """
    import torch

    model.eval()
    pred = np.zeros((len(rows), model.head.out_features), dtype=np.float32)
    pooled = np.zeros((len(rows), backbone.hidden_size), dtype=np.float32)
    order = np.argsort(-data.lengths[rows], kind="stable")
    # A text-only model (the pristine one that gives a probe its pooled inputs) ignores the essays' writing features.
    reads_features = getattr(accelerator.unwrap_model(model), "n_features", 0) > 0
    with torch.inference_mode(), accelerator.autocast():
        for start in range(0, len(rows), batch_size):
            pos = order[start : start + batch_size]
            batch = backbone.batch_inputs(data, rows[pos])
            if not reads_features:
                batch.pop("features", None)
            inputs = {k: v.to(accelerator.device) for k, v in batch.items()}
            p, z = model(**inputs)
            pooled[pos] = p.float().cpu().numpy()
            pred[pos] = z.float().cpu().numpy().reshape(len(pos), -1)
    return pred, pooled


def head_from_probe(probe, hidden_size: int, mean: np.ndarray, std: np.ndarray, scaling=None) -> tuple[np.ndarray, np.ndarray]:
    """The head (weight (T, H + d), bias (T,)) that predicts z = (y - mean) / std with the probe's y, exactly.

    probe: a RidgeFit y ~= [pooled (H), probe.scaling.apply(x) (d)] @ weight + bias in score units
    (weight (H + d,) or (H + d, T)); mean, std: (T,) the fold's target scaling; scaling: the head's
    own FeatureScaling (or None without features). The probe's standardisation and the head's may
    differ (the head's is fitted on the essays the fold trains on, the probe's on the whole training
    fold): since z_probe = z_head * sd_h / sd_p + (mean_h - mean_p) / sd_p, the feature rows are
    rescaled and the shift goes into the bias, so both predict the same y for the same essay.
    Raises AESError naming ``finetune.features`` when the probe's features are not the head's.
    """
    from aes.finetune.frozen_pass import check_feature_groups

    check_feature_groups(probe.scaling.groups if probe.scaling is not None else (), scaling.groups if scaling is not None else (),
                         "the linear probe of stage lp_cv", rerun="lp_cv")
    weight = np.asarray(probe.weight, dtype=np.float64).reshape(len(probe.weight), -1)  # (H + d, T)
    bias = np.atleast_1d(np.asarray(probe.bias, dtype=np.float64)).copy()
    d = 0 if scaling is None else len(scaling.names)
    if weight.shape != (hidden_size + d, len(mean)):
        raise AESError(f"the linear probe maps {weight.shape[0]} features to {weight.shape[1]} target(s) but the model reads "
                       f"{hidden_size} pooled + {d} writing-feature columns and has {len(mean)} target(s); re-run `dvc repro lp_cv`")
    if d:
        p = probe.scaling
        w_text, w_feat = weight[:hidden_size], weight[hidden_size:]
        bias = bias + ((scaling.mean - p.mean) / p.sd) @ w_feat
        weight = np.vstack([w_text, w_feat * (scaling.sd / p.sd)[:, None]])
    return (weight / std).T, (bias - mean) / std


class Trainer:
    """Holds the pretrained weights once per stage and trains one fold at a time from them."""

    def __init__(self, params: dict, objective: str, accelerator, backbone: Backbone | None = None):
        self.params, self.ft, self.objective_name = params, params["finetune"], objective
        self.stage = stage_for_objective(objective)
        self.accelerator = accelerator
        self.backbone = backbone if backbone is not None else make_backbone(self.ft, self.stage)
        self.hidden_size = self.backbone.hidden_size

    def prepare(self, texts: list[str], frozen=None, features: np.ndarray | None = None) -> Prepared:
        """Tokenise the essays or, for cached training, take the stored frozen pass (or compute it).

        With ``finetune.features``: the essays' raw writing features (n, d), taken from ``features``,
        else from the frozen pass, else computed here (:func:`aes.features.writing_features`).
        """
        data = self.backbone.prepare(texts, self.accelerator.device, frozen)
        if self.ft["features"]:
            if features is None and frozen is not None and frozen.features is not None:
                from aes.finetune.frozen_pass import check_feature_groups

                check_feature_groups(frozen.feature_groups, self.ft["features"], f"{self.stage}: the frozen pass")
                features = frozen.features
            if features is None:
                from aes.features import writing_features

                features, _ = writing_features(list(texts), self.ft["features"])
            if len(features) != len(data.lengths):
                raise AESError(f"{self.stage}: {len(features)} writing-feature rows for {len(data.lengths)} essays")
            data.features = np.asarray(features, dtype=np.float32)
        return data

    def steps_per_epoch(self, n_train: int) -> int:
        return math.ceil(n_train / self.ft["batch_size"])

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

    def predict(self, model, data: Prepared, rows: np.ndarray):
        """(pred_z (m, T), pooled (m, H)) float32 numpy for essay rows (m,), in that order."""
        return predict_batches(model, self.backbone, data, rows, self.ft["eval_batch_size"], self.accelerator)

    def start_model(self, init_head, mean: np.ndarray, std: np.ndarray, scaling=None):
        """A fresh model with one output per target (mean, std: (T,)), its head reading the writing
        features standardised by ``scaling`` (a FeatureScaling; None: text only). With ``init_head``
        (a probe, :func:`head_from_probe`) its head predicts the probe's z = (y - mean) / std of
        every target from the first step (LP-FT)."""
        import torch

        mean, std = np.atleast_1d(mean), np.atleast_1d(std)
        model = self.backbone.fresh_model(len(mean), scaling)
        if init_head is not None:
            try:
                weight, bias = head_from_probe(init_head, self.hidden_size, mean, std, scaling)
            except AESError as err:
                raise AESError(f"{self.stage}: {err}") from None
            with torch.no_grad():
                model.head.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
                model.head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        return model

    def feature_scaling(self, data: Prepared, train_rows: np.ndarray):
        """The head's writing-feature standardisation, fitted on ``train_rows`` only (the essays the fold
        trains on: never its validation or inner-validation essays); None with ``finetune.features: []``."""
        from aes.features import FeatureScaling

        if not self.ft["features"]:
            return None
        if data.features is None:
            raise AESError(f"{self.stage}: finetune.features is {self.ft['features']} but the prepared essays carry no writing features "
                           "(prepare them with Trainer.prepare)")
        return FeatureScaling.fit(data.features[train_rows], self.ft["features"])

    def fold_rows(self, cv: pd.DataFrame, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(train, inner validation, validation) row positions of fold ``k`` (see :func:`fold_rows`)."""
        return fold_rows(self.ft, cv, k, seed)

    def train_fold(self, cv: pd.DataFrame, data: Prepared, k: int, seed: int, init_head=None, callbacks: list[Callback] = ()) -> dict:
        """Train on the essays with ``fold != k`` with ``seed``; predict the essays with ``fold == k``.

        cv: the essays with prompt, fold and the target columns (:func:`aes.data.corpus.declared_targets`,
        T of them, as many as ``finetune.target_weights``). init_head: the fold's linear probe
        (:class:`aes.baseline.linear.RidgeFit`, one output per target) to start from, or None.
        Returns dict with pred_raw (n_val, T) on the unit range of each essay's scale, pooled (n_val, H) float32, state
        (trainable tensors), target_mean/std (T lists), feature_scaling (the head's writing-feature
        standardisation as JSON, fitted on the training rows; None without features), targets,
        epochs (list of per-epoch log dicts), best_epoch, prompts, history.
        """
        import torch
        from transformers import get_linear_schedule_with_warmup

        from aes.data.corpus import declared_targets, target_matrix

        ft, acc = self.ft, self.accelerator
        targets = declared_targets(cv)
        if len(ft["target_weights"]) != len(targets):
            raise AESError(f"{self.stage}: finetune.target_weights has {len(ft['target_weights'])} weight(s) but the prepared essays "
                           f"carry {len(targets)} target(s) {targets} (prepare.targets); give one weight per target")
        train_rows, inner_rows, val_rows = self.fold_rows(cv, k, seed)
        y = target_matrix(cv, targets)  # (n, T)
        mean, std = y[train_rows].mean(axis=0), y[train_rows].std(axis=0)
        std = np.where(std > 1e-8, std, 1.0)
        scaling = self.feature_scaling(data, train_rows)
        prompts = sorted(cv["prompt"].iloc[train_rows].unique())
        group_of = {p: g for g, p in enumerate(prompts)}
        group = cv["prompt"].map(group_of).fillna(-1).to_numpy(dtype=np.int64)
        sizes = [int((group[train_rows] == g).sum()) for g in range(len(prompts))]

        seed_everything(run_seed(seed, k))
        model = self.start_model(init_head, mean, std, scaling)
        objective = make_objective(self.objective_name, self.params, sizes, self.hidden_size, k, ft["target_weights"])
        optimizer = self.optimizer(model, objective)
        per_epoch = math.ceil(self.steps_per_epoch(len(train_rows)) / ft["grad_accum_steps"])
        total_updates = per_epoch * ft["epochs"]
        scheduler = get_linear_schedule_with_warmup(optimizer, round(ft["warmup_ratio"] * total_updates), total_updates)
        target_z = torch.as_tensor((y - mean) / std, dtype=torch.float32)
        group_t = torch.as_tensor(group)

        def collate(rows):
            rows = np.asarray(rows)
            batch = self.backbone.batch_inputs(data, rows)
            batch["target_z"] = target_z[rows]
            batch["group"] = group_t[rows]
            return batch

        generator = torch.Generator().manual_seed(run_seed(seed, k))
        if ft["group_by_length"]:
            # Batches of similar-length essays (transformers' LengthGroupedSampler: shuffled
            # megabatches of 50 batches, sorted by length): padding drops from ~18 % of the tokens
            # to ~1 % at 512 tokens on ELLIPSE.
            from transformers.trainer_pt_utils import LengthGroupedSampler

            order = {"sampler": LengthGroupedSampler(ft["batch_size"], lengths=data.lengths[train_rows].tolist(), generator=generator)}
        else:
            order = {"shuffle": True, "generator": generator}
        loader = torch.utils.data.DataLoader(train_rows.tolist(), batch_size=ft["batch_size"], collate_fn=collate, **order)
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
                    history.append(curve_point(step, window))
                    window = []
                    for cb in callbacks:
                        cb.on_curve_point(k, history[-1])
                for cb in callbacks:
                    cb.on_step(k, epoch, step, total_steps)
            logs = {"epoch": epoch, "step": step, **objective.epoch_logs()}
            if len(inner_rows):
                inner_z, _ = self.predict(model, data, inner_rows)
                # the primary target chooses the epoch, scored on each inner essay's own scale
                logs["inner_qwk"] = headline_qwk(scored_rows(cv.iloc[inner_rows], inner_z[:, 0] * std[0] + mean[0]))
                if logs["inner_qwk"] > best["qwk"]:
                    best = {"qwk": logs["inner_qwk"], "epoch": epoch, "state": trainable_state(acc.unwrap_model(model))}
            epochs.append(logs)
            for cb in callbacks:
                cb.on_epoch_end(k, logs)

        model = acc.unwrap_model(model)
        if best["state"] is not None:
            model.load_state_dict(best["state"], strict=False)
        val_z, val_pooled = self.predict(model, data, val_rows)
        result = {
            "pred_raw": (val_z.astype(np.float64) * std + mean),
            "pooled": val_pooled,
            "state": trainable_state(model),
            "targets": targets,
            "target_mean": [float(m) for m in mean],
            "target_std": [float(s) for s in std],
            "feature_scaling": scaling.to_json() if scaling is not None else None,
            "epochs": epochs,
            "best_epoch": best["epoch"] if best["epoch"] is not None else ft["epochs"] - 1,
            "prompts": prompts,
            "history": history,
        }
        acc.free_memory()
        return result
