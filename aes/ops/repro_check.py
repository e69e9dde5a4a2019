"""Does this workspace reproduce a commit's numbers? ``python -m aes.ops.repro_check`` after ``dvc repro``.

Compares the workspace's ``metrics/*.json`` and ``dvc.lock`` with the ones committed at ``--rev``
(default ``HEAD``, read with ``git show``) and prints a Markdown report (``--json PATH`` writes
the same as JSON):

- every model stage (a metrics file with ``seed_sd``: its mean over seeds and the seed-to-seed
  sd of each metric; the traits' ``<metric>`` / ``<metric>_sd`` pairs likewise), per metric:
  ``identical`` (the same value in the file), ``within seed sd`` (|workspace - committed| <= the
  committed run's seed sd of that metric, or <= ``--tolerance`` for a model with one seed, whose
  sd is 0) or ``beyond``;
- whether any verdict of ``metrics/report.json`` (Q1, Q2 per objective, per metric, the decision)
  changed;
- the compute fingerprint (``compute``: device, CPU, its kernel flags, torch, transformers,
  precision) each encoder stage recorded on both sides: what explains a difference;
- each DVC out's md5 in ``dvc.lock``: identical or differs (bf16 outputs differ across CPU kinds;
  metrics files differ with their run times).

Exit code: 0 when the numbers reproduce (every metric identical or within seed sd and no verdict
changed; DVC outs may differ), 1 when a verdict changed or a metric is beyond the seed spread
(or missing), 2 on bad input (a metrics file missing on either side, no git, bad ``--rev``).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

from aes.core.errors import AESError, stage_main
from aes.core.io import write_json
from aes.core.metrics import metric_value
from aes.core.params import parse_yaml
from aes.core.registry import REPORT_JSON

REPORT = REPORT_JSON.as_posix()  # the verdicts; every other metrics file beside it
METRICS_DIR = REPORT_JSON.parent.as_posix()
DVC_LOCK = "dvc.lock"
# For a model with one seed the seed sd is 0: the allowed difference then (QWK, RMSE: score points).
DEFAULT_TOLERANCE = 1e-3
FINGERPRINT = ("device", "cpu", "cpu_kernel_flags", "torch", "transformers", "precision")
VERDICT_KEYS = ("verdict", "outcome")
IDENTICAL, WITHIN, BEYOND, MISSING = "identical", "within seed sd", "beyond", "missing"


# ---- reading both sides ---------------------------------------------------------------------

def git(root: Path, *args: str) -> str:
    """stdout of ``git -C root args``; AESError with git's own message when it fails."""
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise AESError("git not found on PATH; the committed numbers are read with `git show`") from None
    if done.returncode != 0:
        raise AESError(f"{root}: `git {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def committed_text(root: Path, rev: str, path: str) -> str:
    """The text of ``path`` (relative to ``root``) at ``rev``; AESError naming the file when the commit lacks it."""
    listed = git(root, "ls-tree", "--name-only", rev, "--", path).strip()
    if not listed:
        raise AESError(f"{path}: not in commit {rev}; expected the committed file to compare the workspace with")
    return git(root, "show", f"{rev}:{path}")


def committed_metrics_files(root: Path, rev: str) -> list[str]:
    """``metrics/*.json`` paths at ``rev``, sorted; AESError when there are none."""
    names = [n for n in git(root, "ls-tree", "--name-only", rev, f"{METRICS_DIR}/").splitlines() if n.endswith(".json")]
    if not names:
        raise AESError(f"{METRICS_DIR}/: no metrics JSON in commit {rev}")
    return sorted(names)


def _parse_json(text: str, where: str) -> dict:
    try:
        return json.loads(text)
    except ValueError as err:
        raise AESError(f"{where}: not valid JSON ({err})") from None


def load_pair(root: Path, rev: str, path: str) -> tuple[dict, dict]:
    """(committed at ``rev``, workspace) contents of the JSON file ``path``; AESError naming it when either is missing."""
    committed = _parse_json(committed_text(root, rev, path), f"{rev}:{path}")
    local = root / path
    if not local.is_file():
        raise AESError(f"{path}: missing from the workspace (commit {rev} has it); run `dvc repro` first")
    return committed, _parse_json(local.read_text(), str(local))


# ---- metrics ----------------------------------------------------------------------------------

def seed_spread_metrics(metrics: dict) -> dict[str, tuple[float | None, float]]:
    """{metric: (mean over seeds, seed-to-seed sd)} of one model stage's metrics file.

    The stage's ``seed_sd`` names its headline metrics (dotted paths into the file); under
    ``traits`` every key with a ``<key>_sd`` sibling is one too (``traits.Grammar.qwk_pooled``).
    """
    out = {name: (metric_value(metrics, name), float(sd)) for name, sd in metrics.get("seed_sd", {}).items()}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}.{key}")
            elif f"{key}_sd" in node and not key.endswith("_sd"):
                out[f"{prefix}.{key}"] = (value, float(node[f"{key}_sd"]))

    if isinstance(metrics.get("traits"), dict):
        walk(metrics["traits"], "traits")
    return out


