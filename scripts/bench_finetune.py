"""Time one fine-tuning fold with the default params on the prepared CV essays (CPU).

Prints and writes bench/finetune.json: essays/s of the frozen-layer pass (all CV essays, once
per stage) and of training + predicting one fold (train essays x epochs / fold seconds).

    .venv/bin/python scripts/bench_finetune.py [--objective erm] [--fold 0] [--threads 2]
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from aes.core.metrics import headline_qwk, scored_rows
from aes.data.corpus import load_essays
from aes.data.params import load_params
from aes.data.splits import cv_essays, load_splits
from aes.finetune.loop import Trainer
from aes.finetune.runtime import make_accelerator


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objective", default="erm")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    params = load_params()
    ft = params["finetune"]
    cv = cv_essays(load_essays(), load_splits())
    started = time.perf_counter()
    trainer = Trainer(params, args.objective, make_accelerator(ft))
    data = trainer.prepare(cv["text"].tolist(), prompts=cv["prompt"])
    trunk_s = time.perf_counter() - started
    started = time.perf_counter()
    result = trainer.train_fold(cv, data, args.fold, ft["seeds"][0])
    fold_s = time.perf_counter() - started
    val = (cv["fold"] == args.fold).to_numpy()
    n_train, n_val = int((~val).sum()), int(val.sum())
    out = {
        "model": ft["model"], "trainable_layers": ft["trainable_layers"], "max_length": ft["max_length"],
        "epochs": ft["epochs"], "threads": args.threads, "objective": args.objective,
        "n_cv": len(cv), "mean_tokens": float(np.mean(data.lengths)),
        "trunk_s": round(trunk_s, 1), "trunk_essays_per_s": round(len(cv) / trunk_s, 1),
        "fold": args.fold, "n_train": n_train, "n_val": n_val, "fold_s": round(fold_s, 1),
        "train_essays_per_s": round(n_train * ft["epochs"] / fold_s, 1),
        "fold_qwk": round(float(headline_qwk(scored_rows(cv[val], result["pred_unit"][:, 0]))), 3),  # the primary target
        "train_mse_by_epoch": [round(e["train_mse"], 3) for e in result["epochs"]],
        "cpu_count": os.cpu_count(), "machine": platform.platform(), "torch": torch.__version__,
        "load_avg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    Path("bench").mkdir(exist_ok=True)
    Path("bench/finetune.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
