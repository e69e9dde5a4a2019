"""report and final_test: bootstrap over prompts and seeds, probe, calibration, Q1/Q2 and the decision, gate, errors."""

from __future__ import annotations

import copy
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aes.core.artifacts import make_oof_frame, stack_seeds
from aes.core.errors import AESError
from aes.core.metrics import METRIC_DIRECTION, metric_value, qwk, summarize_seeds
from aes.core.registry import FROZEN_STAGES, MODEL_STAGES, stage_for_objective
from aes.data.params import validate
from aes.holdout.final_evaluation import chosen_model, run_final_test
from aes.report import assemble as rep
from aes.report import bootstrap, probe, verdicts
from aes.report.verdicts import BETTER, INCONCLUSIVE
from tests.committed import committed_params
from tests.report_fixtures import HALF_BANDS_SCALE as HB
from tests.report_fixtures import DEFAULT_SEEDS, make_cv_essays, points_to_unit, seeded_oof, with_scale, write_fake_workspace

REPO = Path(__file__).resolve().parents[1]
EXPECTED_PAIRS = {"erm_vs_gbm_cv", "erm_vs_linear_cv", "erm_vs_lp_cv", "grl_vs_erm", "dro_vs_erm", "grl_vs_gbm_cv", "dro_vs_gbm_cv"}


@pytest.fixture(scope="module")
def params():
    p = validate(committed_params())
    p["report"].update(bootstrap_resamples=400, probe_folds=3, min_prompt_n=20, q1_metrics=["qwk.pooled"],
                       q2_metrics=["qwk.pooled", "qwk.worst_quarter"], min_gain=0.01, calibration="inner")
    p["objective"] = "dro"
    p["final_test"]["override"] = False
    return p


