"""report and final_test: bootstrap, probe, calibration, decision rule, gate, errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aes.core.artifacts import make_oof_frame
from aes.core.errors import AESError
from aes.core.metrics import qwk, summarize
from aes.core.params import load_params
from aes.core.registry import MODEL_STAGES, stage_for_objective
from aes.holdout.final_test import chosen_model, run_final_test
from aes.report import assemble as rep
from aes.report import bootstrap, calibration, decision, probe
from tests.report_fixtures import make_cv_essays, write_fake_workspace

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def params():
    p = copy.deepcopy(load_params(REPO / "params.yaml"))
    p["report"].update(bootstrap_resamples=400, probe_folds=3, min_prompt_n=20, decision_metric="qwk.pooled",
                       min_gain=0.01, max_worst_prompt_drop=0.05, calibration=True)
    p["objective"] = "dro"
    p["final_test"]["override"] = False
    return p


def _oof(essays: pd.DataFrame, noise_sd: float, seed: int, shift=None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pred = essays["y"].to_numpy() + rng.normal(0, noise_sd, len(essays)) + (0 if shift is None else shift)
    return make_oof_frame(essays, essays["fold"].to_numpy(), pred)


# ---------------------------------------------------------------- bootstrap


def test_confusion_qwk_and_point_estimates_match_contract_metrics():
    essays = make_cv_essays(n_prompts=10, per_prompt=30)
    oof = _oof(essays, 0.5, 1)
    boot = bootstrap.prompt_bootstrap({"a": oof, "b": oof}, [("a_vs_b", "a", "b")], 50, 0, 20)
    contract = summarize(oof, 20)
    assert boot["point"]["a"]["qwk.pooled"] == pytest.approx(qwk(oof["y_true"], oof["y_pred_raw"]), abs=1e-6)
    for key in ("qwk.fold_mean", "qwk.worst_prompt", "qwk.median_prompt", "rmse", "mae", "within_half_band"):
        assert boot["point"]["a"][key] == pytest.approx(decision.metric_value(contract, key), abs=1e-5), key
    # a model against itself: every paired difference is exactly 0
    assert boot["pairs"]["a_vs_b"]["qwk.pooled"]["ci_low"] == boot["pairs"]["a_vs_b"]["qwk.pooled"]["ci_high"] == 0


def test_resample_weights_draw_whole_prompts_with_replacement():
    w = bootstrap.prompt_resample_weights(n_prompts=7, n_resamples=500, seed=3)
    assert w.shape == (500, 7) and (w.sum(axis=1) == 7).all()
    assert (w == 0).any() and (w >= 2).any()  # some prompts left out, some drawn twice
    assert np.array_equal(w, bootstrap.prompt_resample_weights(7, 500, 3))  # seeded


def test_bootstrap_ci_covers_known_difference_and_excludes_zero():
    # A 95% interval misses the truth for ~1 seed in 20 (measured: 37/40 seeds covered, mean width
    # 0.050 vs 0.054 = 3.92 sd of the gain across replicate data sets); this seed is a covering one.
    essays = make_cv_essays(n_prompts=40, per_prompt=30, seed=3)
    good, bad = _oof(essays, 0.3, 10), _oof(essays, 0.7, 11)
    boot = bootstrap.prompt_bootstrap({"good": good, "bad": bad}, [("g_vs_b", "good", "bad")], 1000, 5, 20)
    # The population difference, from a sample 50x larger drawn the same way.
    big = make_cv_essays(n_prompts=400, per_prompt=150, seed=99)
    true_qwk_gain = qwk(big["y"], _oof(big, 0.3, 1)["y_pred_raw"]) - qwk(big["y"], _oof(big, 0.7, 2)["y_pred_raw"])
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


# ---------------------------------------------------------------- calibration


def test_cut_points_fix_compressed_predictions():
    essays = make_cv_essays(n_prompts=10, per_prompt=60, seed=6)
    shrunk = 3.0 + 0.4 * (essays["y"].to_numpy() - 3.0) + np.random.default_rng(1).normal(0, 0.1, len(essays))
    oof = make_oof_frame(essays, essays["fold"].to_numpy(), shrunk)
    cuts = calibration.fit_cut_points(oof["y_true"], oof["y_pred_raw"])
    assert np.all(np.diff(cuts) > 0)
    cal = calibration.calibrated_metrics(oof, 20)
    assert cal["qwk"]["pooled"] > qwk(oof["y_true"], oof["y_pred_raw"]) + 0.05


def test_calibration_never_sees_the_scored_fold():
    essays = make_cv_essays(n_prompts=10, per_prompt=60, seed=7)
    oof = _oof(essays, 0.4, 3, shift=0.3)
    y_cal, _ = calibration.calibrate_oof(oof)
    scored = (oof["fold"] == 0).to_numpy()
    # Rewrite the labels of fold 0 completely: its calibrated predictions must not move.
    tampered = oof.copy()
    tampered.loc[scored, "y_true"] = 5.0
    y_cal_tampered, _ = calibration.calibrate_oof(tampered)
    np.testing.assert_array_equal(y_cal[scored], y_cal_tampered[scored])
    # Control: a fit that includes fold 0 does react to the rewrite, so the check above has teeth.
    leaky_before = calibration.apply_cut_points(oof["y_pred_raw"][scored], calibration.fit_cut_points(oof["y_true"], oof["y_pred_raw"]))
    leaky_after = calibration.apply_cut_points(oof["y_pred_raw"][scored], calibration.fit_cut_points(tampered["y_true"], tampered["y_pred_raw"]))
    assert not np.array_equal(leaky_before, leaky_after)
    # And the fitter is only ever handed rows of the other folds.
    seen = []

    def spy(y_true, y_pred_raw):
        seen.append(set(np.round(y_pred_raw, 9)))
        return calibration.DEFAULT_CUTS

    calibration.calibrate_oof(oof, fit=spy)
    for k, rows in enumerate(seen):
        fold_k = set(np.round(oof.loc[oof["fold"] == k, "y_pred_raw"], 9))
        assert rows and not rows & fold_k


# ---------------------------------------------------------------- decision


def _m(pooled, worst, rmse=0.5):
    return {"qwk": {"pooled": pooled, "fold_mean": pooled, "worst_prompt": worst, "median_prompt": pooled},
            "rmse": rmse, "mae": rmse, "within_half_band": 0.9}


CI_OK = {"qwk.pooled": {"ci_low": 0.01, "ci_high": 0.08}, "rmse": {"ci_low": 0.02, "ci_high": 0.1}}


@pytest.mark.parametrize(
    ("cand", "ci", "proceed", "failed"),
    [
        (_m(0.75, 0.58), CI_OK, 1, None),
        (_m(0.705, 0.60), CI_OK, 0, "gain_ok"),  # gain 0.005 < 0.01
        (_m(0.75, 0.58), {"qwk.pooled": {"ci_low": -0.01, "ci_high": 0.1}}, 0, "ci_ok"),
        (_m(0.75, 0.50), CI_OK, 0, "worst_prompt_ok"),  # worst prompt drops 0.10 > 0.05
        (_m(None, 0.60), CI_OK, 0, "gain_ok"),  # undefined metric never proceeds
    ],
)
def test_decision_rule(cand, ci, proceed, failed):
    d = decision.decide(cand, _m(0.70, 0.60), ci, "qwk.pooled", min_gain=0.01, max_worst_prompt_drop=0.05)
    assert d["proceed"] == proceed and d["verdict"] == ("proceed" if proceed else "defer")
    if failed:
        assert d[failed] == 0 and len(d["reasons"]) == 1


def test_decision_on_rmse_uses_lower_is_better():
    d = decision.decide(_m(0.70, 0.60, rmse=0.45), _m(0.70, 0.60, rmse=0.50), CI_OK, "rmse", 0.01, 0.05)
    assert d["proceed"] == 1 and d["gain"] == pytest.approx(0.05)


def test_unknown_decision_metric_lists_valid_keys(tmp_path, params):
    with pytest.raises(AESError, match=r"report.decision_metric 'qwk.mean'.*valid keys: qwk.pooled"):
        decision.decide(_m(0.7, 0.6), _m(0.7, 0.6), CI_OK, "qwk.mean", 0.01, 0.05)
    p = copy.deepcopy(params)
    p["report"]["decision_metric"] = "kappa"
    with pytest.raises(AESError, match="valid keys"):
        rep.build_report(p, tmp_path)


# ---------------------------------------------------------------- stage inputs and outputs


def test_missing_upstream_stage_is_named(tmp_path, params):
    write_fake_workspace(tmp_path, stages=["gbm_cv", "finetune_cv", "dro_cv"], representations=False, curves=False, n_prompts=6, per_prompt=25)
    p = copy.deepcopy(params)
    with pytest.raises(AESError, match=r"grl_cv\.json of stage 'grl_cv' not found; run `dvc repro grl_cv`"):
        rep.build_report(p, tmp_path)
    p["objective"] = "grl"
    with pytest.raises(AESError, match="objective 'grl' .*no trained results"):
        rep.build_report(p, tmp_path)
    (tmp_path / "data/predictions/dro_cv.csv").unlink()
    write_fake_workspace(tmp_path, stages=["grl_cv"], representations=False, curves=False, n_prompts=6, per_prompt=25)
    p["objective"] = "erm"
    with pytest.raises(AESError, match=r"predictions/dro_cv\.csv.*dvc repro dro_cv"):
        rep.build_report(p, tmp_path)


def test_report_end_to_end(tmp_path, params):
    write_fake_workspace(tmp_path, n_prompts=10, per_prompt=30)
    report = rep.run_report(params, tmp_path)
    saved = json.loads((tmp_path / "metrics/report.json").read_text())
    assert saved["decision"]["proceed"] in (0, 1) and saved["stages"]["candidate"] == "dro_cv"
    assert set(saved["delta"]) == {"candidate_vs_baseline", "candidate_vs_erm", "erm_vs_baseline"}
    probe = saved["probe"]
    assert probe["frozen_embeddings"]["within_fold"]["accuracy"] > 0.95 > probe["grl_cv"]["within_fold"]["accuracy"]
    assert set(saved["calibration"]) == set(MODEL_STAGES)
    assert not (tmp_path / "README.md").exists()  # the README table is `aes-readme`'s job, not the stage's
    assert "Verdict" in (tmp_path / "reports/decision.md").read_text()
    conf = pd.read_csv(tmp_path / "plots/report/confusion.csv")
    assert list(conf.columns) == ["model", "y_true", "y_pred", "count"] and len(conf) == 4 * 81
    assert conf.groupby("model")["count"].sum().eq(300).all()  # aggregates only, every essay counted once
    table = pd.read_csv(tmp_path / "plots/report/per_prompt_qwk.csv")
    assert len(table) == 10 and "delta_candidate_vs_baseline" in table.columns
    png = {p.name for p in (tmp_path / "plots/report/png").iterdir()}
    assert {"per_prompt_qwk.png", "residual_by_band.png", "residual_by_grade.png", "confusion_dro_cv.png",
            "training_curves.png", "adversary_accuracy.png", "dro_max_weight.png"} <= png
    assert report["decision"] == saved["decision"]


def test_stale_metrics_file_is_detected(tmp_path, params):
    write_fake_workspace(tmp_path, representations=False, curves=False, n_prompts=6, per_prompt=25)
    path = tmp_path / "metrics/gbm_cv.json"
    metrics = json.loads(path.read_text())
    metrics["qwk"]["pooled"] += 0.1
    path.write_text(json.dumps(metrics))
    with pytest.raises(AESError, match="stale: run `dvc repro gbm_cv`"):
        rep.build_report(params, tmp_path)


# ---------------------------------------------------------------- final_test gate


def _test_split(n_prompts=6, per_prompt=10):
    essays = make_cv_essays(n_prompts=n_prompts, per_prompt=per_prompt).drop(columns="fold")
    essays["text"] = "words " * 5
    test_prompts = ["Prompt 00", "Prompt 01"]
    test = essays[essays["prompt"].isin(test_prompts)]
    cv = essays[~essays["prompt"].isin(test_prompts)].reset_index(drop=True)
    folds = [{"fold": k, "val_record_ids": cv.loc[cv["prompt"] == p, "record_id"].tolist()}
             for k, p in enumerate(sorted(cv["prompt"].unique()))]
    return essays, {"test": {"prompts": test_prompts, "record_ids": test["record_id"].tolist()}, "folds": folds}


def test_final_test_refuses_without_decision(tmp_path, params):
    essays, splits = _test_split()
    called = []
    with pytest.raises(AESError, match="no decision found; run `dvc repro report`"):
        run_final_test(params, essays, splits, tmp_path / "report.json", tmp_path / "final.json",
                       fit_predict=lambda *a: called.append(a))
    (tmp_path / "report.json").write_text(json.dumps({"objective": "dro", "candidate": {}}))  # report without decision
    with pytest.raises(AESError, match="no decision"):
        chosen_model(params, tmp_path / "report.json")
    assert not called and not (tmp_path / "final.json").exists()


def test_final_test_follows_decision_and_states_override(tmp_path, params):
    essays, splits = _test_split()
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"objective": "dro", "decision": {"proceed": 0, "verdict": "defer"}}))
    seen = {}

    def stub(choice, train, test, p):
        seen.update(stage=choice["stage"], train=set(train["record_id"]), test=set(test["record_id"]))
        return test["y"].to_numpy() + 0.1

    out = run_final_test(params, essays, splits, report, tmp_path / "final.json", fit_predict=stub)
    assert out["model"] == "gbm_cv" and out["override"] == 0 and seen["stage"] == "gbm_cv"
    assert seen["test"] == set(splits["test"]["record_ids"]) and not seen["train"] & seen["test"]
    assert out["test"]["qwk"]["pooled"] > 0.9
    p = copy.deepcopy(params)
    p["final_test"]["override"] = True
    out = run_final_test(p, essays, splits, report, tmp_path / "final.json", fit_predict=stub)
    assert out["model"] == "dro_cv" and out["override"] == 1 and "OVERRIDE" in out["reason"]
    assert json.loads((tmp_path / "final.json").read_text())["override"] == 1
    report.write_text(json.dumps({"objective": "dro", "decision": {"proceed": 1, "verdict": "proceed"}}))
    assert chosen_model(params, report)["stage"] == "dro_cv"


def test_final_test_baseline_trains_on_all_cv_essays_and_scores_locked_test(tmp_path, params, tiny_encoder, monkeypatch):
    from aes.encoders.embedding import embed_texts, save_embeddings
    from tests.synthetic import make_ellipse_frame

    raw = make_ellipse_frame(n_prompts=6, per_prompt=12, seed=3)
    essays = pd.DataFrame({"record_id": raw["text_id_kaggle"], "text": raw["full_text"], "prompt": raw["prompt"],
                           "grade": raw["grade"], "y": raw["Overall"].astype(float)})
    test_prompts = ["Prompt 0", "Prompt 1"]
    cv = essays[~essays["prompt"].isin(test_prompts)].reset_index(drop=True)
    splits = {"test": {"prompts": test_prompts, "record_ids": essays.loc[essays["prompt"].isin(test_prompts), "record_id"].tolist()},
              "folds": [{"fold": k, "val_record_ids": cv.loc[cv["prompt"] == p, "record_id"].tolist()}
                        for k, p in enumerate(sorted(cv["prompt"].unique()))]}
    p = copy.deepcopy(params)
    p["embed"].update(model=str(tiny_encoder), max_length=64, batch_size=8)
    p["gbm"].update(n_estimators=20, early_stopping_rounds=5, n_jobs=1)
    p["report"]["min_prompt_n"] = 5
    monkeypatch.chdir(tmp_path)
    save_embeddings(Path("data/embeddings"), embed_texts(cv["text"].tolist(), str(tiny_encoder), 64, 8), cv["record_id"])
    Path("metrics").mkdir()
    Path("metrics/report.json").write_text(json.dumps({"objective": "dro", "decision": {"proceed": 0, "verdict": "defer"}}))
    out = run_final_test(p, essays, splits)
    saved = json.loads(Path("metrics/final_test.json").read_text())
    assert saved["model"] == "gbm_cv" and saved["n_train"] == len(cv) == 48
    assert saved["test"]["n"] == {"essays": 24, "prompts": 2, "prompts_scored": 2}
    assert saved["test"]["rmse"] is not None and out == saved


def test_final_test_candidate_fine_tunes_on_cv_and_never_uses_test_scores(tmp_path, tiny_encoder):
    from aes.data.corpus import load_essays
    from aes.data.splits import load_splits
    from tests.training_fixtures import make_training_repo

    p = make_training_repo(tmp_path, tiny_encoder, epochs=1)
    p["final_test"]["override"] = False
    essays, splits = load_essays(tmp_path / "data/prepared/essays.csv"), load_splits(tmp_path / "data/prepared/splits.json")
    report = tmp_path / "metrics/report.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"objective": p["objective"], "decision": {"proceed": 1, "verdict": "proceed"}}))
    first = run_final_test(p, essays, splits, report, tmp_path / "final_a.json")
    assert first["model"] == stage_for_objective(p["objective"]) and first["test"]["n"]["essays"] == len(splits["test"]["record_ids"])
    # Rewrite every locked-test score: the trained model (and so its predictions' RMSE vs the
    # ORIGINAL scores) must be unchanged, i.e. the test scores never reached training.
    test_ids = set(splits["test"]["record_ids"])
    flipped = essays.assign(y=np.where(essays["record_id"].isin(test_ids), 6.0 - essays["y"], essays["y"]))
    captured = {}

    def capture(choice, train, test, params):
        from aes.holdout.final_test import default_fit_predict

        captured["pred"] = default_fit_predict(choice, train, test, params)
        return captured["pred"]

    run_final_test(p, flipped, splits, report, tmp_path / "final_b.json", fit_predict=capture)
    original_test = essays[essays["record_id"].isin(test_ids)]
    from aes.core.metrics import rmse

    assert rmse(original_test["y"], captured["pred"]) == pytest.approx(first["test"]["rmse"], abs=1e-6)
