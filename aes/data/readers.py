"""Readers of the published tables: a CSV as written, and a tab-separated table in a declared encoding.

Each dataset's ``read_release`` (``aes/data/<name>.py``) turns a verified file's bytes into rows
with these; ``prepare`` and ``topics`` read fetch's ``data/raw/corpus.csv`` with
:func:`read_csv_as_written`.
"""

from __future__ import annotations

import codecs
import io
import re

import pandas as pd

from aes.core.errors import AESError


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
