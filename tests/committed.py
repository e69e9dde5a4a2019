"""What tests read of the repository's own files: the commit, never the user's workspace.

Using the pipeline changes the workspace: `dvc repro` rewrites metrics/ (with other numbers on
another CPU kind), `dvc exp run -S objective=grl` rewrites params.yaml, and the locked-test
command fills metrics/final_test.json. Tests that need params or committed results read them
from HEAD (``git show HEAD:<path>``), so the test command passes after any of these. Outside a
git checkout (an unpacked source archive) the files themselves are read.
"""

from __future__ import annotations

import re
import subprocess
from functools import lru_cache
from pathlib import Path

from aes.core.params import parse_yaml

ROOT = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=None)
def _in_git_checkout() -> bool:
    proc = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT, capture_output=True, text=True)
    return proc.returncode == 0 and proc.stdout.strip() == "true"


def committed_text(rel: str) -> str:
    """The text of ``rel`` (relative to the repository root) as committed at HEAD."""
    if not _in_git_checkout():
        return (ROOT / rel).read_text()
    proc = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{rel} is not committed at HEAD (tests read committed files): {proc.stderr.strip()}")
    return proc.stdout


def committed_params() -> dict:
    """params.yaml as committed, parsed (YAML 1.2), not validated."""
    return parse_yaml(committed_text("params.yaml"), "HEAD:params.yaml")


def with_param(text: str, dotted: str, raw: str) -> str:
    """params.yaml ``text`` with the value of ``section.key`` (or a top-level ``key``, or a nested
    ``section.subsection.key``) replaced by the raw YAML ``raw``; the rest of the line (its comment)
    is kept. Whatever value the commit holds, the test changes exactly that key."""
    *sections, key = dotted.split(".")
    lines = text.splitlines(keepends=True)
    start, end = 0, len(lines)
    for depth, section in enumerate(sections):  # narrow [start, end) to the section's lines
        header = f"{'  ' * depth}{section}:"
        start = next((i + 1 for i in range(start, end) if lines[i].split("#", 1)[0].rstrip() == header), None)
        assert start is not None, f"params.yaml has no section {'.'.join(sections[:depth + 1])!r}"
        end = next((i for i in range(start, end) if lines[i].strip() and not lines[i].startswith("  " * (depth + 1))), end)
    indent = "  " * len(sections)
    value = re.compile(rf"^({indent}{re.escape(key)}:[ \t]*)(\[[^\]]*\]|\"[^\"]*\"|\{{[^}}]*\}}|[^\s#]+)?(.*)$", re.S)
    for i in range(start, end):
        match = value.match(lines[i])
        if match:
            lines[i] = f"{match.group(1)}{raw}{match.group(3)}"
            return "".join(lines)
    raise AssertionError(f"params.yaml has no key {dotted!r}")
