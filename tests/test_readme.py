"""The README's results table is written by `aes-readme` (no stage writes outside what DVC declares),
and the committed README agrees with the committed metrics/report.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aes.ops.readme import current_block, results_block, update_readme

ROOT = Path(__file__).resolve().parents[1]


def test_committed_readme_matches_committed_report():
    report = json.loads((ROOT / "metrics/report.json").read_text())
    assert current_block((ROOT / "README.md").read_text()) == results_block(report), "run `aes-readme` after `dvc repro`"


def test_update_replaces_only_the_block(tmp_path):
    report = json.loads((ROOT / "metrics/report.json").read_text())
    readme = tmp_path / "README.md"
    readme.write_text("# t\n<!-- results:start -->\nOLD\n<!-- results:end -->\nkeep me\n")
    assert update_readme(readme, report)
    text = readme.read_text()
    assert "OLD" not in text and text.endswith("<!-- results:end -->\nkeep me\n")
    assert "| fine-tune ERM |" in text and current_block(text) == results_block(report)


def test_readme_without_markers_is_left_alone(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.warns(UserWarning, match="lacks the markers"):
        assert not update_readme(readme, json.loads((ROOT / "metrics/report.json").read_text()))
    assert readme.read_text() == "# no markers\n"


def test_command_names_a_missing_report(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "aes.ops.readme", "--report", "nope.json"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and "nope.json: not found; run `dvc repro report` first" in proc.stderr
