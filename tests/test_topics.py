"""Topic-cluster holdout: near-duplicate prompts share a topic, and no topic straddles a split."""

from __future__ import annotations

import numpy as np
import pytest

from aes.core.errors import AESError
from aes.data.splits import build_splits, cv_essays
from aes.data.topics import cluster_by_similarity, holdout_topics
from tests.test_splits import _essays

PARAMS = {"test_fraction": 0.2, "test_candidates": 200, "n_folds": 4, "seed": 3}


def _near_duplicate_vectors(names: list[str], twins: dict[str, str], seed: int = 0) -> np.ndarray:
    """Random unit-ish directions per name; each twin is its partner's vector plus a little noise."""
    rng = np.random.default_rng(seed)
    vectors = {n: rng.normal(size=64) for n in names}
    for twin, original in twins.items():
        vectors[twin] = vectors[original] + rng.normal(scale=0.15, size=64)
    return np.stack([vectors[n] for n in names])


def test_near_duplicates_share_a_topic_and_others_stay_apart():
    names = [f"Prompt {i}" for i in range(20)]
    twins = {"Prompt 1": "Prompt 0", "Prompt 3": "Prompt 2", "Prompt 4": "Prompt 2"}  # a pair and a triple
    topics = cluster_by_similarity(names, _near_duplicate_vectors(names, twins), min_similarity=0.6)
    assert topics["Prompt 1"] == topics["Prompt 0"] == "Prompt 0"  # named after the first prompt
    assert topics["Prompt 2"] == topics["Prompt 3"] == topics["Prompt 4"]
    assert len(set(topics.values())) == 20 - 3  # random directions in 64-d are far apart: no other merge
    assert cluster_by_similarity(names, _near_duplicate_vectors(names, twins), min_similarity=1.0)["Prompt 1"] == "Prompt 1"


def test_no_topic_straddles_the_test_or_a_fold():
    essays = _essays(n_prompts=24)
    prompts = sorted(essays["prompt"].unique())
    topics = {p: prompts[2 * (i // 2)] for i, p in enumerate(prompts)}  # pairs of prompts
    splits = build_splits(essays, PARAMS, "sha", topics)
    cv = cv_essays(essays, splits)
    cv_topics = cv["prompt"].map(topics)
    test_topics = {topics[p] for p in splits["test"]["prompts"]}
    assert test_topics == set(splits["test"]["topics"]) and not test_topics & set(cv_topics)
    assert cv.assign(topic=cv_topics).groupby("topic")["fold"].nunique().max() == 1  # train and validation never share one
    assert splits["topics"][prompts[0]] == prompts[:2] and all(f["val_topics"] for f in splits["folds"])


def test_prompt_grouping_is_unchanged_by_the_topic_code():
    """groups: prompt gives the same splits as topics where every prompt is its own topic."""
    essays = _essays()
    by_prompt = build_splits(essays, PARAMS, "sha")
    singletons = build_splits(essays, PARAMS, "sha", {p: p for p in essays["prompt"].unique()})
    singletons["test"].pop("topics")
    for fold in singletons["folds"]:
        fold.pop("val_topics")
    assert by_prompt["test"] == singletons["test"] and by_prompt["folds"] == singletons["folds"]


def test_threshold_leaving_too_few_topics_names_the_param(tiny_encoder):
    prepare = {"groups": "topic", "topic_model": str(tiny_encoder), "topic_similarity": 0.01, "n_folds": 5}
    with pytest.raises(AESError, match=r"prepare.ellipse.topic_similarity=0.01 leaves \d topic\(s\) but prepare.ellipse.n_folds=5 needs at least 7"):
        holdout_topics(prepare, [f"Prompt {i}" for i in range(10)])
    assert holdout_topics(prepare | {"groups": "prompt"}, ["a", "b"]) is None


def test_unknown_grouping_names_the_param(tmp_path):
    from aes.core.params import load_params
    from tests.committed import committed_text, with_param

    (tmp_path / "p.yaml").write_text(with_param(committed_text("params.yaml"), "prepare.ellipse.groups", "cluster"))
    with pytest.raises(AESError, match="key 'prepare.ellipse.groups' must be one of prompt, topic; got 'cluster'"):
        load_params(tmp_path / "p.yaml")


def test_topic_names_are_reproducible(tiny_encoder):
    names = [f"Prompt {i}" for i in range(8)]
    prepare = {"groups": "topic", "topic_model": str(tiny_encoder), "topic_similarity": 0.999, "n_folds": 2}
    first = holdout_topics(prepare, names)
    assert first == holdout_topics(prepare, list(reversed(names))) and set(first) == set(names)
    assert set(first.values()) <= set(names)  # every topic is named after one of its prompts


def test_leakage_table_reads_both_protocols():
    from aes.core.registry import MODEL_LABELS, MODEL_STAGES
    from aes.ops.topic_leakage import pick, table

    def report(base: float) -> dict:
        models = {s: {"qwk_pooled": base + i / 100, "qwk_worst_prompt": base / 2} for i, s in enumerate(MODEL_STAGES)}
        intervals = {s: {"qwk.pooled": {"ci_low": base - 0.05, "ci_high": base + 0.05}, "qwk.worst_prompt": {"ci_low": None, "ci_high": None}}
                     for s in MODEL_STAGES}
        return {"models": models, "intervals": intervals}

    found = [{"name": "p-old", "groups": "prompt", "report": report(0.1), "when": "1"},
             {"name": "p", "groups": "prompt", "report": report(0.5), "when": "2"},
             {"name": "t", "groups": "topic", "report": report(0.4), "when": "3"}]
    text = table(pick(found, "prompt", None), pick(found, "topic", None))
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert [r.split(" | ")[0][2:] for r in rows] == [MODEL_LABELS[s] for s in MODEL_STAGES]  # all six models, in order
    assert f"| {MODEL_LABELS['gbm_cv']} | 0.500 [0.450, 0.550] | 0.400 [0.350, 0.450] | -0.100 | 0.250 | 0.200 | -0.050 |" in text
    # dro_cv is the sixth stage (+0.05); its worst-prompt CIs are missing, so those cells show the value alone
    assert f"| {MODEL_LABELS['dro_cv']} | 0.550 [0.450, 0.550] | 0.450 [0.350, 0.450] | -0.100 | 0.250 | 0.200 | -0.050 |" in text
    with pytest.raises(AESError, match="no experiment with name 'nope'"):
        pick(found, "topic", "nope")
