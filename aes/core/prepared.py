"""The columns of the prepared essays (``data/prepared/essays.csv``) and which of them are the targets.

``prepare`` writes :data:`PREPARED_COLUMNS`, then one column per ``prepare.targets`` entry (named as
the score, in declared order, primary first), then the score scale of the row's prompt
(:data:`aes.core.scale.SCALE_COLUMNS`); a split adds ``fold``. The targets are therefore every
other column, which lets the model artifacts (:mod:`aes.core.artifacts`) name them without knowing
the datasets and their score names.
"""

from __future__ import annotations

import pandas as pd

from aes.core.scale import SCALE_COLUMNS

# ``y`` repeats the primary score; ``grade`` is -1 where the corpus records none (ASAP).
PREPARED_COLUMNS = ["record_id", "text", "prompt", "grade", "y", "n_words", "source_file", "source_row"]
SPLIT_COLUMNS = ("fold",)  # added to the CV essays by aes.data.splits.cv_essays


def declared_targets(essays: pd.DataFrame) -> list[str]:
    """The targets a prepared frame carries, in declared order (primary first): its score columns,
    i.e. every column that is not one of :data:`PREPARED_COLUMNS`, ``SCALE_COLUMNS`` or ``fold``.

    A frame without any (a hand-made table with only ``y``) has the single target ``y``.
    """
    fixed = {*PREPARED_COLUMNS, *SCALE_COLUMNS, *SPLIT_COLUMNS}
    return [c for c in essays.columns if c not in fixed] or ["y"]
