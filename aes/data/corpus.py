"""Shared helpers of every dataset: fetch (local copy, upstream or your own CSV), verify, read, validate, clean.

What is particular to a corpus (its files and checksums, reader, columns, scores, score scales and
split protocol) is declared by its :class:`aes.data.datasets.Dataset` (``aes/data/ellipse.py``,
``aes/data/asap.py``); the functions here take that declaration. Every release file has a pinned
sha256; a file that does not match is refused. Provenance (dataset, source, files, sha256, row
counts) is written next to the data so every number can be traced.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from aes.core.errors import AESError
from aes.core.io import sha256_file
from aes.core.registry import ESSAYS
from aes.core.scale import SCALE_COLUMNS

if TYPE_CHECKING:
    from aes.data.datasets import Dataset, Release

# Prepared essays: these columns, then one column per prepare.targets entry (named as the score, in
# declared order, primary first), then the score scale of the row's prompt (aes.core.scale.SCALE_COLUMNS);
# ``y`` repeats the primary score.
PREPARED_COLUMNS = ["record_id", "text", "prompt", "grade", "y", "n_words", "source_file", "source_row"]
NO_GRADE = -1  # the grade of an essay whose corpus records none (ASAP), and of a missing one


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


def read_csv_as_written(source, where: str, dtype: dict | None = None) -> pd.DataFrame:
    """Read a CSV where only an empty cell is missing: ``N/A``, ``null`` ... stay the text the person wrote,
    so an error can quote it."""
    try:
        return pd.read_csv(source, encoding="utf-8", keep_default_na=False, na_values=[""], dtype=dtype)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise AESError(f"{where}: cannot be read as a UTF-8 CSV: {err}") from None


# Single-byte encodings decode any byte sequence, so reading a UTF-8 file with them never fails: it
# silently turns every non-ASCII character into two or three wrong ones ('é' -> 'Ã©'). For these the
# reader refuses bytes that are valid multi-byte UTF-8 instead.
_NEVER_FAILING = {"iso8859-1", "cp1252"}


def _first_utf8_multibyte(data: bytes) -> int | None:
    """Offset of the first non-ASCII byte when ``data`` is valid UTF-8 with non-ASCII text, else None."""
    first = re.search(rb"[\x80-\xff]", data)
    if first is None:
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None  # not UTF-8: a single-byte text with accented letters
    return first.start()


def decode_text(data: bytes, encoding: str, where: str) -> str:
    """``data`` decoded with the declared ``encoding``; AESError naming ``where`` when it is not that encoding."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        bad = data[err.start:err.end].hex(" ")
        raise AESError(f"{where}: not {encoding} text (byte(s) {bad} at offset {err.start}); expected a file encoded in {encoding}") from None
    if codecs.lookup(encoding).name in _NEVER_FAILING:
        at = _first_utf8_multibyte(data)
        if at is not None:
            length = 2 if data[at] < 0xE0 else 3 if data[at] < 0xF0 else 4  # from the UTF-8 lead byte
            raise AESError(
                f"{where}: looks UTF-8-encoded (multi-byte UTF-8 sequence at offset {at}: {data[at:at + length].hex(' ')}), "
                f"but the file is declared {encoding}; expected a file encoded in {encoding}"
            )
    return text


