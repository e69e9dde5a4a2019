"""Prompt centring of a fine-tune's pooled text representation (``normalise.embeddings: prompt_mean``).

The head reads ``pooled - m_p`` instead of ``pooled``, where ``m_p`` is the mean pooled vector of
the essay's prompt: a label-free, test-time normalisation that removes a prompt's first-order shift
(transductive: a held-out prompt's mean comes from its own essays, never its scores).

No extra forward pass:

- while training, ``m_p`` of each training prompt is a running mean (:class:`PromptCentring`),
  started from the pristine model's pooled vectors of that prompt (the ones the linear-probe phase
  centred the same way, so an LP-FT head starts where its probe was fitted) and moved towards each
  batch's own pooled vectors of that prompt (detached: no gradient flows through a mean);
- when scoring, the trained model predicts every essay of a prompt uncentred, and because the head
  is linear, centring afterwards is exact: ``pred_z -= m_p @ W_pooled.T``, with ``m_p`` the mean of
  those very pooled outputs (:func:`centre_predictions`).
"""

from __future__ import annotations

import numpy as np

MOMENTUM = 0.1  # weight of a batch's mean in a prompt's running mean: about the last ten batches that held the prompt


class PromptCentring:
    """Running mean pooled vector (H,) of each of G training prompts, as a (G, H) float32 tensor."""

    def __init__(self, means, momentum: float = MOMENTUM):
        import torch

        self.means = torch.as_tensor(np.asarray(means, dtype=np.float32))
        self.momentum = momentum

    @classmethod
    def from_pooled(cls, pooled: np.ndarray, group: np.ndarray, n_groups: int, rows: np.ndarray) -> PromptCentring:
        """Start from the mean of ``pooled`` (n, H) over ``rows`` (the training essays) of each group (``group`` (n,) in 0..G-1)."""
        pooled, group, rows = np.asarray(pooled, dtype=np.float64), np.asarray(group), np.asarray(rows)
        means = np.zeros((n_groups, pooled.shape[1]))
        for g in range(n_groups):
            members = rows[group[rows] == g]
            if len(members):
                means[g] = pooled[members].mean(axis=0)
        return cls(means)

    def offsets(self, group):
        """(B, H) the running mean of each essay's prompt (``group`` (B,) long tensor of training-prompt indices)."""
        means = self.means.to(group.device)
        return means[group]

    def update(self, pooled, group) -> None:
        """Move each prompt's mean towards this batch's mean pooled vector of that prompt (``pooled`` (B, H), detached)."""
        import torch

        with torch.no_grad():
            pooled = pooled.detach().float().cpu()
            group = group.cpu()
            for g in torch.unique(group).tolist():
                if g < 0:
                    continue
                batch_mean = pooled[group == g].mean(dim=0)
                self.means[g] = (1 - self.momentum) * self.means[g] + self.momentum * batch_mean


def centre_predictions(head_weight: np.ndarray, pred_z: np.ndarray, pooled: np.ndarray, prompts) -> np.ndarray:
    """(m, T) predictions of a linear head as if it had read ``pooled - m_p`` instead of ``pooled``.

    head_weight: (T, H + d) the head's weight (the first H columns read pooled); pred_z: (m, T) the
    uncentred predictions; pooled: (m, H) the pooled vectors they came from; prompts: (m,) the prompt
    of each row. m_p is the mean of ``pooled`` over the rows of prompt p given here (a prompt with one
    essay centres to 0 pooled contribution: its prediction is then the head's bias and features alone).
    """
    pred_z, pooled = np.asarray(pred_z, dtype=np.float64), np.asarray(pooled, dtype=np.float64)
    w_pooled = np.asarray(head_weight, dtype=np.float64)[:, : pooled.shape[1]]  # (T, H)
    labels = np.asarray(prompts).astype(str)
    out = pred_z.copy()
    for prompt in np.unique(labels):
        rows = labels == prompt
        out[rows] -= pooled[rows].mean(axis=0) @ w_pooled.T
    return out.astype(np.float32)
