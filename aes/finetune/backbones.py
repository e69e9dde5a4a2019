"""What the fold loop trains, in two interchangeable shapes chosen by ``finetune.trainable_layers``.

- :class:`CachedTopLayers` (``k >= 0``, the CPU profile): the embeddings and the bottom
  ``num_layers - k`` layers are frozen, so they run ONCE per DAG run over all CV essays (stage
  ``embed``, :mod:`aes.finetune.frozen_pass`; ``torch.inference_mode``, batches sorted by length)
  and the three fine-tuning stages read their hidden states (n, T, H); each fold and seed trains a
  fresh copy of the pretrained top ``k`` layers + head on them. BERT-like encoders only
  (``encoder.layer`` of self-contained layers).
- :class:`WholeEncoder` (``k = -1``, the GPU profile): the whole encoder trains from the tokens.

Both offer the same interface to the loop: :meth:`prepare` (tokenise, or for the cached one take
the frozen pass's hidden states), :meth:`batch_inputs` (model inputs for some essays),
:meth:`fresh_model` (pretrained weights + a new head) and :meth:`pristine_model` (the pretrained
weights untouched, for the frozen pass's pooled features).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from aes.core.errors import AESError
from aes.core.progress import update_progress

# Encoders whose layers are called as layer(hidden, additive_mask) with absolute positions.
BERT_LIKE = ("bert", "roberta", "xlm-roberta", "camembert", "electra")


@dataclass
class Prepared:
    """The CV essays ready for training: tokens, and for cached training the frozen trunk's output.

    input_ids, attention_mask: (n, T) long, padded to the longest essay (T <= max_length);
    input_ids is None when the essays come from a stored frozen pass. lengths: (n,) tokens per
    essay. hidden: (n, T, H) cached trunk output (float32, or float16 as stored), or None.
    features: (n, d) float32 numpy writing features (``finetune.features``; within each prompt under a
    per-prompt ``normalise.features``), or None. prompts: (n,) str prompt of each essay (None when not
    given). pooled: (n, H) float32 the pristine model's pooled output (the start of the prompt
    centring, :mod:`aes.finetune.centring`), or None.
    """

    input_ids: object
    attention_mask: object
    lengths: np.ndarray
    hidden: object = None
    features: np.ndarray | None = None
    prompts: np.ndarray | None = None
    pooled: np.ndarray | None = None


class Backbone:
    """Shared parts: the tokenizer, the pretrained weights kept pristine, re-initialisation and LoRA."""

    def __init__(self, ft: dict, tokenizer, encoder, n_trainable_layers: int):
        self.ft, self.tokenizer = ft, tokenizer
        self.config = encoder.config
        self.encoder = encoder  # the whole pretrained encoder as loaded (stage embed's shared pass runs it)
        self.hidden_size = int(encoder.config.hidden_size)
        if ft["reinit_top_layers"] > max(n_trainable_layers, 0):
            raise AESError(
                f"finetune.reinit_top_layers={ft['reinit_top_layers']} must be between 0 and the number of "
                f"trained layers ({n_trainable_layers})"
            )
        self._init_weights = encoder._init_weights

    def tokenize(self, texts: list[str]) -> Prepared:
        """Tokenise (one batched tokenizer call), pad to the longest essay."""
        from aes.encoders.embedding import pad_rows, tokenize_texts

        max_length = self.ft["max_length"]
        limit = getattr(self.config, "max_position_embeddings", None)
        if limit and max_length > limit:
            raise AESError(f"finetune.max_length={max_length} exceeds model '{self.ft['model']}' limit of {limit} tokens")
        encoded, lengths = tokenize_texts(list(texts), self.tokenizer, max_length)
        inputs = {name: encoded[name] for name in ("input_ids", "attention_mask")}
        padded = pad_rows(self.tokenizer, inputs, range(len(lengths)))
        return Prepared(padded["input_ids"], padded["attention_mask"], lengths)

    def _finish(self, model, layers: list, lora_attr: str):
        """Re-initialise the top ``reinit_top_layers`` layers, then add LoRA adapters if asked."""
        from aes.finetune.modules import apply_lora

        k = self.ft["reinit_top_layers"]
        for layer in layers[len(layers) - k :] if k else []:
            for module in layer.modules():
                self._init_weights(module)
        if self.ft["lora"]:
            setattr(model, lora_attr, apply_lora(getattr(model, lora_attr), self.ft))
        return model

    @staticmethod
    def _rows(data: Prepared, rows):
        import torch

        rows = torch.as_tensor(rows)
        return rows, int(data.lengths[rows.numpy()].max())

    @staticmethod
    def _with_features(inputs: dict, data: Prepared, rows) -> dict:
        """``inputs`` plus the raw writing features (B, d) of essay rows (B,) when the essays carry them."""
        import torch

        if data.features is not None:
            inputs["features"] = torch.as_tensor(np.asarray(data.features)[np.asarray(rows)], dtype=torch.float32)
        return inputs


class CachedTopLayers(Backbone):
    """Train the top ``k`` layers + head over the frozen bottom layers' cached output."""

    def __init__(self, ft: dict, tokenizer, encoder, stage: str):
        layers = getattr(getattr(encoder, "encoder", None), "layer", None)
        model_type = getattr(encoder.config, "model_type", "?")
        if layers is None or model_type not in BERT_LIKE:
            raise AESError(
                f"finetune.trainable_layers={ft['trainable_layers']} needs a BERT-like encoder (encoder.layer; "
                f"one of {', '.join(BERT_LIKE)}) but model '{ft['model']}' is '{model_type}'; "
                "use finetune.trainable_layers: -1 to train it end to end"
            )
        k = ft["trainable_layers"]
        if k > len(layers):
            raise AESError(f"finetune.trainable_layers={k} but model '{ft['model']}' has only {len(layers)} layers")
        super().__init__(ft, tokenizer, encoder, k)
        self.stage = stage
        self.n_bottom = len(layers) - k
        self.trunk = encoder  # the bottom layers run once (compute_trunk); then only copies of the top ones train
        self.pristine = copy.deepcopy(list(layers[self.n_bottom :]))

    def prepare(self, texts: list[str], device="cpu", frozen=None) -> Prepared:
        """The essays' trunk output: from ``frozen`` (a stored :class:`FrozenPass`) or computed here."""
        import torch

        if frozen is not None:
            if frozen.hidden is None:
                raise AESError(f"{self.stage}: the stored frozen pass has no hidden states (it was computed for trainable_layers=-1); "
                               "re-run `dvc repro embed`")
            if frozen.hidden.shape[-1] != self.hidden_size:
                raise AESError(f"{self.stage}: the stored frozen pass has width {frozen.hidden.shape[-1]}, model '{self.ft['model']}' "
                               f"{self.hidden_size}; re-run `dvc repro embed`")
            width = frozen.hidden.shape[1]
            mask = (torch.arange(width)[None, :] < torch.as_tensor(frozen.lengths)[:, None]).long()
            return Prepared(None, mask, np.asarray(frozen.lengths), torch.from_numpy(frozen.hidden))
        data = self.tokenize(texts)
        data.hidden = self.compute_trunk(data, device)
        return data

    def compute_trunk(self, data: Prepared, device="cpu", autocast=None):
        """Hidden states (n, T, H) float32 after the embeddings + the frozen bottom layers."""
        from contextlib import nullcontext

        import torch
        from torch import nn
        from tqdm.auto import tqdm

        autocast = autocast or nullcontext
        model = self.trunk
        full_layers = model.encoder.layer
        n, width = data.input_ids.shape
        out = torch.zeros((n, width, self.hidden_size), dtype=torch.float32)
        order = np.argsort(-data.lengths, kind="stable")  # longest first: little padding per batch
        bs = self.ft["eval_batch_size"]
        model.encoder.layer = nn.ModuleList(list(full_layers[: self.n_bottom]))
        try:
            model.to(device).eval()
            with torch.inference_mode(), autocast(), tqdm(total=n, desc=f"{self.stage} frozen layers", unit="essay") as bar:
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

    def batch_inputs(self, data: Prepared, rows) -> dict:
        """hidden_states (B, T, H) and attention_mask (B, T) for essay rows (B,), trimmed to the longest (+ their raw writing features)."""
        picked, t = self._rows(data, rows)
        inputs = {"hidden_states": data.hidden[picked, :t].float(), "attention_mask": data.attention_mask[picked, :t]}
        return self._with_features(inputs, data, rows)

    def pristine_model(self, n_outputs: int = 1, scaling=None):
        """The pretrained top layers + a new head (reading writing features standardised by ``scaling``, if given)."""
        from aes.finetune.modules import TopLayersRegressor

        return TopLayersRegressor(copy.deepcopy(self.pristine), self.hidden_size, n_outputs, scaling)

    def fresh_model(self, n_outputs: int = 1, scaling=None):
        model = self.pristine_model(n_outputs, scaling)
        return self._finish(model, list(model.layers), "layers")


