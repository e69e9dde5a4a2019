"""The chosen dataset's split protocol applied to its prepared essays (stage ``prepare`` only).

Its own module, not part of :mod:`aes.data.splits`: grouping by topic embeds the prompt names with
an encoder (:mod:`aes.data.topics` -> :mod:`aes.encoders`), and the many stages that read splits
must not depend on the encoders' code.
"""

from __future__ import annotations

import pandas as pd

from aes.core.errors import AESError
from aes.data.datasets import LEAVE_ONE_PROMPT_OUT, LOCKED_TEST, Dataset
from aes.data.splits import build_splits, leave_one_prompt_out
from aes.data.topics import holdout_topics


def split_essays(essays: pd.DataFrame, dataset: Dataset, settings: dict, dataset_sha256: str) -> dict:
    """The ``splits.json`` document of ``dataset``'s protocol for the prepared ``essays``.

    ``settings``: :func:`aes.data.datasets.prepare_settings`. Locked test: grouped by prompt, or by
    topic cluster with ``groups: topic`` (computes the topics, :mod:`aes.data.topics`).
    """
    if dataset.protocol == LOCKED_TEST:
        topics = holdout_topics(settings, essays["prompt"].tolist())  # None: group by prompt
        return build_splits(essays, settings, dataset_sha256, topics)
    if dataset.protocol == LEAVE_ONE_PROMPT_OUT:
        prompts = dataset.prompt_order(essays["prompt"].unique())
        return leave_one_prompt_out(essays, settings, dataset_sha256, prompts, dataset.name)
    raise AESError(f"{dataset.title}: unknown split protocol {dataset.protocol!r}; expected {LOCKED_TEST} or {LEAVE_ONE_PROMPT_OUT}")
