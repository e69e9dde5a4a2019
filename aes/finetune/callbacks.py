"""What the fold loop reports while it trains, behind one small interface.

The loop calls, for fold ``k``: :meth:`Callback.on_step` after every optimizer step,
:meth:`Callback.on_curve_point` every ``CURVE_EVERY`` steps with window means of the batch logs,
and :meth:`Callback.on_epoch_end` with the epoch's logs. Callbacks never change training.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from aes.core.progress import update_progress

CURVE_EVERY = 10  # steps per point of the step-level training curves (window means)
PROGRESS_EVERY = 10  # steps between aes.core.progress updates


def curve_point(step: int, window: list[dict]) -> dict:
    """One step-level curve point: window means of the batch logs (the last GRL / DRO weight)."""
    point = {"step": step, "train_loss": float(np.mean([b["mse"] for b in window]))}
    if "adversary_acc" in window[-1]:
        point["adversary_acc"] = float(np.mean([b["adversary_acc"] for b in window]))
        point["grl_weight"] = window[-1]["grl_weight"]
    if "dro_max_weight" in window[-1]:
        point["dro_max_weight"] = window[-1]["dro_max_weight"]
    return point


class Callback:
    """No-op base: override what you need."""

    def on_step(self, k: int, epoch: int, step: int, total_steps: int) -> None: ...

    def on_curve_point(self, k: int, point: dict) -> None: ...

    def on_epoch_end(self, k: int, logs: dict) -> None: ...


class ProgressCallback(Callback):
    """A stage-wide tqdm bar over all folds' steps, mirrored to ``$AES_PROGRESS_FILE`` with an ETA."""

    def __init__(self, stage: str, total_steps: int):
        from tqdm.auto import tqdm

        self.stage = stage
        self.bar = tqdm(total=total_steps, desc=f"{stage} train", unit="step")

    def on_step(self, k: int, epoch: int, step: int, total_steps: int) -> None:
        self.bar.set_postfix(fold=k, refresh=False)
        self.bar.update(1)
        if step % PROGRESS_EVERY == 0 or step == total_steps:
            bar = self.bar
            eta = bar.format_dict.get("elapsed", 0) / max(bar.n, 1) * (bar.total - bar.n)
            update_progress(stage=self.stage, fold=int(k), epoch=epoch, step=bar.n, total_steps=bar.total, eta_s=round(eta, 1))

    def close(self) -> None:
        self.bar.close()


class DVCLiveCurves(Callback):
    """DVCLive curves at dvclive/<stage>, x = optimizer step within the fold, one folder per fold.

    Step-level: ``train_loss`` (mean MSE on the standardised target over the last CURVE_EVERY
    steps), ``adversary_acc`` and ``grl_weight`` (grl), ``dro_max_weight`` (dro). Epoch-level,
    at the epoch's last step: ``epoch_train_loss``, ``epoch_adversary_acc``, ``dro_worst_group_loss``,
    ``inner_qwk``. Skipped with a warning if dvclive is not installed.
    """

    def __init__(self, folder: Path):
        try:
            from dvclive import Live
        except ImportError:
            warnings.warn("dvclive is not installed: training curves are not written", stacklevel=2)
            self.live = None
            return
        self.live = Live(str(folder), dvcyaml=False, save_dvc_exp=False, report=None)

    def _log(self, k: int, step: int, values: dict) -> None:
        self.live.step = int(step)
        for name, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.live.log_metric(f"fold{k}/{name}", float(value), plot=True)

    def on_curve_point(self, k: int, point: dict) -> None:
        if self.live is not None:
            self._log(k, point["step"], {n: v for n, v in point.items() if n != "step"})

    def on_epoch_end(self, k: int, logs: dict) -> None:
        if self.live is None:
            return
        renamed = {"train_mse": "epoch_train_loss", "adversary_acc": "epoch_adversary_acc", "adversary_ce": "epoch_adversary_ce"}
        skip = ("epoch", "step", "dro_worst_group", "dro_max_weight")
        self._log(k, logs["step"], {renamed.get(n, n): v for n, v in logs.items() if n not in skip})

    def replay(self, k: int, result: dict) -> None:
        """Log a resumed fold's stored curves, so a resumed stage writes the same curves."""
        for point in result.get("history") or []:
            self.on_curve_point(k, point)
        for logs in result["epochs"]:
            self.on_epoch_end(k, logs)

    def end(self) -> None:
        if self.live is not None:
            self.live.end()
