"""A queued sweep from a fresh clone, the README's way: the data sits in a folder beside the
checkout, named by a relative path, and DVC runs each queued experiment in a temporary copy of the
repository under .dvc/tmp/exps/ where that relative path would not exist on its own."""

from __future__ import annotations

import json
import time

import pytest

from tests.synthetic import write_ellipse_csv
from tests.tiny_pipeline import make_pipeline_repo, run

pytestmark = pytest.mark.slow


def wait_for_queue(repo, timeout_s: float = 420.0) -> str:
    """Poll `dvc queue status` until nothing is queued or running (bounded); return the last status."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = run(["dvc", "queue", "status"], repo).stdout
        if not any(state in status for state in ("Queued", "Running")):
            return status
        if time.monotonic() > deadline:
            run(["dvc", "queue", "stop", "--kill"], repo, check=False)
            raise AssertionError(f"queue still busy after {timeout_s:.0f} s:\n{status}")
        time.sleep(2)


def test_queued_sweep_in_a_fresh_clone(tmp_path, tiny_encoder):
    write_ellipse_csv(tmp_path / "essays" / "own.csv", n_prompts=14, per_prompt=9, seed=5)
    make_pipeline_repo(tmp_path / "origin", tiny_encoder, "../essays/own.csv")  # like ../shared/ellipse
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(tmp_path / "origin"), str(clone)], tmp_path)
    run(["dvc", "config", "core.analytics", "false"], clone)

    run(["dvc", "exp", "run", "--queue", "-S", "gbm.learning_rate=0.05,0.3"], clone)
    run(["dvc", "queue", "start"], clone)
    status = wait_for_queue(clone)
    failed = [line.split()[1] for line in status.splitlines() if line.rstrip().endswith("Failed")]
    assert not failed, status + "".join(run(["dvc", "queue", "logs", name], clone, check=False).stdout for name in failed)

    shown = json.loads(run(["dvc", "exp", "show", "--json"], clone).stdout)
    experiments = [e for rev in shown for e in (rev.get("experiments") or [])]
    runs = {}
    for exp in experiments:
        data = exp["revs"][0]["data"]
        rate = data["params"]["params.yaml"]["data"]["gbm"]["learning_rate"]
        runs[rate] = data["metrics"]["metrics/gbm_cv.json"]["data"]["qwk"]["pooled"]
    assert set(runs) == {0.05, 0.3} and runs[0.05] != runs[0.3], runs
