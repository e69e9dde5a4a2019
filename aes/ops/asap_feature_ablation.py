"""Cheap ASAP ablation of the handcrafted feature groups: leave one prompt out, features only, no embeddings.

ASAP is read as the pipeline reads it (aes/data/asap.py: checksum-verified, UTF-8, the same
prepared columns). For each of ASAP's 8 prompts k: fit a small model on the essays of the other
seven (scores min-max normalised per prompt with the ranges the cross-prompt literature uses,
declared with the dataset), predict prompt k, map the
predictions back to k's range, round and clip to its integer scale, and take QWK on prompt k. The
figure is the mean of the eight QWKs, as in the cross-prompt literature (ASAP's DATA.md), but on a
seeded sample of essays per prompt and with fixed model settings (no model selection), so it ranks
feature sets; it is not a number to set beside the published ones. Prints a Markdown table of
per-prompt and mean QWK for every (feature set, model); only aggregates, never a per-essay value.

    python -m aes.ops.asap_feature_ablation                        # existing groups vs + syntax, ridge and xgboost
    python -m aes.ops.asap_feature_ablation --per-prompt 300 --model ridge
    python -m aes.ops.asap_feature_ablation --arm lex=length,lexical --arm all=length,lexical,syntax
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score

from aes.core.errors import AESError, stage_main
from aes.core.scale import SCALE_COLUMNS, from_unit, to_grid, to_unit
from aes.data.asap import ASAP
from aes.data.clean import validate_and_clean
from aes.data.fetch import fetch

EXISTING = ("length", "lexical", "sophistication", "spelling", "readability", "complexity", "punctuation")
DEFAULT_ARMS = {"length": ("length",), "existing": EXISTING, "existing+syntax": (*EXISTING, "syntax")}
MODELS = ("ridge", "xgboost")
PROMPTS = tuple(ASAP.scales)  # "1" ... "8", each with its score range (aes/data/asap.py)


def load_asap(local_dir: str, per_prompt: int | None, seed: int) -> pd.DataFrame:
    """Prepared ASAP essays (prompt, text, y, the prompt's scale) of up to ``per_prompt`` per prompt (all when None),
    a seeded sample. Read as stage ``fetch`` reads them: every file checksum-verified, UTF-8 (aes/data/asap.py)."""
    corpus, _ = fetch(ASAP, {"source": "local", "local_dir": local_dir})
    essays, _ = validate_and_clean(corpus, {"targets": ["Overall"]}, ASAP)
    frames = []
    for prompt in PROMPTS:
        frame = essays[essays["prompt"] == prompt].reset_index(drop=True)
        if per_prompt and len(frame) > per_prompt:
            frame = frame.sample(per_prompt, random_state=seed)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def make_model(name: str, seed: int):
    """A fixed, modest regressor on unit scores: standardised ridge, or a small single-threaded XGBoost."""
    if name == "ridge":
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    if name == "xgboost":
        from xgboost import XGBRegressor

        return XGBRegressor(n_estimators=300, max_depth=3, learning_rate=0.05, subsample=0.8, colsample_bytree=0.8,
                            n_jobs=1, random_state=seed)
    raise AESError(f"unknown model {name!r}; expected one of {MODELS}")


def leave_one_prompt_out(X: np.ndarray, frame: pd.DataFrame, model: str, seed: int) -> dict[str, float]:
    """QWK of each held-out prompt: X (n, d) features of ``frame``'s essays; returns {prompt: QWK}."""
    prompts = frame["prompt"].to_numpy()
    low, high, _ = (frame[c].to_numpy(dtype=float) for c in SCALE_COLUMNS)
    unit = to_unit(frame["y"].to_numpy(dtype=float), low, high)
    out = {}
    for prompt in PROMPTS:
        p_low, p_high = int(ASAP.scale_of(prompt).low), int(ASAP.scale_of(prompt).high)
        test = prompts == prompt
        regressor = make_model(model, seed).fit(X[~test], unit[~test])
        predicted = to_grid(from_unit(regressor.predict(X[test]), p_low, p_high), p_low, p_high, 1.0)
        true = frame["y"].to_numpy(dtype=float)[test]
        labels = np.arange(p_low, p_high + 1)
        out[prompt] = float(cohen_kappa_score(true.astype(int), predicted.astype(int), weights="quadratic", labels=labels))
    return out


def parse_arm(text: str) -> tuple[str, tuple[str, ...]]:
    name, _, groups = text.partition("=")
    if not name or not groups:
        raise AESError(f"--arm {text!r}: expected NAME=group,group,...")
    return name, tuple(g.strip() for g in groups.split(",") if g.strip())


def table(results: dict[tuple[str, str], dict[int, float]]) -> str:
    lines = ["| features | model | " + " | ".join(f"P{p}" for p in PROMPTS) + " | mean |",
             "|---|---|" + "---|" * (len(PROMPTS) + 1)]
    for (arm, model), qwks in results.items():
        cells = [f"{qwks[p]:.3f}" for p in PROMPTS]
        lines.append(f"| {arm} | {model} | " + " | ".join(cells) + f" | {np.mean(list(qwks.values())):.3f} |")
    return "\n".join(lines)


@stage_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m aes.ops.asap_feature_ablation", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=ASAP.default_local_dir,
                        help="folder holding PAES-data/, relative to the checkout; $ASAP_DIR overrides (default: %(default)s)")
    parser.add_argument("--per-prompt", type=int, default=600, help="essays sampled per prompt; 0 = all (default: 600)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", choices=[*MODELS, "both"], default="both")
    parser.add_argument("--arm", action="append", type=parse_arm, metavar="NAME=GROUP,...",
                        help="a feature set to compare (repeatable; default: length, existing, existing+syntax)")
    parser.add_argument("--json", type=Path, help="also write {arm: {model: {prompt: qwk, 'mean': ...}}} here")
    args = parser.parse_args(argv)

    from aes.features import FEATURE_GROUPS, writing_features

    arms = dict(args.arm) if args.arm else DEFAULT_ARMS
    for name, groups in arms.items():
        unknown = [group for group in groups if group not in FEATURE_GROUPS]
        if unknown:
            raise AESError(f"--arm {name}: unknown feature group(s) {unknown}; known (no embeddings here): "
                           f"{', '.join(FEATURE_GROUPS)}")
    models = MODELS if args.model == "both" else (args.model,)
    frame = load_asap(args.root, args.per_prompt or None, args.seed)
    wanted = [g for g in FEATURE_GROUPS if any(g in groups for groups in arms.values())]
    started = time.perf_counter()
    X, names = writing_features(frame["text"].tolist(), wanted, ASAP.text_repair)
    print(f"{len(frame)} essays ({frame['prompt'].value_counts().min()}-{frame['prompt'].value_counts().max()} per prompt), "
          f"{len(names)} feature columns in {time.perf_counter() - started:.0f} s\n")
    results = {}
    for name, groups in arms.items():
        columns = [i for i, column in enumerate(names) if any(column in FEATURE_GROUPS[g] for g in groups)]
        for model in models:
            results[name, model] = leave_one_prompt_out(X[:, columns], frame, model, args.seed)
    print(table(results))
    if args.json:
        out = {}
        for (name, model), qwks in results.items():
            out.setdefault(name, {})[model] = {**qwks, "mean": float(np.mean(list(qwks.values())))}
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
