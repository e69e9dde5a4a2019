"""PNG figures of the report (matplotlib, Agg). Inputs are the aggregate tables of aes.report.tables
and the DVCLive training curves; each function writes one file and returns its path."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# DVCLive metric names (file stems, aes/finetune/callbacks.py's step-level curves) for each figure.
CURVE_PATTERNS = {
    "training_curves": ("train_loss",),
    "adversary_accuracy": ("adversary_acc",),
    "dro_max_weight": ("dro_max_weight",),
}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_per_prompt_qwk(table: pd.DataFrame, models: list[str], labels: dict[str, str], path: Path) -> Path:
    """Dot plot: one row per prompt (sorted by the first model's QWK), one marker per model."""
    t = table.dropna(subset=[f"qwk_{models[0]}"]).sort_values(f"qwk_{models[0]}").reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(10, 0.27 * len(t) + 1.8))
    y = np.arange(len(t))
    values = t[[f"qwk_{m}" for m in models]].to_numpy(float)
    ax.hlines(y, np.nanmin(values, axis=1), np.nanmax(values, axis=1), color="0.8", linewidth=1)
    for m, marker in zip(models, "osD^v<>"):
        ax.plot(t[f"qwk_{m}"], y, marker, label=labels.get(m, m), markersize=5, alpha=0.85)
    ax.set_yticks(y, [f"{p} (n={n}, fold {f})" for p, n, f in zip(t["prompt"], t["n"], t["fold"])], fontsize=7)
    ax.set_xlabel("QWK (out-of-fold: the prompt was never seen in training)")
    ax.set_title("Per-prompt QWK by model (sorted by the baseline)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.7 / (0.27 * len(t) + 1.8)), ncol=2, fontsize=8)
    return _save(fig, path)


def plot_residual(table: pd.DataFrame, by: str, models: list[str], labels: dict[str, str], path: Path, xlabel: str) -> Path:
    """Mean residual (prediction - truth) per group for every model, with the group sizes."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for m in models:
        ax.plot(table[by], table[m], marker="o", label=labels.get(m, m))
    ax.axhline(0, color="black", linewidth=0.7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean residual (predicted - true), score points")
    ax.set_title(f"Residual by {xlabel.split(' (')[0]} (n per group under the axis)")
    ax.set_xticks(table[by], [f"{v:g}\n(n={n})" for v, n in zip(table[by], table["n"])], fontsize=7)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_confusion(conf_long: pd.DataFrame, model: str, label: str, path: Path) -> Path:
    """Heat map of confusion counts (true score rows x rounded predicted score columns, both on the one shared grid) for one model."""
    sub = conf_long[conf_long["model"] == model].astype({"y_true": float, "y_pred": float})
    levels = np.sort(sub["y_true"].unique())  # the grid: every cell of it is in the table
    grid = sub.pivot_table(index="y_true", columns="y_pred", values="count", aggfunc="sum").reindex(index=levels, columns=levels).fillna(0)
    fig, ax = plt.subplots(figsize=(5.6, 5))
    im = ax.imshow(grid.to_numpy(), cmap="Blues", origin="lower")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = int(grid.iat[i, j])
            if v:
                ax.text(j, i, v, ha="center", va="center", fontsize=7, color="white" if v > grid.to_numpy().max() / 2 else "black")
    ax.set_xticks(range(len(levels)), [f"{b:g}" for b in levels])
    ax.set_yticks(range(len(levels)), [f"{b:g}" for b in levels])
    ax.set_xlabel("predicted score (rounded to the grid)")
    ax.set_ylabel("true score")
    ax.set_title(f"Confusion counts: {label}")
    fig.colorbar(im, ax=ax, fraction=0.046, label="essays")
    return _save(fig, path)


def read_curve(tsv: Path) -> pd.DataFrame:
    """A DVCLive metric TSV -> DataFrame(step, value). The value column is the last non-step column."""
    frame = pd.read_csv(tsv, sep="\t")
    value_cols = [c for c in frame.columns if c not in ("step", "timestamp")]
    if "step" not in frame.columns or not value_cols:
        return pd.DataFrame(columns=["step", "value"])
    return pd.DataFrame({"step": frame["step"], "value": frame[value_cols[-1]]})


def find_curves(dvclive_root: Path, stage: str, patterns: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """Curves of one stage whose file stem equals the first matching pattern, keyed by fold.

    Looks in <dvclive_root>/<stage>/plots/metrics/fold<k>/*.tsv. Returns {} when nothing matches.
    """
    base = dvclive_root / stage / "plots" / "metrics"
    if not base.exists():
        return {}
    files = sorted(base.rglob("*.tsv"))
    for pattern in patterns:
        hits = [f for f in files if f.stem == pattern]
        if hits:
            out = {}
            for f in hits:
                fold = re.search(r"fold(\d+)", str(f.relative_to(base)))
                key = f"fold {fold.group(1)}" if fold else f.stem
                out[key if key not in out else f"{key} {f.stem}"] = read_curve(f)
            return out
    return {}


def plot_curves(dvclive_root: Path, stages: list[str], labels: dict[str, str], kind: str, path: Path, ylabel: str) -> Path | None:
    """One panel per stage that has curves of ``kind`` (a CURVE_PATTERNS key), one line per fold.

    Returns None (and writes nothing) when no stage has such curves.
    """
    found = {s: find_curves(dvclive_root, s, CURVE_PATTERNS[kind]) for s in stages}
    found = {s: c for s, c in found.items() if c}
    if not found:
        return None
    fig, axes = plt.subplots(1, len(found), figsize=(max(6.0, 4.5 * len(found)), 3.8), squeeze=False)
    for ax, (stage, curves) in zip(axes[0], found.items()):
        for name, curve in sorted(curves.items()):
            ax.plot(curve["step"], curve["value"], label=name, linewidth=1)
        ax.set_title(labels.get(stage, stage))
        ax.set_xlabel("optimizer step within the fold")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(ylabel + " per fold")
    return _save(fig, path)
