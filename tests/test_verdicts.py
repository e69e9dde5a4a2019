"""The verdict rule of Q1 and Q2 (aes/report/verdicts.py) on hand-made numbers, one test per outcome."""

import pytest

from aes.core.errors import AESError
from aes.data.params import load_params
from aes.report.verdicts import (
    BETTER,
    INCONCLUSIVE,
    NOT_BETTER,
    check_metrics,
    combine,
    judge,
    rule_block,
    verdict,
)
from tests.committed import committed_params
from tests.yamlio import dump_yaml


def test_better_needs_ci_above_zero_a_gain_beyond_the_seed_sd_and_min_gain():
    v = verdict(gain=0.05, ci_low=0.02, ci_high=0.08, seed_spread=0.01, min_gain=0.01)
    assert v["outcome"] == BETTER and "CI above 0" in v["why"]


def test_not_better_when_the_ci_lies_below_zero():
    v = verdict(gain=-0.06, ci_low=-0.09, ci_high=-0.02, seed_spread=0.01, min_gain=0.01)
    assert v["outcome"] == NOT_BETTER and v["why"].startswith("worse")


def test_not_better_when_the_gain_is_real_but_below_min_gain():
    assert verdict(gain=0.005, ci_low=0.001, ci_high=0.009, seed_spread=0.001, min_gain=0.01)["outcome"] == NOT_BETTER


def test_inconclusive_when_the_ci_spans_zero():
    v = verdict(gain=0.03, ci_low=-0.01, ci_high=0.07, seed_spread=0.0, min_gain=0.01)
    assert v["outcome"] == INCONCLUSIVE and "spans 0" in v["why"]


def test_inconclusive_when_the_gain_is_within_the_seed_spread():
    # The prompt bootstrap alone would call this a win; the seeds disagree by more than the gain.
    v = verdict(gain=0.02, ci_low=0.005, ci_high=0.035, seed_spread=0.025, min_gain=0.01)
    assert v["outcome"] == INCONCLUSIVE and "seed-to-seed sd" in v["why"]
    v = verdict(gain=-0.02, ci_low=-0.035, ci_high=-0.005, seed_spread=0.025, min_gain=0.01)
    assert v["outcome"] == INCONCLUSIVE


def test_undefined_numbers_are_inconclusive():
    assert verdict(gain=None, ci_low=None, ci_high=None, seed_spread=None, min_gain=0.01)["outcome"] == INCONCLUSIVE


@pytest.mark.parametrize("outcomes, expected", [
    ([BETTER, INCONCLUSIVE], BETTER),
    ([BETTER, NOT_BETTER], INCONCLUSIVE),  # mixed
    ([NOT_BETTER, INCONCLUSIVE], NOT_BETTER),
    ([INCONCLUSIVE, INCONCLUSIVE], INCONCLUSIVE),
])
def test_several_metrics_combine(outcomes, expected):
    assert combine(outcomes) == expected


def test_judge_reads_a_bootstrap_pair():
    pair = {"qwk.pooled": {"gain": 0.04, "ci_low": 0.01, "ci_high": 0.07, "seed_spread": 0.005},
            "qwk.worst_quarter": {"gain": -0.01, "ci_low": -0.08, "ci_high": 0.06, "seed_spread": 0.02}}
    judged = judge(pair, ["qwk.pooled", "qwk.worst_quarter"], min_gain=0.01)
    assert judged["verdict"] == BETTER
    assert judged["metrics"]["qwk.worst_quarter"]["outcome"] == INCONCLUSIVE


def test_a_rule_naming_an_unknown_metric_names_the_key(tmp_path):
    with pytest.raises(AESError, match=r"report.q2_metrics names unknown metric\(s\) \['qwk.worst'\].*valid keys: qwk.pooled"):
        check_metrics(["qwk.pooled", "qwk.worst"], "report.q2_metrics")
    params = committed_params()
    params["report"]["q1_metrics"] = ["qwk.poled"]
    (tmp_path / "params.yaml").write_text(dump_yaml(params))
    with pytest.raises(AESError, match=r"key 'report.q1_metrics' has unknown item 'qwk.poled' \(did you mean 'qwk.pooled'\?\)"):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("section, seeds, message", [
    ("finetune", [], r"key 'finetune.seeds' must have at least 1 item"),
    ("finetune", [7, 8, 7], r"key 'finetune.seeds' repeats 7"),
    ("gbm", [7, "8"], r"key 'gbm.seeds' must be a list of int"),
])
def test_bad_seed_lists_name_the_key(tmp_path, section, seeds, message):
    params = committed_params()
    params[section]["seeds"] = seeds
    (tmp_path / "params.yaml").write_text(dump_yaml(params))
    with pytest.raises(AESError, match=message):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("case, kwargs, outcome", [
    ("gain exactly min_gain counts as better", dict(gain=0.01, ci_low=0.004, ci_high=0.02, seed_spread=0.001), BETTER),
    ("gain a hair below min_gain is a real but small gain", dict(gain=0.0099, ci_low=0.004, ci_high=0.02, seed_spread=0.001), NOT_BETTER),
    ("|gain| exactly the seed sd is inside the seed noise", dict(gain=0.03, ci_low=0.01, ci_high=0.05, seed_spread=0.03), INCONCLUSIVE),
    ("a loss exactly the seed sd is inside the seed noise too", dict(gain=-0.03, ci_low=-0.05, ci_high=-0.01, seed_spread=0.03), INCONCLUSIVE),
    ("a CI that ends exactly at 0 (below) spans it", dict(gain=0.03, ci_low=0.0, ci_high=0.05, seed_spread=0.001), INCONCLUSIVE),
    ("a CI that ends exactly at 0 (above) spans it", dict(gain=-0.03, ci_low=-0.05, ci_high=0.0, seed_spread=0.001), INCONCLUSIVE),
    ("no seed sd (a deterministic model): only the CI and min_gain decide", dict(gain=0.02, ci_low=0.005, ci_high=0.04, seed_spread=None), BETTER),
    ("no seed sd and a loss", dict(gain=-0.02, ci_low=-0.04, ci_high=-0.005, seed_spread=None), NOT_BETTER),
    ("a seeded model with one seed: a gain off 0 may be its seed", dict(gain=0.05, ci_low=0.03, ci_high=0.07, seed_spread=0.0, spread_unmeasured=True), INCONCLUSIVE),
    ("a seeded model with one seed: a loss off 0 too", dict(gain=-0.05, ci_low=-0.07, ci_high=-0.03, seed_spread=0.0, spread_unmeasured=True), INCONCLUSIVE),
    ("one seed and a CI spanning 0 says so first", dict(gain=0.01, ci_low=-0.01, ci_high=0.03, seed_spread=0.0, spread_unmeasured=True), INCONCLUSIVE),
])
def test_the_rule_at_its_edges(case, kwargs, outcome):
    assert verdict(min_gain=0.01, **kwargs)["outcome"] == outcome, case


def test_the_rule_in_words_states_every_clause_the_rule_applies():
    """report.json and decision.md print this text: it names the one-seed clause as :func:`verdict` applies it."""
    text = rule_block({"q1_metrics": ["qwk.pooled"], "q2_metrics": ["qwk.pooled"], "min_gain": 0.01, "min_prompt_n": 20})["text"]
    assert "CI of the gain spans 0" in text and "seed-to-seed sd" in text and "better if gain >= 0.01" in text
    assert "ran one seed" in text and "unmeasured" in text
