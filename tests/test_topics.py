"""Topic-cluster holdout: near-duplicate prompts share a topic, and no topic straddles a split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aes.core.errors import AESError
from aes.core.io import sha256_file
from aes.core.registry import ESSAYS, RAW_CSV, SPLITS, TOPICS_JSON
from aes.data.clean import validate_and_clean
from aes.data.protocols import LOCKED_TEST
from aes.data.splits import build_splits, cv_essays
from aes.data.topics import NAME_MAX_TOKENS, check_topic_count, cluster_by_similarity, groups_document, holdout_topics, prompt_topics
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


def _embed_with(model: str):
    """The names -> vectors function stage ``topics`` builds for ``topic_model: model``."""
    from aes.encoders.embedding import embed_texts

    return lambda names: embed_texts(names, model, NAME_MAX_TOKENS, batch_size=64, device="cpu")


def test_threshold_leaving_too_few_topics_names_the_param(tiny_encoder):
    settings = {"groups": "topic", "topic_model": str(tiny_encoder), "topic_similarity": 0.01, "n_folds": 5}
    topics = prompt_topics([f"Prompt {i}" for i in range(10)], _embed_with(str(tiny_encoder)), 0.01)
    with pytest.raises(AESError, match=r"prepare.ellipse.topic_similarity=0.01 leaves \d topic\(s\) but prepare.ellipse.n_folds=5 needs at least 7"):
        check_topic_count(topics, settings, "prepare.ellipse")
    essays = _essays(n_prompts=10)  # the locked-test protocol checks it before splitting
    with pytest.raises(AESError, match=r"prepare.ellipse.topic_similarity=0.01 leaves"):
        LOCKED_TEST.split(essays, PARAMS | settings, "sha", [], "ellipse", {p: "one" for p in essays["prompt"]}, "prepare.ellipse")


def test_unknown_grouping_names_the_param(tmp_path):
    from aes.data.params import load_params
    from tests.committed import committed_text, with_param

    (tmp_path / "p.yaml").write_text(with_param(committed_text("params.yaml"), "prepare.ellipse.groups", "cluster"))
    with pytest.raises(AESError, match="key 'prepare.ellipse.groups' must be one of prompt, topic; got 'cluster'"):
        load_params(tmp_path / "p.yaml")


def test_topic_names_are_reproducible(tiny_encoder):
    names = [f"Prompt {i}" for i in range(8)]
    embed = _embed_with(str(tiny_encoder))
    first = prompt_topics(names, embed, 0.999)
    assert first == prompt_topics(list(reversed(names)), embed, 0.999) and set(first) == set(names)
    assert set(first.values()) <= set(names)  # every topic is named after one of its prompts


def test_topics_file_must_match_the_settings_and_the_prompts(tmp_path):
    path = tmp_path / "topics.json"
    settings = {"groups": "topic", "topic_model": "m", "topic_similarity": 0.6, "n_folds": 2}
    with pytest.raises(AESError, match="topics.json: not found; run `dvc repro topics` first"):
        holdout_topics(path, settings, ["a"])
    path.write_text(json.dumps(groups_document(settings, ["a", "b", "a"], lambda names: np.eye(len(names)))))
    assert holdout_topics(path, settings, ["a", "b"]) == {"a": "a", "b": "b"}
    with pytest.raises(AESError, match=r"no topic for prompt\(s\) \['c'\].*dvc repro topics"):
        holdout_topics(path, settings, ["a", "c"])
    for stale in ({"topic_similarity": 0.7}, {"topic_model": "other"}, {"groups": "prompt"}):
        with pytest.raises(AESError, match="written for .* but the prepare settings ask for .*; run `dvc repro topics`"):
            holdout_topics(path, settings | stale, ["a", "b"])
    path.write_text(json.dumps(groups_document({"groups": "prompt"}, ["a"], None)))
    assert holdout_topics(path, settings | {"groups": "prompt"}, ["a", "z"]) is None
    assert holdout_topics(path, {"targets": ["Overall"], "seed": 1}, ["1"]) is None  # leave one prompt out: no groups setting


def _stage_workspace(tmp_path, monkeypatch, **changes) -> Path:
    """A checkout with params.yaml (``changes`` applied) and fetch's output from synthetic ELLIPSE rows."""
    from tests.committed import committed_text, with_param
    from tests.synthetic import make_ellipse_frame

    text = committed_text("params.yaml")
    for key, raw in changes.items():
        text = with_param(text, key, raw)
    (tmp_path / "params.yaml").write_text(text)
    frame = make_ellipse_frame(n_prompts=12, per_prompt=10)
    frame.loc[0, "full_text"] = "too short"  # dropped by the word window: its prompt keeps other essays
    frame = frame[frame["prompt"] != "Prompt 11"].reset_index(drop=True)
    frame = pd.concat([frame, make_ellipse_frame(n_prompts=1, per_prompt=1).assign(text_id_kaggle="short", prompt="Short prompt", full_text="few words")])
    raw_csv = tmp_path / RAW_CSV
    raw_csv.parent.mkdir(parents=True)
    frame.assign(source_file="train.csv", source_row=range(1, len(frame) + 1)).to_csv(raw_csv, index=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_topics_stage_with_prompt_groups_loads_no_model(tmp_path, monkeypatch):
    import stages.topics

    def no_model(*args, **kwargs):
        raise AssertionError("groups: prompt must not load an encoder")

    root = _stage_workspace(tmp_path, monkeypatch)
    monkeypatch.setattr(stages.topics, "embed_texts", no_model)
    stages.topics.main()
    assert json.loads((root / TOPICS_JSON).read_text()) == {"groups": "prompt"}


def test_topics_stage_clusters_the_prompts_of_the_prepared_essays(tmp_path, monkeypatch, tiny_encoder):
    """The topics stage clusters exactly the prompts that prepare keeps (after the word window), so
    prepare's topic splits are those of clustering the prepared essays' prompts directly."""
    import stages.prepare
    import stages.topics
    from aes.data.ellipse import ELLIPSE
    from aes.data.fetch import read_fetched
    from aes.data.params import load_params
    from aes.data.registry import prepare_settings

    root = _stage_workspace(tmp_path, monkeypatch, **{"prepare.ellipse.groups": "topic", "prepare.ellipse.topic_model": f"'{tiny_encoder}'",
                                                        "prepare.ellipse.topic_similarity": "0.999", "prepare.ellipse.n_folds": "3"})
    stages.topics.main()
    document = json.loads((root / TOPICS_JSON).read_text())
    settings = prepare_settings(load_params())
    essays, _ = validate_and_clean(read_fetched(ELLIPSE), settings, ELLIPSE)
    assert "Short prompt" not in set(essays["prompt"])  # its one essay is outside the word window
    expected = prompt_topics(essays["prompt"].tolist(), _embed_with(str(tiny_encoder)), 0.999)
    assert document == {"groups": "topic", "topic_model": str(tiny_encoder), "topic_similarity": 0.999, "topics": expected}
    stages.prepare.main()
    splits = json.loads((root / SPLITS).read_text())
    assert splits == json.loads(json.dumps(build_splits(essays, settings, sha256_file(root / ESSAYS), expected)))


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
