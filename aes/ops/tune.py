"""Choose fine-tuning settings on inner prompt-grouped splits of the CV training folds.

Never reads a validation fold's labels, never the locked test. For every CV fold k the training
part (essays with fold != k) is split by prompt (:func:`aes.data.splits.inner_split`, 20 % of its
prompts held out); each candidate configuration trains on the inner-training part (the LP-FT
head, when on, is a ridge probe fitted on that part only) and is scored on the held-out prompts:
the pooled QWK over the inner-held-out essays of all folds (mean and sd of the per-fold inner QWKs
beside it), the mean within-prompt QWK, and the per-prompt offset with its sampling-noise
reference (:func:`aes.core.metrics.prompt_offset`, ``prompt_offset_noise``). The frozen passes run
once per (max_length, cached or whole encoder).

    python -m aes.ops.tune --grid defaults --out bench/tune_finetune.json [--folds 0 1 2 3 4] [--seed 7]
    python -m aes.ops.tune --grid strength --out bench/tune_strength.json

Grids (overrides of ``params.yaml``; ``section.key`` names a key outside ``finetune``):
``defaults`` chose the CPU recipe (measured with randomly shuffled batches; ``lp_only`` rows are the
linear probe alone, the LP phase of LP-FT); ``checks`` is the chosen recipe with one setting
changed; ``strength`` is the whole encoder (ERM, GRL at three ``grl.max_weight``, DRO at three
``dro.eta``), each objective's strength chosen by :func:`choose_strengths`. One epoch at 512 tokens
costs about what two epochs at 256 do.
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

from aes.baseline.linear import fit_essay_probe
from aes.core.metrics import headline_qwk, per_group_qwk, prompt_offset, prompt_offset_noise, scored_rows
from aes.data.params import load_params
from aes.data.registry import dataset_of
from aes.data.splits import inner_split
from aes.finetune.backbones import Prepared
from aes.finetune.folds import load_cv
from aes.finetune.frozen_pass import compute_frozen_pass
from aes.finetune.loop import Trainer
from aes.finetune.runtime import make_accelerator

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
# The whole encoder (issue 16 item 3) at 256 tokens, where 5 folds x 3 objectives fit a CPU session:
# every objective at the default recipe, GRL and DRO each at a small log grid of their strength.
WHOLE = {"trainable_layers": -1, "max_length": 256}
GRL_WEIGHTS, DRO_ETAS = (0.1, 0.3, 1.0), (0.01, 0.1, 1.0)
STRENGTH = [
    {"name": "whole, erm", **WHOLE, "objective": "erm"},
    *({"name": f"whole, grl max_weight {w}", **WHOLE, "objective": "grl", "grl.max_weight": w} for w in GRL_WEIGHTS),
    *({"name": f"whole, dro eta {eta}", **WHOLE, "objective": "dro", "dro.eta": eta} for eta in DRO_ETAS),
]
GRIDS = {"defaults": CANDIDATES, "checks": CHECKS, "strength": STRENGTH}
STRENGTH_KEYS = {"grl": "grl.max_weight", "dro": "dro.eta"}


def candidate_params(params: dict, cand: dict) -> dict:
    """``params`` with a candidate's overrides: plain keys of ``finetune``, ``section.key`` elsewhere.

    Keys that are neither (name, objective, lp_only) describe the candidate and change nothing.
    """
    out = {**params, "finetune": {**params["finetune"]}}
    for key, value in cand.items():
        if "." in key:
            section, name = key.split(".", 1)
            out[section] = {**out[section], name: value}
        elif key in params["finetune"]:
            out["finetune"][key] = value
    return out


def choose_strengths(rows: list[dict], min_gain: float) -> dict:
    """Each invariance objective's strength from its grid rows, judged on the offset and pooled QWK.

    rows: results of :func:`evaluate` with ``objective`` (erm | grl | dro), ``inner_qwk_pooled`` and
    ``inner_offset_rms``; one ERM row is the reference. Among an objective's rows whose inner pooled
    QWK is at most ``min_gain`` below ERM's (invariance bought without giving up accuracy), the one
    with the smallest inner offset wins; when every strength costs more than ``min_gain``, the one
    with the highest pooled QWK. Returns {objective: {"name", strength key: value, "rule"}}.
    """
    erm = [r for r in rows if r.get("objective", "erm") == "erm"]
    if len(erm) != 1:
        raise ValueError(f"choose_strengths needs exactly one ERM row; got {len(erm)}")
    floor = erm[0]["inner_qwk_pooled"] - min_gain - 1e-12  # exactly min_gain below ERM still keeps its accuracy
    chosen = {}
    for objective, key in STRENGTH_KEYS.items():
        grid = [r for r in rows if r.get("objective") == objective]
        if not grid:
            continue
        keeping = [r for r in grid if r["inner_qwk_pooled"] >= floor]
        if keeping:
            best = min(keeping, key=lambda r: r["inner_offset_rms"])
            rule = f"smallest inner offset among strengths within {min_gain} pooled QWK of ERM"
        else:
            best = max(grid, key=lambda r: r["inner_qwk_pooled"])
            rule = f"every strength loses more than {min_gain} pooled QWK to ERM: the highest pooled QWK"
        chosen[objective] = {"name": best["name"], key: best[key], "rule": rule}
    return chosen


def subset(data: Prepared, rows: np.ndarray) -> Prepared:
    """The essays ``rows`` of a prepared set, as a prepared set of their own (row order kept)."""
    pick = lambda a: None if a is None else a[rows]  # noqa: E731
    return Prepared(pick(data.input_ids), pick(data.attention_mask), data.lengths[rows], pick(data.hidden), pick(data.features))


def evaluate(params: dict, cv, data: Prepared, pooled: np.ndarray, cand: dict, folds, seed: int) -> dict:
    """One candidate on every fold's inner split: pooled and per-fold inner QWK, mean within-prompt QWK
    (prompts of at least ``report.min_prompt_n`` inner-held-out essays), the per-prompt offset and its
    noise reference over all inner-held-out essays (each fold's its own shuffling group) and, for GRL,
    the adversary's last-epoch training accuracy beside chance (the largest prompt's share)."""
    run_params = candidate_params(params, cand)
    ft, objective = run_params["finetune"], cand.get("objective", "erm")
    trainer = Trainer(run_params, objective, make_accelerator(ft)) if not cand.get("lp_only") else None
    held_all, per_fold, adversary, started = [], {}, {}, time.perf_counter()
    for k in folds:
        train_rows = np.flatnonzero(cv["fold"].to_numpy() != k)
        part = cv.iloc[train_rows].reset_index(drop=True)
        fit_pos, held_pos = inner_split(part, INNER_FRACTION, seed + k)
        inner = part.assign(fold=0)
        inner.loc[held_pos, "fold"] = 1  # the loop trains on fold != 1 and predicts fold == 1
        # the probe and the fine-tune predict every declared target; candidates are scored on the primary (column 0)
        writing = None if data.features is None else data.features[train_rows]  # finetune.features, beside the pooled text
        probe = fit_essay_probe(part.iloc[fit_pos], pooled[train_rows][fit_pos], None if writing is None else writing[fit_pos],
                                ft["features"], params["linear"])
        if trainer is None:
            pred = probe.predict_essays(pooled[train_rows][held_pos], None if writing is None else writing[held_pos])[:, 0]
        else:
            result = trainer.train_fold(inner, subset(data, train_rows), 1, seed, init_head=probe if ft["lp_ft"] else None)
            pred = result["pred_unit"][:, 0]
            if objective == "grl":
                shares = part.iloc[fit_pos]["prompt"].value_counts(normalize=True)
                adversary[str(k)] = {"accuracy": round(result["epochs"][-1]["adversary_acc"], 4), "chance": round(float(shares.max()), 4)}
        held = scored_rows(part.iloc[held_pos].assign(fold=k), pred)  # unit-range predictions -> each essay's own scale
        per_fold[str(k)] = round(headline_qwk(held), 4)
        held_all.append(held)
    values = np.array(list(per_fold.values()))
    held = pd.concat(held_all, ignore_index=True)
    row = {**cand, "inner_qwk_pooled": round(headline_qwk(held), 4),
           "inner_qwk_fold_mean": round(float(values.mean()), 4), "inner_qwk_fold_sd": round(float(values.std(ddof=1)), 4),
           "inner_qwk_within_prompt": round(float(per_group_qwk(held, "prompt", params["report"]["min_prompt_n"]).mean()), 4),
           "inner_offset_rms": round(prompt_offset(held), 4), "inner_offset_noise": round(prompt_offset_noise(held), 4),
           "inner_qwk_per_fold": per_fold, "seconds": round(time.perf_counter() - started, 1)}
    if adversary:
        row["adversary_last_epoch"] = adversary
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="defaults")
    parser.add_argument("--out", default=None, help="default: bench/tune_finetune.json (defaults, checks), bench/tune_strength.json")
    parser.add_argument("--folds", type=int, nargs="*", default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", nargs="*", default=None, help="candidate names of the grid to run")
    args = parser.parse_args(argv)
    out_path = Path(args.out or ("bench/tune_strength.json" if args.grid == "strength" else "bench/tune_finetune.json"))
    params = load_params()
    cv = load_cv(Path("."))
    folds = args.folds if args.folds is not None else sorted(int(f) for f in cv["fold"].unique())
    rows, passes = [], {}
    candidates = [c for c in GRIDS[args.grid] if args.only is None or c["name"] in args.only]
    for cand in candidates:
        ft = candidate_params(params, cand)["finetune"]
        pass_key = f"{ft['max_length']}{'' if ft['trainable_layers'] >= 0 else ' whole'}"  # whole encoder: pooled only
        if pass_key not in passes:
            frozen, seconds = compute_frozen_pass(ft, cv["text"].tolist(), cv["record_id"], f"tune@{pass_key}",
                                                  dataset_of(params).text_repair)
            backbone_data = Trainer({**params, "finetune": ft}, "erm", make_accelerator(ft)).prepare(cv["text"].tolist(), frozen, prompts=cv["prompt"])
            passes[pass_key] = (backbone_data, frozen.pooled, round(seconds, 1))
        data, pooled, _ = passes[pass_key]
        row = evaluate(params, cv, data, pooled, cand, folds, args.seed)
        rows.append(row)
        print(f"{row['name']:<48} inner QWK pooled {row['inner_qwk_pooled']:.4f}  fold mean {row['inner_qwk_fold_mean']:.4f} "
              f"± {row['inner_qwk_fold_sd']:.4f}  within-prompt {row['inner_qwk_within_prompt']:.4f}  offset {row['inner_offset_rms']:.4f} "
              f"(noise {row['inner_offset_noise']:.4f})  ({row['seconds']:.0f}s)", flush=True)
        write_results(out_path, args, params, folds, passes, rows)  # after every candidate: a stopped grid keeps what it measured


def write_results(out_path: Path, args, params: dict, folds, passes: dict, rows: list[dict]) -> None:
    out = {"what": "fine-tuning candidates scored on inner prompt-grouped splits of the CV training folds (no validation fold, no locked test)",
           "inner_fraction": INNER_FRACTION, "folds": folds, "seed": args.seed, "frozen_pass_s": {str(k): v[2] for k, v in passes.items()},
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "base_finetune_params": params["finetune"],
           "grid": args.grid, "results": rows}
    if args.grid == "strength" and sum(r.get("objective") == "erm" for r in rows) == 1:
        out["chosen"] = choose_strengths(rows, params["report"]["min_gain"])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=2) + "\n")

if __name__ == "__main__":
    main()
