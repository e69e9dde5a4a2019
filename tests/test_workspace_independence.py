"""The test command passes in a workspace its user has changed by using the pipeline: no test reads
params.yaml, metrics/ or the README from the workspace (tests/committed.py reads them from HEAD)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.committed import committed_text, with_param

TESTS = Path(__file__).resolve().parent
# A path into the workspace that `dvc repro`, `dvc exp run -S ...` or the locked-test command rewrites.
WORKSPACE_READ = re.compile(r"""(ROOT|REPO|parents\[1\])\s*/\s*["'](params\.yaml|metrics[/"']|README\.md)""")


def test_no_test_reads_pipeline_outputs_or_params_from_the_workspace():
    offenders = [f"{path.name}:{n}: {line.strip()}" for path in sorted(TESTS.glob("*.py")) if path.name != Path(__file__).name
                 for n, line in enumerate(path.read_text().splitlines(), 1) if WORKSPACE_READ.search(line)]
    assert not offenders, "read these from the commit (tests/committed.py):\n" + "\n".join(offenders)


def test_with_param_changes_exactly_one_key_whatever_its_value():
    text = committed_text("params.yaml")
    for dotted in ("objective", "finetune.seeds", "gbm.seeds", "linear.alphas", "embed.mixed_precision"):
        changed = with_param(text, dotted, "X")
        diff = [(a, b) for a, b in zip(text.splitlines(), changed.splitlines()) if a != b]
        assert len(diff) == 1 and diff[0][1].split(":", 1)[1].split("#")[0].strip() == "X", (dotted, diff)
    # applied on top of another change (as `dvc exp run -S` leaves the file), it still finds the key
    assert "  seeds: [1]" in with_param(with_param(text, "finetune.seeds", "[5, 6]"), "finetune.seeds", "[1]")
