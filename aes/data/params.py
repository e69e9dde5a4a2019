"""``load_params``: params.yaml read and validated against the whole schema, the datasets' sections included.

The schema is composed here, the lowest layer that knows both halves: the sections no dataset
owns and the validation machinery come from :mod:`aes.core.params` (which imports nothing above
``aes.core``), and the dataset keys from the registry (:mod:`aes.data.registry`): ``data.dataset``
is one of the registered datasets, ``data.source`` one of the source kinds
(:data:`aes.data.dataset.SOURCES`), ``prepare.targets`` scores some dataset declares, and each
dataset's ``data.<name>`` / ``prepare.<name>`` sections are optional (checked when present; the
chosen dataset's must be there when it declares keys). Every stage already depends on ``aes/data``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aes.core import params as core
from aes.core.schema import Choice, ListOf, OptionalSection
from aes.data.dataset import SOURCES
from aes.data.registry import BY_NAME, DATASETS, check_dataset_keys, known_scores

SCHEMA: dict[str, Any] = {
    **core.BASE_SCHEMA,
    "data": {
        "dataset": Choice(*BY_NAME),
        "source": Choice(*SOURCES),  # check_dataset_keys: one the chosen dataset supports
        **{d.name: OptionalSection(dict(d.data_settings)) for d in DATASETS},
    },
    "prepare": {
        **core.BASE_SCHEMA["prepare"],
        "targets": ListOf(str, choices=known_scores()),  # check_dataset_keys: scores the chosen dataset has
        **{d.name: OptionalSection(d.prepare_schema) for d in DATASETS},
    },
}


def validate(params: Any, source: str = "params.yaml") -> dict:
    """Check ``params`` against :data:`SCHEMA` (keys, types, ranges); return it with float keys cast to float."""
    return core.validate(params, SCHEMA, "", source)


def check_cross_keys(params: dict, source: str = "params.yaml") -> dict:
    """The rules tying keys together: the chosen dataset's (:func:`aes.data.registry.check_dataset_keys`),
    then the pipeline's (:func:`aes.core.params.check_cross_keys`); returns ``params`` unchanged."""
    check_dataset_keys(params, source)
    return core.check_cross_keys(params, source)


def load_params(path: str | Path = "params.yaml") -> dict:
    """Read and validate the params file. Returns the nested dict."""
    return check_cross_keys(validate(core.read_params_file(path), str(path)), str(path))


def with_overrides(params: dict, overrides: dict[str, Any], source: str = "overrides") -> dict:
    """A validated copy of ``params`` with dotted ``overrides`` ({"finetune.epochs": 2}) applied."""
    return check_cross_keys(validate(core.apply_overrides(params, overrides, source), source), source)