def n_seeds(metrics: dict) -> int:
    seeds = metric_value(metrics, "n.seeds")
    return int(seeds) if isinstance(seeds, (int, float)) else len(metrics.get("seeds", {})) or 1


def classify(committed, workspace, allowed: float) -> str:
    """``identical`` | ``within seed sd`` (|diff| <= ``allowed``) | ``beyond`` | ``missing`` (a side lacks it)."""
    if not isinstance(committed, (int, float)) or not isinstance(workspace, (int, float)):
        return MISSING
    if committed == workspace:
        return IDENTICAL
    return WITHIN if abs(workspace - committed) <= allowed else BEYOND


def compare_stage(stage: str, committed: dict, workspace: dict, tolerance: float) -> list[dict]:
    """One row per seed-spread metric of a model stage: values, |diff|, the allowed difference and the verdict.

    The allowed difference is the committed run's seed sd of that metric; for a model run with
    one seed (sd 0), ``tolerance``.
    """
    ref, new = seed_spread_metrics(committed), seed_spread_metrics(workspace)
    one_seed = n_seeds(committed) <= 1
    rows = []
    for name in list(ref) + [n for n in new if n not in ref]:
        old_value, sd = ref.get(name, (None, 0.0))
        new_value = new.get(name, (None, 0.0))[0]
        allowed = tolerance if one_seed else sd
        verdict = classify(old_value, new_value, allowed)
        diff = new_value - old_value if verdict != MISSING else None
        rows.append({"stage": stage, "metric": name, "committed": old_value, "workspace": new_value,
                     "diff": diff, "allowed": allowed, "allowed_by": "tolerance, 1 seed" if one_seed else "seed sd",
                     "verdict": verdict})
    return rows


# ---- verdicts, fingerprints, DVC outs -----------------------------------------------------------

def verdict_fields(report: dict) -> dict[str, str]:
    """{dotted path: value} of every verdict in report.json: q1/q2 ``verdict`` and per-metric ``outcome``, the decision's verdict."""
    out: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                path = f"{prefix}.{key}" if prefix else key
                if key in VERDICT_KEYS and isinstance(value, str):
                    out[path] = value
                else:
                    walk(value, path)

    for top in ("q1", "q2", "decision"):
        walk(report.get(top), top)
    return out


def compare_verdicts(committed: dict, workspace: dict) -> list[dict]:
    ref, new = verdict_fields(committed), verdict_fields(workspace)
    return [{"field": key, "committed": ref.get(key), "workspace": new.get(key), "changed": ref.get(key) != new.get(key)}
            for key in list(ref) + [k for k in new if k not in ref]]


