"""linear_cv: the linear probe, ridge on the frozen embeddings, prompt-grouped CV; the artifact contract."""

import time

from aes.baseline.linear import cross_validate, fits_to_json, inner_predictions
from aes.core.artifacts import make_inner_frame, make_oof_frame, write_model_outputs
from aes.core.errors import stage_main
from aes.core.io import write_json
from aes.core.metrics import headline_text
from aes.core.registry import EMBEDDINGS, LINEAR_STAGE, inputs_record, models_dir
from aes.data.corpus import load_essays
from aes.data.params import load_params
from aes.data.splits import cv_essays, load_splits
from aes.encoders.store import load_embeddings
from aes.features.normalise import normalise_embeddings


@stage_main
def main() -> None:
    params = load_params()
    lin = params["linear"]
    cv = cv_essays(load_essays(), load_splits())
    started = time.perf_counter()
    embeddings = normalise_embeddings(load_embeddings(EMBEDDINGS, cv["record_id"]), cv["prompt"], params["normalise"]["embeddings"])
    oof_pred, fits = cross_validate(cv, embeddings, lin["alphas"], lin["inner_folds"])
    write_json(models_dir(LINEAR_STAGE) / "probes.json", fits_to_json(fits))
    extra = {"alpha": {str(k): f.alpha for k, f in fits.items()}, "inputs": inputs_record(params["normalise"], reads_features=False)}
    metrics = write_model_outputs(LINEAR_STAGE, make_oof_frame(cv, cv["fold"], oof_pred), time.perf_counter() - started,
                                  params["report"]["min_prompt_n"], extra=extra, inner=make_inner_frame(cv, inner_predictions(cv, fits)))
    print(f"{LINEAR_STAGE}: {headline_text(metrics)}, alpha per fold {list(extra['alpha'].values())}")


if __name__ == "__main__":
    main()
