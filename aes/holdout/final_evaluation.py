"""The locked test, scored once (stage ``final_test``): the configuration the report chose, trained on ALL CV essays.

Gate: :func:`chosen_model` refuses unless ``metrics/report.json`` holds a decision, or
``final_test.override`` is true. Proceed -> the candidate fine-tuning objective; defer -> the
strongest frozen model (Q1's reference); override -> the candidate regardless of the decision
(and the output says so). A model with several seeds is trained once per seed; the test metrics
are the mean over seeds, with each seed's own. Every model predicts every declared target
(``prepare.targets``): the headline metrics are the primary target's, ``traits`` holds each further
target's pooled QWK and RMSE (seed means). Nothing written here is read by any other stage.

Each seed is scored by :func:`aes.core.metrics.summarize` (the locked test as one fold) and the
seeds are averaged with :func:`aes.core.metrics.mean_over_seeds`, as every CV stage's metrics are.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from aes.baseline.linear import fit_essay_probe
from aes.core.errors import AESError
from aes.core.io import write_json
from aes.core.metrics import finite_or_none, mean_over_seeds, metric_value, per_group_qwk, scored_rows, summarize
from aes.core.registry import (
    BASELINE_STAGE,
    EMBEDDINGS,
    FINAL_TEST_JSON,
    FROZEN_STAGES,
    LINEAR_STAGE,
    LP_STAGE,
    REPORT_JSON,
    SPLITS,
    stage_for_objective,
)
from aes.core.scale import SCALE_COLUMNS
from aes.data.corpus import declared_targets, target_matrix
from aes.data.protocols import has_locked_test
from aes.data.registry import dataset_of

TEST_FOLD = -1  # the locked test's essays, as the one validation fold of the final training run
SEED_MEAN_KEYS = ("rmse", "mae", "within_one_step", "qwk.pooled", "qwk.worst_prompt", "qwk.worst_quarter", "qwk.median_prompt")


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


def check_has_locked_test(splits: dict) -> None:
    """Refuse data whose protocol locks no prompts (ASAP: leave one prompt out, as published)."""
    if not has_locked_test(splits):
        raise AESError(f"{SPLITS}: this dataset's protocol ({splits.get('protocol', 'no locked test')}) holds no locked test; "
                       "every prompt is already scored out of fold, so final_test does not apply (see the report)")


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
    reference = decision.get("reference", BASELINE_STAGE)
    if reference not in FROZEN_STAGES:
        raise AESError(f"{report_path}: decision.reference '{reference}' is not a frozen stage ({', '.join(FROZEN_STAGES)}); re-run `dvc repro report`")
    return {"stage": reference, "objective": None, "override": 0, "decision": verdict,
            "reason": f"decision defer: the strongest frozen model ({reference})"}


def fit_predict_frozen(stage: str, train: pd.DataFrame, test: pd.DataFrame, params: dict) -> np.ndarray:
    """A frozen model on the locked test, fitted on ALL CV essays -> (n_seeds, n_test, T) predictions (T declared targets).

    gbm_cv and linear_cv use the embed stage's embeddings of the CV essays and embed the test
    essays here with the same ``embed`` params; lp_cv's pooled features come from the same pass as
    stage embed's (:func:`aes.finetune.frozen_pass.embed_and_freeze`), over both.
    Hyperparameters are chosen on inner prompt-grouped splits of the CV essays, as in CV.
    """
    from aes.baseline.linear import fit_ridge

    if stage == LP_STAGE:  # as in CV: the probe on [pooled, writing features (finetune.features)], scaled on the training essays
        from aes.finetune.frozen_pass import embed_and_freeze, normalised_pass

        texts = pd.concat([train["text"], test["text"]]).tolist()  # the pooled output only: no trunk to keep
        frozen = embed_and_freeze(params["embed"], {**params["finetune"], "trainable_layers": -1}, texts, np.arange(len(texts)), LP_STAGE,
                                  dataset_of(params).text_repair)[1]
        # per prompt (a locked-test prompt on its own essays) under a transductive normalise setting, as in CV
        frozen = normalised_pass(frozen, pd.concat([train["prompt"], test["prompt"]]).to_numpy(), params["normalise"])
        lin, n = params["linear"], len(train)
        writing = frozen.features
        probe = fit_essay_probe(train, frozen.pooled[:n], None if writing is None else writing[:n], frozen.feature_groups, lin)
        return probe.predict_essays(frozen.pooled[n:], None if writing is None else writing[n:])[None, :, :]
    from aes.encoders.embedding import embed_texts
    from aes.encoders.store import load_embeddings

    emb = params["embed"]
    x_train = load_embeddings(EMBEDDINGS, train["record_id"])
    x_test = embed_texts(test["text"].tolist(), emb["model"], emb["max_length"], emb["batch_size"], device="auto",
                         bf16=emb["mixed_precision"] == "bf16")
    if stage == LINEAR_STAGE:
        from aes.features.normalise import normalise_embeddings

        lin, setting = params["linear"], params["normalise"]["embeddings"]
        x_train = normalise_embeddings(x_train, train["prompt"], setting)
        x_test = normalise_embeddings(x_test, test["prompt"], setting)
        probe = fit_ridge(x_train, target_matrix(train), train["prompt"].astype(str).to_numpy(), lin["alphas"], lin["inner_folds"])
        return probe.predict(x_test)[None, :, :]
    from aes.baseline.gbm import build_features, fit_fold

    gbm, repair = params["gbm"], dataset_of(params).text_repair
    f_train, _ = build_features(x_train, train["text"], gbm["features"], repair, params["normalise"], train["prompt"])
    f_test, _ = build_features(x_test, test["text"], gbm["features"], repair, params["normalise"], test["prompt"])
    return np.stack([fit_fold(train.reset_index(drop=True), f_train, gbm, seed)[0].predict(f_test).reshape(len(test), -1)
                     for seed in gbm["seeds"]])


def fit_predict_finetune(train: pd.DataFrame, test: pd.DataFrame, params: dict, objective: str) -> np.ndarray:
    """Candidate on the locked test: fine-tune with ``objective`` on all CV essays, once per seed -> (n_seeds, n_test, T).

    Reuses the CV training loop (:meth:`aes.finetune.loop.Trainer.train_fold`) on one frame where the
    CV essays are the training fold and the test essays the validation fold (fold -1). The test
    scores are blanked (NaN) before the frame reaches the trainer, so they cannot be used. With
    ``finetune.lp_ft`` the head starts from a ridge probe fitted on the CV essays' pooled features
    (and, with ``finetune.features``, their writing features, standardised on the CV essays).
    """
    from aes.features.normalise import normalise_embeddings
    from aes.finetune.loop import Trainer
    from aes.finetune.runtime import make_accelerator, predict_batches

    targets = declared_targets(train)
    # the scale columns travel with every row: the trainer normalises targets (and the test rows' scale is declared, not a score)
    frame = pd.concat(
        [train[["record_id", "text", "prompt", "y", *targets, *SCALE_COLUMNS]].assign(fold=0),
         test[["record_id", "text", "prompt", *SCALE_COLUMNS]].assign(y=np.nan, **{t: np.nan for t in targets}, fold=TEST_FOLD)],
        ignore_index=True,
    )
    ft, lin = params["finetune"], params["linear"]
    trainer = Trainer(params, objective, make_accelerator(ft))
    data = trainer.prepare(frame["text"].tolist(), prompts=frame["prompt"])  # test prompts normalise on their own essays
    probe = None
    if ft["lp_ft"]:
        rows = np.arange(len(train))
        if data.pooled is not None:  # prompt centring computed the pristine pooled output already
            pooled = data.pooled[rows]
        else:
            _, pooled = predict_batches(trainer.backbone.pristine_model(), trainer.backbone, data, rows, ft["eval_batch_size"], trainer.accelerator)
        pooled = normalise_embeddings(pooled, train["prompt"], params["normalise"]["embeddings"])  # as lp_cv's probe
        writing = None if data.features is None else data.features[rows]
        probe = fit_essay_probe(train, pooled, writing, ft["features"], lin)
    return np.stack([np.asarray(trainer.train_fold(frame, data, TEST_FOLD, seed, init_head=probe)["pred_unit"], dtype=float) for seed in ft["seeds"]])


def score_test(test: pd.DataFrame, y_pred_unit: np.ndarray, min_prompt_n: int, target: str | None = None) -> dict:
    """Locked-test metrics of one seed: pooled / worst / median prompt QWK, RMSE, MAE, within one step, per prompt.

    y_pred_unit: (n_test,) predictions of ``target`` (None: the primary) on each essay's unit range.
    """
    rows = test if target is None else test.assign(y=test[target])
    frame = scored_rows(rows, y_pred_unit).assign(fold=TEST_FOLD)
    full = summarize(frame, min_prompt_n)
    per_prompt = per_group_qwk(frame, "prompt", min_prompt_n).dropna()
    return {
        "qwk": {**{k: full["qwk"][k] for k in ("pooled", "worst_prompt", "worst_quarter", "median_prompt")},
                "per_prompt": {str(k): finite_or_none(v) for k, v in per_prompt.items()}},
        **{k: full[k] for k in ("rmse", "mae", "within_one_step", "error_unit")},
        "n": {k: full["n"][k] for k in ("essays", "prompts", "prompts_scored")},
    }


def run_final_test(params: dict, essays: pd.DataFrame, splits: dict, report_path: Path = REPORT_JSON, out_path: Path = FINAL_TEST_JSON,
                   fit_predict=None) -> dict:
    """Gate, train the chosen configuration on all CV essays, score the locked test once, write out_path.

    essays: all prepared essays; splits: splits.json document. ``fit_predict(choice, train, test,
    params) -> (n_test,), (n_seeds, n_test) or (n_seeds, n_test, T)`` on each essay's unit range
    (T declared targets, primary first) defaults to :func:`default_fit_predict` (tests pass a stub).
    """
    from aes.data.splits import cv_essays, locked_test_essays

    check_has_locked_test(splits)
    choice = chosen_model(params, report_path)  # gate first: nothing is trained or read before it
    train, test = cv_essays(essays, splits), locked_test_essays(essays, splits)
    started = time.perf_counter()
    given = np.asarray((fit_predict or default_fit_predict)(choice, train, test, params), dtype=float)
    raw = given.reshape(1, -1, 1) if given.ndim == 1 else given[:, :, None] if given.ndim == 2 else given  # (S, n_test, T)
    targets = declared_targets(test)
    if raw.ndim != 3 or raw.shape[1] != len(test) or raw.shape[2] not in (1, len(targets)) or not np.all(np.isfinite(raw)):
        raise AESError(f"final_test: model returned {given.shape} predictions (finite: {np.isfinite(given).all()}) for {len(test)} test essays "
                       f"and {len(targets)} target(s)")
    y_pred_unit = raw[:, :, 0]  # the primary target: the headline
    per_seed = [score_test(test, row, params["report"]["min_prompt_n"]) for row in y_pred_unit]
    result = {
        "model": choice["stage"],
        "objective": choice["objective"],
        "override": choice["override"],
        "decision": choice["decision"],
        "reason": choice["reason"],
        "test": _seed_mean(per_seed),
        "test_per_seed": per_seed if len(per_seed) > 1 else None,
        "traits": {t: _trait_summary([score_test(test, row, params["report"]["min_prompt_n"], t) for row in raw[:, :, j]])
                   for j, t in enumerate(targets[1:raw.shape[2]], start=1)},
        "n_train": int(len(train)),
        "runtime_s": round(time.perf_counter() - started, 1),
    }
    write_json(out_path, result)
    return result


def _trait_summary(per_seed: list[dict]) -> dict:
    """{qwk_pooled, rmse} of one further target: the mean over seeds of each seed's :func:`score_test`."""
    return {"qwk_pooled": mean_over_seeds(m["qwk"]["pooled"] for m in per_seed), "rmse": mean_over_seeds(m["rmse"] for m in per_seed)}


def _seed_mean(per_seed: list[dict]) -> dict:
    """The first seed's document with every headline number replaced by the mean over seeds."""
    out = json.loads(json.dumps(per_seed[0]))
    for key in SEED_MEAN_KEYS:
        *path, leaf = key.split(".")
        node = out[path[0]] if path else out
        node[leaf] = mean_over_seeds(metric_value(m, key) for m in per_seed)
    prompts = sorted({p for m in per_seed for p in m["qwk"]["per_prompt"]})  # a prompt may be undefined for some seeds
    out["qwk"]["per_prompt"] = {p: mean_over_seeds(m["qwk"]["per_prompt"].get(p) for m in per_seed) for p in prompts}
    out["n"]["seeds"] = len(per_seed)
    return out


def default_fit_predict(choice: dict, train: pd.DataFrame, test: pd.DataFrame, params: dict) -> np.ndarray:
    """Dispatch to a frozen or the fine-tuned model (the one model call of the final test)."""
    if choice["stage"] in FROZEN_STAGES:
        return fit_predict_frozen(choice["stage"], train, test, params)
    return fit_predict_finetune(train, test, params, choice["objective"])
