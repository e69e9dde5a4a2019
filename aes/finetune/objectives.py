"""Training objectives for fine-tuning: plain MSE (ERM), gradient reversal (GRL), group DRO.

All objectives see the same inputs per batch (B essays):

- ``pred_z``   (B, T) float: predicted standardised scores, ``(y - mean_train) / std_train`` per
  target (``prepare.targets``; a (B,) vector is one target);
- ``target_z`` (B, T) float: the standardised true scores;
- ``pooled``   (B, H) float: the essay representation the regression head reads;
- ``group``    (B,) long: index of the essay's prompt among the training fold's prompts (0..G-1);
- ``progress`` float in [0, 1]: share of the fold's training steps already done.

The regression loss of an essay is the weighted mean over targets of its squared errors (weights
``finetune.target_weights``, normalised to sum 1), so ERM's loss is the weighted mean over
targets of each target's MSE and DRO's group loss the same over the group's essays. With one
target (or weights [1, 0, ...]) it is the plain MSE of the primary target.

``loss`` returns (scalar loss, dict of float logs for this batch). ``epoch_logs`` returns the
summary of the epoch so far (and starts a new one). An objective is an ``nn.Module``: its own
parameters (the GRL adversary) are trained with ``lr`` from :meth:`Objective.param_groups`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from aes.core.errors import AESError
from aes.core.registry import OBJECTIVES


class Objective(nn.Module):
    """Base objective: mean squared error on the standardised target (ERM)."""

    name = "erm"

    def __init__(self, group_sizes, fold: int, target_weights=(1.0,)):
        super().__init__()
        weights = torch.tensor([float(w) for w in target_weights], dtype=torch.float32)
        if len(weights) == 0 or bool((weights < 0).any()) or not bool((weights > 0).any()):
            raise AESError(f"finetune.target_weights must be >= 0 with at least one > 0; got {list(target_weights)}")
        self.register_buffer("target_weights", weights / weights.sum())
        sizes = [int(n) for n in group_sizes]
        if not sizes:
            raise AESError(f"fold {fold}: the training part has no essays (no prompt groups to train on)")
        empty = [g for g, n in enumerate(sizes) if n <= 0]
        if empty:
            raise AESError(
                f"fold {fold}: prompt group(s) {empty} have no training essays; every training prompt "
                "needs at least one essay in the fold's training part"
            )
        self.register_buffer("group_sizes", torch.tensor(sizes, dtype=torch.float32))
        self.n_groups = len(sizes)
        self._reset_epoch()

    def _reset_epoch(self) -> None:
        self._sum_loss, self._n = 0.0, 0

    def param_groups(self) -> list[dict]:
        """Extra parameter groups for the optimiser (none for ERM)."""
        return []

    def essay_loss(self, pred_z, target_z):
        """(B,) weighted mean over targets of each essay's squared errors; pred_z, target_z (B, T) or (B,)."""
        squared = (pred_z.float() - target_z.float()) ** 2
        # elementwise, not a matmul: autocast would run a matmul in bf16
        return (squared.reshape(len(squared), -1) * self.target_weights).sum(dim=-1)

    def loss(self, pred_z, target_z, pooled, group, progress: float):
        mse = self.essay_loss(pred_z, target_z).mean()
        self._sum_loss += float(mse.detach()) * len(pred_z)
        self._n += len(pred_z)
        return mse, {"mse": float(mse.detach())}

    def epoch_logs(self) -> dict:
        logs = {"train_mse": self._sum_loss / max(self._n, 1)}
        self._reset_epoch()
        return logs


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by ``-weight`` backward."""

    @staticmethod
    def forward(ctx, x, weight: float):
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        return -ctx.weight * grad_output, None


def reverse_gradient(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Gradient reversal layer (Ganin & Lempitsky 2015): y = x, dL/dx = -weight * dL/dy."""
    return _ReverseGradient.apply(x, float(weight))


def dann_weight(progress: float, max_weight: float) -> float:
    """DANN ramp: ``max_weight * (2 / (1 + exp(-10 p)) - 1)``, 0 at p=0, ~max_weight at p=1."""
    p = min(max(float(progress), 0.0), 1.0)
    return max_weight * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0)


