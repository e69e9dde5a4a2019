"""A temporary copy of this repository's pipeline on synthetic essays and a tiny random encoder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.committed import committed_params
from tests.yamlio import dump_yaml

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command with this venv first on PATH (dvc, python, and dvc's queue worker find it)."""
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def tiny_params(params: dict, model: Path, csv_path: str) -> dict:
    params["data"]["source"] = "csv"
    params["data"]["ellipse"]["csv_path"] = csv_path
    params["prepare"]["ellipse"].update(n_folds=3, test_candidates=50, min_words=200, max_words=1000)
    params["embed"].update(model=str(model), max_length=64, batch_size=8)
    params["gbm"].update(n_estimators=30, early_stopping_rounds=5, n_jobs=1, max_depth=[2], seeds=[7, 8])
    params["linear"].update(inner_folds=3)
    params["finetune"].update(model=str(model), max_length=64, batch_size=8, eval_batch_size=16, epochs=1, seeds=[7, 8])
    params["report"].update(bootstrap_resamples=100, min_prompt_n=3, probe_folds=2)
    return params


def make_pipeline_repo(root: Path, model: Path, csv_path: str) -> Path:
    """git + dvc repo at ``root`` with this repository's code, dvc.yaml and tiny params; committed."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore", "README.md"):
        shutil.copy(ROOT / name, root / name)
    # The frozen final_test stage's metric before the locked test is ever scored (the workspace's
    # copy may hold a score once its user has run the locked-test command).
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics" / "final_test.json").write_text(json.dumps({"status": "not run: tiny test repository"}, indent=2) + "\n")
    for folder in ("aes", "stages"):
        shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "data" / "external").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "data" / "external" / "README.md", root / "data" / "external")
    params = tiny_params(committed_params(), model, csv_path)
    (root / "params.yaml").write_text(dump_yaml(params))
    run(["git", "init", "-q", "-b", "main"], root)
    run(["git", "config", "user.email", "ci@example.com"], root)
    run(["git", "config", "user.name", "ci"], root)
    run(["dvc", "init", "-q"], root)
    run(["dvc", "config", "core.analytics", "false"], root)
    shutil.copytree(ROOT / ".dvc" / "plots", root / ".dvc" / "plots")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "init"], root)
    return root
