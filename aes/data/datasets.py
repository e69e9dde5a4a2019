"""The datasets the pipeline can read, and what each declares about itself (``data.dataset`` picks one).

A dataset's own facts live with it (``aes/data/ellipse.py``, ``aes/data/asap.py``): its release
files with their sha256 and row counts, where they come from, how a file is read, which columns
hold the id, text, prompt, grade and scores, the score scale of every prompt, the split protocol
and the schema of its own settings (``data.<name>`` and ``prepare.<name>`` in params.yaml). The
rest of the code asks the chosen :class:`Dataset` instead of keeping constants of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pandas as pd

from aes.core.errors import AESError
from aes.core.scale import Scale

# The two split protocols (aes.data.splits): a locked test of whole prompts (or topics) plus grouped
# k-fold CV over the rest; or leave one prompt out, every prompt a fold, no locked test.
LOCKED_TEST = "locked_test"
LEAVE_ONE_PROMPT_OUT = "leave_one_prompt_out"


@dataclass(frozen=True)
class Release:
    """One published file. ``filename`` is relative to the dataset's folder and to its upstream URL;
    ``member`` is the table inside a zip (None for a plain table)."""

    name: str
    filename: str
    sha256: str
    rows: int
    member: str | None = None
    member_sha256: str | None = None


@dataclass(frozen=True)
class Dataset:
    """Everything the pipeline needs to know about one corpus.

    ``read_release(data, release, settings, where)`` turns a verified file's bytes into its rows as
    published (a DataFrame) and returns ``(rows, source_name, extra provenance)``; ``source_name``
    is what ``source_file`` records for those rows. ``scores`` maps each score name (the names
    ``prepare.targets`` uses, ``Overall`` first) to its column. ``scales`` is one :class:`Scale` for
    every prompt or {prompt: Scale}. ``data_settings`` / ``prepare_settings`` are the schemas of the
    params sections ``data.<name>`` and ``prepare.<name>``; ``settings_order`` (optional) fixes the
    key order of the flat prepare settings that ``splits.json`` records.
    """

    name: str
    title: str
    releases: tuple[Release, ...]
    upstream: str  # a release is fetched from f"{upstream}/{filename}"
    local_dir_env: str  # environment variable that overrides data.<name>.local_dir
    default_local_dir: str  # the local copy's folder, relative to the checkout (the params default)
    sources: tuple[str, ...]  # allowed values of data.source
    all_releases_required: bool  # False: the releases present are unioned; True: every file must be there
    read_release: Callable[[bytes, Release, dict, str], tuple[pd.DataFrame, str, dict]]
    id_column: str
    text_column: str
    prompt_column: str
    grade_column: str | None  # None: the corpus records no grade (prepared essays get grade -1)
    scores: Mapping[str, str]
    scales: Scale | Mapping[str, Scale]
    protocol: str  # LOCKED_TEST | LEAVE_ONE_PROMPT_OUT
    data_settings: Mapping[str, Any] = field(default_factory=dict)
    prepare_settings: Mapping[str, Any] = field(default_factory=dict)
    settings_order: tuple[str, ...] | None = None

    def scale_of(self, prompt: str) -> Scale:
        """The score scale of ``prompt``; AESError for a prompt the dataset declares no range for."""
        if isinstance(self.scales, Scale):
            return self.scales
        if prompt not in self.scales:
            raise AESError(
                f"{self.title}: prompt {prompt!r} has no declared score range; {self.title} declares prompts "
                f"{', '.join(self.scales)} (aes/data/{self.name}.py)"
            )
        return self.scales[prompt]

    def prompt_order(self, prompts) -> list[str]:
        """``prompts`` (distinct) in the dataset's declared order (ASAP: 1..8), else sorted."""
        prompts = set(prompts)
        if isinstance(self.scales, Scale):
            return sorted(prompts)
        return [p for p in self.scales if p in prompts] + sorted(prompts - set(self.scales))


@lru_cache(maxsize=None)
def registry() -> dict[str, Dataset]:
    """{name: Dataset} of every known dataset, the default (ELLIPSE) first.

    Imported here, not at the top: the dataset modules import this module's dataclasses.
    """
    from aes.data.asap import ASAP
    from aes.data.ellipse import ELLIPSE

    return {d.name: d for d in (ELLIPSE, ASAP)}


def get_dataset(name: str) -> Dataset:
    """The dataset named ``name``; AESError naming ``data.dataset`` for an unknown one."""
    datasets = registry()
    if name not in datasets:
        raise AESError(f"params key 'data.dataset' must be one of {', '.join(datasets)}; got {name!r}")
    return datasets[name]


def known_scores() -> tuple[str, ...]:
    """Every score name some dataset declares, in declaration order (the target columns of prepared essays)."""
    names: dict[str, None] = {}
    for dataset in registry().values():
        names.update(dict.fromkeys(dataset.scores))
    return tuple(names)


def dataset_of(params: dict) -> Dataset:
    """The dataset chosen by validated ``params`` (``data.dataset``)."""
    return get_dataset(params["data"]["dataset"])


def data_settings(params: dict) -> dict:
    """What ``fetch`` reads: ``data.source`` plus the chosen dataset's ``data.<name>`` section."""
    dataset = dataset_of(params)
    return {"source": params["data"]["source"], **params["data"][dataset.name]}


GLOBAL_PREPARE_KEYS = ("targets", "invalid_rows", "seed")


def prepare_settings(params: dict) -> dict:
    """The flat prepare settings of the chosen dataset: ``prepare.{targets, invalid_rows, seed}``
    plus its ``prepare.<name>`` section (ELLIPSE: the word window, locked test, folds, grouping).

    This dict is what ``validate_and_clean`` and the split protocol read and what ``splits.json``
    records under ``params``, in ``settings_order`` when the dataset fixes one.
    """
    dataset = dataset_of(params)
    flat = {k: params["prepare"][k] for k in GLOBAL_PREPARE_KEYS} | dict(params["prepare"][dataset.name])
    if dataset.settings_order is not None:
        flat = {k: flat[k] for k in dataset.settings_order}
    return flat


def check_dataset_keys(params: dict, source: str = "params.yaml") -> None:
    """Keys that would silently do nothing, or fail late, for the chosen dataset: AESError naming the key.

    ``data.source`` must be one the dataset supports (csv is ELLIPSE's own-CSV path); every
    ``prepare.targets`` entry must be a score the dataset has (ASAP: Overall only).
    """
    dataset = dataset_of(params)
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
