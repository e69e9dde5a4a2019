"""Topic clusters of writing prompts, so that near-duplicate prompts stay on one side of every split.

ELLIPSE has prompts that are near-duplicates ('Cell phones at school' / 'Cell phones in
classrooms'); with one in training and its twin in validation the "unseen" prompt is not unseen.
A cluster is built from the prompt NAMES alone: each name is embedded with a frozen sentence
encoder (mean pooling, L2-normalised) and the names are joined by average-linkage agglomerative
clustering on cosine similarity until no two clusters are at least ``min_similarity`` alike.
Names, not essays: the result cannot move when essays are added, and it is cheap (one batch of
short strings). A cluster is named after its alphabetically first prompt.

Stage ``topics`` embeds the names (it alone imports the encoders) and writes the clusters to
``data/topics.json``; ``prepare`` reads them, so editing an encoder does not re-run ``prepare``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from aes.core.errors import AESError

NAME_MAX_TOKENS = 32  # prompt names are a few words


def cluster_by_similarity(names: list[str], vectors: np.ndarray, min_similarity: float) -> dict[str, str]:
    """{name: cluster name} from average-linkage clustering of (P, H) ``vectors`` on cosine similarity.

    Two clusters merge while their average pairwise similarity is >= ``min_similarity``.
    """
    from sklearn.cluster import AgglomerativeClustering

    if len(names) != len(vectors):
        raise ValueError(f"{len(names)} names but {len(vectors)} vectors")
    if len(names) < 2:
        return {n: n for n in names}
    unit = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
    distance = np.clip(1.0 - unit @ unit.T, 0.0, None)
    np.fill_diagonal(distance, 0.0)
    labels = AgglomerativeClustering(
        metric="precomputed", linkage="average", distance_threshold=1.0 - min_similarity + 1e-12, n_clusters=None
    ).fit_predict(distance)
    first = {}
    for name, label in sorted(zip(names, labels)):
        first.setdefault(label, name)
    return {name: first[label] for name, label in zip(names, labels)}


def prompt_topics(prompts: list[str], embed: Callable[[list[str]], np.ndarray], min_similarity: float) -> dict[str, str]:
    """{prompt: topic} for the distinct ``prompts``, embedding their sorted names with ``embed``
    (names -> (P, H) vectors; stage ``topics`` passes the frozen encoder of ``topic_model``)."""
    names = sorted(set(prompts))
    vectors = embed(names)
    return cluster_by_similarity(names, vectors.astype(np.float64), min_similarity)


def groups_document(settings: dict, prompts: list[str], embed: Callable[[list[str]], np.ndarray]) -> dict:
    """What stage ``topics`` writes (``data/topics.json``) for the flat prepare ``settings``.

    ``{"groups": "prompt"}`` when the splits keep prompts whole (``groups: prompt``, or a protocol
    without the setting: ASAP); with ``groups: topic``, also the encoder and threshold used and
    ``topics`` {prompt: topic} for the distinct ``prompts`` of the cleaned essays. ``embed`` is
    called only for ``groups: topic``.
    """
    if settings.get("groups", "prompt") == "prompt":
        return {"groups": "prompt"}
    model, similarity = settings["topic_model"], settings["topic_similarity"]
    return {"groups": "topic", "topic_model": model, "topic_similarity": similarity,
            "topics": prompt_topics(prompts, embed, similarity)}


def holdout_topics(path: Path, settings: dict, prompts) -> dict[str, str] | None:
    """{prompt: topic} from stage ``topics``' file ``path`` when the flat prepare ``settings`` group by
    topic, else None. AESError when the file is missing, or was written for other settings or for
    other ``prompts`` than the prepared essays' (re-run ``dvc repro topics``).
    """
    where = str(path)
    if not path.exists():
        raise AESError(f"{where}: not found; run `dvc repro topics` first")
    document = json.loads(path.read_text())
    groups = settings.get("groups", "prompt")
    written = {k: document.get(k) for k in ("groups", "topic_model", "topic_similarity") if k in document}
    wanted = {"groups": groups} | ({"topic_model": settings["topic_model"], "topic_similarity": settings["topic_similarity"]}
                                   if groups == "topic" else {})
    if written != wanted:
        raise AESError(f"{where}: written for {written}, but the prepare settings ask for {wanted}; run `dvc repro topics`")
    if groups == "prompt":
        return None
    topics = document["topics"]
    unknown = sorted(set(prompts) - set(topics))
    if unknown:
        raise AESError(f"{where}: no topic for prompt(s) {unknown[:3]} of the prepared essays; run `dvc repro topics`")
    return topics


def check_topic_count(topics: dict[str, str], settings: dict, section: str) -> None:
    """AESError naming ``{section}.topic_similarity`` when the topics are too few for ``settings``' ``n_folds``:
    the locked test takes whole topics and every CV fold needs topics of its own."""
    n_groups, need = len(set(topics.values())), settings["n_folds"] + 2
    if n_groups < need:
        raise AESError(
            f"{section}.topic_similarity={settings['topic_similarity']} leaves {n_groups} topic(s) but {section}.n_folds="
            f"{settings['n_folds']} needs at least {need} (the locked test takes whole topics and every CV fold needs "
            f"topics of its own); raise {section}.topic_similarity, lower {section}.n_folds, or use {section}.groups: prompt"
        )
