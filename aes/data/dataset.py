"""What a dataset declares about itself: :class:`Dataset` and its :class:`Release` files.

A dataset's own facts live with it, one module each (``aes/data/ellipse.py``, ``aes/data/asap.py``):
its release files with their sha256 and row counts, where they come from, how a file is read,
which columns hold the id, text, prompt, grade and scores, the score scale of every prompt, the
split protocol it uses (:mod:`aes.data.protocols`) and the schema of its own settings
(``data.<name>`` and ``prepare.<name>`` in params.yaml). :mod:`aes.data.registry` lists the
datasets; the rest of the code asks the chosen :class:`Dataset` instead of keeping constants of
its own. This module imports no dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pandas as pd

from aes.core.errors import AESError
from aes.core.scale import Scale
from aes.data.protocols import Protocol

# Where fetch can take a dataset's rows from (data.source): its pinned release files from a local
# folder or from upstream, or the user's own CSV in the dataset's shape. A dataset lists those it supports.
SOURCES = ("local", "upstream", "csv")


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


class Published(NamedTuple):
    """A result published under a dataset's protocol: ``qwk`` its mean QWK, ``inputs`` what it reads,
    ``transductive`` what it reads of the unseen prompt's essays, never their scores, in the words the
    project's own labels use ("" when nothing: an inductive system)."""

    system: str
    qwk: float
    inputs: str
    transductive: str = ""


@dataclass(frozen=True)
class Dataset:
    """Everything the pipeline needs to know about one corpus.

    ``read_release(data, release, settings, where)`` turns a verified file's bytes into its rows as
    published (a DataFrame) and returns ``(rows, source_name, extra provenance)``; ``source_name``
    is what ``source_file`` records for those rows. ``scores`` maps each score name (the names
    ``prepare.targets`` uses, ``Overall`` first) to its column. ``scales`` is one :class:`Scale` for
    every prompt or {prompt: Scale}. ``data_settings`` is the schema of the params section
    ``data.<name>``; ``prepare.<name>`` holds ``prepare_settings`` (the dataset's own, e.g. its word
    window) followed by its protocol's settings (:attr:`prepare_schema`). ``settings_order``
    (optional) fixes the key order of the flat prepare settings that ``splits.json`` records.
    ``text_repair`` undoes artefacts of the corpus's release in one essay before its writing features
    are computed (the encoders read the text as released); None: the texts are used as they are.
    ``published`` lists results published under the dataset's protocol (:class:`Published`), for the
    README's table of the dataset's experiment (empty: none).
    """

    name: str
    title: str
    releases: tuple[Release, ...]
    upstream: str  # a release is fetched from f"{upstream}/{filename}"
    local_dir_env: str  # environment variable that overrides data.<name>.local_dir
    default_local_dir: str  # the local copy's folder, relative to the checkout (the params default)
    sources: tuple[str, ...]  # the values of data.source it supports, among SOURCES
    all_releases_required: bool  # False: the releases present are unioned; True: every file must be there
    read_release: Callable[[bytes, Release, dict, str], tuple[pd.DataFrame, str, dict]]
    id_column: str
    text_column: str
    prompt_column: str
    grade_column: str | None  # None: the corpus records no grade (prepared essays get grade -1)
    scores: Mapping[str, str]
    scales: Scale | Mapping[str, Scale]
    protocol: Protocol  # aes.data.protocols: LOCKED_TEST | LEAVE_ONE_PROMPT_OUT
    data_settings: Mapping[str, Any] = field(default_factory=dict)
    prepare_settings: Mapping[str, Any] = field(default_factory=dict)
    settings_order: tuple[str, ...] | None = None
    text_repair: Callable[[str], str] | None = None
    published: tuple[Published, ...] = ()

    def __post_init__(self) -> None:
        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown:
            raise AESError(f"aes/data/{self.name}.py: sources {unknown} are not data sources; expected among {', '.join(SOURCES)}")
        shared = sorted(set(self.prepare_settings) & set(self.protocol.settings))
        if shared:
            raise AESError(f"aes/data/{self.name}.py: prepare settings {shared} are also its protocol's ({self.protocol.name})")

    @property
    def prepare_schema(self) -> dict[str, Any]:
        """The schema of ``prepare.<name>``: the dataset's own settings, then its protocol's."""
        return {**self.prepare_settings, **self.protocol.settings}

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

    def split(self, essays: pd.DataFrame, settings: dict, dataset_sha256: str, topics: dict[str, str] | None = None) -> dict:
        """The ``splits.json`` document of the dataset's protocol for its prepared ``essays``.

        ``settings``: :func:`aes.data.registry.prepare_settings`; ``topics``: {prompt: topic} from stage
        ``topics`` (:func:`aes.data.topics.holdout_topics`), None to keep prompts whole.
        """
        prompts = self.prompt_order(essays["prompt"].unique())
        return self.protocol.split(essays, settings, dataset_sha256, prompts, self.name, topics, f"prepare.{self.name}")

    def prompt_order(self, prompts) -> list[str]:
        """``prompts`` (distinct) in the dataset's declared order (ASAP: 1..8), else sorted."""
        prompts = set(prompts)
        if isinstance(self.scales, Scale):
            return sorted(prompts)
        return [p for p in self.scales if p in prompts] + sorted(prompts - set(self.scales))
