"""aes.ops.repro_check on a temporary git repository with small synthetic metrics (never the real outputs)."""

import copy
import json
import os
import subprocess
from pathlib import Path

import pytest

from aes.core.errors import AESError
from aes.ops import repro_check

COMPUTE = {"device": "cpu", "precision": "bf16", "cpu": "Test CPU", "cpu_kernel_flags": "avx512f avx2",
           "torch": "2.13.0+cpu", "transformers": "5.24.0", "threads": "2"}


def _model(pooled: float, sd: float, seeds: int) -> dict:
    """A model stage's metrics: means over seeds, their seed sd, one trait with its own sd."""
    return {
        "qwk": {"pooled": pooled, "worst_quarter": 0.35, "fold_std": 0.04},
        "offset": {"rms": 0.10, "noise_rms": 0.08},
        "rmse": 0.48,
        "n": {"essays": 100, "seeds": seeds},
        "seed_sd": {"qwk.pooled": sd, "qwk.worst_quarter": sd * 3, "offset.rms": sd, "rmse": sd / 2},
        "traits": {"Cohesion": {"qwk_pooled": 0.41, "qwk_pooled_sd": sd * 4, "rmse": 0.55, "rmse_sd": sd},
                   "mean_qwk_pooled": 0.46, "mean_qwk_pooled_sd": sd},
    }


REPORT = {
    "q1": {"reference": "gbm_cv", "verdict": "inconclusive",
           "metrics": {"qwk.pooled": {"outcome": "inconclusive", "gain": -0.02}}},
    "q2": {"dro": {"stage": "dro_cv", "verdict": "inconclusive",
                   "metrics": {"qwk.pooled": {"outcome": "inconclusive"}, "offset.rms": {"outcome": "not better"}}}},
    "decision": {"proceed": 0, "verdict": "defer"},
    "models": {"gbm_cv": {"qwk_pooled": 0.54}},
}
LOCK = {"schema": "2.0", "stages": {
    "gbm_cv": {"cmd": "python -m stages.gbm_cv", "outs": [
        {"path": "data/predictions/gbm_cv.csv", "hash": "md5", "md5": "a" * 32, "size": 10},
        {"path": "metrics/gbm_cv.json", "hash": "md5", "md5": "b" * 32, "size": 10}]},
    "finetune_cv": {"cmd": "python -m stages.finetune_cv", "outs": [
        {"path": "models/finetune_cv", "hash": "md5", "md5": "c" * 32 + ".dir", "size": 10, "nfiles": 2}]},
}}


def _write(root: Path, files: dict) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2) + "\n")  # dvc.lock: JSON is valid YAML 1.2


def _git(root: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, env=env)


@pytest.fixture
def repo(tmp_path):
    """A committed run (a three-seed model, a one-seed model, an encoder stage, the report, dvc.lock); workspace == commit."""
    files = {
        "metrics/gbm_cv.json": _model(0.540, 0.002, 3),
        "metrics/linear_cv.json": _model(0.450, 0.0, 1),
        "metrics/finetune_cv.json": {**_model(0.518, 0.002, 3), "compute": COMPUTE},
        "metrics/prepare.json": {"rows_in": 100},
        "metrics/report.json": REPORT,
        "dvc.lock": LOCK,
    }
    _write(tmp_path, files)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "committed run")
    return tmp_path, copy.deepcopy(files)


def _row(result: dict, stage: str, metric: str) -> dict:
    return next(r for r in result["metrics"] if r["stage"] == stage and r["metric"] == metric)


