"""The trainable regressors: encoder layers + masked mean pooling + a linear head on the standardised scores.

Both return ``(pooled (B, H), pred_z (B, T))``, one output per target (``prepare.targets``), and
list their layer parameter groups by depth below the top (0 = top layer) so the optimizer can
apply layer-wise learning-rate decay.

With writing features (``finetune.features``, d columns) the head reads [pooled (H), z (d)]:
``features`` (B, d) arrive raw and are standardised inside the model with the training fold's
mean and sd (buffers ``feature_mean``, ``feature_sd``, set from a
:class:`aes.features.FeatureScaling`), so the model carries its own statistics.
``pooled`` stays the text representation alone (what the GRL adversary and the prompt probe read).
With ``offset`` (B, H) (prompt centring, :mod:`aes.finetune.centring`) the head reads ``pooled - offset``.
"""

from __future__ import annotations

import torch
from torch import nn

from aes.core.errors import AESError
from aes.encoders.embedding import (
    mean_pool,  # the same pooling as the frozen-embedding baseline
)


def make_head(hidden_size: int, n_outputs: int) -> nn.Linear:
    """A linear head (H -> n_outputs) initialised row by row as n_outputs one-output heads in turn.

    Output 0 (the primary target) thus starts exactly where a one-output head with the same RNG
    state starts, however many outputs follow: a seven-output run whose other loss weights are 0
    reproduces the one-output run.
    """
    head = torch.nn.utils.skip_init(nn.Linear, hidden_size, n_outputs)  # no draws: the rows below make them
    with torch.no_grad():
        for j in range(n_outputs):
            row = nn.Linear(hidden_size, 1)
            head.weight[j] = row.weight[0]
            head.bias[j] = row.bias[0]
    return head


class FeatureHead(nn.Module):
    """The regression head and, with writing features, their standardisation: the part both regressors share.

    ``head`` is a linear map (H + d -> n_outputs); d = 0 without features (then exactly the
    text-only head, same initialisation draws). scaling: a FeatureScaling (d columns) or None.
    """

    def _init_head(self, hidden_size: int, n_outputs: int, scaling) -> None:
        d = 0 if scaling is None else len(scaling.names)
        self.n_features = d
        self.feature_groups = () if scaling is None else tuple(scaling.groups)
        self.head = make_head(hidden_size + d, n_outputs)
        if d:
            self.register_buffer("feature_mean", torch.as_tensor(scaling.mean, dtype=torch.float32))
            self.register_buffer("feature_sd", torch.as_tensor(scaling.sd, dtype=torch.float32))

    def predict_head(self, pooled, features=None):
        """pred_z (B, n_outputs) from pooled (B, H) and raw features (B, d) (required iff the head reads features)."""
        if not self.n_features:
            if features is not None:
                raise AESError(f"the model has a text-only head but got {features.shape[-1]} writing-feature columns "
                               "(finetune.features); build it with the fold's feature scaling")
            return self.head(pooled)
        if features is None or features.shape[-1] != self.n_features:
            got = "none" if features is None else features.shape[-1]
            raise AESError(f"the head reads {self.n_features} writing-feature columns {list(self.feature_groups)} "
                           f"(finetune.features) but got {got}")
        # elementwise in float32 (autocast leaves it alone); the head's matmul then runs in the autocast dtype
        z = (features.float() - self.feature_mean) / self.feature_sd
        return self.head(torch.cat([pooled, z.to(pooled.dtype)], dim=-1))


class TopLayersRegressor(FeatureHead):
    """Top encoder layers + mean pooling + linear head over cached hidden states.

    forward(hidden_states (B, L, H), attention_mask (B, L)[, features (B, d) raw, offset (B, H)]) -> (pooled (B, H), pred_z (B, n_outputs)).
    """

    def __init__(self, layers, hidden_size: int, n_outputs: int = 1, scaling=None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self._init_head(hidden_size, n_outputs, scaling)

    def forward(self, hidden_states, attention_mask, features=None, offset=None):
        hidden = hidden_states
        additive = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        for layer in self.layers:
            out = layer(hidden, additive)
            hidden = out[0] if isinstance(out, tuple) else out
        pooled = mean_pool(hidden, attention_mask)
        return pooled, self.predict_head(pooled if offset is None else pooled - offset.to(pooled.dtype), features)

    def layer_groups(self):
        """[(lr depth below the top, params)]: 0 for the top layer, 1 the one below, ..."""
        k = len(self.layers)
        return [(k - 1 - i, list(layer.parameters())) for i, layer in enumerate(self.layers)]


class EncoderRegressor(FeatureHead):
    """Whole encoder + mean pooling + linear head from tokens.

    forward(input_ids (B, L), attention_mask (B, L)[, features (B, d) raw, offset (B, H)]) -> (pooled (B, H), pred_z (B, n_outputs)).
    """

    def __init__(self, encoder, hidden_size: int, n_outputs: int = 1, scaling=None):
        super().__init__()
        self.encoder = encoder
        self._init_head(hidden_size, n_outputs, scaling)

    def forward(self, input_ids, attention_mask, features=None, offset=None):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = mean_pool(hidden, attention_mask)
        return pooled, self.predict_head(pooled if offset is None else pooled - offset.to(pooled.dtype), features)

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


def _checkpointed(forward, *args, **kwargs):
    """Run ``forward`` under activation checkpointing while gradients are on (training), plainly otherwise."""
    from torch.utils.checkpoint import checkpoint

    if torch.is_grad_enabled():
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


def enable_gradient_checkpointing(encoder, model_name: str) -> None:
    """Recompute each encoder layer's activations in the backward pass instead of storing them.

    transformers' own switch where the model supports it; otherwise (MPNet in transformers 5
    raises "does not support activation checkpointing") each layer of ``encoder.layer`` runs
    under ``torch.utils.checkpoint``. Non-reentrant checkpointing, because with LoRA or a frozen
    embedding layer the reentrant variant sees inputs without grad and silently drops the
    layer's gradients. Parameter names do not change (the layer's forward is wrapped in place).
    """
    import functools

    if getattr(encoder, "supports_gradient_checkpointing", False):
        encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if layers is None:
        raise AESError(f"finetune.gradient_checkpointing: model '{model_name}' supports neither transformers' checkpointing "
                       "nor has encoder.layer to checkpoint; set finetune.gradient_checkpointing: false")
    for layer in layers:
        layer.forward = functools.partial(_checkpointed, layer.forward)


def apply_lora(module, ft: dict):
    """Inject LoRA adapters into ``module`` (in place) and freeze all its non-adapter weights."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = list(ft["lora_target_modules"])
    if not all(isinstance(t, str) and t for t in targets):
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


def trainable_state(model) -> dict:
    """The trained tensors only (top layers / adapters + head), detached copies on the CPU."""
    return {name: p.detach().cpu().clone().contiguous() for name, p in model.named_parameters() if p.requires_grad}
