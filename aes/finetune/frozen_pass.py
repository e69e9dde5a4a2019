"""The frozen pass, computed once per DAG run (stage ``embed``) and shared by the fine-tuning stages.

With ``finetune.trainable_layers = k >= 0`` the embeddings and the bottom layers never change, so
their hidden states over every CV essay at ``finetune.max_length`` are computed once and stored;
``finetune_cv``, ``grl_cv`` and ``dro_cv`` read them instead of recomputing them. The same pass gives
the pooled output of the untouched pretrained model, the features of the linear-probe phase of LP-FT:
``lp_cv`` fits a ridge probe on them per fold (:mod:`aes.baseline.linear`), reports it as its own
frozen model, and the fine-tuning stages start from that probe's head when ``finetune.lp_ft`` is on.

Stage ``embed`` computes it together with the frozen baselines' embeddings: when ``embed`` and
``finetune`` name the same model and max_length (the default), ONE forward pass gives both: the
embeddings are its pooled output and the trunk is its hidden states after the bottom ``L - k``
layers (:func:`embed_and_freeze`), at ``embed.mixed_precision`` (fp32 by default, so the trunk, like
the embeddings, is the same on every AVX-512 CPU). Otherwise the fine-tune's pass runs on its own at
``finetune.mixed_precision`` (:func:`compute_frozen_pass`).

Files in ``data/frozen_pass/`` (a DVC out, derived from essays, never committed):
``record_ids.csv`` (n rows: record_id, length in tokens), ``pooled.npy`` (n, H) float32 and,
for cached training, ``hidden.npy`` (n, T, H) float16 (T = the longest essay, <= max_length;
half precision halves the file, and the trained top layer runs in bf16 on the CPU anyway).
With ``finetune.features`` non-empty, also the essays' raw writing features, computed once here
for lp_cv's probe and every fine-tuning stage: ``features.npy`` (n, d) float32 and
``features.json`` ({groups, names}: the groups and d column names, ``FEATURE_GROUPS`` order).
Row order is that of ``record_ids.csv``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from aes.core.errors import AESError

IDS_FILE, POOLED_FILE, HIDDEN_FILE = "record_ids.csv", "pooled.npy", "hidden.npy"
FEATURES_FILE, FEATURES_INFO = "features.npy", "features.json"


@dataclass
class FrozenPass:
    """record_ids (n,) str; lengths (n,) int tokens; pooled (n, H) float32; hidden (n, T, H) float16 or None;
    features (n, d) float32 raw writing features of ``feature_groups`` (``FEATURE_GROUPS`` order), or None."""

    record_ids: np.ndarray
    lengths: np.ndarray
    pooled: np.ndarray
    hidden: np.ndarray | None
    features: np.ndarray | None = None
    feature_groups: tuple[str, ...] = ()


def stored_groups_text(groups) -> str:
    return f"writing features {list(groups)}" if groups else "no writing features"


def check_feature_groups(stored, wanted, source: str, rerun: str = "embed") -> None:
    """AESError naming ``finetune.features`` and the stage to re-run (``rerun``) when what ``source`` was
    fitted or computed with (``stored`` groups) is not what ``finetune.features`` asks for (``wanted``)."""
    from aes.features import canonical_groups

    stored, wanted = canonical_groups(stored), canonical_groups(wanted)
    if stored != wanted:
        raise AESError(f"{source}: made with {stored_groups_text(stored)} but finetune.features asks for "
                       f"{wanted if wanted else '[] (the text only)'}; re-run `dvc repro {rerun}`")


def compute_frozen_pass(ft: dict, texts: list[str], record_ids, stage: str,
                        repair: Callable[[str], str] | None = None) -> tuple[FrozenPass, float]:
    """Run the frozen part of ``finetune.model`` over ``texts`` (n,) once; return (pass, seconds).

    Cached training (k >= 0): tokens -> embeddings + bottom layers (stored), then the pretrained
    top layers -> mean pooling (pooled). Whole-encoder training (k = -1): only the pooled output
    of the pretrained encoder. With ``finetune.features``: the essays' raw writing features
    (:func:`aes.features.writing_features`, the gbm_cv baseline's own functions) of the texts
    ``repair`` (the dataset's ``text_repair``) makes; the encoder reads ``texts`` as given.
    """
    from aes.finetune.backbones import make_backbone
    from aes.finetune.runtime import make_accelerator, predict_batches

    started = time.perf_counter()
    accelerator = make_accelerator(ft)
    backbone = make_backbone(ft, stage)
    data = backbone.tokenize(list(texts))
    if ft["trainable_layers"] >= 0:
        data.hidden = backbone.compute_trunk(data, accelerator.device, accelerator.autocast)
    rows = np.arange(len(data.lengths))
    _, pooled = predict_batches(backbone.pristine_model().to(accelerator.device), backbone, data, rows,
                                ft["eval_batch_size"], accelerator)
    hidden = None if data.hidden is None else data.hidden.numpy().astype(np.float16)
    frozen = with_writing_features(FrozenPass(np.asarray(record_ids, dtype=str), np.asarray(data.lengths), pooled, hidden), ft, texts, repair)
    return frozen, time.perf_counter() - started


def shares_embed_pass(embed: dict, ft: dict) -> bool:
    """True when one forward pass serves ``embed`` and the fine-tune's frozen pass: same model, same max_length."""
    return embed["model"] == ft["model"] and embed["max_length"] == ft["max_length"]


def with_writing_features(frozen: FrozenPass, ft: dict, texts: list[str], repair: Callable[[str], str] | None = None) -> FrozenPass:
    """``frozen`` plus the raw writing features of ``finetune.features`` (the gbm_cv baseline's own functions),
    of each text after ``repair`` (the dataset's ``text_repair``; None: as it is)."""
    if ft["features"]:
        from aes.features import canonical_groups, writing_features

        frozen.feature_groups = tuple(canonical_groups(ft["features"]))
        frozen.features, _ = writing_features(list(texts), frozen.feature_groups, repair)
    return frozen


def normalised_pass(frozen: FrozenPass, prompts, normalise: dict) -> FrozenPass:
    """``frozen`` with its pooled output and writing features under the ``normalise`` settings (per prompt
    of ``prompts`` (n,), from each prompt's own essays; as they are under the inductive defaults).

    The fine-tunes' own pooled representation changes while they train, so they centre it themselves
    (:mod:`aes.finetune.centring`); this is the pristine model's, the linear-probe phase's input.
    """
    from aes.features.normalise import normalise_embeddings, normalise_features

    frozen.pooled = normalise_embeddings(frozen.pooled, prompts, normalise["embeddings"])
    if frozen.features is not None:
        frozen.features = normalise_features(frozen.features, prompts, normalise["features"])
    return frozen


def embed_and_freeze(embed: dict, ft: dict, texts: list[str], record_ids, stage: str,
                     repair: Callable[[str], str] | None = None) -> tuple[np.ndarray, FrozenPass, dict]:
    """The frozen baselines' embeddings (n, H) float32 and the fine-tune's frozen pass over ``texts`` (n,).

    One forward pass when :func:`shares_embed_pass`: the embeddings are the pretrained model's
    mean-pooled output (bit-identical to :func:`aes.encoders.embedding.embed_texts`), the pass's
    pooled output is the same array and, for cached training (k >= 0), its trunk is the hidden
    states after the bottom ``L - k`` layers of that same pass. Otherwise two passes. Returns
    (embeddings, pass, info) with info {shared, frozen_pass_s (the second pass's seconds; 0.0 when shared)}.
    ``repair``: the dataset's ``text_repair``, for the pass's writing features only.
    """
    from aes.encoders.embedding import (
        check_bf16,
        embed_texts,
        encode_pass,
        resolve_device,
    )

    bf16 = embed["mixed_precision"] == "bf16"
    if not shares_embed_pass(embed, ft):
        embeddings = embed_texts(list(texts), embed["model"], embed["max_length"], embed["batch_size"], device="auto", bf16=bf16)
        frozen, pass_s = compute_frozen_pass(ft, texts, record_ids, stage, repair)
        return embeddings, frozen, {"shared": False, "frozen_pass_s": round(pass_s, 1)}
    from aes.finetune.backbones import make_backbone

    device = resolve_device("auto")
    if bf16:
        check_bf16("embed.mixed_precision", "cuda" if device.startswith("cuda") else "cpu")
    backbone = make_backbone(ft, stage)  # the fine-tune's own checks (BERT-like, k <= layers) before the pass
    keep = None if ft["trainable_layers"] < 0 else backbone.n_bottom
    embeddings, hidden, lengths = encode_pass(list(texts), backbone.tokenizer, backbone.encoder, embed["max_length"],
                                              embed["batch_size"], device, desc=stage, bf16=bf16, keep_layer=keep)
    frozen = with_writing_features(FrozenPass(np.asarray(record_ids, dtype=str), lengths, embeddings, hidden), ft, texts, repair)
    return embeddings, frozen, {"shared": True, "frozen_pass_s": 0.0}


def save_frozen_pass(folder: Path, frozen: FrozenPass) -> None:
    """Write the pass to ``folder`` (files above); numpy files are written to a temp name, then renamed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in ((HIDDEN_FILE, frozen.hidden), (FEATURES_FILE, frozen.features)):
        if array is None and (folder / name).exists():
            (folder / name).unlink()  # a stale file of an earlier configuration would be read as current
    if frozen.features is None and (folder / FEATURES_INFO).exists():
        (folder / FEATURES_INFO).unlink()
    for name, array in ((POOLED_FILE, frozen.pooled), (HIDDEN_FILE, frozen.hidden), (FEATURES_FILE, frozen.features)):
        if array is not None:
            tmp = folder / f".{name}.tmp.npy"
            np.save(tmp, array)
            tmp.replace(folder / name)
    if frozen.features is not None:
        from aes.features import feature_names
        from aes.core.io import write_json

        write_json(folder / FEATURES_INFO, {"groups": list(frozen.feature_groups), "names": feature_names(frozen.feature_groups)})
    pd.DataFrame({"record_id": frozen.record_ids, "length": frozen.lengths}).to_csv(folder / IDS_FILE, index=False)


def load_frozen_pass(folder: Path, record_ids, need_hidden: bool, feature_groups=()) -> FrozenPass:
    """The stored pass, rows in the order of ``record_ids`` (n,); hidden memory-mapped until indexed.

    feature_groups: the writing-feature groups the caller needs (``finetune.features``); they must
    be exactly the groups stored. Raises AESError naming the file when it is missing, misaligned or
    lacks an essay (stale), and naming ``finetune.features`` when the stored features differ.
    """
    folder = Path(folder)
    files = [IDS_FILE, POOLED_FILE] + ([HIDDEN_FILE] if need_hidden else [])
    for name in files:
        if not (folder / name).exists():
            raise AESError(f"{folder / name}: not found; lp_cv and the fine-tuning stages read the frozen pass of stage embed: run `dvc repro embed`")
    ids = pd.read_csv(folder / IDS_FILE, dtype={"record_id": str}, keep_default_na=False)
    if list(ids.columns) != ["record_id", "length"]:
        raise AESError(f"{folder / IDS_FILE}: expected columns record_id, length; got {list(ids.columns)}")
    pooled = np.load(folder / POOLED_FILE)
    hidden = np.load(folder / HIDDEN_FILE, mmap_mode="c") if need_hidden else None
    features = None
    if feature_groups:
        import json

        stored = json.loads((folder / FEATURES_INFO).read_text())["groups"] if (folder / FEATURES_INFO).exists() else []
        check_feature_groups(stored, feature_groups, f"{folder}: the stored frozen pass")
        if not (folder / FEATURES_FILE).exists():
            raise AESError(f"{folder / FEATURES_FILE}: not found; finetune.features reads the writing features stored by stage embed: "
                           "run `dvc repro embed`")
        features = np.load(folder / FEATURES_FILE)
    for name, array in ((POOLED_FILE, pooled), (HIDDEN_FILE, hidden), (FEATURES_FILE, features)):
        if array is not None and len(array) != len(ids):
            raise AESError(f"{folder / name}: {len(array)} rows but {folder / IDS_FILE} lists {len(ids)} essays; re-run `dvc repro embed`")
    row_of = pd.Series(np.arange(len(ids)), index=ids["record_id"].to_numpy())
    wanted = pd.Series(record_ids, dtype=str)
    missing = wanted[~wanted.isin(row_of.index)]
    if len(missing):
        raise AESError(f"{folder / IDS_FILE}: no row for {len(missing)} CV essay(s) (e.g. {missing.iloc[0]!r}); "
                       "the frozen pass is stale: re-run `dvc repro embed`")
    rows = row_of.loc[wanted.to_numpy()].to_numpy()
    identity = np.array_equal(rows, np.arange(len(ids)))
    groups = ()
    if features is not None:
        from aes.features import canonical_groups

        features, groups = features[rows], tuple(canonical_groups(feature_groups))
    return FrozenPass(
        wanted.to_numpy(), ids["length"].to_numpy()[rows], pooled[rows],
        None if hidden is None else (np.asarray(hidden) if identity else hidden[rows]), features, groups,
    )
