"""The real `dvc repro` in a temporary copy of the repository, on synthetic ELLIPSE-shaped
essays and a tiny random encoder: every stage runs, a second repro runs nothing, metrics show,
and switching `objective` re-runs `report` alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.synthetic import write_ellipse_csv
from tests.yamlio import load_yaml, dump_yaml

ROOT = Path(__file__).resolve().parents[1]
MODEL_STAGES = ["gbm_cv", "finetune_cv", "grl_cv", "dro_cv"]


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def tiny_params(params: dict, model: Path) -> dict:
    params["data"].update(source="csv", csv_path="data/external/own.csv")
    params["prepare"].update(n_folds=3, test_candidates=50, min_words=200, max_words=1000)
    params["embed"].update(model=str(model), max_length=64, batch_size=8)
    params["gbm"].update(n_estimators=30, early_stopping_rounds=5, n_jobs=1)
    params["finetune"].update(model=str(model), max_length=64, batch_size=8, eval_batch_size=16, epochs=1)
    params["report"].update(bootstrap_resamples=100, min_prompt_n=3, probe_folds=2)
    return params


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("repo")
    for name in ("dvc.yaml", ".gitignore", ".dvcignore", "README.md", "metrics/final_test.json"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, root / name)
    for folder in ("aes", "stages"):
        shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "data" / "external").mkdir(parents=True)
    shutil.copy(ROOT / "data" / "external" / "README.md", root / "data" / "external")
    write_ellipse_csv(root / "data" / "external" / "own.csv", n_prompts=14, per_prompt=9, seed=5)
    params = tiny_params(load_yaml((ROOT / "params.yaml").read_text()), tiny_encoder)
    (root / "params.yaml").write_text(dump_yaml(params))
    run(["git", "init", "-q"], root)
    run(["git", "config", "user.email", "ci@example.com"], root)
    run(["git", "config", "user.name", "ci"], root)
    run(["dvc", "init", "-q"], root)
    run(["dvc", "config", "core.analytics", "false"], root)
    shutil.copytree(ROOT / ".dvc" / "plots", root / ".dvc" / "plots")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "init"], root)
    first = run(["dvc", "repro"], root)
    return root, first


def test_every_stage_writes_the_contract(repo):
    root, first = repo
    for stage in ["fetch", "prepare", "embed", *MODEL_STAGES, "report"]:
        assert f"Running stage '{stage}'" in first.stdout
    for stage in MODEL_STAGES:
        metrics = json.loads((root / "metrics" / f"{stage}.json").read_text())
        assert {"qwk", "rmse", "mae", "within_half_band", "n", "runtime_s"} <= set(metrics)
        assert metrics["n"]["folds"] == 3
        for name in ("by_prompt", "by_grade", "by_band"):
            assert (root / "plots" / stage / f"{name}.csv").exists()
    assert json.loads((root / "metrics" / "report.json").read_text())["decision"]
    assert (root / "README.md").read_bytes() == (ROOT / "README.md").read_bytes()  # no stage writes outside dvc.yaml
    assert "Running stage 'final_test'" not in first.stdout  # frozen: the locked test is never scored by repro


def test_editing_an_imported_module_makes_its_stages_stale(repo):
    """What tests/test_stage_deps.py guarantees statically, seen through `dvc status`."""
    root, _ = repo
    module = root / "aes" / "encoders" / "resolve.py"  # imported lazily by embed (and so by the stages after it)
    original = module.read_text()
    try:
        module.write_text(original + "\n# edited\n")
        status = json.loads(run(["dvc", "status", "--json"], root).stdout)
        changed = {name for name, entries in status.items() if any("changed deps" in e for e in entries if isinstance(e, dict))}
        assert {"embed", "gbm_cv", "finetune_cv", "grl_cv", "dro_cv"} <= changed and "prepare" not in changed, status
    finally:
        module.write_text(original)
    assert json.loads(run(["dvc", "status", "--json"], root).stdout) == {}  # __pycache__ is ignored by .dvcignore


def test_plots_render(repo):
    root, _ = repo
    out = run(["dvc", "plots", "show", "--json"], root)
    assert "per_prompt_qwk" in out.stdout and "confusion" in out.stdout


def test_second_repro_runs_nothing(repo):
    root, _ = repo
    second = run(["dvc", "repro"], root)
    assert "Running stage" not in second.stdout
    shown = run(["dvc", "metrics", "show", "--json"], root)
    assert "gbm_cv" in shown.stdout and "qwk" in shown.stdout


def test_objective_switch_reruns_report_only(repo):
    """What users run: `dvc exp run -S objective=...` (DVC rewrites params.yaml as YAML 1.2)."""
    root, _ = repo
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "first run"], root)
    params = load_yaml((root / "params.yaml").read_text())
    other = "grl" if params["objective"] != "grl" else "dro"
    out = run(["dvc", "exp", "run", "-S", f"objective={other}"], root)
    ran = [line for line in out.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'report':"]
    report = json.loads((root / "metrics" / "report.json").read_text())
    assert report["candidate"]["objective"] == other
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], root).stdout)
    assert any(key.startswith("candidate.") for key in diff.get("metrics/report.json", {}))


def test_locked_test_scored_only_when_unfrozen(repo):
    """final_test is frozen: no repro touches it; unfrozen, the README's command scores the locked test once."""
    root, _ = repo
    placeholder = json.loads((root / "metrics" / "final_test.json").read_text())
    assert "not run" in placeholder["status"]
    frozen = run(["dvc", "repro"], root)  # report may have changed since: still the frozen stage must not run
    assert "Running stage 'final_test'" not in frozen.stdout
    assert "not run" in json.loads((root / "metrics" / "final_test.json").read_text())["status"]
    run(["dvc", "unfreeze", "final_test"], root)
    out = run(["dvc", "repro", "-s", "-f", "final_test"], root)  # the README's command
    assert "Running stage 'final_test'" in out.stdout
    run(["dvc", "freeze", "final_test"], root)
    final = json.loads((root / "metrics" / "final_test.json").read_text())
    splits = json.loads((root / "data" / "prepared" / "splits.json").read_text())
    assert final["test"]["n"]["essays"] == splits["test"]["n_essays"] > 0
    assert final["n_train"] == sum(len(fold["val_record_ids"]) for fold in splits["folds"])
    assert -1.0 <= final["test"]["qwk"]["pooled"] <= 1.0
    assert final["model"] in ("gbm_cv", "finetune_cv", "grl_cv", "dro_cv")
