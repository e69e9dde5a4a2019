"""The one fold loop of the three fine-tuning stages (objective erm | grl | dro).

Model: a backbone (:mod:`aes.finetune.backbones`), masked mean pooling and a linear head with one
output per target (the prepared essays' ``prepare.targets``, primary first) that predicts each
standardised score ``z = (y - mean) / std``, y on the unit range of each essay's own scale (mean
and std of that target over the fold's training essays); predictions are mapped back to that unit
range (``pred_unit``). The loss weights of the targets are ``finetune.target_weights``. The
objective (:mod:`aes.finetune.objectives`, a plug-in) turns predictions into a loss; callbacks
(:mod:`aes.finetune.callbacks`) hear about steps, curve points and epochs.

A fold runs in steps (:meth:`Trainer.train_fold`): :meth:`Trainer.plan_fold` fixes its essays,
target scaling and prompt groups; :meth:`Trainer.start_run` seeds the fold, builds the model
(from the fold's linear probe with LP-FT, :mod:`aes.finetune.lpft`), the objective, the optimizer,
the schedule and the data order; :meth:`Trainer.train_epoch` runs the optimizer steps of one
epoch and :meth:`Trainer.end_epoch` scores the inner validation essays (if any) to keep the best
epoch; :meth:`Trainer.finish` predicts the validation essays. Which essays train and the seeds:
:mod:`aes.finetune.folds`. By default every fold trains a fixed number of epochs; with
``finetune.inner_val_fraction > 0`` the epoch with the best inner QWK is kept.

Writing features (``finetune.features``): the head reads [pooled, standardised writing features];
the standardisation (:class:`aes.features.FeatureScaling`) is fitted on the essays the fold trains
on, never its validation essays, and returned with the fold's result. Under a per-prompt
``normalise.features`` the features are first scaled within each prompt (:mod:`aes.features.normalise`);
under ``normalise.embeddings: prompt_mean`` the head reads each prompt's centred pooled text
(:mod:`aes.finetune.centring`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from aes.core.errors import AESError
from aes.core.metrics import headline_qwk, scored_rows
from aes.core.registry import stage_for_objective
from aes.data.registry import dataset_of
from aes.features import FeatureScaling, writing_features
from aes.finetune.backbones import Backbone, Prepared, make_backbone
from aes.finetune.callbacks import CURVE_EVERY, Callback, curve_point
from aes.finetune.centring import PromptCentring, centre_predictions
from aes.finetune.folds import fold_rows, run_seed, seed_everything
from aes.finetune.frozen_pass import check_feature_groups
from aes.finetune.lpft import head_from_probe
from aes.finetune.modules import trainable_state
from aes.finetune.objectives import make_objective
from aes.finetune.runtime import predict_batches


@dataclass
class FoldPlan:
    """What fold ``k`` trains on with ``seed``, fixed before its first random draw.

    targets: the T target names; train_rows, inner_rows, val_rows: row positions of ``cv``;
    y: (n, T) targets on the unit range; mean, std: (T,) over the training rows (std 1.0 for a
    constant target); scaling: the head's FeatureScaling, or None without writing features;
    prompts: the training prompts, sorted; group: (n,) int64 index of each essay's prompt among
    them (-1 for the other prompts); sizes: training essays per group.
    """

    k: int
    seed: int
    targets: list[str]
    train_rows: np.ndarray
    inner_rows: np.ndarray
    val_rows: np.ndarray
    y: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    scaling: FeatureScaling | None
    prompts: list
    group: np.ndarray
    sizes: list[int]


@dataclass
class FoldRun:
    """One fold's training in progress: the accelerator-prepared model, optimizer and loader, the
    schedule and objective, the optimizer steps taken (of ``total_steps``), and what it has logged:
    per-epoch logs, step-level curve points, batch logs since the last point and the best inner epoch."""

    model: object
    optimizer: object
    scheduler: object
    loader: object
    objective: object
    total_steps: int
    centring: PromptCentring | None = None
    step: int = 0
    epochs: list = field(default_factory=list)
    history: list = field(default_factory=list)
    window: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"qwk": -math.inf, "epoch": None, "state": None})


class Trainer:
    """Holds the pretrained weights once per stage and trains one fold at a time from them."""

    def __init__(self, params: dict, objective: str, accelerator, backbone: Backbone | None = None):
        self.params, self.ft, self.objective_name = params, params["finetune"], objective
        self.stage = stage_for_objective(objective)
        self.accelerator = accelerator
        self.backbone = backbone if backbone is not None else make_backbone(self.ft, self.stage)
        self.hidden_size = self.backbone.hidden_size

    def prepare(self, texts: list[str], frozen=None, features: np.ndarray | None = None, prompts=None,
                pooled: np.ndarray | None = None) -> Prepared:
        """Tokenise the essays or, for cached training, take the stored frozen pass (or compute it).

        With ``finetune.features``: the essays' raw writing features (n, d), taken from ``features``,
        else from the frozen pass, else computed here (:func:`aes.features.writing_features`), then
        normalised within each prompt of ``prompts`` (n,) under a per-prompt ``normalise.features``.
        With ``normalise.embeddings: prompt_mean`` the pristine pooled output (``pooled``, else the
        frozen pass's, else one pass of the pristine model) starts the prompt centring.
        """
        from aes.features.normalise import normalise_features

        normalise = self.params["normalise"]
        data = self.backbone.prepare(texts, self.accelerator.device, frozen)
        data.prompts = None if prompts is None else np.asarray(prompts).astype(str)
        if self.ft["features"]:
            if features is None and frozen is not None and frozen.features is not None:
                check_feature_groups(frozen.feature_groups, self.ft["features"], f"{self.stage}: the frozen pass")
                features = frozen.features
            if features is None:
                features, _ = writing_features(list(texts), self.ft["features"], dataset_of(self.params).text_repair)
            if len(features) != len(data.lengths):
                raise AESError(f"{self.stage}: {len(features)} writing-feature rows for {len(data.lengths)} essays")
            data.features = normalise_features(features, data.prompts, normalise["features"])
        if self.centres_pooled:
            if data.prompts is None:
                raise AESError(f"{self.stage}: normalise.embeddings: prompt_mean centres each prompt's pooled text, but the essays "
                               "carry no prompt; use normalise.embeddings: as_is")
            if pooled is None and frozen is not None:
                pooled = frozen.pooled
            if pooled is None:  # no frozen pass to take it from: one pass of the pristine model
                _, pooled = predict_batches(self.backbone.pristine_model(), self.backbone, data, np.arange(len(data.lengths)),
                                            self.ft["eval_batch_size"], self.accelerator)
            data.pooled = np.asarray(pooled, dtype=np.float32)
        return data

    @property
    def centres_pooled(self) -> bool:
        """True under ``normalise.embeddings: prompt_mean``: the head reads each prompt's centred pooled text."""
        return self.params["normalise"]["embeddings"] == "prompt_mean"

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
        """(pred_z (m, T), pooled (m, H)) float32 numpy for essay rows (m,), in that order.

        With prompt centring the head's predictions are centred on each prompt's mean pooled vector
        over these rows (a held-out prompt's own essays; :func:`aes.finetune.centring.centre_predictions`).
        """
        pred_z, pooled = predict_batches(model, self.backbone, data, rows, self.ft["eval_batch_size"], self.accelerator)
        if self.centres_pooled:
            head = self.accelerator.unwrap_model(model).head
            pred_z = centre_predictions(head.weight.detach().float().cpu().numpy(), pred_z, pooled, data.prompts[rows])
        return pred_z, pooled

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
        if not self.ft["features"]:
            return None
        if data.features is None:
            raise AESError(f"{self.stage}: finetune.features is {self.ft['features']} but the prepared essays carry no writing features "
                           "(prepare them with Trainer.prepare)")
        return FeatureScaling.fit(data.features[train_rows], self.ft["features"])

    def fold_rows(self, cv: pd.DataFrame, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(train, inner validation, validation) row positions of fold ``k`` (see :func:`aes.finetune.folds.fold_rows`)."""
        return fold_rows(self.ft, cv, k, seed)

    def train_fold(self, cv: pd.DataFrame, data: Prepared, k: int, seed: int, init_head=None, callbacks: list[Callback] = ()) -> dict:
        """Train on the essays with ``fold != k`` with ``seed``; predict the essays with ``fold == k``.

        cv: the essays with prompt, fold and the target columns (:func:`aes.data.corpus.declared_targets`,
        T of them, as many as ``finetune.target_weights``). init_head: the fold's linear probe
        (:class:`aes.baseline.linear.RidgeFit`, one output per target) to start from, or None.
        Returns dict with pred_unit (n_val, T) float64 on the unit range of each essay's scale, inner_rows
        (m,) the inner slice's row positions in ``cv`` and inner_unit (m, T) the kept epoch's predictions
        of them (m = 0 without an inner slice), pooled (n_val, H) float32, state
        (trainable tensors), target_mean/std (T lists), feature_scaling (the head's writing-feature
        standardisation as JSON, fitted on the training rows; None without features), targets,
        epochs (list of per-epoch log dicts), best_epoch, prompts, history.
        """
        plan = self.plan_fold(cv, data, k, seed)
        run = self.start_run(data, plan, init_head)
        for epoch in range(self.ft["epochs"]):
            self.train_epoch(run, k, epoch, callbacks)
            self.end_epoch(run, plan, cv, data, epoch, callbacks)
        return self.finish(run, plan, data)

    def plan_fold(self, cv: pd.DataFrame, data: Prepared, k: int, seed: int) -> FoldPlan:
        """Fold ``k``'s rows, target scaling, writing-feature scaling and prompt groups (no random draw
        but the seeded sampling of :func:`aes.finetune.folds.fold_rows`)."""
        from aes.data.corpus import declared_targets, target_matrix

        targets = declared_targets(cv)
        if len(self.ft["target_weights"]) != len(targets):
            raise AESError(f"{self.stage}: finetune.target_weights has {len(self.ft['target_weights'])} weight(s) but the prepared essays "
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
        return FoldPlan(k, seed, targets, train_rows, inner_rows, val_rows, y, mean, std, scaling, prompts, group, sizes)

    def start_run(self, data: Prepared, plan: FoldPlan, init_head) -> FoldRun:
        """Seed the fold, then build (in this order, which fixes the random draws) the model, the
        objective, the optimizer, the warm-up schedule and the seeded data order; all prepared by the accelerator."""
        from transformers import get_linear_schedule_with_warmup

        ft, acc = self.ft, self.accelerator
        seed_everything(run_seed(plan.seed, plan.k))
        model = self.start_model(init_head, plan.mean, plan.std, plan.scaling)
        objective = make_objective(self.objective_name, self.params, plan.sizes, self.hidden_size, plan.k, ft["target_weights"])
        optimizer = self.optimizer(model, objective)
        per_epoch = math.ceil(self.steps_per_epoch(len(plan.train_rows)) / ft["grad_accum_steps"])
        total_updates = per_epoch * ft["epochs"]
        scheduler = get_linear_schedule_with_warmup(optimizer, round(ft["warmup_ratio"] * total_updates), total_updates)
        loader = self.train_loader(data, plan)
        model, optimizer, loader = acc.prepare(model, optimizer, loader)
        objective.to(acc.device)
        centring = PromptCentring.from_pooled(data.pooled, plan.group, len(plan.prompts), plan.train_rows) if self.centres_pooled else None
        return FoldRun(model, optimizer, scheduler, loader, objective, total_steps=len(loader) * ft["epochs"], centring=centring)

    def train_loader(self, data: Prepared, plan: FoldPlan):
        """The training essays' batches (model inputs + ``target_z`` (B, T) + ``group`` (B,)) in an order
        drawn from the fold's own generator; similar lengths batched together with ``finetune.group_by_length``."""
        import torch

        ft = self.ft
        target_z = torch.as_tensor((plan.y - plan.mean) / plan.std, dtype=torch.float32)
        group_t = torch.as_tensor(plan.group)

        def collate(rows):
            rows = np.asarray(rows)
            batch = self.backbone.batch_inputs(data, rows)
            batch["target_z"] = target_z[rows]
            batch["group"] = group_t[rows]
            return batch

        generator = torch.Generator().manual_seed(run_seed(plan.seed, plan.k))
        if ft["group_by_length"]:
            # Batches of similar-length essays (transformers' LengthGroupedSampler: shuffled
            # megabatches of 50 batches, sorted by length): padding drops from ~18 % of the tokens
            # to ~1 % at 512 tokens on ELLIPSE.
            from transformers.trainer_pt_utils import LengthGroupedSampler

            order = {"sampler": LengthGroupedSampler(ft["batch_size"], lengths=data.lengths[plan.train_rows].tolist(), generator=generator)}
        else:
            order = {"shuffle": True, "generator": generator}
        return torch.utils.data.DataLoader(plan.train_rows.tolist(), batch_size=ft["batch_size"], collate_fn=collate, **order)

    def train_epoch(self, run: FoldRun, k: int, epoch: int, callbacks: list[Callback] = ()) -> None:
        """One pass over the training batches: a step each, a curve point every ``CURVE_EVERY`` steps and at the end."""
        run.model.train()
        for batch in run.loader:
            batch_logs = self.train_step(run, batch, k, epoch)
            run.step += 1
            run.window.append(batch_logs)
            if run.step % CURVE_EVERY == 0 or run.step == run.total_steps:
                run.history.append(curve_point(run.step, run.window))
                run.window = []
                for cb in callbacks:
                    cb.on_curve_point(k, run.history[-1])
            for cb in callbacks:
                cb.on_step(k, epoch, run.step, run.total_steps)

    def train_step(self, run: FoldRun, batch: dict, k: int, epoch: int) -> dict:
        """The objective's loss on one batch, backward, and (every ``finetune.grad_accum_steps`` batches) an
        optimizer and schedule step; returns the objective's batch logs. AESError on a non-finite loss."""
        import torch

        acc, model = self.accelerator, run.model
        with acc.accumulate(model):
            target, grp = batch.pop("target_z"), batch.pop("group")
            if run.centring is not None:
                batch["offset"] = run.centring.offsets(grp).to(acc.device)
            with acc.autocast():
                pooled, pred = model(**batch)
                loss, batch_logs = run.objective.loss(pred, target, pooled, grp, run.step / run.total_steps)
            if not torch.isfinite(loss.detach()):
                raise AESError(
                    f"{self.stage}: non-finite training loss ({float(loss.detach())}) at fold {k}, epoch {epoch}, "
                    f"step {run.step}; lower finetune.encoder_lr / head_lr or check the data"
                )
            acc.backward(loss)
            if run.centring is not None:
                run.centring.update(pooled, grp)
            run.optimizer.step()
            if acc.sync_gradients:
                run.scheduler.step()
            run.optimizer.zero_grad()
        return batch_logs

    def end_epoch(self, run: FoldRun, plan: FoldPlan, cv: pd.DataFrame, data: Prepared, epoch: int,
                  callbacks: list[Callback] = ()) -> None:
        """Log the epoch (the objective's epoch logs) and, with inner validation essays, score them and keep the best epoch's weights."""
        logs = {"epoch": epoch, "step": run.step, **run.objective.epoch_logs()}
        if len(plan.inner_rows):
            inner_z, _ = self.predict(run.model, data, plan.inner_rows)
            # the primary target chooses the epoch, scored on each inner essay's own scale
            logs["inner_qwk"] = headline_qwk(scored_rows(cv.iloc[plan.inner_rows], inner_z[:, 0] * plan.std[0] + plan.mean[0]))
            if logs["inner_qwk"] > run.best["qwk"]:
                # the kept epoch's inner predictions are the fold's own held-out predictions (the inner calibration's input)
                run.best = {"qwk": logs["inner_qwk"], "epoch": epoch, "state": trainable_state(self.accelerator.unwrap_model(run.model)),
                            "inner_unit": inner_z.astype(np.float64) * plan.std + plan.mean}
        run.epochs.append(logs)
        for cb in callbacks:
            cb.on_epoch_end(plan.k, logs)

    def finish(self, run: FoldRun, plan: FoldPlan, data: Prepared) -> dict:
        """The fold's result (see :meth:`train_fold`): the best inner epoch's weights (else the last
        epoch's) predict the validation essays, z mapped back to the unit range."""
        model = self.accelerator.unwrap_model(run.model)
        if run.best["state"] is not None:
            model.load_state_dict(run.best["state"], strict=False)
        val_z, val_pooled = self.predict(model, data, plan.val_rows)
        inner_unit = run.best.get("inner_unit")
        if len(plan.inner_rows) and inner_unit is None:  # no epoch had a finite inner QWK: the last epoch's model scores them
            inner_unit = self.predict(model, data, plan.inner_rows)[0].astype(np.float64) * plan.std + plan.mean
        result = {
            "pred_unit": (val_z.astype(np.float64) * plan.std + plan.mean),
            "inner_rows": np.asarray(plan.inner_rows, dtype=np.int64),
            "inner_unit": np.zeros((0, len(plan.mean))) if inner_unit is None else inner_unit,
            "pooled": val_pooled,
            "state": trainable_state(model),
            "targets": plan.targets,
            "target_mean": [float(m) for m in plan.mean],
            "target_std": [float(s) for s in plan.std],
            "feature_scaling": plan.scaling.to_json() if plan.scaling is not None else None,
            "epochs": run.epochs,
            "best_epoch": run.best["epoch"] if run.best["epoch"] is not None else self.ft["epochs"] - 1,
            "prompts": plan.prompts,
            "history": run.history,
        }
        self.accelerator.free_memory()
        return result
