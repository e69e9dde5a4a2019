"""Frozen sentence embeddings: mean-pooled last hidden states of a pretrained encoder.

``embed_texts`` returns one row per text in the input order. Texts are tokenised once (the
tokenizer's own batched call, :func:`tokenize_texts`), sorted by token length so each batch holds texts of similar length
(little padding, so much less wasted compute), padded per batch, and encoded under
``torch.inference_mode``. Pooling is the sentence-transformers mean over real tokens, before
any normalisation layer. torch is imported lazily so that CPU-only stages (gbm) stay light.
"""

from __future__ import annotations

import time

import numpy as np

from aes.core.errors import AESError
from aes.core.progress import update_progress



def mean_pool(last_hidden, attention_mask):
    """Mean of ``last_hidden`` (B, T, H) over positions where ``attention_mask`` (B, T) is 1 -> (B, H)."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
    summed = (last_hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)  # an all-padding row gives zeros, not NaN
    return summed / counts


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other values pass through."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AESError(f"device '{device}' requested but no CUDA GPU is visible")
    return device


def cpu_bf16_supported() -> bool:
    """True when this CPU runs bfloat16 matrix products natively (AVX512-BF16 or AMX tiles).

    Without them torch's CPU autocast still accepts bf16 but emulates it: slower than fp32 and
    with other numbers. Unknown (a torch without these probes) counts as supported.
    """
    import torch

    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [probe for probe in probes if callable(probe)]
    return not probes or any(probe() for probe in probes)


def check_bf16(key: str, device_type: str) -> None:
    """Raise AESError naming ``key`` when bf16 autocast is asked for on hardware without native bf16."""
    import torch

    if device_type == "cpu" and not cpu_bf16_supported():
        raise AESError(
            f"{key} is 'bf16' but this CPU has no native bfloat16 (AVX512-BF16 or AMX): autocast would emulate it, "
            f"slower than fp32; set {key}: no (e.g. dvc exp run -S {key}=no)"
        )
    if device_type == "cuda" and not torch.cuda.is_bf16_supported():
        raise AESError(f"{key} is 'bf16' but GPU '{torch.cuda.get_device_name()}' has no bfloat16 support (it needs an "
                       f"Ampere or newer GPU); set {key}: fp16 or no")


def usable_max_length(tokenizer, model, max_length: int) -> int:
    """Check ``max_length`` (tokens) against what the model can encode; return it."""
    limit = getattr(tokenizer, "model_max_length", None)
    if not limit or limit > 100_000:  # tokenizers without a limit report ~1e30
        limit = getattr(model.config, "max_position_embeddings", None)
    if limit and max_length > limit:
        raise AESError(f"embed.max_length={max_length} exceeds the model's limit of {limit} tokens")
    return max_length


def tokenize_texts(texts: list[str], tokenizer, max_length: int) -> tuple[dict[str, list[list[int]]], np.ndarray]:
    """Tokenise ``texts`` (n,) truncated to ``max_length`` and unpadded, in one batched call of the tokenizer.

    Returns ``(encoded, lengths)``: encoded maps each model input (input_ids, attention_mask and
    whatever else the tokenizer gives, e.g. token_type_ids) to n lists of token values; lengths
    (n,) int tokens per text. :func:`pad_rows` pads any subset of them into a batch.
    """
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, return_length=True)
    lengths = np.asarray(encoded.pop("length"), dtype=int)
    return dict(encoded), lengths


def pad_rows(tokenizer, encoded: dict[str, list[list[int]]], rows) -> dict:
    """The texts ``rows`` of :func:`tokenize_texts`'s ``encoded``, padded to the longest of them: (B, T) torch tensors."""
    return tokenizer.pad({name: [values[i] for i in rows] for name, values in encoded.items()}, padding="longest", return_tensors="pt")


