"""Choose the fine-tuning defaults on inner prompt-grouped splits of the CV training folds.

Never reads a validation fold's labels, never the locked test. For every CV fold k the training
part (essays with fold != k) is split by prompt (:func:`aes.data.splits.inner_split`, 20 % of its
prompts held out); each candidate configuration trains on the inner-training part (the LP-FT
head, when on, is a ridge probe fitted on that part only) and is scored on the held-out prompts.
The score of a candidate is the pooled QWK over the inner-held-out essays of all folds, with the
mean and sd of the per-fold inner QWKs beside it. The frozen passes run once per max_length.

    python -m aes.ops.tune --out bench/tune_finetune.json [--folds 0 1 2 3 4] [--seed 7]

Candidates are overrides of ``params.yaml``'s ``finetune`` section (``CANDIDATES`` below, measured
with randomly shuffled batches; ``CHECKS``: the chosen recipe with one setting changed);
``lp_only`` rows are the linear probe alone (no fine-tuning steps), the LP phase of LP-FT. Every
training candidate fits the CPU budget (3 seeds x 3 objectives x 5 folds within the 30-minute
``dvc repro``): one epoch at 512 tokens costs about what two epochs at 256 do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from aes.baseline.linear import fit_probe
from aes.core.metrics import headline_qwk, scored_rows
from aes.core.params import load_params
from aes.data.corpus import target_matrix
from aes.data.splits import inner_split
from aes.finetune.backbones import Prepared
from aes.finetune.cv import load_cv
from aes.finetune.frozen_pass import compute_frozen_pass
from aes.finetune.loop import Trainer, make_accelerator

INNER_FRACTION = 0.2
RANDOM_BATCHES = {"group_by_length": False}  # how CANDIDATES were measured
CANDIDATES = [
    {"name": "lp_only@256", "max_length": 256, "lp_only": True},
    {"name": "lp_only@512", "max_length": 512, "lp_only": True},
    {"name": "old default: 256, no LP, 2 ep, lr 3e-4/1e-2", "max_length": 256, "lp_ft": False, "epochs": 2,
     "encoder_lr": 3e-4, "head_lr": 1e-2, **RANDOM_BATCHES},
    {"name": "256, LP-FT, 1 ep, lr 1e-4", "max_length": 256, "lp_ft": True, "epochs": 1, "encoder_lr": 1e-4, "head_lr": 1e-4, **RANDOM_BATCHES},
    {"name": "512, no LP, 1 ep, lr 3e-4/1e-2", "max_length": 512, "lp_ft": False, "epochs": 1,
     "encoder_lr": 3e-4, "head_lr": 1e-2, **RANDOM_BATCHES},
    {"name": "512, LP-FT, 1 ep, lr 1e-4", "max_length": 512, "lp_ft": True, "epochs": 1, "encoder_lr": 1e-4, "head_lr": 1e-4, **RANDOM_BATCHES},
    {"name": "512, LP-FT, 1 ep, lr 3e-4", "max_length": 512, "lp_ft": True, "epochs": 1, "encoder_lr": 3e-4, "head_lr": 3e-4, **RANDOM_BATCHES},
]
# Checks of the chosen recipe with one setting changed (run with --only NAME ...).
CHECKS = [
    {"name": "512, LP-FT, 1 ep, lr 1e-4, length-grouped batches", "max_length": 512, "lp_ft": True, "epochs": 1, "encoder_lr": 1e-4,
     "head_lr": 1e-4, "group_by_length": True},
]


def subset(data: Prepared, rows: np.ndarray) -> Prepared:
    """The essays ``rows`` of a prepared set, as a prepared set of their own (row order kept)."""
    pick = lambda a: None if a is None else a[rows]  # noqa: E731
    return Prepared(pick(data.input_ids), pick(data.attention_mask), data.lengths[rows], pick(data.hidden), pick(data.features))


def evaluate(params: dict, cv, data: Prepared, pooled: np.ndarray, cand: dict, folds, seed: int) -> dict:
    """Inner QWK of one candidate: pooled over all folds' inner-held-out essays, and per fold."""
    ft = {**params["finetune"], **{k: v for k, v in cand.items() if k in params["finetune"]}}
    trainer = Trainer({**params, "finetune": ft}, "erm", make_accelerator(ft)) if not cand.get("lp_only") else None
    held_all, per_fold, started = [], {}, time.perf_counter()
    for k in folds:
        train_rows = np.flatnonzero(cv["fold"].to_numpy() != k)
        part = cv.iloc[train_rows].reset_index(drop=True)
        fit_pos, held_pos = inner_split(part, INNER_FRACTION, seed + k)
        inner = part.assign(fold=0)
        inner.loc[held_pos, "fold"] = 1  # the loop trains on fold != 1 and predicts fold == 1
        # the probe and the fine-tune predict every declared target; candidates are scored on the primary (column 0)
        writing = None if data.features is None else data.features[train_rows]  # finetune.features, beside the pooled text
        probe = fit_probe(pooled[train_rows][fit_pos], target_matrix(part)[fit_pos], part["prompt"].to_numpy()[fit_pos],
                          params["linear"]["alphas"], params["linear"]["inner_folds"],
                          None if writing is None else writing[fit_pos], params["finetune"]["features"],
                          params["linear"]["feature_weights"])
        if trainer is None:
            pred = probe.predict_essays(pooled[train_rows][held_pos], None if writing is None else writing[held_pos])[:, 0]
        else:
            result = trainer.train_fold(inner, subset(data, train_rows), 1, seed, init_head=probe if ft["lp_ft"] else None)
            pred = result["pred_raw"][:, 0]
        held = scored_rows(part.iloc[held_pos], pred)  # unit-range predictions -> each essay's own scale
        per_fold[str(k)] = round(headline_qwk(held), 4)
        held_all.append(held)
    values = np.array(list(per_fold.values()))
    return {**cand, "inner_qwk_pooled": round(headline_qwk(pd.concat(held_all, ignore_index=True)), 4),
            "inner_qwk_fold_mean": round(float(values.mean()), 4), "inner_qwk_fold_sd": round(float(values.std(ddof=1)), 4),
            "inner_qwk_per_fold": per_fold, "seconds": round(time.perf_counter() - started, 1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/tune_finetune.json")
    parser.add_argument("--folds", type=int, nargs="*", default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", nargs="*", default=None, help="candidate names (of CANDIDATES or CHECKS) to run")
    args = parser.parse_args(argv)
    params = load_params()
    cv = load_cv(Path("."))
    folds = args.folds if args.folds is not None else sorted(int(f) for f in cv["fold"].unique())
    rows, passes = [], {}
    candidates = [c for c in CANDIDATES + CHECKS if args.only is None and c in CANDIDATES or args.only and c["name"] in args.only]
    for cand in candidates:
        length = cand["max_length"]
        if length not in passes:
            ft = {**params["finetune"], "max_length": length}
            frozen, seconds = compute_frozen_pass(ft, cv["text"].tolist(), cv["record_id"], f"tune@{length}")
            backbone_data = Trainer({**params, "finetune": ft}, "erm", make_accelerator(ft)).prepare(cv["text"].tolist(), frozen)
            passes[length] = (backbone_data, frozen.pooled, round(seconds, 1))
        data, pooled, _ = passes[length]
        row = evaluate(params, cv, data, pooled, cand, folds, args.seed)
        rows.append(row)
        print(f"{row['name']:<48} inner QWK pooled {row['inner_qwk_pooled']:.4f}  fold mean {row['inner_qwk_fold_mean']:.4f} "
              f"± {row['inner_qwk_fold_sd']:.4f}  ({row['seconds']:.0f}s)", flush=True)
    out = {"what": "fine-tuning candidates scored on inner prompt-grouped splits of the CV training folds (no validation fold, no locked test)",
           "inner_fraction": INNER_FRACTION, "folds": folds, "seed": args.seed, "frozen_pass_s": {str(k): v[2] for k, v in passes.items()},
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "base_finetune_params": params["finetune"],
           "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
