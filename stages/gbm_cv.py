"""gbm_cv: XGBoost on frozen embeddings, prompt-grouped CV; writes the model artifact contract."""

import time
from pathlib import Path

from aes.data import load_essays
from aes.embedding import load_embeddings
from aes.errors import stage_main
from aes.evaluation import make_oof_frame, write_model_outputs
from aes.gbm import best_iteration, build_features, cross_validate, save_models
from aes.params import load_params
from aes.splits import cv_essays, load_splits

STAGE = "gbm_cv"
EMBEDDINGS = Path("data/embeddings")
MODELS = Path("models/gbm_cv")


@stage_main
def main() -> None:
    params = load_params()
    gbm = params["gbm"]
    cv = cv_essays(load_essays(), load_splits())
    features = build_features(load_embeddings(EMBEDDINGS, cv["record_id"]), cv["text"], gbm["text_stats"])
    started = time.perf_counter()
    oof_pred, models = cross_validate(cv, features, gbm)
    runtime_s = time.perf_counter() - started
    save_models(models, MODELS)
    extra = {"best_iterations": {str(k): best_iteration(m) for k, m in enumerate(models)}, "n_features": int(features.shape[1])}
    metrics = write_model_outputs(STAGE, make_oof_frame(cv, cv["fold"], oof_pred), runtime_s, params["report"]["min_prompt_n"], extra=extra)
    print(f"gbm_cv: QWK pooled {metrics['qwk']['pooled']:.3f}, RMSE {metrics['rmse']:.3f}, trees per fold {list(extra['best_iterations'].values())}")


if __name__ == "__main__":
    main()