def test_identical_workspace_reproduces(repo, capsys):
    root, _ = repo
    result = repro_check.check(root)
    assert result["ok"] and result["summary"]["verdicts_changed"] == []
    assert {r["verdict"] for r in result["metrics"]} == {"identical"}
    # every seed-spread metric of the three model stages: 4 headline + 3 trait metrics each
    assert len(result["metrics"]) == 3 * 7
    assert {r["stage"] for r in result["metrics"]} == {"gbm_cv", "linear_cv", "finetune_cv"}
    assert _row(result, "gbm_cv", "traits.Cohesion.qwk_pooled")["allowed"] == pytest.approx(0.008)
    assert {o["status"] for o in result["outs"]} == {"identical"} and len(result["outs"]) == 3
    assert result["compute"] == [{"stage": "finetune_cv", "same": True,
                                  "fields": {f: {"committed": COMPUTE[f], "workspace": COMPUTE[f]} for f in repro_check.FINGERPRINT}}]
    assert repro_check.main(["--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "**Reproduces.** Metrics: 21 identical, 0 within seed sd, 0 beyond, 0 missing; verdicts unchanged" in out
    assert "| gbm_cv | qwk.pooled | 0.540000 | 0.540000 | 0 | 0.002000 (seed sd) | identical |" in out
    assert "| finetune_cv | cpu | Test CPU | avx512f avx2 | 2.13.0+cpu | 5.24.0 | bf16 |" in out


def test_within_seed_sd_and_one_seed_tolerance(repo):
    root, files = repo
    files["metrics/gbm_cv.json"]["qwk"]["pooled"] = 0.5415  # sd 0.002
    files["metrics/linear_cv.json"]["rmse"] = 0.4805  # one seed: sd 0, the tolerance 0.001 applies
    _write(root, files)
    result = repro_check.check(root)
    row = _row(result, "gbm_cv", "qwk.pooled")
    assert row["verdict"] == "within seed sd" and row["diff"] == pytest.approx(0.0015) and row["allowed_by"] == "seed sd"
    row = _row(result, "linear_cv", "rmse")
    assert row["verdict"] == "within seed sd" and row["allowed"] == 0.001 and row["allowed_by"] == "tolerance, 1 seed"
    assert result["ok"] and result["summary"]["metrics"]["within seed sd"] == 2
    # a tighter stated tolerance turns the one-seed model's difference into "beyond"
    assert _row(repro_check.check(root, tolerance=1e-4), "linear_cv", "rmse")["verdict"] == "beyond"


def test_beyond_the_seed_spread_fails(repo, capsys, tmp_path):
    root, files = repo
    files["metrics/finetune_cv.json"]["qwk"]["pooled"] = 0.508  # 5 sd below
    files["metrics/gbm_cv.json"]["traits"]["Cohesion"]["rmse"] = 0.56  # trait sd 0.002
    files["metrics/finetune_cv.json"]["compute"]["cpu_kernel_flags"] = "avx2"
    _write(root, files)
    result = repro_check.check(root)
    assert not result["ok"] and result["summary"]["metrics"]["beyond"] == 2
    assert _row(result, "finetune_cv", "qwk.pooled")["verdict"] == "beyond"
    assert _row(result, "gbm_cv", "traits.Cohesion.rmse")["verdict"] == "beyond"
    assert not result["summary"]["compute_same"]
    report = tmp_path / "out" / "check.json"
    assert repro_check.main(["--root", str(root), "--json", str(report)]) == 1
    out = capsys.readouterr().out
    assert "**Does not reproduce.**" in out
    assert "| finetune_cv | qwk.pooled | 0.518000 | 0.508000 | -0.010000 | 0.002000 (seed sd) | beyond |" in out
    assert "| gbm_cv | traits (3 metrics) | | | max \\|diff\\| +0.010000 | | beyond |" in out
    assert "avx512f avx2 → avx2" in out
    assert json.loads(report.read_text())["summary"]["metrics"]["beyond"] == 2


def test_a_changed_verdict_fails_even_with_metrics_inside_the_spread(repo, capsys):
    root, files = repo
    files["metrics/report.json"]["q2"]["dro"]["metrics"]["offset.rms"]["outcome"] = "inconclusive"
    files["metrics/report.json"]["decision"]["verdict"] = "proceed"
    _write(root, files)
    result = repro_check.check(root)
    assert {r["verdict"] for r in result["metrics"]} == {"identical"}
    assert result["summary"]["verdicts_changed"] == ["q2.dro.metrics.offset.rms.outcome", "decision.verdict"]
    assert not result["ok"]
    assert repro_check.main(["--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "verdicts changed: q2.dro.metrics.offset.rms.outcome, decision.verdict" in out
    assert "| decision.verdict | defer | proceed | **changed** |" in out


def test_dvc_outs_are_compared_by_md5_without_failing_the_check(repo):
    root, files = repo
    files["dvc.lock"]["stages"]["gbm_cv"]["outs"][1]["md5"] = "d" * 32  # metrics file re-written (run time moved)
    del files["dvc.lock"]["stages"]["finetune_cv"]
    _write(root, files)
    result = repro_check.check(root)
    status = {(o["stage"], o["out"]): o["status"] for o in result["outs"]}
    assert status == {("gbm_cv", "data/predictions/gbm_cv.csv"): "identical", ("gbm_cv", "metrics/gbm_cv.json"): "differs",
                      ("finetune_cv", "models/finetune_cv"): "only committed"}
    assert result["ok"]


def test_compares_with_the_rev_asked_for(repo):
    root, files = repo
    files["metrics/gbm_cv.json"]["qwk"]["pooled"] = 0.60
    _write(root, files)
    _git(root, "commit", "-qam", "a later run")
    assert repro_check.check(root)["ok"]  # HEAD is the later run
    result = repro_check.check(root, rev="HEAD~1")
    assert _row(result, "gbm_cv", "qwk.pooled")["verdict"] == "beyond" and result["rev"] == "HEAD~1"


def test_a_missing_metrics_file_is_named(repo, capsys):
    root, _ = repo
    (root / "metrics" / "gbm_cv.json").unlink()
    with pytest.raises(AESError, match=r"metrics/gbm_cv\.json: missing from the workspace \(commit HEAD has it\); run `dvc repro` first"):
        repro_check.check(root)
    with pytest.raises(SystemExit) as exit_:
        repro_check.main(["--root", str(root)])
    assert exit_.value.code == 2 and "metrics/gbm_cv.json: missing from the workspace" in capsys.readouterr().err


def test_a_metrics_file_missing_from_the_commit_is_named(repo):
    root, _ = repo
    _git(root, "rm", "-q", "--cached", "metrics/report.json")
    _git(root, "commit", "-qm", "no report")
    with pytest.raises(AESError, match=r"metrics/report\.json: not in commit HEAD"):
        repro_check.check(root)
    with pytest.raises(AESError, match=r"`git rev-parse --verify nope\^\{commit\}` failed"):
        repro_check.check(root, rev="nope")
