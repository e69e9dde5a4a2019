"""User-facing errors: one clear message, no traceback from deep inside a library."""

from __future__ import annotations

import functools
import sys


class AESError(Exception):
    """Bad input or configuration. The message names the file, row or key and what was expected."""


def stage_main(func):
    """Decorate a stage's ``main`` so an :class:`AESError` prints one line and exits with code 2.

    Anything else is a bug and keeps its traceback.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except AESError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
