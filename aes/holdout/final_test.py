"""The locked test, scored once: the configuration the report chose, trained on ALL CV essays.

Gate: :func:`chosen_model` refuses unless ``metrics/report.json`` holds a decision, or
``final_test.override`` is true. Proceed -> the candidate fine-tuning objective; defer -> the
frozen-embedding baseline; override -> the candidate regardless of the decision (and the output
says so). Nothing written here is read by any other stage.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from aes.core.errors import AESError
from aes.core.io import write_json
from aes.core.metrics import finite_or_none, mae, per_group_qwk, qwk, rmse, within_half_band
from aes.core.registry import BASELINE_STAGE, EMBEDDINGS, FINAL_TEST_JSON, REPORT_JSON, stage_for_objective


def read_decision(report_path: Path = REPORT_JSON) -> dict | None:
    """The ``decision`` block of the report (proceed 0/1, verdict, ...), or None if there is none."""
    if not report_path.exists():
        return None
    try:
        report = json.loads(report_path.read_text())
    except json.JSONDecodeError as err:
        raise AESError(f"{report_path}: not valid JSON ({err}); re-run `dvc repro report`") from None
    decision = report.get("decision")
    if not isinstance(decision, dict) or decision.get("proceed") not in (0, 1):
        return None
    return {**decision, "objective": report.get("objective")}


def chosen_model(params: dict, report_path: Path = REPORT_JSON) -> dict:
    """Which configuration the locked test scores, and why.

    Returns {"stage", "objective" (None for the baseline), "override" (0/1), "decision" (verdict or
    None), "reason"}. Raises AESError when there is no decision and no override.
    """
    override = bool(params["final_test"]["override"])
    decision = read_decision(report_path)
    objective = params["objective"]
    if decision is None and not override:
        raise AESError(
            f"{report_path}: no decision found; run `dvc repro report` first (the locked test is scored only after "
            "the report decides), or set final_test.override: true in params.yaml to score it anyway"
        )
    if decision is not None and decision.get("objective") not in (None, objective):
        raise AESError(
            f"{report_path} decided about objective '{decision['objective']}' but params.yaml objective is '{objective}'; "
            "re-run `dvc repro report`"
        )
    verdict = decision["verdict"] if decision else None
    if override:
        return {"stage": stage_for_objective(objective), "objective": objective, "override": 1, "decision": verdict,
                "reason": f"OVERRIDE (final_test.override=true): candidate '{objective}' scored although the decision is {verdict or 'missing'}"}
    if decision["proceed"]:
        return {"stage": stage_for_objective(objective), "objective": objective, "override": 0, "decision": verdict,
                "reason": f"decision proceed: candidate '{objective}'"}
    return {"stage": BASELINE_STAGE, "objective": None, "override": 0, "decision": verdict,
            "reason": "decision defer: the frozen-embedding baseline"}


def fit_predict_gbm(train: pd.DataFrame, test: pd.DataFrame, params: dict, train_embeddings: np.ndarray) -> np.ndarray:
    """Baseline on the locked test: XGBoost on frozen embeddings of all CV essays -> (n_test,) predictions.

    train/test: essays (text, prompt, y); train_embeddings: (n_train, H) from the embed stage.
    The test essays are embedded here with the same ``embed`` params.
    """
    from aes.baseline.gbm import build_features, fit_fold
    from aes.encoders.embedding import embed_texts

    emb = params["embed"]
    test_embeddings = embed_texts(test["text"].tolist(), emb["model"], emb["max_length"], emb["batch_size"], device="auto")
    gbm = params["gbm"]
    x_train = build_features(train_embeddings, train["text"], gbm["text_stats"])
    x_test = build_features(test_embeddings, test["text"], gbm["text_stats"])
    model = fit_fold(train.reset_index(drop=True), x_train, gbm)  # early stopping on an inner prompt split
    return model.predict(x_test)


def fit_predict_finetune(train: pd.DataFrame, test: pd.DataFrame, params: dict, objective: str) -> np.ndarray:
    """Candidate on the locked test: fine-tune with ``objective`` on all CV essays -> (n_test,) predictions.

    Reuses the CV training loop (:meth:`aes.finetune.loop.Trainer.train_fold`) on one frame where the
    CV essays are the training fold and the test essays the validation fold (fold -1). The test
    scores are blanked (NaN) before the frame reaches the trainer, so they cannot be used.
    """
    from aes.finetune.loop import Trainer, make_accelerator

    frame = pd.concat(
        [train[["record_id", "text", "prompt", "y"]].assign(fold=0),
         test[["record_id", "text", "prompt"]].assign(y=np.nan, fold=-1)],
        ignore_index=True,
    )
    trainer = Trainer(params, objective, make_accelerator(params["finetune"]))
    result = trainer.train_fold(frame, trainer.prepare(frame["text"].tolist()), -1)
    return np.asarray(result["pred_raw"], dtype=float)


def score_test(test: pd.DataFrame, y_pred_raw: np.ndarray, min_prompt_n: int) -> dict:
    """Locked-test metrics: pooled / worst / median prompt QWK, RMSE, MAE, within-half-band, per prompt."""
    y = test["y"].to_numpy(float)
    frame = pd.DataFrame({"prompt": test["prompt"].to_numpy(), "y_true": y, "y_pred_raw": y_pred_raw})
    per_prompt = per_group_qwk(frame, "prompt", min_prompt_n).dropna()
    return {
        "qwk": {"pooled": finite_or_none(qwk(y, y_pred_raw)), "worst_prompt": finite_or_none(per_prompt.min() if len(per_prompt) else np.nan),
                "median_prompt": finite_or_none(per_prompt.median() if len(per_prompt) else np.nan),
                "per_prompt": {str(k): finite_or_none(v) for k, v in per_prompt.items()}},
        "rmse": finite_or_none(rmse(y, y_pred_raw)),
        "mae": finite_or_none(mae(y, y_pred_raw)),
        "within_half_band": finite_or_none(within_half_band(y, y_pred_raw)),
        "n": {"essays": int(len(test)), "prompts": int(test["prompt"].nunique()), "prompts_scored": int(len(per_prompt))},
    }


def run_final_test(params: dict, essays: pd.DataFrame, splits: dict, report_path: Path = REPORT_JSON, out_path: Path = FINAL_TEST_JSON,
                   fit_predict=None) -> dict:
    """Gate, train the chosen configuration on all CV essays, score the locked test once, write out_path.

    essays: all prepared essays; splits: splits.json document. ``fit_predict(choice, train, test,
    params) -> (n_test,)`` defaults to :func:`default_fit_predict` (tests pass a stub).
    """
    from aes.data.splits import cv_essays, locked_test_essays

    choice = chosen_model(params, report_path)  # gate first: nothing is trained or read before it
    train, test = cv_essays(essays, splits), locked_test_essays(essays, splits)
    started = time.perf_counter()
    y_pred_raw = np.asarray((fit_predict or default_fit_predict)(choice, train, test, params), dtype=float)
    if y_pred_raw.shape != (len(test),) or not np.all(np.isfinite(y_pred_raw)):
        raise AESError(f"final_test: model returned {y_pred_raw.shape} predictions (finite: {np.isfinite(y_pred_raw).all()}) for {len(test)} test essays")
    result = {
        "model": choice["stage"],
        "objective": choice["objective"],
        "override": choice["override"],
        "decision": choice["decision"],
        "reason": choice["reason"],
        "test": score_test(test, y_pred_raw, params["report"]["min_prompt_n"]),
        "n_train": int(len(train)),
        "runtime_s": round(time.perf_counter() - started, 1),
    }
    write_json(out_path, result)
    return result


def default_fit_predict(choice: dict, train: pd.DataFrame, test: pd.DataFrame, params: dict) -> np.ndarray:
    """Dispatch to the baseline or the fine-tuned model (the one model call of the final test)."""
    if choice["stage"] == BASELINE_STAGE:
        from aes.encoders.embedding import load_embeddings

        return fit_predict_gbm(train, test, params, load_embeddings(EMBEDDINGS, train["record_id"]))
    return fit_predict_finetune(train, test, params, choice["objective"])
