import json
import runpy
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from aes.baseline.gbm import best_iteration, build_features, cross_validate, text_stats
from aes.core.artifacts import PREDICTION_COLUMNS
from aes.data.corpus import validate_and_clean
from aes.data.splits import build_splits, cv_essays
from tests.synthetic import make_ellipse_frame
from tests.yamlio import dump_yaml, load_yaml

ROOT = Path(__file__).resolve().parents[1]
GBM = {
    "text_stats": False, "n_estimators": 60, "learning_rate": 0.1, "max_depth": 2, "min_child_weight": 1.0,
    "subsample": 0.8, "colsample_bytree": 0.8, "reg_lambda": 1.0, "early_stopping_rounds": 5,
    "inner_val_fraction": 0.25, "n_jobs": 1, "seed": 7,
}


def _cv_frame(n_prompts=9, per_prompt=8, n_folds=3, seed=0):
    """CV-shaped frame (prompt, y, fold) plus features whose column 0 is the row id."""
    rng = np.random.default_rng(seed)
    n = n_prompts * per_prompt
    prompt = np.repeat([f"P{p}" for p in range(n_prompts)], per_prompt)
    y = np.clip(np.round(rng.normal(3, 0.7, n) * 2) / 2, 1, 5)
    fold = np.repeat(np.arange(n_prompts) % n_folds, per_prompt)
    cv = pd.DataFrame({"record_id": [f"r{i}" for i in range(n)], "prompt": prompt, "y": y, "fold": fold, "grade": 9})
    features = np.column_stack([np.arange(n), y + rng.normal(0, 0.3, n), rng.normal(size=(n, 3))]).astype(np.float32)
    return cv, features


def test_text_stats_hand_computed():
    stats = text_stats(["Hello world. It is 3.5 degrees!\n\nSecond para here", ""])
    # 9 whitespace tokens; sentences split at ". " and "!" but not inside "3.5"; 2 paragraphs;
    # alphabetic words hello world it is degrees second para here -> 35 letters / 8, all distinct
    np.testing.assert_allclose(stats[0], [9, 3, 2, 35 / 8, 1.0])
    np.testing.assert_array_equal(stats[1], [0, 0, 0, 0, 0])
    assert text_stats(["the cat the cat"])[0, 4] == pytest.approx(0.5)
    assert build_features(np.zeros((2, 4)), ["a b", "c"], use_text_stats=True).shape == (2, 9)


def test_early_stopping_never_sees_the_validation_fold(monkeypatch):
    cv, features = _cv_frame()
    calls = []
    original_fit = xgb.XGBRegressor.fit

    def spy_fit(self, X, y, **kwargs):
        eval_sets = kwargs.get("eval_set") or []
        calls.append({"fit_ids": set(X[:, 0].astype(int)), "eval_ids": [set(Xe[:, 0].astype(int)) for Xe, _ in eval_sets]})
        return original_fit(self, X, y, **kwargs)

    monkeypatch.setattr(xgb.XGBRegressor, "fit", spy_fit)
    cross_validate(cv, features, GBM)
    assert len(calls) == 3  # one fit per fold
    for k, call in enumerate(calls):
        val_ids = set(np.flatnonzero(cv["fold"] == k))
        train_ids = set(np.flatnonzero(cv["fold"] != k))
        assert len(call["eval_ids"]) == 1 and call["eval_ids"][0], "early stopping needs an eval set"
        eval_ids = call["eval_ids"][0]
        assert not eval_ids & val_ids, f"fold {k}: early stopping saw validation essays"
        assert eval_ids <= train_ids and call["fit_ids"] <= train_ids
        assert not eval_ids & call["fit_ids"]
        eval_prompts = set(cv["prompt"].iloc[sorted(eval_ids)])
        assert not eval_prompts & set(cv["prompt"].iloc[sorted(call["fit_ids"])]), "inner split must group by prompt"


def test_cross_validate_is_seeded_and_predicts_every_essay():
    cv, features = _cv_frame()
    oof, models = cross_validate(cv, features, GBM)
    again, _ = cross_validate(cv, features, GBM)
    assert np.array_equal(oof, again)
    assert np.isfinite(oof).all() and len(models) == 3
    assert all(1 <= best_iteration(m) <= GBM["n_estimators"] for m in models)
    # column 1 carries the signal: out-of-fold predictions must track y
    assert np.corrcoef(oof, cv["y"])[0, 1] > 0.5
    no_es, full_models = cross_validate(cv, features, GBM | {"inner_val_fraction": 0.0})
    assert np.isfinite(no_es).all()
    assert [best_iteration(m) for m in full_models] == [GBM["n_estimators"]] * 3  # no early stopping: all trees


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_encoder):
    """A tiny prepared repo (essays + splits + params) where embed and gbm_cv have run."""
    root = tmp_path_factory.mktemp("gbm_ws")
    params = load_yaml((ROOT / "params.yaml").read_text())
    params["prepare"].update(n_folds=3, test_candidates=50)
    params["embed"].update(model=str(tiny_encoder), max_length=64, batch_size=8)
    params["gbm"].update(n_estimators=40, early_stopping_rounds=5, n_jobs=1, text_stats=True)
    params["report"].update(min_prompt_n=3)
    (root / "params.yaml").write_text(dump_yaml(params))
    essays, _ = validate_and_clean(
        make_ellipse_frame(n_prompts=10, per_prompt=8, seed=3).assign(source_file="own.csv", source_row=lambda f: f.index + 1),
        params["prepare"],
    )
    (root / "data" / "prepared").mkdir(parents=True)
    essays.to_csv(root / "data" / "prepared" / "essays.csv", index=False)
    splits = build_splits(essays, params["prepare"], "sha")
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


def test_gbm_cv_stage_writes_the_contract_files(workspace):
    root, cv, _ = workspace
    oof = pd.read_csv(root / "data" / "predictions" / "gbm_cv.csv", dtype={"record_id": str})
    assert list(oof.columns) == PREDICTION_COLUMNS
    assert oof["record_id"].tolist() == cv["record_id"].tolist()
    assert oof["fold"].tolist() == cv["fold"].tolist()
    metrics = json.loads((root / "metrics" / "gbm_cv.json").read_text())
    assert {"qwk", "rmse", "mae", "within_half_band", "n", "runtime_s"} <= set(metrics)
    assert metrics["n"]["essays"] == len(cv) and metrics["n_features"] == 32 + 5
    assert set(metrics["best_iterations"]) == {"0", "1", "2"}
    for k in range(3):
        booster = xgb.Booster()
        booster.load_model(root / "models" / "gbm_cv" / f"fold_{k}.json")
        assert booster.num_features() == 37
    for name in ("by_prompt", "by_grade", "by_band"):
        assert (root / "plots" / "gbm_cv" / f"{name}.csv").exists()
