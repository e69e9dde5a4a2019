"""The frozen pass, computed once per DAG run (stage ``lp_cv``) and shared by the fine-tuning stages.

With ``finetune.trainable_layers = k >= 0`` the embeddings and the bottom layers never change, so
stage ``lp_cv`` runs them once over every CV essay at ``finetune.max_length`` and stores their
hidden states; ``finetune_cv``, ``grl_cv`` and ``dro_cv`` read them instead of recomputing them.
The same pass gives the pooled output of the untouched pretrained model, the features of the
linear-probe phase of LP-FT: ``lp_cv`` fits a ridge probe on them per fold
(:mod:`aes.baseline.linear`), reports it as its own frozen model, and the fine-tuning stages start
from that probe's head when ``finetune.lp_ft`` is on.

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


def check_feature_groups(stored, wanted, source: str) -> None:
    """AESError naming ``finetune.features`` and the stage to re-run when what ``source`` was fitted or
    computed with (``stored`` groups) is not what ``finetune.features`` asks for (``wanted``)."""
    from aes.baseline.features import canonical_groups

    stored, wanted = canonical_groups(stored), canonical_groups(wanted)
    if stored != wanted:
        raise AESError(f"{source}: made with {stored_groups_text(stored)} but finetune.features asks for "
                       f"{wanted if wanted else '[] (the text only)'}; re-run `dvc repro lp_cv`")


def compute_frozen_pass(ft: dict, texts: list[str], record_ids, stage: str) -> tuple[FrozenPass, float]:
    """Run the frozen part of ``finetune.model`` over ``texts`` (n,) once; return (pass, seconds).

    Cached training (k >= 0): tokens -> embeddings + bottom layers (stored), then the pretrained
    top layers -> mean pooling (pooled). Whole-encoder training (k = -1): only the pooled output
    of the pretrained encoder. With ``finetune.features``: the essays' raw writing features
    (:func:`aes.baseline.features.writing_features`, the gbm_cv baseline's own functions).
    """
    from aes.finetune.backbones import make_backbone
    from aes.finetune.loop import make_accelerator, predict_batches

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
    features, groups = None, ()
    if ft["features"]:
        from aes.baseline.features import canonical_groups, writing_features

        groups = tuple(canonical_groups(ft["features"]))
        features, _ = writing_features(list(texts), groups)
    return (FrozenPass(np.asarray(record_ids, dtype=str), np.asarray(data.lengths), pooled, hidden, features, groups),
            time.perf_counter() - started)


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
        from aes.baseline.features import feature_names
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
            raise AESError(f"{folder / name}: not found; the fine-tuning stages read the frozen pass of stage lp_cv: run `dvc repro lp_cv`")
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
            raise AESError(f"{folder / FEATURES_FILE}: not found; finetune.features reads the writing features stored by stage lp_cv: "
                           "run `dvc repro lp_cv`")
        features = np.load(folder / FEATURES_FILE)
    for name, array in ((POOLED_FILE, pooled), (HIDDEN_FILE, hidden), (FEATURES_FILE, features)):
        if array is not None and len(array) != len(ids):
            raise AESError(f"{folder / name}: {len(array)} rows but {folder / IDS_FILE} lists {len(ids)} essays; re-run `dvc repro lp_cv`")
    row_of = pd.Series(np.arange(len(ids)), index=ids["record_id"].to_numpy())
    wanted = pd.Series(record_ids, dtype=str)
    missing = wanted[~wanted.isin(row_of.index)]
    if len(missing):
        raise AESError(f"{folder / IDS_FILE}: no row for {len(missing)} CV essay(s) (e.g. {missing.iloc[0]!r}); "
                       "the frozen pass is stale: re-run `dvc repro lp_cv`")
    rows = row_of.loc[wanted.to_numpy()].to_numpy()
    identity = np.array_equal(rows, np.arange(len(ids)))
    groups = ()
    if features is not None:
        from aes.baseline.features import canonical_groups

        features, groups = features[rows], tuple(canonical_groups(feature_groups))
    return FrozenPass(
        wanted.to_numpy(), ids["length"].to_numpy()[rows], pooled[rows],
        None if hidden is None else (np.asarray(hidden) if identity else hidden[rows]), features, groups,
    )
