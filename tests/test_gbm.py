import json
import runpy
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from aes.features import FEATURE_GROUPS
from aes.baseline.gbm import (
    best_iteration,
    build_features,
    cross_validate,
    fit_fold,
    save_models,
)
from aes.core.artifacts import CALIBRATED_COLUMNS, PREDICTION_COLUMNS
from aes.core.errors import AESError
from aes.core.scale import SCALE_COLUMNS
from aes.data.clean import validate_and_clean
from aes.data.ellipse import ELLIPSE
from aes.data.registry import prepare_settings
from aes.data.splits import build_splits, cv_essays
from tests.committed import committed_params
from tests.report_fixtures import GBM, HALF_BANDS_SCALE, points_to_unit, with_scale
from tests.report_fixtures import gbm_cv_frame as _cv_frame
from tests.synthetic import make_ellipse_frame
from tests.yamlio import dump_yaml

ROOT = Path(__file__).resolve().parents[1]
def test_build_features_stacks_embeddings_then_groups_in_a_fixed_order():
    emb = np.arange(8, dtype=np.float64).reshape(2, 4)
    texts = ["Hello world. It is warm!\n\nSecond para here.", "one two three"]
    X, names = build_features(emb, texts, ["punctuation", "embeddings", "length"])
    expected = [f"emb_{j}" for j in range(4)] + list(FEATURE_GROUPS["length"]) + list(FEATURE_GROUPS["punctuation"])
    assert names == expected and X.shape == (2, len(expected)) and X.dtype == np.float32
    np.testing.assert_array_equal(X[:, :4], emb)  # the embeddings come first, unchanged
    assert X[0, names.index("n_words")] == 8 and X[1, names.index("n_words")] == 3
    assert X[0, names.index("n_paragraphs")] == 2
    # the order in params.yaml does not change the layout
    again, names_again = build_features(emb, texts, ["length", "embeddings", "punctuation"])
    assert names_again == names and np.array_equal(again, X)
    only_text, text_names = build_features(None, texts, ["length"])  # no embeddings needed
    assert text_names == list(FEATURE_GROUPS["length"]) and np.array_equal(only_text, X[:, 4:8])
    only_emb, emb_names = build_features(emb, texts, ["embeddings"])
    assert emb_names == names[:4] and np.array_equal(only_emb, X[:, :4])


def _spy_fits(monkeypatch):
    calls = []
    original_fit = xgb.XGBRegressor.fit

    def spy_fit(self, X, y, **kwargs):
        eval_sets = kwargs.get("eval_set") or []
        calls.append({"fit_ids": set(X[:, 0].astype(int)), "eval_ids": [set(Xe[:, 0].astype(int)) for Xe, _ in eval_sets],
                      "max_depth": self.max_depth, "n_estimators": self.n_estimators})
        return original_fit(self, X, y, **kwargs)

    monkeypatch.setattr(xgb.XGBRegressor, "fit", spy_fit)
    return calls


def test_depth_and_trees_are_never_chosen_on_the_validation_fold(monkeypatch):
    cv, features = _cv_frame()
    calls = _spy_fits(monkeypatch)
    _, _, choices, _ = cross_validate(cv, features, GBM, seed=7)
    depths = GBM["max_depth"]
    assert len(calls) == 3 * (len(depths) + 1)  # per fold: one inner fit per candidate depth, then the refit
    for k in range(3):
        fold_calls = calls[k * (len(depths) + 1):(k + 1) * (len(depths) + 1)]
        val_ids = set(np.flatnonzero(cv["fold"] == k))
        train_ids = set(np.flatnonzero(cv["fold"] != k))
        inner, refit = fold_calls[:-1], fold_calls[-1]
        assert [c["max_depth"] for c in inner] == depths
        for call in inner:
            assert len(call["eval_ids"]) == 1 and call["eval_ids"][0], "early stopping needs an eval set"
            eval_ids = call["eval_ids"][0]
            assert not eval_ids & val_ids, f"fold {k}: the depth/tree choice saw validation essays"
            assert eval_ids <= train_ids and call["fit_ids"] <= train_ids
            assert not eval_ids & call["fit_ids"]
            eval_prompts = set(cv["prompt"].iloc[sorted(eval_ids)])
            assert not eval_prompts & set(cv["prompt"].iloc[sorted(call["fit_ids"])]), "inner split must group by prompt"
        assert inner[0]["eval_ids"] == inner[1]["eval_ids"], "every depth is judged on the same inner split"
        # the refit uses the whole training fold, no eval set, the chosen depth and number of trees
        assert refit["fit_ids"] == train_ids and refit["eval_ids"] == []
        assert refit["max_depth"] == choices[k]["max_depth"] and refit["n_estimators"] == choices[k]["n_trees"]


