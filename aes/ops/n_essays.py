"""How many essays a new prompt needs before prompt-normalised scores settle.

Under a per-prompt ``normalise`` setting a held-out prompt is scaled with statistics of its own
essays (never their scores). Someone scoring a new assignment has only the essays collected so
far, so this scores each held-out prompt with statistics from only ``n`` of its essays (seeded
draws), for the strongest frozen model (gbm_cv: frozen embeddings + writing features -> XGBoost,
one seed), and writes the headline QWK (pooled on one scale, mean per-prompt on several) against n:

    python -m aes.ops.n_essays                          # the workspace's params (after `dvc repro embed`)
    python -m aes.ops.n_essays -S normalise.features=prompt_minmax --ns 5 10 20 50 --draws 5

Per CV fold the model trains once, on the other folds' essays normalised with all of their own
essays (as in CV); then for each n and draw every held-out prompt's statistics come from n of its
essays drawn at random, and every essay of the prompt is scored with them. ``alone`` scores each
essay with statistics of itself only (one essay, nothing else collected); ``all`` uses every essay
(the CV setting); ``inductive`` is the same model family on the inductive setting, for reference.
Reads the workspace's prepared essays and embeddings (stages prepare and embed), never a locked
test. Writes ``bench/n_essays_<dataset>.json`` and ``plots/n_essays/<dataset>.{csv,png}``.
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

from aes.baseline.gbm import fit_fold, stack_inputs
from aes.core.artifacts import make_oof_frame
from aes.core.errors import AESError
from aes.core.io import write_json
from aes.core.machine import cpu_name
from aes.core.metrics import headline_qwk, is_single_scale
from aes.core.params import parse_override_items
from aes.core.registry import EMBEDDINGS, EMBEDDINGS_SWITCH, is_transductive
from aes.data.corpus import load_essays
from aes.data.params import load_params, with_overrides
from aes.data.registry import dataset_of
from aes.data.splits import cv_essays, load_splits
from aes.encoders.store import load_embeddings
from aes.features import writing_features

DEFAULT_NS = (5, 10, 20, 50)


def reference_rows(prompts: np.ndarray, held_out: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(len,) bool: every row outside ``held_out`` (bool (len,)) and, of each held-out prompt, n of its rows drawn with ``rng``
    (all of them when it has n or fewer)."""
    reference = ~held_out
    for prompt in np.unique(prompts[held_out]):
        rows = np.flatnonzero(held_out & (prompts == prompt))
        reference[rows if len(rows) <= n else rng.choice(rows, size=n, replace=False)] = True
    return reference


def n_essays_curve(cv: pd.DataFrame, embeddings, hand, params: dict, ns, draws: int, seed: int) -> pd.DataFrame:
    """One row per (setting, n, draw): the headline QWK over every held-out prompt. n is an int, 'alone', 'all' or 'inductive'."""
    gbm, normalise = params["gbm"], params["normalise"]
    prompts = cv["prompt"].astype(str).to_numpy()
    fold = cv["fold"].to_numpy()
    inductive = {"features": "training_fold", "embeddings": "as_is"}
    preds: dict[tuple, np.ndarray] = {}
    rng = np.random.default_rng(seed)
    for k in sorted(np.unique(fold)):
        held = fold == k
        train = cv[~held].reset_index(drop=True)
        for name, setting in (("all", normalise), ("inductive", inductive)):
            x = stack_inputs(embeddings, hand, prompts, setting)
            model = fit_fold(train, x[~held], gbm, seed)[0]
            preds.setdefault((name, 0), np.full(len(cv), np.nan))[held] = _primary(model.predict(x[held]))
            if name != "all":
                continue
            alone = np.where(held, cv["record_id"].astype(str).to_numpy(), prompts)  # each held-out essay its own prompt
            preds.setdefault(("alone", 0), np.full(len(cv), np.nan))[held] = _primary(model.predict(stack_inputs(embeddings, hand, alone, setting)[held]))
            for n in ns:
                for d in range(draws):
                    x_n = stack_inputs(embeddings, hand, prompts, setting, reference_rows(prompts, held, n, rng))
                    preds.setdefault((n, d), np.full(len(cv), np.nan))[held] = _primary(model.predict(x_n[held]))
    rows = []
    for (n, d), pred in preds.items():
        rows.append({"n": n, "draw": d, "qwk": headline_qwk(make_oof_frame(cv, fold, pred))})
    return pd.DataFrame(rows)


def _primary(pred: np.ndarray) -> np.ndarray:
    pred = np.asarray(pred, dtype=np.float64)
    return pred if pred.ndim == 1 else pred[:, 0]


