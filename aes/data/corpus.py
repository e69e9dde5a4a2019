"""ELLIPSE data: fetch (local copy, upstream GitHub or your own CSV), verify, validate, clean.

Every release file has a pinned sha256; a file that does not match is refused. Provenance
(source, files, sha256, row counts) is written next to the data so every number can be traced.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from aes.core.errors import AESError
from aes.core.io import sha256_bytes, sha256_file
from aes.core.scale import Scale
from aes.core.registry import ESSAYS

UPSTREAM = "https://raw.githubusercontent.com/scrosseye/ELLIPSE-Corpus/main"
LOCAL_DIR_ENV = "ELLIPSE_DIR"


@dataclass(frozen=True)
class Release:
    """One published ELLIPSE file. ``member`` is the CSV inside a zip (None for a plain CSV)."""

    name: str
    filename: str
    sha256: str
    rows: int
    member: str | None = None
    member_sha256: str | None = None


RELEASES = (
    Release("train", "ELLIPSE_Final_github_train.csv", "782344e99668a3ff508d7410c0eb6e36da70f3b28f81c96e367f1ca04924b06c", 3911),
    Release(
        "test",
        "ELLIPSE_Final_github_test.zip",
        "9ecddfcda83f6a99c8a24dda47fb1c30673fedeaf578a0fadac6645fd151a2f8",
        2571,
        member="ELLIPSE_Final_github_test.csv",
        member_sha256="7e990c6392a9df9554d15bdd22f0b568d19095cd6676ad39cb1eaa69c977ed7a",
    ),
)

SCALE = Scale(1.0, 5.0, 0.5)  # every ELLIPSE score, every prompt
HALF_BANDS = SCALE.grid
ID, TEXT, PROMPT, GRADE = "text_id_kaggle", "full_text", "prompt", "grade"
# ELLIPSE's seven analytic scores, each 1.0-5.0 in half bands: the holistic Overall and six traits.
SCORES = ("Overall", "Cohesion", "Syntax", "Vocabulary", "Phraseology", "Grammar", "Conventions")
# Prepared essays: these columns, then one column per prepare.targets entry (named as the score,
# in declared order, primary first); ``y`` repeats the primary score.
PREPARED_COLUMNS = ["record_id", "text", "prompt", "grade", "y", "n_words", "source_file", "source_row"]


def _verify(path: Path, expected: str, what: str) -> str:
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


def _read_release(path: Path, release: Release, password: str) -> tuple[pd.DataFrame, dict]:
    """Verify and read one release file. Returns its rows and a provenance record."""
    record = {"release": release.name, "file": release.filename, "sha256": _verify(path, release.sha256, release.filename)}
    if release.member is None:
        frame = read_csv_as_written(io.BytesIO(path.read_bytes()), str(path))
        source = release.filename
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                data = archive.read(release.member, pwd=password.encode())
        except RuntimeError as err:  # zipfile's "Bad password for file"
            raise AESError(f"{path}: cannot decrypt {release.member} ({err}); check params key data.zip_password") from None
        except (zipfile.BadZipFile, KeyError) as err:
            raise AESError(f"{path}: not a readable ELLIPSE zip ({err}); expected member {release.member}") from None
        actual = sha256_bytes(data)
        if actual != release.member_sha256:
            raise AESError(
                f"{path}!{release.member}: checksum mismatch: expected sha256 {release.member_sha256}, got {actual}"
            )
        record.update(member=release.member, member_sha256=actual)
        frame = read_csv_as_written(io.BytesIO(data), f"{path}!{release.member}")
        source = release.member
    if len(frame) != release.rows:
        raise AESError(f"{path}: expected {release.rows} rows in {source}, found {len(frame)}")
    record["rows"] = int(len(frame))
    frame["source_file"] = source
    frame["source_row"] = np.arange(1, len(frame) + 1)
    return frame, record


def _download(url: str, target: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as err:
        raise AESError(
            f"cannot download {url} ({err}); offline? set data.source: local and data.local_dir "
            f"(or ${LOCAL_DIR_ENV}) to a folder holding the release files"
        ) from None


def fetch(data_params: dict) -> tuple[pd.DataFrame, dict]:
    """Fetch and verify the corpus as configured by the ``data`` params section.

    Returns the union of the releases found (or the user's CSV), with columns as published plus
    ``source_file`` and ``source_row`` (1-based row within that file), and the provenance dict.
    """
    source = data_params["source"]
    provenance: dict = {"source": source, "files": []}
    frames = []
    if source == "csv":
        path = resolve_data_path(data_params["csv_path"])
        if not data_params["csv_path"] or not path.is_file():
            raise AESError(f"data.csv_path: file '{path}' not found (expected an ELLIPSE-shaped CSV for data.source: csv)")
        frame = read_csv_as_written(io.BytesIO(path.read_bytes()), str(path))
        frame["source_file"] = path.name
        frame["source_row"] = np.arange(1, len(frame) + 1)
        frames.append(frame)
        provenance["files"].append({"release": "own", "file": data_params["csv_path"], "sha256": sha256_file(path), "rows": int(len(frame)), "pinned": False})
    elif source == "local":
        given = os.environ.get(LOCAL_DIR_ENV) or data_params["local_dir"]
        folder = resolve_data_path(given)
        provenance["local_dir"] = given  # as given, not resolved: provenance.json stays the same on every machine
        if not folder.is_dir():
            raise AESError(
                f"data.local_dir: folder '{folder}' not found; expected a folder with "
                f"{' and/or '.join(r.filename for r in RELEASES)} (or set ${LOCAL_DIR_ENV}, or data.source: upstream)"
            )
        for release in RELEASES:
            path = folder / release.filename
            if path.is_file():
                frame, record = _read_release(path, release, data_params["zip_password"])
                frames.append(frame)
                provenance["files"].append(record | {"pinned": True})
        if not frames:
            raise AESError(f"{folder}: none of the release files {[r.filename for r in RELEASES]} is there")
    else:  # upstream
        with tempfile.TemporaryDirectory() as tmp:
            for release in RELEASES:
                url = f"{UPSTREAM}/{release.filename}"
                path = Path(tmp) / release.filename
                _download(url, path)
                frame, record = _read_release(path, release, data_params["zip_password"])
                frames.append(frame)
                provenance["files"].append(record | {"pinned": True, "url": url})
    corpus = pd.concat(frames, ignore_index=True)
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


def _row_name(frame: pd.DataFrame, i: int) -> str:
    row = frame.iloc[i]
    return f"{row['source_file']} row {int(row['source_row'])} ({ID}={row.get(ID)!r})"


def validate_and_clean(corpus: pd.DataFrame, prepare_params: dict, on_invalid: str = "error") -> tuple[pd.DataFrame, dict]:
    """Validate rows and apply the word-count window.

    Invalid rows (empty text, missing prompt, score off the half-band grid, duplicate id) raise an
    AESError naming the row, or with ``on_invalid="drop"`` are dropped and counted by reason.
    Rows outside [min_words, max_words] are always dropped and counted. Returns the prepared
    essays (``PREPARED_COLUMNS``) and the report {rows_in, rows_kept, dropped: {reason: n}}.
    """
    targets = list(prepare_params["targets"])
    required = [ID, TEXT, PROMPT, GRADE, *targets]
    missing = [c for c in required if c not in corpus.columns]
    if missing:
        files = sorted(set(corpus.get("source_file", pd.Series(["input"])).astype(str)))
        hint = ""
        if set(missing) <= set(targets):
            hint = (f"; params key prepare.targets lists {targets}: drop the missing score(s) from it "
                    "(and their finetune.target_weights), e.g. `targets: [Overall]` for a CSV with the Overall score only")
        raise AESError(f"{', '.join(files)}: missing column(s) {missing}; expected at least {required}{hint}")

    frame = corpus.reset_index(drop=True)
    text = frame[TEXT].astype("string").fillna("")
    scores = {t: pd.to_numeric(frame[t], errors="coerce") for t in targets}
    off_grid = np.column_stack([~np.isin(scores[t].to_numpy(), HALF_BANDS) for t in targets])  # (n, T); missing is off grid
    grade = pd.to_numeric(frame[GRADE], errors="coerce")
    problems = {
        "empty_text": (text.str.strip() == "").to_numpy(),
        "missing_prompt": frame[PROMPT].astype("string").fillna("").str.strip().eq("").to_numpy(),
        "score_off_grid": off_grid.any(axis=1),
        "missing_grade": grade.isna().to_numpy(),
        "duplicate_id": frame[ID].duplicated(keep="first").to_numpy(),
    }
    expected = {
        "empty_text": f"a non-empty {TEXT}",
        "missing_prompt": f"a non-empty {PROMPT}",
        "score_off_grid": "{target} on the half-band grid 1.0, 1.5, ..., 5.0",
        "missing_grade": f"a numeric {GRADE}",
        "duplicate_id": f"a {ID} not seen in an earlier row",
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
                    what, got = what.format(target=target), f"; got {target}={as_written(frame.iloc[i][target])}"
                raise AESError(f"{_row_name(frame, i)}: expected {what}{got} ({int(bad.sum())} such row(s))")
            dropped[reason] = int(bad.sum())
            keep &= ~bad

    n_words = count_words(text)
    window = (n_words >= prepare_params["min_words"]) & (n_words <= prepare_params["max_words"])
    out_of_window = keep & ~window.to_numpy()
    dropped["word_count_outside_window"] = int(out_of_window.sum())
    keep &= window.to_numpy()

    prepared = pd.DataFrame(
        {
            "record_id": frame[ID].astype(str),
            "text": text.astype(str),
            "prompt": frame[PROMPT].astype(str).str.strip(),
            "grade": grade.fillna(-1).astype(int),
            "y": scores[targets[0]].astype(float),
            "n_words": n_words,
            "source_file": frame["source_file"].astype(str),
            "source_row": frame["source_row"].astype(int),
            "score_low": SCALE.low, "score_high": SCALE.high, "score_step": SCALE.step,
            **{t: scores[t].astype(float) for t in targets},
        }
    )[keep].reset_index(drop=True)
    report = {"rows_in": int(len(frame)), "rows_kept": int(len(prepared)), "dropped": dropped}
    return prepared, report


def declared_targets(essays: pd.DataFrame) -> list[str]:
    """The targets a prepared frame carries, in declared order (primary first): its score columns.

    A frame without any (a hand-made table with only ``y``) has the single target ``y``.
    """
    return [c for c in essays.columns if c in SCORES] or ["y"]


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
