"""The embeddings artifact on disk (``data/embeddings``): a float32 matrix and its row-aligned ids.

Its own module so that the stages that only read embeddings (gbm_cv, linear_cv) depend on this
file and not on the encoder code that computes them (:mod:`aes.encoders.embedding`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from aes.core.errors import AESError

EMBEDDINGS_FILE = "embeddings.npy"
RECORD_IDS_FILE = "record_ids.csv"


def save_embeddings(folder: Path, embeddings: np.ndarray, record_ids) -> None:
    """Write ``embeddings.npy`` (n, H) float32 and the row-aligned ``record_ids.csv``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = pd.DataFrame({"record_id": pd.Series(record_ids, dtype=str).to_numpy()})
    if len(ids) != len(embeddings):
        raise AESError(f"{len(embeddings)} embedding rows but {len(ids)} record ids")
    tmp = folder / (EMBEDDINGS_FILE + ".tmp.npy")
    np.save(tmp, np.asarray(embeddings, dtype=np.float32))
    tmp.replace(folder / EMBEDDINGS_FILE)
    ids.to_csv(folder / RECORD_IDS_FILE, index=False)


def load_embeddings(folder: Path, record_ids) -> np.ndarray:
    """Rows of ``embeddings.npy`` for ``record_ids``, in that order: (len(record_ids), H) float32.

    Raises AESError if the files are missing, misaligned or lack an id (stale embeddings).
    """
    folder = Path(folder)
    emb_path, ids_path = folder / EMBEDDINGS_FILE, folder / RECORD_IDS_FILE
    for path in (emb_path, ids_path):
        if not path.exists():
            raise AESError(f"{path}: not found; run `dvc repro embed` first")
    embeddings = np.load(emb_path)
    stored = pd.read_csv(ids_path, dtype={"record_id": str}, keep_default_na=False)["record_id"]
    if embeddings.ndim != 2 or len(stored) != len(embeddings):
        raise AESError(f"{emb_path}: shape {embeddings.shape} does not match {len(stored)} ids in {ids_path}")
    row_of = pd.Series(np.arange(len(stored)), index=stored.to_numpy())
    wanted = pd.Series(record_ids, dtype=str)
    missing = wanted[~wanted.isin(row_of.index)]
    if len(missing):
        raise AESError(
            f"{ids_path}: {len(missing)} essay(s) have no embedding (e.g. record_id {missing.iloc[0]!r}); "
            "the embeddings are stale, re-run `dvc repro embed`"
        )
    return embeddings[row_of.loc[wanted.to_numpy()].to_numpy()].astype(np.float32, copy=False)
