"""The split protocols: what each keeps whole, the schema of its own settings, and how it splits.

A dataset names the protocol it uses (``Dataset.protocol``); the protocol declares the settings
it reads, which sit in the dataset's ``prepare.<name>`` section of params.yaml (ELLIPSE:
``prepare.ellipse.n_folds`` ...) beside the dataset's own (its word window). ``prepare`` applies
the chosen dataset's protocol once and writes ``splits.json``; :func:`has_locked_test` answers,
from that file, whether the protocol holds a locked test.

``locked_test``: a locked test of whole prompts (or topic clusters of prompts, from stage
``topics``) plus grouped k-fold CV over the rest. ``leave_one_prompt_out``: every prompt is one
fold, no locked test, no settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from aes.core.errors import AESError
from aes.core.schema import Choice, Float, Int, Key
from aes.data import splits
from aes.data.topics import check_topic_count


@dataclass(frozen=True)
class Protocol:
    """One split protocol.

    ``split(essays, settings, dataset_sha256, prompts, dataset, topics, section)`` returns the
    ``splits.json`` document: ``settings`` are the flat prepare settings
    (:func:`aes.data.registry.prepare_settings`), ``prompts`` the distinct prompts in the dataset's
    declared order, ``dataset`` its name, ``topics`` {prompt: topic} or None (group by prompt) and
    ``section`` the params section of the settings (``prepare.ellipse``), named by the errors.
    """

    name: str
    settings: Mapping[str, Any]  # schema of the keys it reads from the dataset's prepare.<name> section
    locked_test: bool  # whether its splits hold a locked test (only final_test reads it)
    split: Callable[..., dict]


def _locked_test(essays: pd.DataFrame, settings: dict, dataset_sha256: str, prompts: list[str], dataset: str,
                 topics: dict[str, str] | None, section: str) -> dict:
    if topics is not None:
        check_topic_count(topics, settings, section)
    return splits.build_splits(essays, settings, dataset_sha256, topics, section)


def _leave_one_prompt_out(essays: pd.DataFrame, settings: dict, dataset_sha256: str, prompts: list[str], dataset: str,
                          topics: dict[str, str] | None, section: str) -> dict:
    return splits.leave_one_prompt_out(essays, settings, dataset_sha256, prompts, dataset)


LOCKED_TEST = Protocol(
    name=splits.LOCKED_TEST,
    settings={
        "test_fraction": Float(gt=0, lt=1),  # share of essays in the locked test (whole prompts)
        "test_candidates": Int(ge=1),  # random prompt subsets tried; the closest in size and score mix wins
        "n_folds": Int(ge=2),  # grouped CV folds over the non-test essays
        "groups": Choice("prompt", "topic"),  # the unit the locked test and the CV folds keep whole
        "topic_model": Key(str),  # groups: topic embeds the prompt NAMES with this encoder (stage topics)
        "topic_similarity": Float(gt=0, le=1),  # ... and joins prompts at least this alike
    },
    locked_test=True,
    split=_locked_test,
)
LEAVE_ONE_PROMPT_OUT = Protocol(name=splits.LEAVE_ONE_PROMPT_OUT, settings={}, locked_test=False, split=_leave_one_prompt_out)
PROTOCOLS = {p.name: p for p in (LOCKED_TEST, LEAVE_ONE_PROMPT_OUT)}


def protocol_of(splits_doc: dict) -> Protocol:
    """The protocol that wrote ``splits_doc`` (a ``splits.json`` without ``protocol`` is the locked
    test's, which records none)."""
    name = splits_doc.get("protocol", LOCKED_TEST.name)
    if name not in PROTOCOLS:
        raise AESError(f"splits.json: unknown protocol {name!r}; expected one of {', '.join(PROTOCOLS)} (re-run prepare)")
    return PROTOCOLS[name]


def has_locked_test(splits_doc: dict) -> bool:
    """Whether ``splits_doc`` (``splits.json``) holds a locked test: the rule of the protocol that wrote it
    (False for leave one prompt out, where every prompt is already scored out of fold)."""
    return protocol_of(splits_doc).locked_test
