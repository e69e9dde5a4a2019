"""The datasets the pipeline can read (``data.dataset`` picks one), and what is looked up through the chosen one.

Adding a dataset is one module (``aes/data/<name>.py``, declaring a :class:`~aes.data.dataset.Dataset`)
plus its line in :data:`DATASETS`; its params sections (``data.<name>``, ``prepare.<name>``) are
composed into the schema from here (:mod:`aes.data.params`).
"""

from __future__ import annotations

from aes.core.errors import AESError
from aes.data.asap import ASAP
from aes.data.dataset import Dataset
from aes.data.ellipse import ELLIPSE

DATASETS: tuple[Dataset, ...] = (ELLIPSE, ASAP)  # the default first
BY_NAME: dict[str, Dataset] = {d.name: d for d in DATASETS}


def get_dataset(name: str) -> Dataset:
    """The dataset named ``name``; AESError naming ``data.dataset`` for an unknown one."""
    if name not in BY_NAME:
        raise AESError(f"params key 'data.dataset' must be one of {', '.join(BY_NAME)}; got {name!r}")
    return BY_NAME[name]


def known_scores() -> tuple[str, ...]:
    """Every score name some dataset declares, in declaration order (the target columns of prepared essays)."""
    names: dict[str, None] = {}
    for dataset in DATASETS:
        names.update(dict.fromkeys(dataset.scores))
    return tuple(names)


def dataset_of(params: dict) -> Dataset:
    """The dataset chosen by validated ``params`` (``data.dataset``)."""
    return get_dataset(params["data"]["dataset"])


def data_settings(params: dict) -> dict:
    """What ``fetch`` reads: ``data.source`` plus the chosen dataset's ``data.<name>`` section."""
    dataset = dataset_of(params)
    return {"source": params["data"]["source"], **params["data"].get(dataset.name, {})}


GLOBAL_PREPARE_KEYS = ("targets", "invalid_rows", "seed")


def prepare_settings(params: dict) -> dict:
    """The flat prepare settings of the chosen dataset: ``prepare.{targets, invalid_rows, seed}``
    plus its ``prepare.<name>`` section (ELLIPSE: the word window, then its protocol's locked test,
    folds and grouping).

    This dict is what ``validate_and_clean`` and the split protocol read and what ``splits.json``
    records under ``params``, in ``settings_order`` when the dataset fixes one.
    """
    dataset = dataset_of(params)
    flat = {k: params["prepare"][k] for k in GLOBAL_PREPARE_KEYS} | dict(params["prepare"].get(dataset.name, {}))
    if dataset.settings_order is not None:
        flat = {k: flat[k] for k in dataset.settings_order}
    return flat


def check_dataset_keys(params: dict, source: str = "params.yaml") -> None:
    """Keys that would silently do nothing, or fail late, for the chosen dataset: AESError naming the key.

    The chosen dataset's sections ``data.<name>`` and ``prepare.<name>`` are there (optional only
    for the datasets not chosen, or when the dataset declares no keys for them); ``data.source``
    must be one the dataset supports (csv is ELLIPSE's own-CSV path); every ``prepare.targets``
    entry must be a score the dataset has (ASAP: Overall only).
    """
    dataset = dataset_of(params)
    for section, schema in (("data", dataset.data_settings), ("prepare", dataset.prepare_schema)):
        if schema and dataset.name not in params[section]:
            raise AESError(f"{source}: missing key '{section}.{dataset.name}' (the settings of data.dataset={dataset.name}: "
                           f"{', '.join(schema)})")
    src = params["data"]["source"]
    if src not in dataset.sources:
        raise AESError(f"{source}: key 'data.source' must be one of {', '.join(dataset.sources)} for data.dataset={dataset.name}; got {src!r}")
    targets = params["prepare"]["targets"]
    foreign = [t for t in targets if t not in dataset.scores]
    if foreign:
        have = ", ".join(dataset.scores)
        raise AESError(
            f"{source}: key 'prepare.targets' lists {', '.join(foreign)}, which data.dataset={dataset.name} does not have; "
            f"expected score(s) among {have} (for {dataset.name}: prepare.targets=[{have}] with one "
            f"finetune.target_weights entry each, e.g. profiles/{dataset.name}.args)"
        )