def _oof(essays: pd.DataFrame, noise_sd: float, seed: int, shift=None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pred = essays["y"].to_numpy() + rng.normal(0, noise_sd, len(essays)) + (0 if shift is None else shift)
    return make_oof_frame(essays, essays["fold"].to_numpy(), points_to_unit(pred))


def _quiet_report(params, root):
    """build_report without the probe's 'representation missing' warnings (workspaces written without them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return rep.build_report(params, root)


# ---------------------------------------------------------------- bootstrap


def test_point_estimates_are_seed_means_of_the_contract_metrics():
    essays = make_cv_essays(n_prompts=10, per_prompt=30)
    oof = seeded_oof(essays, 0.5, (3, 4, 5), np.random.default_rng(1))
    one = _oof(essays, 0.5, 1)
    boot = bootstrap.prompt_bootstrap({"a": oof, "one": one}, [("a_vs_one", "a", "one")], 50, 0, 20)
    contract = summarize_seeds(oof, 20)
    assert set(boot["point"]["a"]) == set(METRIC_DIRECTION)
    for key in METRIC_DIRECTION:  # the confusion-count shortcut gives the contract's numbers, seed means included
        assert boot["point"]["a"][key] == pytest.approx(metric_value(contract, key), abs=1e-5), key
        assert boot["seed_sd"]["a"][key] == pytest.approx(contract["seed_sd"][key], abs=1e-5), key
    assert boot["point"]["one"]["qwk.pooled"] == pytest.approx(qwk(one["y_true"], one["y_pred_raw"], HB), abs=1e-6)
    assert boot["n_seeds"] == {"a": 3, "one": 1} and boot["n_prompts"] == 10
    assert all(v == 0 for v in boot["seed_sd"]["one"].values())
    pair = boot["pairs"]["a_vs_one"]["qwk.pooled"]
    assert pair["seed_spread"] == pytest.approx(boot["seed_sd"]["a"]["qwk.pooled"], abs=1e-6) and pair["seed_spread"] > 0  # max of the two sds
    assert set(boot["intervals"]["a"]) == {"qwk.pooled", "qwk.worst_quarter", "qwk.worst_prompt", "qwk.within_prompt", "offset.rms"}


def test_prompt_level_metrics_under_resampling_weights_equal_an_expanded_resample():
    """A prompt drawn k times counts as k prompts: every metric (worst quarter, offset, within-prompt
    QWK, medians ...) computed from the weights equals the metric of the explicitly expanded data."""
    essays = make_cv_essays(n_prompts=8, per_prompt=25)
    rng = np.random.default_rng(4)
    shift = essays["prompt"].map(dict(zip(sorted(essays["prompt"].unique()), rng.normal(0, 0.3, 8))))
    oof = _oof(essays, 0.5, 2, shift=shift.to_numpy())
    prompts = np.array(sorted(oof["prompt"].unique()))
    stats = bootstrap.prompt_summaries(oof, prompts, np.array(sorted(oof["fold"].unique())))
    for weights in ([2, 0, 1, 3, 0, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 4, 0, 0, 0, 4, 0]):
        expanded = pd.concat([oof[oof["prompt"] == p].assign(prompt=f"{p}#{copy}") for p, w in zip(prompts, weights)
                              for copy in range(w)], ignore_index=True)
        direct = summarize_seeds(expanded, 20)
        resampled = bootstrap.resampled_metrics(stats, np.array([weights]), 20)
        for key in METRIC_DIRECTION:
            assert resampled[key][0] == pytest.approx(metric_value(direct, key), abs=1e-5), (weights, key)


def test_a_model_against_itself():
    essays = make_cv_essays(n_prompts=10, per_prompt=30)
    one = _oof(essays, 0.5, 1)
    boot = bootstrap.prompt_bootstrap({"a": one, "b": one}, [("a_vs_b", "a", "b")], 50, 0, 20)
    # one seed: every paired difference is exactly 0
    assert boot["pairs"]["a_vs_b"]["qwk.pooled"]["ci_low"] == boot["pairs"]["a_vs_b"]["qwk.pooled"]["ci_high"] == 0
    # several seeds: each copy draws its own seeds, so the replicates differ, but the point gain is 0 and the CI spans it
    many = seeded_oof(essays, 0.5, (1, 2, 3), np.random.default_rng(2))
    pair = bootstrap.prompt_bootstrap({"a": many, "b": many}, [("a_vs_b", "a", "b")], 200, 0, 20)["pairs"]["a_vs_b"]
    for metric in ("qwk.pooled", "rmse"):
        assert pair[metric]["gain"] == 0 and pair[metric]["ci_low"] < 0 < pair[metric]["ci_high"]


def test_resample_weights_draw_whole_prompts_with_replacement():
    w = bootstrap.prompt_resample_weights(n_prompts=7, n_resamples=500, seed=3)
    assert w.shape == (500, 7) and (w.sum(axis=1) == 7).all()
    assert (w == 0).any() and (w >= 2).any()  # some prompts left out, some drawn twice
    assert np.array_equal(w, bootstrap.prompt_resample_weights(7, 500, 3))  # seeded
    idx = bootstrap.seed_resample_index(3, 500, np.random.default_rng(0))
    assert idx.shape == (500, 3) and set(np.unique(idx)) == {0, 1, 2}
    assert any(len(set(row)) < 3 for row in idx)  # seeds drawn with replacement


def test_bootstrap_ci_covers_known_difference_and_excludes_zero():
    # A 95% interval misses the truth for ~1 seed in 20 (measured: 37/40 seeds covered, mean width
    # 0.050 vs 0.054 = 3.92 sd of the gain across replicate data sets); this seed is a covering one.
    essays = make_cv_essays(n_prompts=40, per_prompt=30, seed=3)
    good, bad = _oof(essays, 0.3, 10), _oof(essays, 0.7, 11)
    boot = bootstrap.prompt_bootstrap({"good": good, "bad": bad}, [("g_vs_b", "good", "bad")], 1000, 5, 20)
    # The population difference, from a sample 50x larger drawn the same way.
    big = make_cv_essays(n_prompts=400, per_prompt=150, seed=99)
    true_qwk_gain = qwk(big["y"], _oof(big, 0.3, 1)["y_pred_raw"], HB) - qwk(big["y"], _oof(big, 0.7, 2)["y_pred_raw"], HB)
    true_rmse_gain = 0.7 - 0.3
    ci = boot["pairs"]["g_vs_b"]
    assert ci["qwk.pooled"]["ci_low"] <= true_qwk_gain <= ci["qwk.pooled"]["ci_high"]
    assert ci["qwk.pooled"]["ci_low"] > 0
    assert ci["rmse"]["ci_low"] <= true_rmse_gain <= ci["rmse"]["ci_high"] and ci["rmse"]["ci_low"] > 0
    assert ci["rmse"]["delta"] < 0 < ci["rmse"]["gain"]  # lower RMSE is a positive gain


def test_bootstrap_is_over_prompts_not_essays():
    """A model better on half the prompts and worse on the other half: a prompt bootstrap says 'unsure'."""
    essays = make_cv_essays(n_prompts=20, per_prompt=40, seed=4)
    odd = essays["prompt"].str[-1].astype(int).to_numpy() % 2 == 1
    a = _oof(essays, 0.05, 1, shift=np.where(odd, 0.0, 0.8))
    b = _oof(essays, 0.05, 2, shift=np.where(odd, 0.8, 0.0))
    ci = bootstrap.prompt_bootstrap({"a": a, "b": b}, [("a_vs_b", "a", "b")], 1000, 0, 20)["pairs"]["a_vs_b"]["rmse"]
    assert ci["ci_low"] < 0 < ci["ci_high"]
    assert ci["ci_high"] - ci["ci_low"] > 0.05  # wide: it is prompt-to-prompt variation that matters


def test_bootstrap_ci_widens_when_seeds_disagree():
    """Same essays and prompts; one model's three seeds disagree strongly, the other's are identical.
    Drawing seeds with replacement must show up as a wider interval (and a seed spread) for the first."""
    essays = make_cv_essays(n_prompts=20, per_prompt=30, seed=12)
    rng = np.random.default_rng(0)
    fold = essays["fold"].to_numpy()
    noise = rng.normal(0, 1, len(essays))
    disagree = stack_seeds([make_oof_frame(essays, fold, points_to_unit(essays["y"] + sd * noise), s) for s, sd in ((1, 0.2), (2, 0.5), (3, 0.8))])
    same = stack_seeds([make_oof_frame(essays, fold, points_to_unit(essays["y"] + 0.5 * noise), s) for s in (1, 2, 3)])
    single = make_oof_frame(essays, fold, points_to_unit(essays["y"] + 0.5 * noise), 1)
    reference = _oof(essays, 0.9, 5)
    oofs = {"disagree": disagree, "same": same, "single": single, "ref": reference}
    pairs = [(f"{m}_vs_ref", m, "ref") for m in ("disagree", "same", "single")]
    boot = bootstrap.prompt_bootstrap(oofs, pairs, 1000, 3, 20)
    assert boot["seed_sd"]["same"]["qwk.pooled"] == 0 and boot["seed_sd"]["disagree"]["qwk.pooled"] > 0.05

    def width(pair, metric):
        ci = boot["pairs"][pair][metric]
        return ci["ci_high"] - ci["ci_low"]

    for metric in ("qwk.pooled", "rmse", "qwk.worst_quarter"):
        assert width("disagree_vs_ref", metric) > 2 * width("same_vs_ref", metric), metric
        assert boot["pairs"]["disagree_vs_ref"][metric]["seed_spread"] == pytest.approx(boot["seed_sd"]["disagree"][metric], abs=1e-6)
        assert boot["pairs"]["same_vs_ref"][metric]["seed_spread"] == 0
        # identical seeds are one seed: the same interval as a single-seed model
        for end in ("ci_low", "ci_high"):
            assert boot["pairs"]["same_vs_ref"][metric][end] == pytest.approx(boot["pairs"]["single_vs_ref"][metric][end], abs=1e-6)
    own = boot["intervals"]
    assert own["disagree"]["qwk.pooled"]["ci_high"] - own["disagree"]["qwk.pooled"]["ci_low"] > \
        2 * (own["same"]["qwk.pooled"]["ci_high"] - own["same"]["qwk.pooled"]["ci_low"])


# ---------------------------------------------------------------- probe


def test_probe_finds_prompt_in_informative_representation_and_chance_in_random_one():
    essays = make_cv_essays(n_prompts=8, per_prompt=40, seed=5)
    rng = np.random.default_rng(0)
    code = pd.factorize(essays["prompt"])[0]
    informative = rng.normal(0, 1, (8, 12))[code] * 3 + rng.normal(0, 1, (len(essays), 12))
    random = rng.normal(0, 1, (len(essays), 12))
    # one tiny prompt (2 essays < 4 folds) is dropped and reported
    prompts = np.concatenate([essays["prompt"].to_numpy(), ["tiny", "tiny"]])
    informative = np.vstack([informative, rng.normal(0, 1, (2, 12))])
    hit = probe.prompt_probe(informative, prompts, n_folds=4)
    assert hit["accuracy"] > 0.95 and hit["chance"] == pytest.approx(1 / 8)
    assert hit["dropped_prompts"] == ["tiny"] and hit["n_prompts"] == 8
    miss = probe.prompt_probe(random, essays["prompt"].to_numpy(), n_folds=4)
    assert miss["accuracy"] < miss["chance"] + 0.1


def test_within_fold_probe_ignores_which_fold_model_made_the_vector():
    """Vectors that differ only by a per-fold offset (five 'models') but carry no prompt signal:
    the all-essays probe reads the fold off them, the within-fold probe stays at chance."""
    essays = make_cv_essays(n_prompts=10, per_prompt=40, n_folds=5, seed=8)
    rng = np.random.default_rng(1)
    folds = essays["fold"].to_numpy()
    x = rng.normal(0, 1, (len(essays), 8)) + rng.normal(0, 5, (5, 8))[folds]
    prompts = essays["prompt"].to_numpy()
    across = probe.prompt_probe(x, prompts, n_folds=4)
    within = probe.prompt_probe_within_folds(x, prompts, folds, n_folds=4)
    assert across["accuracy"] > 0.4 > across["chance"] + 0.2  # 2 prompts per fold: fold identity gives ~50%
    assert within["accuracy"] < within["chance"] + 0.1 and set(within["per_fold"]) == {"0", "1", "2", "3", "4"}


def test_probe_reads_the_representations_as_the_models_do_under_prompt_mean(tmp_path):
    """Embeddings that differ between prompts only by each prompt's offset: the probe finds the prompt
    as they are, and sits at chance once they are centred on their prompt's mean (normalise.embeddings)."""
    from aes.core.registry import EMBEDDINGS

    essays = make_cv_essays(n_prompts=10, per_prompt=40, n_folds=5, seed=3)
    rng = np.random.default_rng(2)
    code = pd.factorize(essays["prompt"])[0]
    x = rng.normal(0, 1, (len(essays), 8)) + rng.normal(0, 3, (10, 8))[code]
    (tmp_path / EMBEDDINGS).mkdir(parents=True)
    np.save(tmp_path / EMBEDDINGS / "embeddings.npy", x)
    essays[["record_id"]].to_csv(tmp_path / EMBEDDINGS / "record_ids.csv", index=False)
    as_is = probe.run_probes(essays, [], n_folds=4, seed=0, root=tmp_path)["frozen_embeddings"]
    centred = probe.run_probes(essays, [], n_folds=4, seed=0, root=tmp_path, embeddings="prompt_mean")["frozen_embeddings"]
    assert as_is["embeddings"] == "as_is" and centred["embeddings"] == "prompt_mean"
    assert as_is["within_fold"]["accuracy"] > 0.9
    assert centred["within_fold"]["accuracy"] < centred["within_fold"]["chance"] + 0.15


# ---------------------------------------------------------------- Q1, Q2 and the decision


def _pair(gain, ci_low, ci_high, spread=0.0):
    return {"gain": gain, "ci_low": ci_low, "ci_high": ci_high, "seed_spread": spread}


def _boot(reference_qwk: dict, q1: dict, grl: dict, dro: dict) -> dict:
    """A hand-made bootstrap result: pooled QWK per frozen stage, and the pairs Q1/Q2 read (other metrics inconclusive)."""
    undefined = _pair(None, None, None)

    def metrics(given):
        return {m: given.get(m, undefined) for m in METRIC_DIRECTION}

    point = {s: {"qwk.pooled": reference_qwk.get(s)} for s in MODEL_STAGES}
    reference = max(reference_qwk, key=reference_qwk.get)
    pairs = {f"erm_vs_{reference}": metrics(q1), "grl_vs_erm": metrics(grl), "dro_vs_erm": metrics(dro)}
    return {"point": point, "pairs": pairs}


RP = {"q1_metrics": ["qwk.pooled"], "q2_metrics": ["qwk.pooled", "qwk.worst_quarter"], "min_gain": 0.01}
GOOD = _pair(0.05, 0.02, 0.08, 0.01)
SPANS_ZERO = _pair(0.03, -0.01, 0.07)


@pytest.mark.parametrize(("objective", "q1", "dro", "proceed"), [
    ("dro", GOOD, GOOD, 1),
    ("dro", GOOD, SPANS_ZERO, 0),  # Q2 for the candidate is inconclusive
    ("dro", SPANS_ZERO, GOOD, 0),  # fine-tuning itself does not beat the frozen model
    ("erm", GOOD, SPANS_ZERO, 1),  # ERM as candidate only needs Q1
    ("grl", GOOD, GOOD, 0),  # GRL's own Q2 is inconclusive, DRO's win does not count for it
])
def test_decision_needs_q1_and_the_candidates_q2(objective, q1, dro, proceed):
    boot = _boot({"gbm_cv": 0.70, "linear_cv": 0.74, "lp_cv": 0.72}, {"qwk.pooled": q1},
                 {"qwk.pooled": SPANS_ZERO}, {"qwk.pooled": dro, "qwk.worst_quarter": dro})
    answers = verdicts.answer_questions(boot, RP, objective)
    d = answers["decision"]
    assert answers["q1"]["reference"] == d["reference"] == "linear_cv"  # the strongest frozen model by pooled QWK
    assert answers["q1"]["comparison"] == "erm_vs_linear_cv" and set(answers["q1"]["metrics"]) == {"qwk.pooled"}
    assert set(answers["q2"]) == {"grl", "dro"} and set(answers["q2"]["dro"]["metrics"]) == {"qwk.pooled", "qwk.worst_quarter"}
    assert answers["q2"]["grl"]["verdict"] == INCONCLUSIVE and answers["q2"]["dro"]["stage"] == "dro_cv"
    assert d["proceed"] == proceed and d["verdict"] == ("proceed" if proceed else "defer") and d["candidate"] == objective
    assert d["reasons"][0].startswith("Q1 (ERM vs strongest frozen `linear_cv`)")
    assert len(d["reasons"]) == (1 if objective == "erm" else 2)


def test_strongest_frozen_ignores_fine_tuned_models_and_undefined_scores():
    point = {s: {"qwk.pooled": 0.9} for s in MODEL_STAGES}  # fine-tuned models may be better; they are never the reference
    point.update({"gbm_cv": {"qwk.pooled": 0.6}, "linear_cv": {"qwk.pooled": None}, "lp_cv": {"qwk.pooled": 0.65}})
    assert verdicts.strongest_frozen(point) == "lp_cv"
    names = [name for name, _, _ in verdicts.comparison_pairs("lp_cv")]
    assert set(names) == {"erm_vs_gbm_cv", "erm_vs_linear_cv", "erm_vs_lp_cv", "grl_vs_erm", "dro_vs_erm", "grl_vs_lp_cv", "dro_vs_lp_cv"}
    assert ("grl_vs_erm", "grl_cv", "finetune_cv") in verdicts.comparison_pairs("lp_cv")


def test_unknown_verdict_metric_lists_valid_keys(tmp_path, params):
    p = copy.deepcopy(params)
    p["report"]["q2_metrics"] = ["qwk.pooled", "kappa"]
    with pytest.raises(AESError, match=r"report.q2_metrics names unknown metric\(s\) \['kappa'\]; valid keys: qwk.pooled, .*qwk.worst_quarter"):
        rep.build_report(p, tmp_path)  # checked before any file is read
    p["report"]["q2_metrics"], p["report"]["q1_metrics"] = ["rmse"], ["qwk.mean"]
    with pytest.raises(AESError, match=r"report.q1_metrics names unknown metric\(s\) \['qwk.mean'\]"):
        rep.build_report(p, tmp_path)


def test_report_verdicts_follow_clear_evidence(tmp_path, params):
    """Frozen models far behind ERM, DRO far ahead of it, GRL no different: Q1 better, DRO better, GRL not."""
    noise = {"gbm_cv": 0.9, "linear_cv": 0.95, "lp_cv": 0.85, "finetune_cv": 0.5, "grl_cv": 0.5, "dro_cv": 0.2}
    write_fake_workspace(tmp_path, noise=noise, representations=False, curves=False, n_prompts=10, per_prompt=30)
    report, _ = _quiet_report(params, tmp_path)
    assert report["q1"]["reference"] == "lp_cv" and report["q1"]["verdict"] == BETTER  # the lowest-noise frozen model
    assert report["q2"]["dro"]["verdict"] == BETTER and report["q2"]["grl"]["verdict"] != BETTER
    assert report["decision"] == {"proceed": 1, "verdict": "proceed", "candidate": "dro", "reference": "lp_cv",
                                  "reasons": ["Q1 (ERM vs strongest frozen `lp_cv`): better", "Q2 (dro vs ERM): better"]}
    assert set(report["delta"]) == {"erm_vs_gbm_cv", "erm_vs_linear_cv", "erm_vs_lp_cv", "grl_vs_erm", "dro_vs_erm",
                                    "grl_vs_lp_cv", "dro_vs_lp_cv"}
    q2_dro = report["q2"]["dro"]["metrics"]["qwk.pooled"]
    assert q2_dro["gain"] == report["delta"]["dro_vs_erm"]["qwk.pooled"]["gain"] > q2_dro["seed_spread"] > 0
    p = copy.deepcopy(params)
    p["objective"] = "grl"
    grl = _quiet_report(p, tmp_path)[0]
    assert grl["decision"]["proceed"] == 0 and grl["decision"]["reasons"][1].startswith("Q2 (grl vs ERM)")
    assert grl["stages"]["candidate"] == "grl_cv" and grl["candidate"]["stage"] == "grl_cv"


# ---------------------------------------------------------------- stage inputs and outputs


def test_missing_upstream_stage_is_named(tmp_path, params):
    small = {"representations": False, "curves": False, "n_prompts": 6, "per_prompt": 25}
    write_fake_workspace(tmp_path, stages=["gbm_cv", "linear_cv", "lp_cv", "finetune_cv", "dro_cv"], **small)
    p = copy.deepcopy(params)
    with pytest.raises(AESError, match=r"grl_cv\.json of stage 'grl_cv' not found; run `dvc repro grl_cv`"):
        rep.build_report(p, tmp_path)
    p["objective"] = "grl"
    with pytest.raises(AESError, match="objective 'grl' .*no trained results"):
        rep.build_report(p, tmp_path)
    (tmp_path / "data/predictions/dro_cv.csv").unlink()
    write_fake_workspace(tmp_path, stages=["grl_cv"], **small)
    p["objective"] = "erm"
    with pytest.raises(AESError, match=r"predictions/dro_cv\.csv.*dvc repro dro_cv"):
        rep.build_report(p, tmp_path)
    (tmp_path / "metrics/linear_cv.json").unlink()  # a frozen stage is as necessary as the fine-tuned ones
    with pytest.raises(AESError, match=r"linear_cv\.json of stage 'linear_cv' not found; run `dvc repro linear_cv`"):
        rep.build_report(p, tmp_path)


def test_every_seed_must_cover_the_same_essays(tmp_path, params):
    write_fake_workspace(tmp_path, representations=False, curves=False, n_prompts=6, per_prompt=25)
    path = tmp_path / "data/predictions/finetune_cv.csv"
    oof = pd.read_csv(path)
    assert sorted(oof["seed"].unique()) == [7, 8, 9]
    oof.drop(index=oof.index[(oof["seed"] == 8)][:3]).to_csv(path, index=False)  # seed 8 lost three essays
    with pytest.raises(AESError, match=r"finetune_cv\.csv \(seed 8\) covers different essays.*147 vs 150 rows"):
        rep.build_report(params, tmp_path)


def test_report_end_to_end(tmp_path, params):
    from aes.report.probe import write_probes

    essays = write_fake_workspace(tmp_path, n_prompts=10, per_prompt=30)
    probes = write_probes(params, tmp_path, essays)  # stage prompt_probe, which report reads
    assert json.loads((tmp_path / "metrics/prompt_probe.json").read_text()) == json.loads(json.dumps(probes))
    report = rep.run_report(params, tmp_path)
    saved = json.loads((tmp_path / "metrics/report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["stages"] == {"candidate": "dro_cv", "erm": "finetune_cv", "strongest_frozen": "gbm_cv", "frozen": list(FROZEN_STAGES)}
    assert saved["q1"]["reference"] == saved["decision"]["reference"] == "gbm_cv" and saved["q1"]["comparison"] == "erm_vs_gbm_cv"
    assert set(saved["q2"]) == {"grl", "dro"} and set(saved["decision"]) == {"proceed", "verdict", "candidate", "reference", "reasons"}
    assert saved["decision"]["proceed"] in (0, 1) and saved["decision"]["candidate"] == "dro"
    assert set(saved["delta"]) == EXPECTED_PAIRS and set(saved["delta"]["dro_vs_erm"]) == set(METRIC_DIRECTION)
    assert saved["rule"]["q1_metrics"] == ["qwk.pooled"] and saved["rule"]["q2_metrics"] == ["qwk.pooled", "qwk.worst_quarter"]
    assert saved["rule"]["min_gain"] == 0.01 and "seed-to-seed sd" in saved["rule"]["text"]
    # one headline row per model: seed means, the seed sd and each seed's pooled QWK
    assert list(saved["models"]) == list(MODEL_STAGES)
    for stage, row in saved["models"].items():
        metrics = json.loads((tmp_path / f"metrics/{stage}.json").read_text())
        assert row["n_seeds"] == len(DEFAULT_SEEDS[stage]) == saved["bootstrap"]["n_seeds"][stage]
        assert set(row["seeds"]) == {str(s) for s in DEFAULT_SEEDS[stage]}
        assert row["qwk_pooled"] == metrics["qwk"]["pooled"] == pytest.approx(np.mean(list(row["seeds"].values())), abs=1e-5)
        assert row["qwk_worst_quarter"] == metrics["qwk"]["worst_quarter"] is not None
        assert (row["qwk_pooled_seed_sd"] > 0) == (row["n_seeds"] > 1)
    assert saved["candidate"]["n_seeds"] == 3 and "seeds" not in saved["candidate"]
    assert saved["bootstrap"]["unit"] == "prompt x seed" and saved["bootstrap"]["n_prompts"] == 10
    assert set(saved["intervals"]) == set(MODEL_STAGES) and set(saved["seed_sd"]) == set(MODEL_STAGES)
    probe_result = saved["probe"]
    assert probe_result["frozen_embeddings"]["within_fold"]["accuracy"] > 0.95 > probe_result["grl_cv"]["within_fold"]["accuracy"]
    assert not set(FROZEN_STAGES) & set(probe_result)  # frozen stages have no representation of their own
    assert saved["calibration"]["method"] == "inner" and set(saved["calibration"]["models"]) == set(MODEL_STAGES)
    for stage, row in saved["calibration"]["models"].items():  # each model's own calibrated metrics, as its stage wrote them
        metrics = json.loads((tmp_path / f"metrics/{stage}.json").read_text())
        assert set(row) == {"raw", "inner", "other_folds", "prompt_spread"} and row["prompt_spread"]["transductive"] is True
        assert row["inner"]["pooled"] == metrics["calibrated"]["inner"]["qwk"]["pooled"] != row["raw"]["pooled"], stage
        assert row["raw"]["pooled_sd"] == metrics["seed_sd"]["qwk.pooled"] and (row["raw"]["pooled_sd"] > 0) == (stage not in ("linear_cv", "lp_cv"))
    calibrated = saved["calibrated"]
    assert calibrated["method"] == "inner" and calibrated["transductive"] is False
    assert calibrated["q1"]["verdict"] in (BETTER, INCONCLUSIVE, "not better") and set(calibrated["q2"]) == {"grl", "dro"}
    assert set(calibrated["delta"]) == EXPECTED_PAIRS - {f"{o}_vs_gbm_cv" for o in ("grl", "dro")} | {f"{o}_vs_{calibrated['reference']}" for o in ("grl", "dro")}
    assert not (tmp_path / "README.md").exists()  # the README table is `aes-readme`'s job, not the stage's
    decision_md = (tmp_path / "reports/decision.md").read_text()
    assert "## Q1" in decision_md and "## Q2" in decision_md and "`gbm_cv`" in decision_md
    assert "## Q1 and Q2 on calibrated scores (`report.calibration: inner`)" in decision_md and "gate reads the raw verdicts" in decision_md
    assert "## Calibration: raw against each method" in decision_md and "prompt spread [transductive]" in decision_md
    cuts = pd.read_csv(tmp_path / "plots/report/calibration_cut_points.csv")
    assert set(cuts["model"]) == set(MODEL_STAGES) and len(cuts) == 6 * 5 * 8  # six models x five folds x eight cut-points (first seed)
    conf = pd.read_csv(tmp_path / "plots/report/confusion.csv")
    assert list(conf.columns) == ["model", "y_true", "y_pred", "count"] and len(conf) == 6 * 81
    assert conf.groupby("model")["count"].sum().eq(300).all()  # aggregates only, every essay counted once (first seed)
    table = pd.read_csv(tmp_path / "plots/report/per_prompt_qwk.csv")
    assert len(table) == 10 and {f"qwk_{s}" for s in MODEL_STAGES} | {"delta_erm_vs_strongest_frozen", "delta_grl_vs_erm", "delta_dro_vs_erm"} <= set(table.columns)
    # per-prompt QWK is the mean over seeds of each seed's QWK on that prompt
    oof = pd.read_csv(tmp_path / "data/predictions/finetune_cv.csv")
    prompt0 = oof[oof["prompt"] == "Prompt 00"]
    expected = np.mean([qwk(g["y_true"], g["y_pred_raw"], HB) for _, g in prompt0.groupby("seed")])
    assert table.loc[table["prompt"] == "Prompt 00", "qwk_finetune_cv"].item() == pytest.approx(expected, abs=1e-5)
    png = {p.name for p in (tmp_path / "plots/report/png").iterdir()}
    assert {"per_prompt_qwk.png", "residual_by_band.png", "residual_by_grade.png", "training_curves.png",
            "adversary_accuracy.png", "dro_max_weight.png"} <= png
    assert {f"confusion_{s}.png" for s in MODEL_STAGES} <= png


def test_stale_metrics_file_is_detected(tmp_path, params):
    write_fake_workspace(tmp_path, representations=False, curves=False, n_prompts=6, per_prompt=25)
    path = tmp_path / "metrics/gbm_cv.json"
    metrics = json.loads(path.read_text())
    metrics["qwk"]["pooled"] += 0.1
    path.write_text(json.dumps(metrics))
    with pytest.raises(AESError, match="stale: run `dvc repro gbm_cv`"):
        rep.build_report(params, tmp_path)
    # a multi-seed stage whose metrics were written from other predictions (here: one seed only)
    write_fake_workspace(tmp_path, stages=["gbm_cv"], representations=False, curves=False, n_prompts=6, per_prompt=25)
    path = tmp_path / "data/predictions/dro_cv.csv"
    oof = pd.read_csv(path)
    oof[oof["seed"] == 7].to_csv(path, index=False)
    with pytest.raises(AESError, match="stale: run `dvc repro dro_cv`"):
        _quiet_report(params, tmp_path)


# ---------------------------------------------------------------- final_test gate


def _test_split(n_prompts=6, per_prompt=10):
    essays = make_cv_essays(n_prompts=n_prompts, per_prompt=per_prompt).drop(columns="fold")
    essays["text"] = "words " * 5
    test_prompts = ["Prompt 00", "Prompt 01"]
    test = essays[essays["prompt"].isin(test_prompts)]
    cv = essays[~essays["prompt"].isin(test_prompts)].reset_index(drop=True)
    folds = [{"fold": k, "val_record_ids": cv.loc[cv["prompt"] == p, "record_id"].tolist()}
             for k, p in enumerate(sorted(cv["prompt"].unique()))]
    return essays, {"test": {"prompts": test_prompts, "record_ids": test["record_id"].tolist(), "n_essays": len(test)}, "folds": folds}


def _decision(proceed: int, reference: str = "gbm_cv") -> dict:
    return {"objective": "dro", "decision": {"proceed": proceed, "verdict": "proceed" if proceed else "defer", "candidate": "dro",
                                             "reference": reference, "reasons": []}}


def test_final_test_refuses_without_decision(tmp_path, params):
    essays, splits = _test_split()
    called = []
    with pytest.raises(AESError, match="no decision found; run `dvc repro report`"):
        run_final_test(params, essays, splits, tmp_path / "report.json", tmp_path / "final.json",
                       fit_predict=lambda *a: called.append(a))
    (tmp_path / "report.json").write_text(json.dumps({"objective": "dro", "candidate": {}}))  # report without decision
    with pytest.raises(AESError, match="no decision"):
        chosen_model(params, tmp_path / "report.json")
    (tmp_path / "report.json").write_text(json.dumps(_decision(0, reference="finetune_cv")))  # not a frozen stage
    with pytest.raises(AESError, match="decision.reference 'finetune_cv' is not a frozen stage"):
        run_final_test(params, essays, splits, tmp_path / "report.json", tmp_path / "final.json", fit_predict=lambda *a: called.append(a))
    (tmp_path / "report.json").write_text(json.dumps({**_decision(1), "objective": "grl"}))
    with pytest.raises(AESError, match="decided about objective 'grl' but params.yaml objective is 'dro'"):
        chosen_model(params, tmp_path / "report.json")
    assert not called and not (tmp_path / "final.json").exists()


def test_final_test_refuses_a_protocol_without_locked_test(tmp_path, params):
    """Leave-one-prompt-out data (ASAP) locks no prompt: final_test says so, before any gate or training."""
    from aes.holdout.final_evaluation import check_has_locked_test

    essays, splits = _test_split()
    assert check_has_locked_test(splits) is None  # a locked test: nothing to refuse
    lopo = {**splits, "protocol": "leave_one_prompt_out", "locked_test": False, "test": {"prompts": [], "record_ids": [], "n_essays": 0}}
    called = []
    with pytest.raises(AESError, match=r"splits.json: this dataset.s protocol \(leave_one_prompt_out\) holds no locked test"):
        run_final_test(params, essays, lopo, tmp_path / "report.json", tmp_path / "final.json", fit_predict=lambda *a: called.append(a))
    assert not called and not (tmp_path / "final.json").exists()


def test_final_test_follows_decision_and_states_override(tmp_path, params):
    essays, splits = _test_split()
    report = tmp_path / "report.json"
    report.write_text(json.dumps(_decision(0, reference="linear_cv")))
    seen = {}

    def stub(choice, train, test, p):
        seen.update(stage=choice["stage"], train=set(train["record_id"]), test=set(test["record_id"]))
        return points_to_unit(test["y"].to_numpy() + 0.1)  # one seed: (n_test,), on the unit range

    out = run_final_test(params, essays, splits, report, tmp_path / "final.json", fit_predict=stub)
    assert out["model"] == seen["stage"] == "linear_cv" and out["override"] == 0 and "linear_cv" in out["reason"]
    assert seen["test"] == set(splits["test"]["record_ids"]) and not seen["train"] & seen["test"]
    assert out["test"]["qwk"]["pooled"] > 0.9 and out["test"]["n"]["seeds"] == 1 and out["test_per_seed"] is None
    report.write_text(json.dumps({"objective": "dro", "decision": {"proceed": 0, "verdict": "defer"}}))  # no reference: gbm_cv
    assert chosen_model(params, report)["stage"] == "gbm_cv"
    p = copy.deepcopy(params)
    p["final_test"]["override"] = True
    out = run_final_test(p, essays, splits, report, tmp_path / "final.json", fit_predict=stub)
    assert out["model"] == "dro_cv" and out["override"] == 1 and "OVERRIDE" in out["reason"]
    assert json.loads((tmp_path / "final.json").read_text())["override"] == 1
    report.write_text(json.dumps(_decision(1)))
    assert chosen_model(params, report)["stage"] == "dro_cv"


def test_final_test_averages_the_seeds(tmp_path, params):
    essays, splits = _test_split()
    report = tmp_path / "report.json"
    report.write_text(json.dumps(_decision(1)))
    n_test = len(splits["test"]["record_ids"])

    def three_seeds(choice, train, test, p):
        y = test["y"].to_numpy()
        return np.stack([points_to_unit(y + 0.1), points_to_unit(y - 0.3), points_to_unit(y + np.linspace(-1, 1, len(y)))])  # (n_seeds, n_test)

    out = run_final_test(params, essays, splits, report, tmp_path / "final.json", fit_predict=three_seeds)
    per_seed = out["test_per_seed"]
    assert len(per_seed) == 3 and out["test"]["n"] == {"essays": n_test, "prompts": 2, "prompts_scored": 0, "seeds": 3}
    for key in ("rmse", "mae", "within_one_step"):
        assert out["test"][key] == pytest.approx(np.mean([m[key] for m in per_seed]), abs=1e-6), key
    assert out["test"]["qwk"]["pooled"] == pytest.approx(np.mean([m["qwk"]["pooled"] for m in per_seed]), abs=1e-6)
    assert len({m["rmse"] for m in per_seed}) == 3  # the seeds really differ
    with pytest.raises(AESError, match=r"model returned \(2, 3\) predictions"):
        run_final_test(params, essays, splits, report, tmp_path / "final.json", fit_predict=lambda *a: np.zeros((2, 3)))


@pytest.mark.parametrize("reference", FROZEN_STAGES)
def test_final_test_frozen_model_trains_on_all_cv_essays_and_scores_locked_test(tmp_path, params, tiny_encoder, monkeypatch, reference):
    from aes.encoders.embedding import embed_texts
    from aes.encoders.store import save_embeddings
    from tests.synthetic import make_ellipse_frame

    raw = make_ellipse_frame(n_prompts=6, per_prompt=12, seed=3)
    essays = with_scale(pd.DataFrame({"record_id": raw["text_id_kaggle"], "text": raw["full_text"], "prompt": raw["prompt"],
                                      "grade": raw["grade"], "y": raw["Overall"].astype(float)}))
    test_prompts = ["Prompt 0", "Prompt 1"]
    cv = essays[~essays["prompt"].isin(test_prompts)].reset_index(drop=True)
    test_ids = essays.loc[essays["prompt"].isin(test_prompts), "record_id"].tolist()
    splits = {"test": {"prompts": test_prompts, "record_ids": test_ids, "n_essays": len(test_ids)},
              "folds": [{"fold": k, "val_record_ids": cv.loc[cv["prompt"] == p, "record_id"].tolist()}
                        for k, p in enumerate(sorted(cv["prompt"].unique()))]}
    p = copy.deepcopy(params)
    p["embed"].update(model=str(tiny_encoder), max_length=64, batch_size=8)
    p["gbm"].update(n_estimators=20, early_stopping_rounds=5, n_jobs=1, features=["embeddings", "length"], max_depth=[1, 2], seeds=[1, 2])
    p["linear"].update(inner_folds=2)
    p["finetune"].update(model=str(tiny_encoder), max_length=64, mixed_precision="no", eval_batch_size=16)
    p["report"]["min_prompt_n"] = 5
    monkeypatch.chdir(tmp_path)
    save_embeddings(Path("data/embeddings"), embed_texts(cv["text"].tolist(), str(tiny_encoder), 64, 8), cv["record_id"])
    Path("metrics").mkdir()
    Path("metrics/report.json").write_text(json.dumps(_decision(0, reference=reference)))
    out = run_final_test(p, essays, splits)
    saved = json.loads(Path("metrics/final_test.json").read_text())
    assert saved == out and saved["model"] == reference and saved["objective"] is None
    assert saved["n_train"] == len(cv) == 48
    n_seeds = 2 if reference == "gbm_cv" else 1  # gbm_cv once per gbm.seeds; the ridge probes are deterministic
    assert saved["test"]["n"] == {"essays": 24, "prompts": 2, "prompts_scored": 2, "seeds": n_seeds}
    assert saved["test"]["rmse"] is not None and saved["test"]["rmse"] < 2.0
    assert (saved["test_per_seed"] is None) == (n_seeds == 1)
    if n_seeds > 1:
        assert saved["test_per_seed"][0]["rmse"] != saved["test_per_seed"][1]["rmse"]


def test_final_test_candidate_fine_tunes_on_cv_and_never_uses_test_scores(tmp_path, tiny_encoder, one_thread):
    from aes.core.metrics import rmse
    from aes.core.scale import from_unit, scale_arrays
    from aes.data.corpus import load_essays
    from aes.data.splits import load_splits
    from aes.holdout.final_evaluation import default_fit_predict
    from tests.training_fixtures import make_training_repo

    p = make_training_repo(tmp_path, tiny_encoder, epochs=1, seeds=[7, 8])
    p["final_test"]["override"] = False
    essays, splits = load_essays(tmp_path / "data/prepared/essays.csv"), load_splits(tmp_path / "data/prepared/splits.json")
    report = tmp_path / "metrics/report.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"objective": p["objective"], "decision": {"proceed": 1, "verdict": "proceed", "reference": "gbm_cv"}}))
    first = run_final_test(p, essays, splits, report, tmp_path / "final_a.json")
    assert first["model"] == stage_for_objective(p["objective"]) and first["test"]["n"]["essays"] == len(splits["test"]["record_ids"])
    assert first["test"]["n"]["seeds"] == 2 and len(first["test_per_seed"]) == 2
    # Rewrite every locked-test score: the trained models (and so their predictions' RMSE vs the
    # ORIGINAL scores) must be unchanged, i.e. the test scores never reached training.
    test_ids = set(splits["test"]["record_ids"])
    in_test = essays["record_id"].isin(test_ids)
    scores = ["y", "Overall", "Cohesion", "Syntax", "Vocabulary", "Phraseology", "Grammar", "Conventions"]  # every target too
    flipped = essays.assign(**{c: np.where(in_test, 6.0 - essays[c], essays[c]) for c in scores})
    captured = {}

    def capture(choice, train, test, params):
        captured["pred"] = default_fit_predict(choice, train, test, params)
        return captured["pred"]

    run_final_test(p, flipped, splits, report, tmp_path / "final_b.json", fit_predict=capture)
    original_test = essays[essays["record_id"].isin(test_ids)]
    assert captured["pred"].shape == (2, len(original_test), 7)  # one row per seed, one column per target
    assert np.abs(captured["pred"][0] - captured["pred"][1]).max() > 1e-4  # the seeds train different models
    low, high, _ = scale_arrays(original_test)  # predictions are on the unit range; scores in points of each essay's scale
    for pred, scored in zip(captured["pred"], first["test_per_seed"]):
        assert rmse(from_unit(pred[:, 0], low, high) - original_test["y"].to_numpy()) == pytest.approx(scored["rmse"], abs=1e-6)
    assert list(first["traits"]) == scores[2:]
    assert first["traits"]["Grammar"]["rmse"] == pytest.approx(
        np.mean([rmse(from_unit(pred[:, 5], low, high) - original_test["Grammar"].to_numpy()) for pred in captured["pred"]]), abs=1e-6)


# ---------------------------------------------------------------- several score scales (issue 15: ASAP)

ASAP_LIKE = {"P1": (2.0, 12.0), "P3": (0.0, 3.0), "P7": (0.0, 30.0), "P8": (0.0, 60.0)}


def _asap_essays(per_prompt=(30, 24, 36, 28), seed=0) -> pd.DataFrame:
    """CV essays of four prompts with different integer ranges, one prompt per fold (leave one prompt out)."""
    from aes.core.scale import Scale

    rng = np.random.default_rng(seed)
    frames = []
    for k, ((prompt, (low, high)), n) in enumerate(zip(ASAP_LIKE.items(), per_prompt)):
        scale = Scale(low, high, 1.0)
        y = np.clip(np.round(rng.normal((low + high) / 2, (high - low) / 5, n)), low, high)
        frames.append(with_scale(pd.DataFrame({"record_id": [f"{prompt}-{i:03d}" for i in range(n)], "prompt": prompt, "grade": 9,
                                               "y": y, "fold": k}), scale))
    essays = pd.concat(frames, ignore_index=True)
    return essays.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # rows not in record order


def _unit_oof(essays: pd.DataFrame, noise_sd: float, seeds, seed: int) -> pd.DataFrame:
    """Predictions on the unit range: the truth's unit value + N(0, noise_sd) (+ a per-prompt shift), one block per seed."""
    from aes.core.scale import to_unit

    rng = np.random.default_rng(seed)
    truth = to_unit(essays["y"], essays["score_low"], essays["score_high"])
    shift = essays["prompt"].map({p: s for p, s in zip(sorted(essays["prompt"].unique()), rng.normal(0, 0.05, essays["prompt"].nunique()))})
    return stack_seeds([make_oof_frame(essays, essays["fold"].to_numpy(), truth + shift.to_numpy() + rng.normal(0, noise_sd, len(essays)), s)
                        for s in seeds])


def _index(oof: pd.DataFrame):
    rows = oof.sort_values("record_id", kind="stable")  # the bootstrap's draws follow record order within each prompt
    prompts = np.array(sorted(rows["prompt"].unique()))
    return rows, prompts, np.array(sorted(rows["fold"].unique())), rows["prompt"].value_counts().reindex(prompts).to_numpy()


def _expanded(rows: pd.DataFrame, prompts, counts, b: int) -> pd.DataFrame:
    """Replicate b of an essay-within-prompt resample, written out: each essay repeated as often as it was drawn."""
    parts = [rows[rows["prompt"] == p].loc[lambda g, j=j: g.index.repeat(counts[j][b])] for j, p in enumerate(prompts)]
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("scales", ["one", "several"])
def test_essay_within_prompt_metrics_with_unit_counts_are_the_plain_metrics(scales):
    from aes.core.metrics import POOLED_METRICS, summarize

    if scales == "one":
        essays = make_cv_essays(n_prompts=6, per_prompt=25, seed=2)
        oof = _oof(essays, 0.5, 3)
    else:
        oof = _unit_oof(_asap_essays(), 0.08, (0,), 3)
    rows, prompts, folds, n_per = _index(oof)
    plain = summarize(oof, 20)
    ones = [np.ones((1, n), dtype=int) for n in n_per]
    by_essay = bootstrap.essay_resampled_metrics(rows, prompts, folds, ones, 20)
    by_prompt = bootstrap.resampled_metrics(bootstrap.prompt_summaries(oof, prompts, folds), np.ones((1, len(prompts))), 20)
    assert set(by_essay) == set(by_prompt) == set(METRIC_DIRECTION)
    for key in METRIC_DIRECTION:
        expected = metric_value(plain, key)
        if scales == "several" and key in POOLED_METRICS:
            assert expected is None and np.isnan(by_essay[key][0]) and np.isnan(by_prompt[key][0]), key  # undefined across scales
            continue
        assert expected is not None, key
        assert by_essay[key][0] == pytest.approx(expected, abs=1e-6), key
        assert by_prompt[key][0] == pytest.approx(expected, abs=1e-6), key


@pytest.mark.parametrize("scales", ["one", "several"])
def test_essay_within_prompt_replicates_equal_the_metrics_of_the_expanded_resample(scales):
    """Replicate b of the essay bootstrap is summarize() of the data with every essay repeated as often as
    it was drawn (every prompt kept, its own essays drawn with replacement)."""
    from aes.core.metrics import summarize

    if scales == "one":
        oof = _oof(make_cv_essays(n_prompts=6, per_prompt=25, seed=2), 0.5, 3)
        keys = ("qwk.within_prompt", "qwk.worst_prompt", "offset.rms", "rmse", "qwk.pooled", "qwk.worst_quarter", "mae", "within_one_step")
    else:
        oof = _unit_oof(_asap_essays(), 0.08, (0,), 3)
        keys = ("qwk.within_prompt", "qwk.worst_prompt", "offset.rms", "rmse", "qwk.worst_quarter", "mae", "within_one_step")
    rows, prompts, folds, n_per = _index(oof)
    counts = bootstrap.essay_resample_counts(n_per, 6, seed=5)
    assert [c.shape for c in counts] == [(6, n) for n in n_per] and all((c.sum(axis=1) == n).all() for c, n in zip(counts, n_per))
    assert any((c == 0).any() and (c >= 2).any() for c in counts)  # some essays left out, some drawn twice
    reps = bootstrap.essay_resampled_metrics(rows, prompts, folds, counts, 20)
    moved = 0
    for b in range(6):
        direct = summarize(_expanded(rows, prompts, counts, b), 20)
        for key in keys:
            assert reps[key][b] == pytest.approx(metric_value(direct, key), abs=1e-6), (b, key)
        moved += reps["rmse"][b] != pytest.approx(summarize(oof, 20)["rmse"], abs=1e-9)
    assert moved == 6  # every replicate is another sample


def test_essay_within_prompt_bootstrap_draws_the_same_essays_for_every_model():
    """Paired: each model's replicate b is scored on the same draw of essays (matched by record id, whatever
    the row order of its table), so the interval of A - B is the one computed from the shared counts."""
    essays = _asap_essays()
    a, b = _unit_oof(essays, 0.05, (0,), 1), _unit_oof(essays, 0.10, (0,), 2)
    b_shuffled = b.sample(frac=1.0, random_state=7).reset_index(drop=True)
    n_boot = 300
    boot = bootstrap.prompt_bootstrap({"a": a, "b": b_shuffled}, [("a_vs_b", "a", "b")], n_boot, 4, 20, unit="essay_within_prompt")
    assert boot["unit"] == "essay within prompt x seed" and boot["n_prompts"] == 4
    rows_a, prompts, folds, n_per = _index(a)
    counts = bootstrap.essay_resample_counts(n_per, n_boot, 4)
    rep_a = bootstrap.essay_resampled_metrics(rows_a, prompts, folds, counts, 20)
    rep_b = bootstrap.essay_resampled_metrics(_index(b)[0], prompts, folds, counts, 20)
    for metric in ("qwk.within_prompt", "qwk.worst_prompt", "offset.rms", "rmse"):
        gains = METRIC_DIRECTION[metric] * (rep_a[metric] - rep_b[metric])
        lo, hi = np.percentile(gains[np.isfinite(gains)], [2.5, 97.5])
        pair = boot["pairs"]["a_vs_b"][metric]
        assert pair["ci_low"] == pytest.approx(lo, abs=1e-6) and pair["ci_high"] == pytest.approx(hi, abs=1e-6), metric
        own = boot["intervals"]["a"].get(metric)
        if own is not None:
            assert own["ci_low"] == pytest.approx(np.percentile(rep_a[metric], 2.5), abs=1e-6), metric
    assert boot["pairs"]["a_vs_b"]["rmse"]["ci_low"] > 0  # the less noisy model, on the very same essays
    # a model against itself: identical draws make every paired difference exactly 0
    same = bootstrap.prompt_bootstrap({"a": a, "a2": a.sample(frac=1.0, random_state=3)}, [("a_vs_a2", "a", "a2")], 100, 4, 20,
                                      unit="essay_within_prompt")
    for metric in ("qwk.within_prompt", "rmse", "offset.rms"):
        assert same["pairs"]["a_vs_a2"][metric]["ci_low"] == same["pairs"]["a_vs_a2"][metric]["ci_high"] == 0, metric
    with pytest.raises(AESError, match="report.bootstrap_unit: 'essay'"):
        bootstrap.prompt_bootstrap({"a": a}, [], 10, 0, 20, unit="essay")


def test_scale_rules_reject_pooled_metrics_and_calibration_on_several_scales():
    oof = _unit_oof(_asap_essays(), 0.08, (0,), 3)
    ok = {"q1_metrics": ["qwk.within_prompt"], "q2_metrics": ["qwk.within_prompt", "qwk.worst_prompt", "offset.rms"], "calibration": "none"}
    assert verdicts.check_scale_rules(oof, ok) is None
    for key, metric in (("q1_metrics", "qwk.pooled"), ("q2_metrics", "qwk.pooled"), ("q2_metrics", "qwk.fold_mean")):
        bad = {**ok, key: [*ok[key], metric]}
        with pytest.raises(AESError, match=rf"report\.{key} lists \['{re.escape(metric)}'\], undefined here"):
            verdicts.check_scale_rules(oof, bad)
    for method in ("inner", "other_folds"):  # cut-points cannot carry over to another grid; spread matching can
        with pytest.raises(AESError, match=rf"report\.calibration: {method}, but the prompts have different score scales"):
            verdicts.check_scale_rules(oof, {**ok, "calibration": method})
    assert verdicts.check_scale_rules(oof, {**ok, "calibration": "prompt_spread"}) is None
    # one scale for every prompt (ELLIPSE): pooled metrics and calibration are fine
    ellipse = _oof(make_cv_essays(n_prompts=6, per_prompt=25, seed=2), 0.5, 3)
    assert verdicts.check_scale_rules(ellipse, {"q1_metrics": ["qwk.pooled"], "q2_metrics": ["qwk.fold_mean"], "calibration": "inner"}) is None


def test_a_seeded_model_run_with_one_seed_leaves_the_seed_spread_unmeasured():
    """XGBoost and the fine-tunes depend on their seed; with one seed their seed sd of 0 measures
    nothing, so the pair says so and the verdict cannot be better or not better from the CI alone."""
    from tests.report_fixtures import make_cv_essays, seeded_oof

    essays, rng = make_cv_essays(n_prompts=10, per_prompt=30), np.random.default_rng(4)
    oofs = {"one_seed": seeded_oof(essays, 0.3, [7], rng), "three_seeds": seeded_oof(essays, 0.9, [7, 8, 9], rng),
            "probe": seeded_oof(essays, 0.9, [0], rng)}
    pairs = [("a_vs_b", "one_seed", "three_seeds"), ("b_vs_probe", "three_seeds", "probe"), ("a_vs_probe", "one_seed", "probe")]
    boot = bootstrap.prompt_bootstrap(oofs, pairs, 200, 1, 5, seeded={"one_seed", "three_seeds"})
    assert boot["pairs"]["a_vs_b"]["qwk.pooled"]["spread_unmeasured"] is True
    assert boot["pairs"]["a_vs_probe"]["qwk.pooled"]["spread_unmeasured"] is True
    assert boot["pairs"]["b_vs_probe"]["qwk.pooled"]["spread_unmeasured"] is False  # the probe is deterministic: one seed is all it has
    judged = verdicts.judge(boot["pairs"]["a_vs_b"], ["qwk.pooled"], 0.01)
    assert judged["metrics"]["qwk.pooled"]["ci_low"] > 0  # a clear gain on the resamples ...
    assert judged["verdict"] == INCONCLUSIVE and "unmeasured" in judged["metrics"]["qwk.pooled"]["why"]  # ... from one seed
    unseeded = bootstrap.prompt_bootstrap(oofs, pairs, 200, 1, 5)
    assert unseeded["pairs"]["a_vs_b"]["qwk.pooled"]["spread_unmeasured"] is False


def test_adversary_summary_sets_grls_last_epoch_accuracy_beside_chance():
    from aes.report.assemble import adversary_summary

    train = {"adversary_acc": {"7/0": 0.5, "7/1": 0.3, "8/0": None}, "adversary_chance": {"7/0": 0.06, "7/1": 0.08, "8/0": 0.06}}
    summary = adversary_summary({"grl_cv": {"metrics": {"train": train}}})
    assert summary == {"accuracy_mean": 0.4, "accuracy_min": 0.3, "accuracy_max": 0.5, "chance_mean": pytest.approx(0.0667, abs=1e-4), "runs": 2}
    assert adversary_summary({"grl_cv": {"metrics": {"train": {"adversary_acc": {"7/0": 0.5}}}}}) is None  # no chance recorded
    assert adversary_summary({}) is None


def test_holdout_section_names_the_locked_test_only_where_the_protocol_has_one():
    """decision.md's holdout section: ELLIPSE's locked test and its key; leave one prompt out (ASAP) has no locked test."""
    from aes.report.markdown import holdout_md

    ellipse = "\n".join(holdout_md({"by": "prompt", "n_test_prompts": 13, "test_prompts": [], "locked_test": True,
                                     "protocol": "locked_test"}))
    assert "The locked test (13 prompts) and the CV folds keep whole **prompts**" in ellipse
    assert "`prepare.ellipse.groups`" in ellipse and "`prepare.groups" not in ellipse
    asap = "\n".join(holdout_md({"by": "prompt", "n_test_prompts": 0, "test_prompts": [], "locked_test": False,
                                  "protocol": "leave_one_prompt_out"}))
    assert "No locked test" in asap and "leave_one_prompt_out" in asap and "locked test (0 prompts)" not in asap
    older = "\n".join(holdout_md({"by": "prompt", "n_test_prompts": 0, "test_prompts": []}))  # a report from before the flag
    assert "No locked test" in older and "locked test (0 prompts)" not in older
    topic = "\n".join(holdout_md({"by": "topic", "n_test_prompts": 12, "locked_test": True, "n_groups": 2,
                                   "multi_prompt_topics": {"t0": ["Cell phones at school", "Cell phones in classrooms"]}}))
    assert "whole **topics**" in topic and "- Cell phones at school, Cell phones in classrooms" in topic
    assert "`prepare.ellipse.topic_similarity`" in topic
    assert holdout_md(None) == []
