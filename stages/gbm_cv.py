"""gbm_cv: XGBoost on frozen embeddings, prompt-grouped CV; writes the model artifact contract."""

import time

from aes.baseline.gbm import best_iteration, build_features, cross_validate, save_models
from aes.core.artifacts import make_oof_frame, write_model_outputs
from aes.core.errors import stage_main
from aes.core.params import load_params
from aes.core.registry import BASELINE_STAGE, EMBEDDINGS, models_dir
from aes.data.corpus import load_essays
from aes.data.splits import cv_essays, load_splits
from aes.encoders.embedding import load_embeddings


@stage_main
def main() -> None:
    params = load_params()
    gbm = params["gbm"]
    cv = cv_essays(load_essays(), load_splits())
    features = build_features(load_embeddings(EMBEDDINGS, cv["record_id"]), cv["text"], gbm["text_stats"])
    started = time.perf_counter()
    oof_pred, models = cross_validate(cv, features, gbm)
    runtime_s = time.perf_counter() - started
    save_models(models, models_dir(BASELINE_STAGE))
    extra = {"best_iterations": {str(k): best_iteration(m) for k, m in enumerate(models)}, "n_features": int(features.shape[1])}
    metrics = write_model_outputs(BASELINE_STAGE, make_oof_frame(cv, cv["fold"], oof_pred), runtime_s, params["report"]["min_prompt_n"], extra=extra)
    print(f"{BASELINE_STAGE}: QWK pooled {metrics['qwk']['pooled']:.3f}, RMSE {metrics['rmse']:.3f}, trees per fold {list(extra['best_iterations'].values())}")


if __name__ == "__main__":
    main()