def compare_compute(stage: str, committed: dict, workspace: dict) -> dict | None:
    """Both sides' compute fingerprints of one stage (None when neither side recorded one)."""
    old, new = committed.get("compute"), workspace.get("compute")
    if not old and not new:
        return None
    old, new = old or {}, new or {}
    fields = {f: {"committed": old.get(f), "workspace": new.get(f)} for f in FINGERPRINT}
    return {"stage": stage, "fields": fields, "same": all(v["committed"] == v["workspace"] for v in fields.values())}


def lock_outs(lock: dict) -> dict[tuple[str, str], str | None]:
    """{(stage, out path): md5} of a parsed dvc.lock."""
    out = {}
    for stage, entry in (lock or {}).get("stages", {}).items():
        for item in entry.get("outs", []) or []:
            out[(stage, item["path"])] = item.get("md5")
    return out


def compare_outs(committed_lock: dict, workspace_lock: dict) -> list[dict]:
    ref, new = lock_outs(committed_lock), lock_outs(workspace_lock)
    rows = []
    for key in list(ref) + [k for k in new if k not in ref]:
        old, cur = ref.get(key), new.get(key)
        status = "identical" if old == cur else ("only committed" if key not in new else "only workspace" if key not in ref else "differs")
        rows.append({"stage": key[0], "out": key[1], "committed": old, "workspace": cur, "status": status})
    return rows


# ---- the whole check ------------------------------------------------------------------------------