def summarise_curve(curve: pd.DataFrame) -> list[dict]:
    """[{n, mean, sd, min, max, draws}] per n (draw spread: population sd over the draws)."""
    out = []
    for n, group in curve.groupby(curve["n"].astype(str), sort=False):
        q = group["qwk"].to_numpy()
        out.append({"n": n, "mean": round(float(q.mean()), 4), "sd": round(float(q.std()), 4),
                    "min": round(float(q.min()), 4), "max": round(float(q.max()), 4), "draws": int(len(q))})
    return out


def plot_curve(summary: list[dict], dataset: str, headline: str, path: Path) -> None:
    """The curve's PNG: mean ± sd over draws against n (log axis), with the all-essays, inductive and alone levels."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = [s for s in summary if s["n"].isdigit()]
    fixed = {s["n"]: s for s in summary if not s["n"].isdigit()}
    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = [int(s["n"]) for s in counts]
    ax.errorbar(x, [s["mean"] for s in counts], yerr=[s["sd"] for s in counts], marker="o", capsize=3, label="n essays of the new prompt")
    for name, style in (("all", "--"), ("inductive", ":"), ("alone", "-.")):
        if name in fixed:
            ax.axhline(fixed[name]["mean"], linestyle=style, color="grey" if name != "alone" else "tab:red",
                       label={"all": "all its essays (CV)", "inductive": "inductive (training-fold scaling)",
                              "alone": "each essay alone"}[name])
    ax.set_xscale("log")
    ax.set_xticks(x, [str(v) for v in x])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # the log axis' own minor labels would overprint these
    ax.set_xlabel("essays of the held-out prompt that give its statistics")
    ax.set_ylabel(headline)
    ax.set_title(f"{dataset}: XGBoost on embeddings + writing features")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-S", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="params override, as dvc exp run -S")
    parser.add_argument("--ns", type=int, nargs="+", default=list(DEFAULT_NS), help="essays of each new prompt that give its statistics")
    parser.add_argument("--draws", type=int, default=5, help="seeded draws of those essays per n")
    parser.add_argument("--seed", type=int, default=7, help="the model's seed and the draws' generator")
    args = parser.parse_args(argv)
    params = with_overrides(load_params(), parse_override_items(args.overrides, "-S"), "-S")
    if not is_transductive(params["normalise"]):
        raise AESError("aes.ops.n_essays: normalise is inductive (training_fold, as_is): no statistic of a new prompt to vary; "
                       "give -S normalise.features=prompt_minmax (or prompt_zscore, or normalise.embeddings=prompt_mean)")
    if any(n < 2 for n in args.ns):
        raise AESError(f"--ns: each n must be at least 2 (one essay alone is always measured); got {args.ns}")
    started = time.perf_counter()
    dataset = dataset_of(params)
    cv = cv_essays(load_essays(), load_splits())
    switches = params["gbm"]["features"]
    embeddings = load_embeddings(EMBEDDINGS, cv["record_id"]) if EMBEDDINGS_SWITCH in switches else None
    groups = [g for g in switches if g != EMBEDDINGS_SWITCH]
    hand = writing_features(cv["text"].tolist(), groups, dataset.text_repair)[0] if groups else None
    curve = n_essays_curve(cv, embeddings, hand, params, args.ns, args.draws, args.seed)
    summary = summarise_curve(curve)
    headline = "pooled QWK" if is_single_scale(cv) else "mean per-prompt QWK"  # what headline_qwk computes
    name = params["data"]["dataset"]
    folder = Path("plots/n_essays")
    folder.mkdir(parents=True, exist_ok=True)
    curve.to_csv(folder / f"{name}.csv", index=False)
    plot_curve(summary, name, headline, folder / f"{name}.png")
    write_json(Path("bench") / f"n_essays_{name}.json", {
        "command": "python -m aes.ops.n_essays " + " ".join([*(f"-S {o}" for o in args.overrides), "--ns", *map(str, args.ns),
                                                            "--draws", str(args.draws), "--seed", str(args.seed)]),
        "dataset": name, "normalise": params["normalise"], "model": "gbm_cv (one seed)", "headline": headline,
        "n_essays": int(len(cv)), "n_prompts": int(cv["prompt"].nunique()),
        "essays_per_prompt": {"min": int(cv["prompt"].value_counts().min()), "max": int(cv["prompt"].value_counts().max())},
        "curve": summary, "runtime_s": round(time.perf_counter() - started, 1),
        "cpu": cpu_name(), "cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
    })
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
