"""Stage lp_cv, LP-FT's linear-probe phase: a ridge probe per fold on the frozen pass, and reading those probes back.

``run_lp_cv`` reads the frozen pass of stage embed, fits the linear probe per fold on its pooled
output (and the standardised writing features, scaled on that fold's training essays) and writes
the artifact contract for stage lp_cv and ``models/lp_cv/probes.json``. :func:`load_probes` and
:func:`probe_for_fold` give the fine-tuning stages each fold's probe to start from.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from aes.baseline.linear import cross_validate as probe_cross_validate
from aes.baseline.linear import fits_from_json, fits_to_json, inner_predictions
from aes.core.artifacts import make_inner_frame, make_oof_frame, write_model_outputs
from aes.core.errors import AESError
from aes.core.io import write_json
from aes.core.registry import FROZEN_PASS, LP_STAGE, inputs_record, models_dir
from aes.finetune.folds import load_cv
from aes.finetune.frozen_pass import check_feature_groups, load_frozen_pass, normalised_pass

PROBES_FILE = "probes.json"


def run_lp_cv(params: dict, root: Path = Path(".")) -> dict:
    """Stage lp_cv: the linear probe per fold on the frozen pass's pooled output (and the writing
    features) of stage embed; returns the metrics."""
    ft, lin = params["finetune"], params["linear"]
    started = time.perf_counter()
    cv = load_cv(root)
    frozen = normalised_pass(load_frozen_pass(root / FROZEN_PASS, cv["record_id"], need_hidden=False, feature_groups=ft["features"]),
                             cv["prompt"], params["normalise"])
    # With finetune.features the probe reads [pooled, writing features], each fold's features
    # standardised on its own training essays, so LP-FT starts from the best linear use of both.
    oof, fits = probe_cross_validate(cv, frozen.pooled, lin["alphas"], lin["inner_folds"], frozen.features, frozen.feature_groups,
                                     lin["feature_weights"])
    write_json(models_dir(LP_STAGE, root) / PROBES_FILE, fits_to_json(fits))
    extra = {"alpha": {str(k): f.alpha for k, f in fits.items()},
             "feature_weight": {str(k): f.feature_weight for k, f in fits.items()},
             "max_length": ft["max_length"], "model": ft["model"], "mean_tokens": round(float(np.mean(frozen.lengths)), 1),
             "features": list(frozen.feature_groups), "n_writing_features": 0 if frozen.features is None else int(frozen.features.shape[1]),
             "inputs": inputs_record(params["normalise"], reads_features=frozen.features is not None)}
    return write_model_outputs(LP_STAGE, make_oof_frame(cv, cv["fold"], oof), time.perf_counter() - started,
                               params["report"]["min_prompt_n"], extra=extra, root=root,
                               inner=make_inner_frame(cv, inner_predictions(cv, fits)))


def load_probes(root: Path, folds: list[int], feature_groups=()) -> tuple[dict | None, bytes]:
    """The per-fold linear probes of stage lp_cv (LP-FT's starting heads) and the file's bytes.

    feature_groups: ``finetune.features``; every probe must have been fitted with exactly these
    writing features (AESError naming the key and `dvc repro lp_cv` otherwise), checked here so a
    stale probe stops the stage before any fold trains.
    """
    path = models_dir(LP_STAGE, root) / PROBES_FILE
    if not path.exists():
        raise AESError(f"{path}: not found; finetune.lp_ft starts from the probes of stage {LP_STAGE}: run `dvc repro {LP_STAGE}`")
    probes = fits_from_json(json.loads(path.read_text()), str(path))
    missing = [k for k in folds if k not in probes]
    if missing:
        raise AESError(f"{path}: no probe for fold(s) {missing}; re-run `dvc repro {LP_STAGE}`")
    for k in folds:
        check_feature_groups(probes[k].scaling.groups if probes[k].scaling is not None else (), feature_groups,
                             f"{path}: the probe of fold {k}", rerun=LP_STAGE)
    return probes, path.read_bytes()


def probe_for_fold(probes: dict | None, k: int):
    """The probe that starts fold ``k`` (LP-FT): the one lp_cv fitted WITHOUT fold ``k``'s essays.

    lp_cv fits probe ``k`` on the essays with fold != k, so it never saw fold ``k``'s labels; any
    other fold's probe was trained on fold ``k`` and would leak its labels into its validation.
    """
    return None if probes is None else probes[k]
