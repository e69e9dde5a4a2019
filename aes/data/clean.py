"""Validate and clean a dataset's fetched rows into the prepared essays (stage ``prepare``; ``topics`` reads their prompts).

Invalid rows (empty text, missing prompt, a score off its prompt's grid, missing grade, duplicate
id) stop the stage naming the file and row, or are dropped and counted; each row gets its prompt's
score scale; the dataset's word window (ELLIPSE's 200-1,000 words) is applied. The columns written
are the prepared-essays contract (:mod:`aes.core.prepared`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from aes.core.errors import AESError
from aes.core.scale import SCALE_COLUMNS
from aes.data.corpus import NO_GRADE
from aes.data.dataset import Dataset


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

    ``settings``: the flat prepare settings (:func:`aes.data.registry.prepare_settings`). Invalid
    rows (empty text, missing prompt, a score off its prompt's grid, missing grade where the
    dataset records one, duplicate id) raise an AESError naming the file and row, or with
    ``on_invalid="drop"`` are dropped and counted by reason. With ``min_words``/``max_words`` in
    ``settings`` (ELLIPSE's own 200-1,000-word criterion), rows outside the window are always
    dropped and counted; a dataset without them (ASAP) keeps every length. Returns the prepared
    essays (:data:`aes.core.prepared.PREPARED_COLUMNS`, one column per target, ``SCALE_COLUMNS``) and the report
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
