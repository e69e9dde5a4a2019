"""aes-run end to end on a tiny DVC project: detached start, status, progress, push, failure, death."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aes.ops import runs
from tests.tiny_dvc import make_project, sh, tool_env

pytestmark = pytest.mark.slow

WORK_PY = """\
import json, sys, time
from aes.core.progress import update_progress
from aes.core.params import parse_yaml

p = parse_yaml(open("params.yaml").read())
update_progress(stage="work", step=0, total_steps=2)
print("working", flush=True)
time.sleep(p["sleep_s"])
if p["fail_code"]:
    print("failing on purpose", flush=True)
    sys.exit(p["fail_code"])
update_progress(stage="work", step=2, total_steps=2, eta_s=0.0)
open("out.txt", "w").write("done %s\\n" % p["sleep_s"])
json.dump({"value": p["sleep_s"]}, open("metrics.json", "w"))
"""

DVC_YAML = """\
stages:
  work:
    cmd: python work.py
    deps: [work.py]
    params: [sleep_s, fail_code]
    outs: [out.txt]
    metrics:
      - metrics.json:
          cache: false
"""


@pytest.fixture
def project(tmp_path):
    """A committed tiny project with a bare git `origin` and a local-directory default DVC remote."""
    env = tool_env()
    origin = tmp_path / "origin.git"
    sh(["git", "init", "-q", "--bare", str(origin)], tmp_path, env)
    repo = make_project(tmp_path / "repo", {
        "work.py": WORK_PY,
        "dvc.yaml": DVC_YAML,
        "params.yaml": "sleep_s: 0.1\nfail_code: 0\n",
        ".gitignore": "/output/\n",
    }, env)
    sh(["dvc", "remote", "add", "-d", "local", str(tmp_path / "remote")], repo, env)
    sh(["git", "remote", "add", "origin", str(origin)], repo, env)
    sh(["git", "commit", "-q", "-am", "remote"], repo, env)
    sh(["git", "push", "-q", "origin", "main"], repo, env)
    return repo


def aes_run(repo: Path, *args: str) -> str:
    """The CLI as a user runs it; the launcher process exits while the job goes on."""
    return sh([sys.executable, "-m", "aes.ops.runs", *args], repo, tool_env()).stdout


def wait_state(run_dir: Path, until, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = runs.run_status(run_dir)
        if until(status):
            return status
        time.sleep(0.2)
    raise AssertionError(f"timed out; status {status}\n{(run_dir / 'driver.log').read_text()}")


def only_run(repo: Path) -> Path:
    (run_dir,) = runs.list_runs(repo)
    return run_dir


def test_start_runs_detached_reports_progress_and_pushes(project, tmp_path):
    out = aes_run(project, "start", "--name", "ok", "--", "-S", "sleep_s=1.5")
    run_dir = only_run(project)
    assert run_dir.name.endswith("_ok") and run_dir.parent == project / "output"
    assert "started output/" in out

    first = runs.run_status(run_dir)
    assert first["state"] == "running" and first["pid"] > 0
    # The job lives in its own session (immune to the launching shell's SIGHUP).
    assert os.getsid(first["pid"]) == first["pid"] != os.getsid(0)
    mid = wait_state(run_dir, lambda s: s["progress"].get("step") == 0 or s["state"] != "running")
    assert mid["state"] == "running" and mid["progress"]["total_steps"] == 2

    done = wait_state(run_dir, lambda s: s["state"] != "running")
    assert done["state"] == "succeeded", (run_dir / "driver.log").read_text()
    assert done["exit_code"] == 0 and done["stage"] == "work"
    assert done["finished_at"] >= done["started_at"]
    assert done["command"] == ["dvc", "exp", "run", "--name", "ok", "-S", "sleep_s=1.5"]
    assert done["git_commit"] == sh(["git", "rev-parse", "HEAD"], project).stdout.strip()
    assert done["progress"]["step"] == 2 and "updated_at" in done["progress"]

    log = (run_dir / "driver.log").read_text()
    assert "Running stage 'work'" in log and "working" in log
    assert "Pushed experiment ok" in log
    # The experiment's git ref reached origin, and its outputs plus the run cache reached the
    # DVC remote, including the uncached metrics file (pushed by push-run-cache).
    refs = sh(["git", "ls-remote", str(tmp_path / "origin.git")], project).stdout
    assert any(ref.startswith("refs/exps/") and ref.endswith("/ok") for ref in refs.split())
    remote = tmp_path / "remote"
    metrics_md5 = hashlib.md5((project / "metrics.json").read_bytes()).hexdigest()
    assert (remote / "files" / "md5" / metrics_md5[:2] / metrics_md5[2:]).is_file()
    assert any((remote / "runs").rglob("*"))

    table = aes_run(project, "status")
    assert table.splitlines()[0].split()[:3] == ["RUN", "STATE", "STAGE"]
    assert run_dir.name in table and "succeeded" in table and "step=2" in table
    detail = aes_run(project, "status", "ok")
    assert "exit_code    0" in detail and "--- last 20 lines" in detail


def test_failing_stage_marks_failed_with_exit_code(project):
    aes_run(project, "start", "--name", "bad", "--", "-S", "fail_code=3")
    run_dir = only_run(project)
    done = wait_state(run_dir, lambda s: s["state"] != "running")
    assert done["state"] == "failed"
    assert done["exit_code"] not in (0, None) and done["stage"] == "work"
    assert "exited with 3" in done["error"]
    log = (run_dir / "driver.log").read_text()
    assert "failing on purpose" in log and "failed (exit code" in log
    assert "dvc exp push" not in log  # nothing is pushed after a failure


def test_killed_job_is_reported_died(project):
    aes_run(project, "start", "--name", "doomed", "--no-push", "--", "-S", "sleep_s=60")
    run_dir = only_run(project)
    running = wait_state(run_dir, lambda s: s["stage"] == "work" or s["state"] != "running")
    assert running["state"] == "running"
    os.killpg(running["pid"], signal.SIGKILL)  # supervisor, dvc and the stage: no chance to write
    died = wait_state(run_dir, lambda s: s["state"] != "running", timeout=10)
    assert died["state"] == "died"
    assert json.loads((run_dir / "status.json").read_text())["state"] == "running"
    assert "died" in aes_run(project, "status")


def test_bad_input_is_a_clear_error(project):
    proc = subprocess.run([sys.executable, "-m", "aes.ops.runs", "start", "--name", "no spaces"],
                          cwd=project, env=tool_env(), capture_output=True, text=True)
    assert proc.returncode == 2 and "--name 'no spaces'" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "aes.ops.runs", "status", "nosuchrun"],
                          cwd=project, env=tool_env(), capture_output=True, text=True)
    assert proc.returncode == 2 and "run 'nosuchrun': not found" in proc.stderr


def test_stop_terminates_the_run_and_marks_it_failed(project):
    aes_run(project, "start", "--name", "stopped", "--no-push", "--", "-S", "sleep_s=60")
    run_dir = only_run(project)
    # Wait for the stage's own output, not only dvc's "Running stage" line: a SIGTERM that lands
    # before work.py has started leaves nothing to check in the log.
    log = run_dir / "driver.log"
    wait_state(run_dir, lambda s: (log.exists() and "working" in log.read_text()) or s["state"] != "running")
    assert "sent SIGTERM" in aes_run(project, "stop", "stopped")
    done = wait_state(run_dir, lambda s: s["state"] != "running", timeout=20)
    assert done["state"] == "failed" and done["exit_code"] != 0
    assert "working" in (run_dir / "driver.log").read_text()


def test_queued_sweep_runs_detached_and_pushes_every_experiment(project, tmp_path):
    """`dvc exp run --queue -S ...` here, then `aes-run start --queued` runs the sweep and pushes it all."""
    sh(["dvc", "exp", "run", "--queue", "-S", "sleep_s=0.2,0.3"], project)
    aes_run(project, "start", "--name", "sweep", "--queued")
    done = wait_state(only_run(project), lambda s: s["state"] != "running", timeout=180)
    assert done["state"] == "succeeded", (only_run(project) / "driver.log").read_text()
    assert done["command"] == ["dvc", "exp", "run", "--run-all"]
    refs = [r for r in sh(["git", "ls-remote", str(tmp_path / "origin.git")], project).stdout.split() if r.startswith("refs/exps/")]
    assert len(refs) == 2, refs  # both experiments of the sweep reached origin
