"""Tiny git + DVC projects in a temp dir, for the run-launcher and remote tests (no ML inside)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VENV_BIN = str(Path(sys.executable).parent)


def tool_env(**extra: str) -> dict:
    """Environment for dvc/git subprocesses: this venv first on PATH, no DVC analytics (so
    nothing leaves the machine), a fixed git identity."""
    env = dict(os.environ)
    env.update(
        PATH=VENV_BIN + os.pathsep + env.get("PATH", ""),
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.invalid",
        GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.invalid",
    )
    env.pop("AES_PROGRESS_FILE", None)
    env.update(extra)
    return env


def sh(cmd: list[str], cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``cmd``; on failure raise with its output (so a failing dvc call explains itself)."""
    proc = subprocess.run(cmd, cwd=cwd, env=env or tool_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_project(path: Path, files: dict[str, str], env: dict | None = None) -> Path:
    """git init + dvc init at ``path``, write ``files`` (relative path -> text), commit."""
    path.mkdir(parents=True, exist_ok=True)
    sh(["git", "init", "-q", "-b", "main"], path, env)
    sh(["git", "config", "user.name", "test"], path, env)
    sh(["git", "config", "user.email", "test@example.invalid"], path, env)
    sh(["dvc", "init", "-q"], path, env)
    sh(["dvc", "config", "core.analytics", "false"], path, env)
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    sh(["git", "add", "-A"], path, env)
    sh(["git", "commit", "-q", "-m", "tiny project"], path, env)
    return path