class GradientReversal(Objective):
    """MSE + cross-entropy of an adversary that guesses the prompt from the pooled representation.

    The adversary sees ``pooled`` through a gradient-reversal layer, so it learns to classify the
    prompt while the encoder is pushed to make prompts indistinguishable.

    With writing features (``finetune.features``) the adversary still reads ``pooled`` only, the
    text representation, never the features beside it: the features are fixed inputs with no
    trainable weights upstream, so reversed gradients through them would change nothing, while
    letting the adversary read them would let it name the prompt from cues the encoder cannot
    remove (essay length and vocabulary vary by prompt): its loss would fall for reasons the encoder
    cannot act on, and the reversed gradient that reaches the encoder would weaken. The regression
    head still reads both.
    """

    name = "grl"

    def __init__(self, group_sizes, fold: int, hidden_size: int, adversary_hidden: int, max_weight: float, adversary_lr: float,
                 target_weights=(1.0,)):
        super().__init__(group_sizes, fold, target_weights)
        self.max_weight = float(max_weight)
        self.adversary_lr = float(adversary_lr)
        self.adversary = nn.Sequential(
            nn.Linear(hidden_size, adversary_hidden), nn.ReLU(), nn.Linear(adversary_hidden, self.n_groups)
        )

    def _reset_epoch(self) -> None:
        super()._reset_epoch()
        self._correct, self._sum_ce = 0, 0.0

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.adversary.parameters()), "lr": self.adversary_lr, "name": "adversary"}]

    def loss(self, pred_z, target_z, pooled, group, progress: float):
        mse, logs = super().loss(pred_z, target_z, pooled, group, progress)
        weight = dann_weight(progress, self.max_weight)
        logits = self.adversary(reverse_gradient(pooled.float(), weight))
        ce = F.cross_entropy(logits, group)
        correct = int((logits.argmax(dim=1) == group).sum())
        self._correct += correct
        self._sum_ce += float(ce.detach()) * len(group)
        logs.update(adversary_ce=float(ce.detach()), adversary_acc=correct / len(group), grl_weight=weight)
        return mse + ce, logs

    def epoch_logs(self) -> dict:
        n = max(self._n, 1)
        logs = {"train_mse": self._sum_loss / n, "adversary_ce": self._sum_ce / n, "adversary_acc": self._correct / n}
        self._reset_epoch()
        return logs


class GroupDRO(Objective):
    """Online group DRO (Sagawa et al. 2020, Algorithm 1) over the training fold's prompts.

    Per batch, for each prompt group g present: loss_g = mean over its essays of the weighted
    squared error (:meth:`Objective.essay_loss`), then
    ``q_g <- q_g * exp(eta * (loss_g + C / sqrt(n_g)))`` and q is renormalised; the training loss
    is ``sum_g q_g * loss_g``. ``n_g`` is the group's number of training essays.
    """

    name = "dro"

    def __init__(self, group_sizes, fold: int, eta: float, size_adjustment: float, target_weights=(1.0,)):
        super().__init__(group_sizes, fold, target_weights)
        self.eta = float(eta)
        self.size_adjustment = float(size_adjustment)
        self.register_buffer("q", torch.full((self.n_groups,), 1.0 / self.n_groups))

    def _reset_epoch(self) -> None:
        super()._reset_epoch()
        self._group_sum = torch.zeros(self.n_groups, dtype=torch.float64)
        self._group_n = torch.zeros(self.n_groups, dtype=torch.float64)

    def loss(self, pred_z, target_z, pooled, group, progress: float):
        squared = self.essay_loss(pred_z, target_z)  # (B,)
        sums = torch.zeros(self.n_groups, device=squared.device).index_add(0, group, squared)
        counts = torch.zeros(self.n_groups, device=squared.device).index_add(0, group, torch.ones_like(squared))
        present = counts > 0
        group_loss = sums / counts.clamp(min=1.0)  # (G,), 0 for groups absent from the batch
        with torch.no_grad():
            adjusted = group_loss.detach() + self.size_adjustment / self.group_sizes.sqrt()
            self.q.mul_(torch.where(present, torch.exp(self.eta * adjusted), torch.ones_like(adjusted)))
            self.q.div_(self.q.sum())
        loss = (self.q * group_loss).sum()
        # epoch book-keeping (CPU, float64)
        self._sum_loss += float(squared.detach().sum())
        self._n += len(squared)
        self._group_sum += sums.detach().double().cpu()
        self._group_n += counts.detach().double().cpu()
        return loss, {"mse": float(squared.detach().mean()), "dro_max_weight": float(self.q.max())}

    def epoch_logs(self) -> dict:
        seen = self._group_n > 0
        per_group = torch.where(seen, self._group_sum / self._group_n.clamp(min=1.0), torch.full_like(self._group_sum, -math.inf))
        logs = {
            "train_mse": self._sum_loss / max(self._n, 1),
            "dro_max_weight": float(self.q.max()),
            "dro_worst_group_loss": float(per_group.max()) if bool(seen.any()) else float("nan"),
            "dro_worst_group": int(per_group.argmax()) if bool(seen.any()) else -1,
        }
        self._reset_epoch()
        return logs


def make_objective(name: str, params: dict, group_sizes, hidden_size: int, fold: int, target_weights=(1.0,)) -> Objective:
    """Build the objective ``name`` (erm | grl | dro) from the full params dict.

    group_sizes: training essays per prompt group (G,), in group-index order. target_weights: (T,)
    loss weight per target (``finetune.target_weights``).
    """
    if name == "erm":
        return Objective(group_sizes, fold, target_weights)
    if name == "grl":
        grl = params["grl"]
        return GradientReversal(group_sizes, fold, hidden_size, grl["adversary_hidden"], grl["max_weight"], grl["adversary_lr"], target_weights)
    if name == "dro":
        dro = params["dro"]
        return GroupDRO(group_sizes, fold, dro["eta"], dro["size_adjustment"], target_weights)
    raise AESError(f"unknown objective '{name}'; expected one of {', '.join(OBJECTIVES)}")
