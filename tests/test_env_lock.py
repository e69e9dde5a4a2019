"""requirements.lock agrees with pyproject.toml, and every set-up command installs through it."""

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from aes.core.errors import AESError
from aes.ops import lock_env
from tests.committed import committed_text

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s=;]+)$")


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]


def _readme_commands() -> list[str]:
    """The shell lines of the README's first code block (the two set-up commands)."""
    text = committed_text("README.md")  # aes-readme rewrites the workspace copy
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_every_lock_line_is_name_equals_version():
    lines = [line for line in LOCK.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) > 50
    for line in lines:
        match = PIN.match(line)
        assert match, f"requirements.lock: {line!r} is not name==version"
        Version(match.group(2))  # raises InvalidVersion on a non-PEP 440 version
    assert len(lock_env.read_lock(LOCK)) == len(lines)  # no name pinned twice


def test_every_declared_dependency_is_pinned_at_a_version_pyproject_accepts():
    pins = lock_env.read_lock(LOCK)
    for req in _declared():
        key = canonicalize_name(req.name)
        assert key in pins, f"pyproject.toml declares {req} but requirements.lock does not pin {req.name}"
        assert req.specifier.contains(pins[key], prereleases=True), (
            f"requirements.lock pins {req.name}=={pins[key]}, outside pyproject.toml's {req}")


def test_torch_is_pinned_without_a_local_label_so_cpu_and_cuda_builds_match():
    pins = lock_env.read_lock(LOCK)
    assert Version(pins["torch"]).local is None
    assert Version("2.13.0+cpu").public == Version(pins["torch"]).public == "2.13.0"
    # the README's own pin agrees with the lock
    assert all("torch==" + pins["torch"] in c for c in _readme_commands())


def test_readme_and_ci_install_through_the_lock_and_ci_runs_the_readme_test_command():
    setup, tests = _readme_commands()
    for command in (setup, tests):
        assert "pip install -q -c requirements.lock " in command
    assert setup.endswith("dvc repro") and tests.endswith(".venv/bin/python -m pytest -q")
    # on a fresh clone the test command makes the venv itself
    assert "[ -x .venv/bin/python ] || { python3.11 -m venv .venv" in tests
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pip install" in line]
    assert ci == [tests]


def test_render_and_read_round_trip_and_drop_only_torchs_local_label(tmp_path):
    pins = {"torch": lock_env.locked_version("torch", "2.13.0+cpu"), "GitPython": "3.2.1",
            "odd": lock_env.locked_version("odd", "1.0+local"), "zc.lockfile": "4.0"}
    assert pins["torch"] == "2.13.0" and pins["odd"] == "1.0+local"
    path = tmp_path / "requirements.lock"
    path.write_text(lock_env.render(pins))
    body = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert body == ["GitPython==3.2.1", "odd==1.0+local", "torch==2.13.0", "zc.lockfile==4.0"]  # pip freeze's order
    assert lock_env.read_lock(path) == {"gitpython": "3.2.1", "odd": "1.0+local", "torch": "2.13.0", "zc-lockfile": "4.0"}
    assert "python -m aes.ops.lock_env" in path.read_text()


@pytest.mark.parametrize("line, message", [
    ("torch>=2.4", r"line 3: 'torch>=2.4'; expected exactly name==version"),
    ("torch==2.13.0\ntorch==2.13.0", r"line 4: torch is pinned twice"),
    ("not a requirement!", r"line 3: 'not a requirement!' is not a requirement"),
])
def test_a_bad_lock_line_is_named(tmp_path, line, message):
    path = tmp_path / "requirements.lock"
    path.write_text(f"# header\n\n{line}\n")
    with pytest.raises(AESError, match=rf"requirements\.lock {message}"):
        lock_env.read_lock(path)


def test_check_lists_version_and_unlocked_differences_but_not_uninstalled_extras():
    pins = {"torch": "2.13.0", "numpy": "2.4.6", "sentence-transformers": "6.3.0"}
    current = {"torch": "2.13.0", "numpy": "2.4.5", "ipython": "9.0.0"}
    diffs, absent = lock_env.differences(pins, current)
    assert diffs == ["ipython==9.0.0: installed, not in the lock", "numpy: installed 2.4.5, locked 2.4.6"]
    assert absent == ["sentence-transformers==6.3.0: locked, not installed"]
    assert lock_env.differences(pins, {"torch": "2.13.0", "numpy": "2.4.6"}) == ([], absent)


def test_installed_leaves_out_the_project_and_pips_tooling_and_drops_torchs_label():
    current = lock_env.installed()
    keys = {canonicalize_name(name) for name in current}
    assert "aes" not in keys and "pip" not in keys and "packaging" in keys
    if "torch" in current:
        assert Version(current["torch"]).local is None


def test_main_writes_then_checks_a_lock(tmp_path, capsys):
    path = tmp_path / "requirements.lock"
    assert lock_env.main(["--lock", str(path)]) == 0
    assert lock_env.main(["--check", "--lock", str(path)]) == 0
    assert "the environment matches" in capsys.readouterr().out
    path.write_text(re.sub(r"(?m)^packaging==.*$", "packaging==0.1", path.read_text()))
    assert lock_env.main(["--check", "--lock", str(path)]) == 1
    assert "differs: packaging: installed" in capsys.readouterr().out