def check(root: Path, rev: str = "HEAD", tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """The comparison of the workspace at ``root`` with commit ``rev`` (JSON-ready); ``ok`` says whether it reproduces."""
    root = Path(root)
    git(root, "rev-parse", "--verify", f"{rev}^{{commit}}")
    metrics, compute = [], []
    for path in committed_metrics_files(root, rev):
        if path == REPORT:
            continue
        committed, workspace = load_pair(root, rev, path)
        stage = Path(path).stem
        if "seed_sd" in committed:
            metrics += compare_stage(stage, committed, workspace, tolerance)
        fingerprint = compare_compute(stage, committed, workspace)
        if fingerprint:
            compute.append(fingerprint)
    verdicts = compare_verdicts(*load_pair(root, rev, REPORT))
    workspace_lock = root / DVC_LOCK
    if not workspace_lock.is_file():
        raise AESError(f"{DVC_LOCK}: missing from the workspace; run `dvc repro` first")
    outs = compare_outs(parse_yaml(committed_text(root, rev, DVC_LOCK), f"{rev}:{DVC_LOCK}"),
                        parse_yaml(workspace_lock.read_text(), str(workspace_lock)))
    counts = {v: sum(r["verdict"] == v for r in metrics) for v in (IDENTICAL, WITHIN, BEYOND, MISSING)}
    changed = [v["field"] for v in verdicts if v["changed"]]
    return {
        "rev": rev,
        "commit": git(root, "rev-parse", rev).strip(),
        "tolerance": tolerance,
        "ok": not changed and counts[BEYOND] == 0 and counts[MISSING] == 0,
        "summary": {"metrics": counts, "verdicts_changed": changed,
                    "outs": {s: sum(r["status"] == s for r in outs) for s in sorted({r["status"] for r in outs})},
                    "compute_same": all(c["same"] for c in compute)},
        "metrics": metrics,
        "verdicts": verdicts,
        "compute": compute,
        "outs": outs,
    }


# ---- Markdown -----------------------------------------------------------------------------------------

def _num(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def _diff(value) -> str:
    return "—" if value is None else "0" if value == 0 else f"{value:+.6f}"


def _worst(rows: list[dict]) -> str:
    order = (MISSING, BEYOND, WITHIN, IDENTICAL)
    return next(v for v in order if any(r["verdict"] == v for r in rows))


def _pair(old, new) -> str:
    return f"{old}" if old == new else f"{old} → {new}"


def render(result: dict) -> str:
    """The check as Markdown: a summary line, then tables of metrics, verdicts, compute and DVC outs.

    Trait metrics are folded into one row per stage (their worst verdict, largest |diff|); the
    JSON has every row.
    """
    s = result["summary"]
    m = s["metrics"]
    lines = [
        f"# Reproducibility check: workspace vs {result['rev']} ({result['commit'][:7]})",
        "",
        f"**{'Reproduces' if result['ok'] else 'Does not reproduce'}.** Metrics: {m[IDENTICAL]} identical, "
        f"{m[WITHIN]} within seed sd, {m[BEYOND]} beyond, {m[MISSING]} missing; verdicts "
        f"{'changed: ' + ', '.join(s['verdicts_changed']) if s['verdicts_changed'] else 'unchanged'}; compute "
        f"{'the same' if s['compute_same'] else 'differs'}; DVC outs: "
        + ", ".join(f"{n} {status}" for status, n in s["outs"].items()) + ".",
        "",
        "## Metrics (mean over seeds)",
        "",
        "| stage | metric | committed | workspace | diff | allowed | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    stages = list(dict.fromkeys(r["stage"] for r in result["metrics"]))
    for stage in stages:
        rows = [r for r in result["metrics"] if r["stage"] == stage]
        for r in rows:
            if r["metric"].startswith("traits."):
                continue
            allowed = f"{r['allowed']:.6f} ({r['allowed_by']})"
            lines.append(f"| {stage} | {r['metric']} | {_num(r['committed'])} | {_num(r['workspace'])} | "
                         f"{_diff(r['diff'])} | {allowed} | {r['verdict']} |")
        traits = [r for r in rows if r["metric"].startswith("traits.")]
        if traits:
            diffs = [abs(r["diff"]) for r in traits if r["diff"] is not None]
            lines.append(f"| {stage} | traits ({len(traits)} metrics) | | | max \\|diff\\| {_diff(max(diffs) if diffs else None)} | | "
                         f"{_worst(traits)} |")
    lines += ["", "## Verdicts (metrics/report.json)", "", "| field | committed | workspace | |", "|---|---|---|---|"]
    lines += [f"| {v['field']} | {v['committed']} | {v['workspace']} | {'**changed**' if v['changed'] else 'same'} |"
              for v in result["verdicts"]]
    lines += ["", "## Compute fingerprint (committed → workspace where they differ)", "",
              "| stage | " + " | ".join(FINGERPRINT) + " |", "|---" * (len(FINGERPRINT) + 1) + "|"]
    lines += ["| " + c["stage"] + " | " + " | ".join(_pair(c["fields"][f]["committed"], c["fields"][f]["workspace"])
                                                    for f in FINGERPRINT) + " |" for c in result["compute"]]
    lines += ["", "## DVC outs (md5 in dvc.lock)", "", "| stage | out | committed | workspace | |", "|---|---|---|---|---|"]
    lines += [f"| {o['stage']} | {o['out']} | {o['committed'] or '—'} | {o['workspace'] or '—'} | {o['status']} |"
              for o in result["outs"]]
    return "\n".join(lines) + "\n"


@stage_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aes-repro-check", description=__doc__.split("\n\n")[0],
                                     epilog="exit code: 0 reproduces; 1 a verdict changed or a metric is beyond the seed "
                                            "spread (or missing); 2 bad input")
    parser.add_argument("--rev", default="HEAD", help="the commit whose numbers to compare with (default HEAD)")
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository's root (default: here)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=f"allowed |diff| for a model with one seed (default {DEFAULT_TOLERANCE})")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the comparison as JSON to PATH")
    args = parser.parse_args(argv)
    if args.tolerance < 0:
        raise AESError(f"--tolerance must be >= 0; got {args.tolerance}")
    result = check(args.root, args.rev, args.tolerance)
    sys.stdout.write(render(result))
    if args.json:
        write_json(args.json, result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
