"""Cheap ASAP ablation of the handcrafted feature groups: leave one prompt out, features only, no embeddings.

For each of ASAP's 8 prompts k: fit a small model on the essays of the other seven (scores min-max
normalised per prompt with the ranges the cross-prompt literature uses), predict prompt k, map the
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
from aes.core.scale import from_unit, to_grid, to_unit
from aes.data.corpus import resolve_data_path

DEFAULT_ROOT = "../shared/asap"  # beside the checkout, like params.yaml's ../shared/ellipse
# Score ranges of ASAP's prompts as the cross-prompt papers normalise with (DATA.md).
ASAP_RANGES = {1: (2, 12), 2: (1, 6), 3: (0, 3), 4: (0, 3), 5: (0, 4), 6: (0, 4), 7: (0, 30), 8: (0, 60)}
EXISTING = ("length", "lexical", "sophistication", "spelling", "readability", "complexity", "punctuation")
DEFAULT_ARMS = {"length": ("length",), "existing": EXISTING, "existing+syntax": (*EXISTING, "syntax")}
MODELS = ("ridge", "xgboost")


def load_asap(root: Path, per_prompt: int | None, seed: int) -> pd.DataFrame:
    """essay_set, essay, domain1_score of up to ``per_prompt`` essays per prompt (all when None), seeded sample."""
    frames = []
    for prompt in ASAP_RANGES:
        path = root / "PAES-data" / str(prompt) / "test.tsv"
        if not path.is_file():
            raise AESError(f"{path} not found; pass --root, the folder of ASAP's DATA.md")
        frame = pd.read_csv(path, sep="\t", encoding="latin-1", usecols=["essay_set", "essay", "domain1_score"])
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


def leave_one_prompt_out(X: np.ndarray, frame: pd.DataFrame, model: str, seed: int) -> dict[int, float]:
    """QWK of each held-out prompt: X (n, d) features of ``frame``'s essays; returns {prompt: QWK}."""
    prompts = frame["essay_set"].to_numpy()
    low = np.array([ASAP_RANGES[p][0] for p in prompts], dtype=float)
    high = np.array([ASAP_RANGES[p][1] for p in prompts], dtype=float)
    unit = to_unit(frame["domain1_score"].to_numpy(dtype=float), low, high)
    out = {}
    for prompt, (p_low, p_high) in ASAP_RANGES.items():
        test = prompts == prompt
        regressor = make_model(model, seed).fit(X[~test], unit[~test])
        predicted = to_grid(from_unit(regressor.predict(X[test]), p_low, p_high), p_low, p_high, 1.0)
        true = frame["domain1_score"].to_numpy(dtype=float)[test]
        labels = np.arange(p_low, p_high + 1)
        out[prompt] = float(cohen_kappa_score(true.astype(int), predicted.astype(int), weights="quadratic", labels=labels))
    return out


def parse_arm(text: str) -> tuple[str, tuple[str, ...]]:
    name, _, groups = text.partition("=")
    if not name or not groups:
        raise AESError(f"--arm {text!r}: expected NAME=group,group,...")
    return name, tuple(g.strip() for g in groups.split(",") if g.strip())


def table(results: dict[tuple[str, str], dict[int, float]]) -> str:
    lines = ["| features | model | " + " | ".join(f"P{p}" for p in ASAP_RANGES) + " | mean |",
             "|---|---|" + "---|" * (len(ASAP_RANGES) + 1)]
    for (arm, model), qwks in results.items():
        cells = [f"{qwks[p]:.3f}" for p in ASAP_RANGES]
        lines.append(f"| {arm} | {model} | " + " | ".join(cells) + f" | {np.mean(list(qwks.values())):.3f} |")
    return "\n".join(lines)


@stage_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m aes.ops.asap_feature_ablation", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=DEFAULT_ROOT, help="folder of ASAP's DATA.md, relative to the checkout (default: %(default)s)")
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
    frame = load_asap(resolve_data_path(args.root), args.per_prompt or None, args.seed)
    wanted = [g for g in FEATURE_GROUPS if any(g in groups for groups in arms.values())]
    started = time.perf_counter()
    X, names = writing_features(frame["essay"].tolist(), wanted)
    print(f"{len(frame)} essays ({frame['essay_set'].value_counts().min()}-{frame['essay_set'].value_counts().max()} per prompt), "
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
            out.setdefault(name, {})[model] = {**{str(p): q for p, q in qwks.items()}, "mean": float(np.mean(list(qwks.values())))}
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
