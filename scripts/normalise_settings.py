"""XGBoost (gbm_cv's model, one seed) under each input-normalisation setting, on the workspace's CV essays.

Run after `dvc repro embed` (it reads the prepared essays, the embeddings and params.yaml's gbm
section); writes the pooled, within-prompt and worst-quarter QWK of each setting to OUT (JSON):

    .venv/bin/python scripts/normalise_settings.py bench/normalise_ellipse_xgb.json

One seed and no report: a quick look at which setting a dataset's default should take; a setting
worth keeping is then run as an experiment (`dvc exp run -S normalise.features=...`).
"""

import json
import sys
import time

import numpy as np

from aes.baseline.gbm import cross_validate, stack_inputs
from aes.core.artifacts import make_oof_frame
from aes.core.metrics import summarize
from aes.core.registry import EMBEDDINGS
from aes.data.corpus import load_essays
from aes.data.params import load_params
from aes.data.registry import dataset_of
from aes.data.splits import cv_essays, load_splits
from aes.encoders.store import load_embeddings
from aes.features import writing_features

SETTINGS = [("training_fold", "as_is"), ("prompt_minmax", "as_is"), ("prompt_zscore", "as_is"), ("prompt_minmax", "prompt_mean"),
            ("training_fold", "prompt_mean")]

params = load_params()
gbm = params["gbm"]
cv = cv_essays(load_essays(), load_splits())
emb = load_embeddings(EMBEDDINGS, cv["record_id"])
hand, _ = writing_features(cv["text"].tolist(), [g for g in gbm["features"] if g != "embeddings"], dataset_of(params).text_repair)
print(len(cv), "essays", cv["prompt"].nunique(), "prompts", flush=True)
out = {}
for features, embeddings in SETTINGS:
    started = time.time()
    x = stack_inputs(emb, hand, cv["prompt"].to_numpy(), {"features": features, "embeddings": embeddings})
    pred, _, _, _ = cross_validate(cv, x, gbm, 7)
    m = summarize(make_oof_frame(cv, cv["fold"], pred, 7), params["report"]["min_prompt_n"])
    out[f"{features}/{embeddings}"] = {k: m["qwk"][k] for k in ("pooled", "within_prompt", "worst_quarter")} | {"s": round(time.time() - started)}
    print(features, embeddings, out[f"{features}/{embeddings}"], flush=True)
with open(sys.argv[1], "w") as f:
    json.dump(out, f, indent=1)