def read_tsv(data: bytes, where: str, encoding: str, columns: list[str], id_column: str) -> pd.DataFrame:
    """A tab-separated table with a header row, decoded with the declared ``encoding``.

    Fields may be quoted with ``"`` (a quote inside doubled), as ASAP's essays are. Only an empty
    cell is missing; ``id_column`` is read as text. AESError naming ``where`` for a wrong encoding,
    an unparseable table or a missing one of ``columns``.
    """
    text = decode_text(data, encoding, where)
    try:
        frame = pd.read_csv(io.StringIO(text), sep="\t", keep_default_na=False, na_values=[""], dtype={id_column: str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise AESError(f"{where}: cannot be read as a tab-separated table: {err}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise AESError(f"{where}: missing column(s) {missing}; expected a header row with at least {columns} (tab-separated)")
    return frame


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
    """Fetch and verify ``dataset`` as configured by ``settings`` (:func:`aes.data.datasets.data_settings`:
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


def count_words(text: pd.Series) -> pd.Series:
    """Whitespace-separated tokens per essay (reproduces the corpus' 200-1,000-word count)."""
    return text.fillna("").astype(str).str.split().str.len().astype(int)


def as_written(value) -> str:
    """A cell value as the person wrote it: ``3.25``, ``'N/A'``, ``an empty cell`` (never ``np.float64(3.25)``)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "an empty cell"
    if isinstance(value, (int, float)):
        return repr(value)
    try:
        float(value)
        return str(value)  # numeric text: '3.25' is shown as 3.25
    except ValueError:
        return repr(str(value))


def _row_name(frame: pd.DataFrame, i: int, id_column: str) -> str:
    row = frame.iloc[i]
    return f"{row['source_file']} row {int(row['source_row'])} ({id_column}={row.get(id_column)!r})"


def row_scales(prompts: pd.Series, dataset: Dataset, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """{column of SCALE_COLUMNS: (n,) float} the score scale of each row's prompt.

    A prompt the dataset declares no range for is an AESError naming the prompt and its first row,
    whatever ``prepare.invalid_rows`` says: dropping it would silently drop a whole prompt.
    """
    scales = {}
    for prompt in pd.unique(prompts):
        if prompt == "":
            continue  # a missing prompt: reported per row as missing_prompt
        try:
            scales[prompt] = dataset.scale_of(prompt)
        except AESError as err:
            first = int(np.flatnonzero((prompts == prompt).to_numpy())[0])
            raise AESError(f"{_row_name(rows, first, dataset.id_column)}: {err}") from None
    cols = {c: np.full(len(prompts), np.nan) for c in SCALE_COLUMNS}
    for prompt, scale in scales.items():
        rows_of = (prompts == prompt).to_numpy()
        for column, value in zip(SCALE_COLUMNS, (scale.low, scale.high, scale.step)):
            cols[column][rows_of] = float(value)
    return cols


def _off_scale(y: np.ndarray, prompts: pd.Series, dataset: Dataset) -> np.ndarray:
    """(n,) bool: the score is not on its prompt's grid (missing, out of range or between grid points)."""
    off = np.ones(len(y), dtype=bool)  # a missing prompt has no scale: off (reported as missing_prompt first)
    for prompt in pd.unique(prompts):
        if prompt != "":
            rows_of = (prompts == prompt).to_numpy()
            off[rows_of] = ~dataset.scale_of(prompt).on_grid(y[rows_of])
    return off


def validate_and_clean(corpus: pd.DataFrame, settings: dict, dataset: Dataset, on_invalid: str = "error") -> tuple[pd.DataFrame, dict]:
    """Validate rows, attach each row's score scale and apply the word-count window (if the dataset has one).

    ``settings``: the flat prepare settings (:func:`aes.data.datasets.prepare_settings`). Invalid
    rows (empty text, missing prompt, a score off its prompt's grid, missing grade where the
    dataset records one, duplicate id) raise an AESError naming the file and row, or with
    ``on_invalid="drop"`` are dropped and counted by reason. With ``min_words``/``max_words`` in
    ``settings`` (ELLIPSE's own 200-1,000-word criterion), rows outside the window are always
    dropped and counted; a dataset without them (ASAP) keeps every length. Returns the prepared
    essays (``PREPARED_COLUMNS``, one column per target, ``SCALE_COLUMNS``) and the report
    {rows_in, rows_kept, dropped: {reason: n}}.
    """
    targets = list(settings["targets"])
    columns = {t: dataset.scores[t] for t in targets if t in dataset.scores}
    unknown = [t for t in targets if t not in dataset.scores]
    if unknown:
        raise AESError(f"params key 'prepare.targets' lists {unknown}, which {dataset.title} does not have; expected among {list(dataset.scores)}")
    ident, text_col, prompt_col, grade_col = dataset.id_column, dataset.text_column, dataset.prompt_column, dataset.grade_column
    required = [ident, text_col, prompt_col, *([grade_col] if grade_col else []), *columns.values()]
    missing = [c for c in required if c not in corpus.columns]
    if missing:
        files = sorted(set(corpus.get("source_file", pd.Series(["input"])).astype(str)))
        hint = ""
        if set(missing) <= set(columns.values()):
            hint = (f"; params key prepare.targets lists {targets}: drop the missing score(s) from it "
                    "(and their finetune.target_weights), e.g. `targets: [Overall]` for a CSV with the Overall score only")
        raise AESError(f"{', '.join(files)}: missing column(s) {missing}; expected at least {required}{hint}")

    frame = corpus.reset_index(drop=True)
    text = frame[text_col].astype("string").fillna("")
    prompts = frame[prompt_col].astype("string").fillna("").str.strip().astype(str)
    scale_cols = row_scales(prompts, dataset, frame)
    scores = {t: pd.to_numeric(frame[c], errors="coerce") for t, c in columns.items()}
    off_grid = np.column_stack([_off_scale(scores[t].to_numpy(dtype=float), prompts, dataset) for t in targets])  # (n, T)
    # ASAP records no grade: every essay gets NO_GRADE, and no row is invalid for it.
    grade = pd.to_numeric(frame[grade_col], errors="coerce") if grade_col else pd.Series(NO_GRADE, index=frame.index)
    problems = {
        "empty_text": (text.str.strip() == "").to_numpy(),
        "missing_prompt": (prompts == "").to_numpy(),
        "score_off_grid": off_grid.any(axis=1),
        "missing_grade": grade.isna().to_numpy(),
        "duplicate_id": frame[ident].duplicated(keep="first").to_numpy(),
    }
    expected = {
        "empty_text": f"a non-empty {text_col}",
        "missing_prompt": f"a non-empty {prompt_col}",
        "score_off_grid": "{target} on the score grid {grid} of {title} prompt {prompt!r}",
        "missing_grade": f"a numeric {grade_col}",
        "duplicate_id": f"a {ident} not seen in an earlier row",
    }
    dropped: dict[str, int] = {}
    keep = np.ones(len(frame), dtype=bool)
    for reason, bad in problems.items():
        bad = bad & keep
        if bad.any():
            if on_invalid == "error":
                i = int(np.flatnonzero(bad)[0])
                what, got = expected[reason], ""
                if reason == "score_off_grid":  # name the row's first off-grid score (prepare.targets order)
                    target = targets[int(np.flatnonzero(off_grid[i])[0])]
                    prompt = prompts.iloc[i]
                    what = what.format(target=target, grid=dataset.scale_of(prompt).describe(), title=dataset.title, prompt=prompt)
                    got = f"; got {target}={as_written(frame.iloc[i][columns[target]])}"
                raise AESError(f"{_row_name(frame, i, ident)}: expected {what}{got} ({int(bad.sum())} such row(s))")
            dropped[reason] = int(bad.sum())
            keep &= ~bad

    n_words = count_words(text)
    if "min_words" in settings:
        window = ((n_words >= settings["min_words"]) & (n_words <= settings["max_words"])).to_numpy()
        dropped["word_count_outside_window"] = int((keep & ~window).sum())
        keep &= window

    prepared = pd.DataFrame(
        {
            "record_id": frame[ident].astype(str),
            "text": text.astype(str),
            "prompt": prompts,
            "grade": grade.fillna(NO_GRADE).astype(int),
            "y": scores[targets[0]].astype(float),
            "n_words": n_words,
            "source_file": frame["source_file"].astype(str),
            "source_row": frame["source_row"].astype(int),
            **{t: scores[t].astype(float) for t in targets},
            **scale_cols,
        }
    )[keep].reset_index(drop=True)
    report = {"rows_in": int(len(frame)), "rows_kept": int(len(prepared)), "dropped": dropped}
    return prepared, report


def declared_targets(essays: pd.DataFrame) -> list[str]:
    """The targets a prepared frame carries, in declared order (primary first): its score columns.

    A frame without any (a hand-made table with only ``y``) has the single target ``y``.
    """
    from aes.data.datasets import (
        known_scores,  # here: the dataset modules import this one
    )

    scores = known_scores()  # every score name some dataset declares
    return [c for c in essays.columns if c in scores] or ["y"]


def target_matrix(essays: pd.DataFrame, targets: list[str] | None = None) -> np.ndarray:
    """(n, T) float64 training targets: the scores of ``targets`` (default :func:`declared_targets`,
    primary first) min-max normalised to [0, 1] on each essay's own scale (its prompt's range).

    Every model trains on these and predicts them; :func:`aes.core.artifacts.make_oof_frame` maps
    predictions back to score points. One scale for all prompts (ELLIPSE) makes this an affine map.
    """
    from aes.core.scale import scale_arrays, to_unit

    targets = declared_targets(essays) if targets is None else targets
    low, high, _ = scale_arrays(essays)
    return to_unit(essays[list(targets)].to_numpy(dtype=np.float64), low, high)


def load_essays(path: str | Path = ESSAYS) -> pd.DataFrame:
    """Read prepared essays (columns ``PREPARED_COLUMNS``)."""
    path = Path(path)
    if not path.exists():
        raise AESError(f"{path}: prepared essays not found; run `dvc repro prepare` first")
    frame = pd.read_csv(path, dtype={"record_id": str, "prompt": str, "text": str}, keep_default_na=False)
    missing = [c for c in PREPARED_COLUMNS if c not in frame.columns]
    if missing:
        raise AESError(f"{path}: missing columns {missing}; expected {PREPARED_COLUMNS} (re-run prepare)")
    return frame