def test_fit_fold_picks_the_depth_with_the_lowest_inner_rmse():
    """y is an interaction of two features: stumps (depth 1) cannot fit it, depth 2 can.

    The model is fitted on the unit range of the half-band scale (aes.data.corpus.target_matrix), so
    its RMSEs are in shares of the 1-5 range: a margin of 0.2 score points is 0.2 * POINT there."""
    POINT = 1.0 / (HALF_BANDS_SCALE.high - HALF_BANDS_SCALE.low)
    rng = np.random.default_rng(4)
    n = 240
    x = rng.normal(size=(n, 2))
    y = 3 + np.sign(x[:, 0]) * np.sign(x[:, 1]) + rng.normal(0, 0.05, n)
    train = with_scale(pd.DataFrame({"prompt": np.repeat([f"P{p}" for p in range(12)], n // 12), "y": y}))
    X = np.column_stack([x, rng.normal(size=(n, 2))]).astype(np.float32)
    params = GBM | {"n_estimators": 200, "learning_rate": 0.3, "subsample": 1.0, "colsample_bytree": 1.0,
                    "early_stopping_rounds": 10}
    model, choice, _ = fit_fold(train, X, params, seed=3)
    assert set(choice) == {"max_depth", "n_trees", "inner_rmse"} and set(choice["inner_rmse"]) == {"1", "2"}
    assert choice["inner_rmse"]["2"] < choice["inner_rmse"]["1"] - 0.2 * POINT
    assert choice["max_depth"] == 2 and model.max_depth == 2
    assert 1 <= choice["n_trees"] <= params["n_estimators"] and best_iteration(model) == choice["n_trees"]
    assert np.sqrt(np.mean((model.predict(X) - points_to_unit(y)) ** 2)) < choice["inner_rmse"]["1"] - 0.2 * POINT
    # one candidate depth: no choice to make, but the inner split still sets the number of trees
    model, choice, _ = fit_fold(train, X, params | {"max_depth": [1]}, seed=3)
    assert choice["max_depth"] == 1 and list(choice["inner_rmse"]) == ["1"] and choice["n_trees"] < params["n_estimators"]
    # features that cannot split give every depth the same inner RMSE: the tie goes to the shallower tree
    _, choice, _ = fit_fold(train, np.zeros_like(X), params | {"max_depth": [3, 1]}, seed=3)
    assert choice["inner_rmse"]["3"] == choice["inner_rmse"]["1"] and choice["max_depth"] == 1


def test_cross_validate_is_seeded_and_predicts_every_essay():
    cv, features = _cv_frame()
    oof, models, choices, _ = cross_validate(cv, features, GBM, seed=7)
    again, _, again_choices, _ = cross_validate(cv, features, GBM, seed=7)
    assert np.array_equal(oof, again) and choices == again_choices
    assert np.isfinite(oof).all() and len(models) == 3 and len(choices) == 3
    for model, choice in zip(models, choices):
        assert choice["max_depth"] in GBM["max_depth"] and model.max_depth == choice["max_depth"]
        assert 1 <= best_iteration(model) == choice["n_trees"] <= GBM["n_estimators"]
    # column 1 carries the signal: out-of-fold predictions must track y
    assert oof.shape == (len(cv), 1)  # a hand-made frame with only y: one target
    assert np.corrcoef(oof[:, 0], cv["y"])[0, 1] > 0.5
    # another seed subsamples other rows and columns (and another inner split): other predictions
    other, _, _, _ = cross_validate(cv, features, GBM, seed=8)
    assert not np.array_equal(oof, other) and np.corrcoef(other[:, 0], cv["y"])[0, 1] > 0.5
    with pytest.raises(AESError, match="feature rows for"):
        cross_validate(cv, features[:-1], GBM, seed=7)
    with pytest.raises(AESError, match="at least 2 CV folds"):
        cross_validate(cv.assign(fold=0), features, GBM, seed=7)


@pytest.mark.parametrize("strategy", ["primary_choice", "multi_output_tree", "one_output_per_tree"])
def test_several_targets_are_one_model_per_fold_predicting_each_in_declared_order(strategy):
    """Overall, Grammar (driven by another feature) and Cohesion (= -Overall): one XGBoost per fold, (n, 3) predictions."""
    cv, features = _cv_frame(n_prompts=12, per_prompt=12)
    rng = np.random.default_rng(4)
    grammar = np.clip(np.round((3 + features[:, 2]) * 2) / 2, 1, 5)
    features[:, 2] += rng.normal(0, 0.1, len(cv))
    cv = cv.assign(Overall=cv["y"], Grammar=grammar, Cohesion=6.0 - cv["y"])
    params = GBM | {"multi_strategy": strategy, "n_estimators": 80}
    oof, models, choices, _ = cross_validate(cv, features, params, seed=7)
    assert oof.shape == (len(cv), 3) and np.isfinite(oof).all() and len(models) == 3
    assert models[0].predict(features[:5]).shape == (5, 3)
    if strategy == "primary_choice":  # the primary model is the one-target model; the traits reuse its depth and trees
        one, _, one_choices, _ = cross_validate(cv[["record_id", "prompt", "fold", "grade", "Overall", *SCALE_COLUMNS]], features, params, seed=7)
        np.testing.assert_array_equal(oof[:, 0], one[:, 0])
        assert choices == one_choices
        for model, choice in zip(models, choices):
            assert model.traits.max_depth == choice["max_depth"] and model.traits.get_booster().num_boosted_rounds() == choice["n_trees"]
    else:
        assert models[0].get_params()["multi_strategy"] == strategy
    assert np.corrcoef(oof[:, 0], cv["Overall"])[0, 1] > 0.5
    assert np.corrcoef(oof[:, 1], cv["Grammar"])[0, 1] > 0.5  # each column tracks its own target ...
    assert np.corrcoef(oof[:, 2], cv["Cohesion"])[0, 1] > 0.5  # ... in the declared order
    assert abs(np.corrcoef(oof[:, 1], cv["Overall"])[0, 1]) < 0.5


def test_save_models_writes_one_file_per_seed_and_fold(tmp_path):
    cv, features = _cv_frame()
    models = {s: cross_validate(cv, features, GBM, seed=s)[1] for s in (7, 8)}
    folder = tmp_path / "models" / "gbm_cv"
    (folder / "fold_0.json").parent.mkdir(parents=True)
    (folder / "fold_0.json").write_text("{}")  # a file of the old layout must not survive
    save_models(models, folder)
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*.json")) == [
        f"seed_{s}/fold_{k}.json" for s in (7, 8) for k in range(3)]
    booster = xgb.Booster()
    booster.load_model(folder / "seed_8" / "fold_2.json")
    np.testing.assert_allclose(booster.predict(xgb.DMatrix(features)), models[8][2].predict(features), rtol=1e-6)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_encoder):
    """A tiny prepared repo (essays + splits + params) where embed and gbm_cv have run."""
    root = tmp_path_factory.mktemp("gbm_ws")
    params = committed_params()
    params["prepare"]["ellipse"].update(n_folds=3, test_candidates=50)
    params["embed"].update(model=str(tiny_encoder), max_length=64, batch_size=8)
    # the fine-tune's frozen pass comes from embed's own forward pass (same model and length)
    params["finetune"].update(model=str(tiny_encoder), max_length=64, eval_batch_size=16, mixed_precision="no")
    params["gbm"].update(n_estimators=40, early_stopping_rounds=5, n_jobs=1, max_depth=[1, 2], seeds=[3, 5],
                         features=["embeddings", "length", "lexical"])
    params["report"].update(min_prompt_n=3)
    (root / "params.yaml").write_text(dump_yaml(params))
    essays, _ = validate_and_clean(
        make_ellipse_frame(n_prompts=10, per_prompt=8, seed=3).assign(source_file="own.csv", source_row=lambda f: f.index + 1),
        prepare_settings(params), ELLIPSE,
    )
    (root / "data" / "prepared").mkdir(parents=True)
    essays.to_csv(root / "data" / "prepared" / "essays.csv", index=False)
    splits = build_splits(essays, prepare_settings(params), "sha")
    (root / "data" / "prepared" / "splits.json").write_text(json.dumps(splits))
    shutil.copytree(ROOT / "stages", root / "stages")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    runpy.run_path(str(root / "stages" / "embed.py"), run_name="__main__")
    runpy.run_path(str(root / "stages" / "gbm_cv.py"), run_name="__main__")
    mp.undo()
    return root, cv_essays(essays, splits), splits


def test_embed_stage_writes_only_cv_essays(workspace):
    root, cv, splits = workspace
    emb = np.load(root / "data" / "embeddings" / "embeddings.npy")
    ids = pd.read_csv(root / "data" / "embeddings" / "record_ids.csv", dtype=str)["record_id"]
    assert emb.shape == (len(cv), 32) and emb.dtype == np.float32
    assert ids.tolist() == cv["record_id"].tolist()
    assert not set(ids) & set(splits["test"]["record_ids"])
    metrics = json.loads((root / "metrics" / "embed.json").read_text())
    assert metrics["n_essays"] == len(cv) and metrics["dim"] == 32 and metrics["max_length"] == 64
    assert {"model", "runtime_s", "essays_per_s"} <= set(metrics)
    assert metrics["frozen_pass"]["shared_with_embeddings"] and metrics["frozen_pass"]["trainable_layers"] == 1
    np.testing.assert_array_equal(np.load(root / "data" / "frozen_pass" / "pooled.npy"), emb)  # one pass, both outputs
    assert np.load(root / "data" / "frozen_pass" / "hidden.npy").shape[:1] == (len(cv),)


def test_gbm_cv_stage_writes_the_contract_files(workspace):
    root, cv, _ = workspace
    n_features = 32 + len(FEATURE_GROUPS["length"]) + len(FEATURE_GROUPS["lexical"])
    oof = pd.read_csv(root / "data" / "predictions" / "gbm_cv.csv", dtype={"record_id": str})
    traits = ["Cohesion", "Syntax", "Vocabulary", "Phraseology", "Grammar", "Conventions"]
    assert list(oof.columns) == PREDICTION_COLUMNS + [f"y_{kind}_{t}" for t in traits for kind in ("true", "pred_raw")] + CALIBRATED_COLUMNS
    assert oof["seed"].tolist() == [3] * len(cv) + [5] * len(cv)  # one row per essay and seed, seed-major
    for _, per_seed in oof.groupby("seed"):
        assert per_seed["record_id"].tolist() == cv["record_id"].tolist()
        assert per_seed["fold"].tolist() == cv["fold"].tolist()
    assert not np.allclose(oof.loc[oof.seed == 3, "y_pred_raw"], oof.loc[oof.seed == 5, "y_pred_raw"])
    metrics = json.loads((root / "metrics" / "gbm_cv.json").read_text())
    assert {"qwk", "rmse", "mae", "within_one_step", "n", "runtime_s", "seed_sd", "seeds"} <= set(metrics)
    assert metrics["n"]["essays"] == len(cv) and metrics["n"]["seeds"] == 2 and set(metrics["seeds"]) == {"3", "5"}
    assert metrics["rmse"] == pytest.approx(np.mean([metrics["seeds"][s]["rmse"] for s in ("3", "5")]), abs=1e-5)
    assert list(metrics["traits"]) == [*traits, "mean_qwk_pooled", "mean_qwk_pooled_sd"]
    assert set(metrics["traits"]["Grammar"]) == {"qwk_pooled", "qwk_pooled_sd", "qwk_worst_quarter", "qwk_worst_quarter_sd", "rmse", "rmse_sd"}
    assert metrics["traits"]["mean_qwk_pooled"] == pytest.approx(np.mean([metrics["traits"][t]["qwk_pooled"] for t in traits]), abs=1e-5)
    assert metrics["n_features"] == n_features and metrics["features"] == ["embeddings", "length", "lexical"]
    assert set(metrics["choices"]) == {"3", "5"} and all(set(c) == {"0", "1", "2"} for c in metrics["choices"].values())
    assert all(c["max_depth"] in (1, 2) for seed in metrics["choices"].values() for c in seed.values())
    for seed in (3, 5):
        for k in range(3):
            booster = xgb.Booster()
            booster.load_model(root / "models" / "gbm_cv" / f"seed_{seed}" / f"fold_{k}.json")
            assert booster.num_features() == n_features
            assert booster.num_boosted_rounds() == metrics["choices"][str(seed)][str(k)]["n_trees"]
    for name in ("by_prompt", "by_grade", "by_band"):
        diag = pd.read_csv(root / "plots" / "gbm_cv" / f"{name}.csv")
        assert diag["n"].sum() == len(cv)  # means over seeds, not essays x seeds
