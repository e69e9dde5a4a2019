"""The building blocks of a params schema: one :class:`Key` per leaf param (type, choices, range).

Its own module so that the datasets (``aes.data.ellipse``, ``aes.data.asap``) and the split protocols
(``aes.data.protocols``) can declare the schema of their own settings without importing the
validation machinery (``aes.core.params``); ``aes.data.params`` composes them into the whole schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Key:
    """One leaf param: its type and, optionally, allowed values, bounds and minimum list length.

    ``float`` keys accept ints (cast to float). Bounds: ``ge``/``gt`` below, ``le``/``lt`` above.
    """

    type: type
    choices: tuple | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    min_len: int | None = None
    item: type | None = None  # lists: the type of every item (float items accept ints)
    item_choices: tuple | None = None  # lists: allowed item values
    unique: bool = False  # lists: no item twice

    def range_text(self) -> str:
        low = f">= {self.ge:g}" if self.ge is not None else f"> {self.gt:g}" if self.gt is not None else ""
        high = f"<= {self.le:g}" if self.le is not None else f"< {self.lt:g}" if self.lt is not None else ""
        return " and ".join(t for t in (low, high) if t)

    def in_range(self, value) -> bool:
        return not (
            (self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le) or (self.lt is not None and value >= self.lt)
        )


def Int(ge=None, gt=None, le=None, lt=None) -> Key:  # noqa: N802 - reads like a type in the schema
    return Key(int, ge=ge, gt=gt, le=le, lt=lt)


def Float(ge=None, gt=None, le=None, lt=None) -> Key:  # noqa: N802
    return Key(float, ge=ge, gt=gt, le=le, lt=lt)


def Choice(*values: str) -> Key:  # noqa: N802
    return Key(str, choices=values)


def ListOf(item: type, choices: tuple | None = None, unique: bool = True) -> Key:  # noqa: N802
    """A non-empty list of ``item`` values (distinct unless ``unique=False``)."""
    return Key(list, min_len=1, item=item, item_choices=choices, unique=unique)


@dataclass(frozen=True)
class OptionalSection:
    """A section that may be left out of the params file (a dataset's settings when another dataset
    is chosen); when present, its keys are checked against ``schema`` like any section's."""

    schema: dict[str, Any] = field(default_factory=dict)
