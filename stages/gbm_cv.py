"""gbm_cv: XGBoost on frozen embeddings + writing features, prompt-grouped CV, every seed; the artifact contract."""

import time

from aes.baseline.gbm import build_features, cross_validate, save_models
from aes.core.artifacts import make_inner_frame, make_oof_frame, stack_seeds, write_model_outputs
from aes.core.errors import stage_main
from aes.core.metrics import headline_text
from aes.core.registry import BASELINE_STAGE, EMBEDDINGS, EMBEDDINGS_SWITCH, inputs_record, models_dir
from aes.data.corpus import load_essays
from aes.data.params import load_params
from aes.data.registry import dataset_of
from aes.data.splits import cv_essays, load_splits
from aes.encoders.store import load_embeddings


@stage_main
def main() -> None:
    params = load_params()
    gbm = params["gbm"]
    cv = cv_essays(load_essays(), load_splits())
    started = time.perf_counter()
    features, names = build_features(load_embeddings(EMBEDDINGS, cv["record_id"]), cv["text"], gbm["features"],
                                     dataset_of(params).text_repair, params["normalise"], cv["prompt"])
    frames, models, choices, inner = [], {}, {}, {}
    for seed in gbm["seeds"]:
        oof_pred, models[seed], fold_choices, seed_inner = cross_validate(cv, features, gbm, seed)
        inner.update(seed_inner)
        frames.append(make_oof_frame(cv, cv["fold"], oof_pred, seed))
        choices[str(seed)] = {str(k): c for k, c in enumerate(fold_choices)}
    save_models(models, models_dir(BASELINE_STAGE))
    extra = {"n_features": len(names), "features": gbm["features"], "choices": choices,
             "inputs": inputs_record(params["normalise"], reads_features=gbm["features"] != [EMBEDDINGS_SWITCH],
                                     reads_embeddings=EMBEDDINGS_SWITCH in gbm["features"])}
    metrics = write_model_outputs(BASELINE_STAGE, stack_seeds(frames), time.perf_counter() - started, params["report"]["min_prompt_n"], extra=extra,
                                  inner=make_inner_frame(cv, inner))
    print(f"{BASELINE_STAGE}: {headline_text(metrics)}, {len(names)} features")


if __name__ == "__main__":
    main()