def encode(texts: list[str], tokenizer, model, max_length: int, batch_size: int, device: str = "cpu", desc: str = "embed",
           bf16: bool = False) -> np.ndarray:
    """Mean-pooled embeddings (n, H) float32 of ``texts`` in the input order, with a loaded encoder.

    bf16: run the encoder under bfloat16 autocast (about 2x faster on CPUs with AVX512-BF16 or
    AMX, and on GPUs); pooling is done in float32.
    """
    return encode_pass(texts, tokenizer, model, max_length, batch_size, device, desc, bf16)[0]


def encode_pass(texts: list[str], tokenizer, model, max_length: int, batch_size: int, device: str = "cpu", desc: str = "embed",
                bf16: bool = False, keep_layer: int | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """:func:`encode`'s forward pass, returning ``(embeddings (n, H) float32, hidden, lengths (n,) int tokens)``.

    keep_layer: also keep, from the same pass, the hidden states after that many layers (0 = the
    embedding layer's output) as ``hidden`` (n, T, H) float16, T the longest essay in tokens, zeros
    past each essay's length; None keeps none (``hidden`` is None). The fine-tune's frozen trunk is
    exactly this (:mod:`aes.finetune.frozen_pass`), so one pass serves both.
    """
    import torch
    from tqdm.auto import tqdm

    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise AESError(f"texts to embed must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
    max_length = usable_max_length(tokenizer, model, max_length)
    hidden = model.config.hidden_size
    out = np.zeros((len(texts), hidden), dtype=np.float32)
    if not texts:
        return out, None if keep_layer is None else np.zeros((0, 0, hidden), dtype=np.float16), np.zeros(0, dtype=int)

    encoded, lengths = tokenize_texts(texts, tokenizer, max_length)
    # Longest first (stable): a batch too big for memory fails at once, not at the end.
    order = np.argsort(-lengths, kind="stable")
    kept = None if keep_layer is None else np.zeros((len(texts), int(lengths.max()), hidden), dtype=np.float16)
    model = model.to(device).eval()

    started, last_report = time.perf_counter(), 0.0
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)
    with torch.inference_mode(), autocast, tqdm(total=len(texts), desc=desc, unit="essay") as bar:
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            # Pad to the longest text of this batch only.
            batch = pad_rows(tokenizer, encoded, rows.tolist())
            batch = {k: v.to(device) for k, v in batch.items()}
            outputs = model(**batch, output_hidden_states=keep_layer is not None)
            pooled = mean_pool(outputs.last_hidden_state.float(), batch["attention_mask"])
            out[rows] = pooled.cpu().numpy()
            if kept is not None:
                layer = outputs.hidden_states[keep_layer] * batch["attention_mask"].unsqueeze(-1)  # zeros past each essay
                kept[rows, : layer.shape[1]] = layer.float().cpu().numpy().astype(np.float16)
            bar.update(len(rows))
            now = time.perf_counter() - started
            if now - last_report > 5.0 or start + batch_size >= len(texts):
                last_report = now
                done = min(start + batch_size, len(texts))
                update_progress(stage=desc, step=done, total_steps=len(texts), eta_s=round(now / done * (len(texts) - done), 1))
    return out, kept, lengths


def embed_texts(texts: list[str], model_spec: str, max_length: int, batch_size: int, device: str = "cpu", bf16: bool = False) -> np.ndarray:
    """Embed ``texts`` with the encoder named by ``model_spec`` (see :mod:`aes.encoders.resolve`).

    Returns (n, H) float32, row i for texts[i]; H is the encoder's hidden size.
    ``max_length`` is in tokens (longer texts are truncated); ``device`` is cpu, cuda or auto;
    ``bf16`` runs the encoder under bfloat16 autocast (an AESError naming ``embed.mixed_precision``
    where the hardware has no native bf16).
    """
    from aes.encoders.resolve import load_encoder

    device = resolve_device(device)
    if bf16:
        check_bf16("embed.mixed_precision", "cuda" if device.startswith("cuda") else "cpu")
    tokenizer, model = load_encoder(model_spec)
    return encode(texts, tokenizer, model, max_length, batch_size, device, bf16=bf16)
