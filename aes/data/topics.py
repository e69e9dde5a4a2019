"""Topic clusters of writing prompts, so that near-duplicate prompts stay on one side of every split.

ELLIPSE has prompts that are near-duplicates ('Cell phones at school' / 'Cell phones in
classrooms'); with one in training and its twin in validation the "unseen" prompt is not unseen.
A cluster is built from the prompt NAMES alone: each name is embedded with a frozen sentence
encoder (mean pooling, L2-normalised) and the names are joined by average-linkage agglomerative
clustering on cosine similarity until no two clusters are at least ``min_similarity`` alike.
Names, not essays: the result cannot move when essays are added, and it is cheap (one batch of
short strings). A cluster is named after its alphabetically first prompt.
"""

from __future__ import annotations

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


def prompt_topics(prompts: list[str], model: str, min_similarity: float) -> dict[str, str]:
    """{prompt: topic} for the distinct ``prompts``, embedding their names with ``model``."""
    from aes.encoders.embedding import embed_texts

    names = sorted(set(prompts))
    vectors = embed_texts(names, model, NAME_MAX_TOKENS, batch_size=64, device="cpu")
    return cluster_by_similarity(names, vectors.astype(np.float64), min_similarity)


def holdout_topics(prepare: dict, prompts: list[str]) -> dict[str, str] | None:
    """{prompt: topic} when ``prepare.ellipse.groups`` is ``topic`` (checked to leave enough groups), else None.

    ``prepare``: the flat prepare settings (groups, topic_model, topic_similarity, n_folds).
    """
    if prepare["groups"] == "prompt":
        return None
    topics = prompt_topics(prompts, prepare["topic_model"], prepare["topic_similarity"])
    n_groups, need = len(set(topics.values())), prepare["n_folds"] + 2
    if n_groups < need:
        raise AESError(
            f"prepare.ellipse.topic_similarity={prepare['topic_similarity']} leaves {n_groups} topic(s) but prepare.ellipse.n_folds="
            f"{prepare['n_folds']} needs at least {need} (the locked test takes whole topics and every CV fold needs "
            "topics of its own); raise prepare.ellipse.topic_similarity, lower prepare.ellipse.n_folds, or use prepare.ellipse.groups: prompt"
        )
    return topics
