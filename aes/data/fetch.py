"""Fetch a dataset's rows (its pinned release files from a local copy or upstream, or your own CSV), checksum-verified.

What is particular to a corpus (its files and checksums, reader, columns) is declared by its
:class:`aes.data.dataset.Dataset` (``aes/data/ellipse.py``, ``aes/data/asap.py``); the functions
here take that declaration. Every release file has a pinned sha256; a file that does not match is
refused. Provenance (dataset, source, files, sha256, row counts) is written next to the data so
every number can be traced. :func:`read_fetched` reads back what stage ``fetch`` wrote.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from aes.core.errors import AESError
from aes.core.io import sha256_file
from aes.core.registry import RAW_CSV
from aes.data.dataset import Dataset, Release
from aes.data.readers import read_csv_as_written


def verify_file(path: Path, expected: str, what: str) -> str:
    """sha256 of ``path``; AESError naming the file when it is not ``expected``."""
    actual = sha256_file(path)
    if actual != expected:
        raise AESError(f"{path}: checksum mismatch for {what}: expected sha256 {expected}, got {actual}")
    return actual


def project_root() -> Path:
    """The folder `dvc` was run in: ``$DVC_ROOT``, else the working directory.

    DVC runs queued and ``--temp`` experiments in a copy under ``.dvc/tmp/exps/`` but sets
    ``DVC_ROOT`` to the original repository, so a path relative to the checkout (the default
    ``../shared/ellipse``) means the same folder in every kind of run.
    """
    return Path(os.environ.get("DVC_ROOT") or ".")


def resolve_data_path(value: str) -> Path:
    """A data path param as a path: ``~`` expanded, a relative one taken from :func:`project_root`."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else project_root() / path


def read_release_file(path: Path, release: Release, dataset: Dataset, settings: dict) -> tuple[pd.DataFrame, dict]:
    """Verify and read one release file. Returns its rows (plus ``source_file``, ``source_row``) and a provenance record."""
    record = {"release": release.name, "file": release.filename, "sha256": verify_file(path, release.sha256, release.filename)}
    frame, source, extra = dataset.read_release(path.read_bytes(), release, settings, str(path))
    record.update(extra)
    if len(frame) != release.rows:
        raise AESError(f"{path}: expected {release.rows} rows in {source}, found {len(frame)}")
    record["rows"] = int(len(frame))
    frame["source_file"] = source
    frame["source_row"] = np.arange(1, len(frame) + 1)
    return frame, record


def _download(url: str, target: Path, dataset: Dataset) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as err:
        raise AESError(
            f"cannot download {url} ({err}); offline? set data.source: local and data.{dataset.name}.local_dir "
            f"(or ${dataset.local_dir_env}) to a folder holding the release files"
        ) from None


def _own_csv(settings: dict, dataset: Dataset) -> tuple[pd.DataFrame, dict]:
    """``data.source: csv``: the user's CSV in the dataset's own shape; not pinned, its sha256 recorded."""
    key = f"data.{dataset.name}.csv_path"
    path = resolve_data_path(settings["csv_path"])
    if not settings["csv_path"] or not path.is_file():
        raise AESError(f"{key}: file '{path}' not found (expected an {dataset.title}-shaped CSV for data.source: csv)")
    frame = read_csv_as_written(io.BytesIO(path.read_bytes()), str(path))
    if frame.empty:  # caught here, where the file is known; later checks see only an empty table
        raise AESError(f"{path}: has no essays (a header row and no data rows); expected an {dataset.title}-shaped CSV with one essay per row")
    frame["source_file"] = path.name
    frame["source_row"] = np.arange(1, len(frame) + 1)
    return frame, {"release": "own", "file": settings["csv_path"], "sha256": sha256_file(path), "rows": int(len(frame)), "pinned": False}


def _local(settings: dict, dataset: Dataset, provenance: dict) -> list[tuple[pd.DataFrame, dict]]:
    """``data.source: local``: the release files present in the dataset's folder (all of them if it needs all)."""
    given = os.environ.get(dataset.local_dir_env) or settings["local_dir"] or dataset.default_local_dir
    folder = resolve_data_path(given)
    provenance["local_dir"] = given  # as given, not resolved: provenance.json stays the same on every machine
    names = [r.filename for r in dataset.releases]
    if not folder.is_dir():
        raise AESError(
            f"data.{dataset.name}.local_dir: folder '{folder}' not found; expected a folder with "
            f"{' and '.join(names) if dataset.all_releases_required else ' and/or '.join(names)} "
            f"(or set ${dataset.local_dir_env}, or data.source: upstream)"
        )
    missing = [n for n in names if not (folder / n).is_file()]
    if dataset.all_releases_required and missing:
        raise AESError(f"{folder}: missing {missing}; {dataset.title} needs every one of {names} (data.{dataset.name}.local_dir)")
    if len(missing) == len(names):
        raise AESError(f"{folder}: none of the release files {names} is there")
    return [read_release_file(folder / r.filename, r, dataset, settings) for r in dataset.releases if (folder / r.filename).is_file()]


def _upstream(settings: dict, dataset: Dataset) -> list[tuple[pd.DataFrame, dict]]:
    """``data.source: upstream``: every release file downloaded from the dataset's pinned upstream."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for release in dataset.releases:
            url = f"{dataset.upstream}/{release.filename}"
            path = Path(tmp) / release.filename
            _download(url, path, dataset)
            frame, record = read_release_file(path, release, dataset, settings)
            out.append((frame, record | {"url": url}))
    return out


def fetch(dataset: Dataset, settings: dict) -> tuple[pd.DataFrame, dict]:
    """Fetch and verify ``dataset`` as configured by ``settings`` (:func:`aes.data.registry.data_settings`:
    ``source`` plus the dataset's ``data.<name>`` keys).

    Returns the union of the releases found (or the user's CSV), with columns as published plus
    ``source_file`` and ``source_row`` (1-based row within that file), and the provenance dict
    {dataset, source, files: [{release, file, sha256, rows, pinned, ...}], rows}.
    """
    source = settings["source"]
    if source not in dataset.sources:
        raise AESError(f"data.source: {source!r} is not a source of data.dataset={dataset.name}; expected one of {', '.join(dataset.sources)}")
    provenance: dict = {"dataset": dataset.name, "source": source, "files": []}
    if source == "csv":
        frame, record = _own_csv(settings, dataset)
        found = [(frame, record)]
    elif source == "local":
        found = [(frame, record | {"pinned": True}) for frame, record in _local(settings, dataset, provenance)]
    else:
        found = [(frame, record | {"pinned": True}) for frame, record in _upstream(settings, dataset)]
    provenance["files"] = [record for _, record in found]
    corpus = pd.concat([frame for frame, _ in found], ignore_index=True)
    provenance["rows"] = int(len(corpus))
    return corpus, provenance


def read_fetched(dataset: Dataset, path: str | Path = RAW_CSV) -> pd.DataFrame:
    """The rows stage ``fetch`` wrote (columns as published plus ``source_file``, ``source_row``), ids as text."""
    path = Path(path)
    if not path.exists():
        raise AESError(f"{path}: not found; run `dvc repro fetch` first")
    return read_csv_as_written(path, str(path), dtype={dataset.id_column: str})