class WholeEncoder(Backbone):
    """Train the whole encoder + head from the tokens."""

    def __init__(self, ft: dict, tokenizer, encoder, stage: str):
        n_layers = len(getattr(getattr(encoder, "encoder", None), "layer", []) or [])
        super().__init__(ft, tokenizer, encoder, n_layers)
        self.stage = stage
        self.pristine = encoder

    def prepare(self, texts: list[str], device="cpu", frozen=None) -> Prepared:
        return self.tokenize(texts)  # the whole encoder trains from tokens: nothing frozen to reuse

    def batch_inputs(self, data: Prepared, rows) -> dict:
        """input_ids and attention_mask (B, T) for essay rows (B,), trimmed to the longest (+ their raw writing features)."""
        picked, t = self._rows(data, rows)
        inputs = {"input_ids": data.input_ids[picked, :t], "attention_mask": data.attention_mask[picked, :t]}
        return self._with_features(inputs, data, rows)

    def pristine_model(self, n_outputs: int = 1, scaling=None):
        from aes.finetune.modules import EncoderRegressor

        return EncoderRegressor(copy.deepcopy(self.pristine), self.hidden_size, n_outputs, scaling)

    def fresh_model(self, n_outputs: int = 1, scaling=None):
        from aes.finetune.modules import EncoderRegressor, enable_gradient_checkpointing

        encoder = copy.deepcopy(self.pristine)
        if self.ft["gradient_checkpointing"]:
            enable_gradient_checkpointing(encoder, self.ft["model"])
        model = EncoderRegressor(encoder, self.hidden_size, n_outputs, scaling)
        return self._finish(model, list(getattr(getattr(encoder, "encoder", None), "layer", []) or []), "encoder")


def make_backbone(ft: dict, stage: str) -> Backbone:
    """Load ``finetune.model`` and wrap it for cached (k >= 0) or whole-encoder (k = -1) training."""
    from aes.encoders.resolve import load_encoder

    tokenizer, encoder = load_encoder(ft["model"], dropout=ft["dropout"])
    kind = WholeEncoder if ft["trainable_layers"] == -1 else CachedTopLayers
    return kind(ft, tokenizer, encoder, stage)
