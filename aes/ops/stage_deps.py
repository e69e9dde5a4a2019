"""Code deps of every ``dvc.yaml`` stage, computed from the imports of its script.

In DVC the deps are the cache key: a dep that is too wide re-runs stages a change cannot affect
(hours of fine-tuning after an edit to a loader they never import); one that is missing leaves a
stale result looking current. So each stage depends on exactly the ``aes`` files its script can
import, transitively, counting imports inside functions too (``stages/x.py`` itself included);
a folder stands for its files when the stage imports every module in it, and ``aes`` as a whole
is never a dep. Deps outside ``aes/`` and ``stages/`` (data, models, metrics) are left alone.

    python -m aes.ops.stage_deps            # print each stage's code deps and whether dvc.yaml agrees
    python -m aes.ops.stage_deps --write    # rewrite the code deps in dvc.yaml (comments kept)

``tests/test_stage_deps.py`` fails when dvc.yaml and the imports disagree either way.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "aes"
CODE_ROOTS = ("aes", "stages")  # deps under these are code deps, owned by this module


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """``aes.x.y`` -> ``aes/x/y.py`` or ``aes/x/y/__init__.py`` (relative to ``root``); None outside ``aes``."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate.relative_to(root)
    return None


def aes_imports(path: Path, root: Path = ROOT) -> list[tuple[str, bool]]:
    """(module, at the file's top level?) for every ``aes`` import anywhere in ``path`` (relative to ``root``).

    ``from aes.report import plots`` names ``aes.report.plots`` where that is a module file, else the
    module it imports from (``from aes.core.errors import AESError`` names ``aes.core.errors``).
    """
    tree = ast.parse((root / path).read_text(), str(path))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if module_file(f"{node.module}.{alias.name}", root) else node.module
                     for alias in node.names]
        else:
            continue
        found += [(name, id(node) in top) for name in names if name == PACKAGE or name.startswith(PACKAGE + ".")]
    return found


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every ``aes`` module an import anywhere in ``path`` names, plus the packages that import runs."""
    found = set()
    for name, _ in aes_imports(path, root):
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing aes.a.b runs aes/__init__.py and aes/a/__init__.py too
            if module_file(".".join(parts[:i]), root) is not None:
                found.add(".".join(parts[:i]))
    return found


def import_closure(script: Path, root: Path = ROOT) -> set[Path]:
    """``script`` and the files of the ``aes`` package that running it can import, transitively."""
    seen: set[Path] = {script}
    todo = [script]
    while todo:
        for name in imported_modules(todo.pop(), root):
            path = module_file(name, root)
            if path not in seen:
                seen.add(path)
                todo.append(path)
    return seen


def package_files(folder: Path, root: Path = ROOT) -> set[Path]:
    """Every ``.py`` file under ``folder`` (relative paths), recursively."""
    return {p.relative_to(root) for p in (root / folder).rglob("*.py") if "__pycache__" not in p.parts}


def collapse(files: set[Path], root: Path = ROOT) -> list[str]:
    """``files`` as deps: the largest folders below ``aes/`` all of whose files are in ``files``, then single files.

    ``aes`` itself is never collapsed (a stage that imported everything would still name its parts).
    Sorted, folders and files mixed, as strings with forward slashes.
    """
    left = set(files)
    deps: list[str] = []
    folders = sorted({parent for f in files for parent in f.parents if len(parent.parts) >= 2 and parent.parts[0] == PACKAGE},
                     key=lambda p: len(p.parts))
    for folder in folders:  # shallowest first, so a whole subtree becomes one dep
        if any(folder.is_relative_to(Path(d)) for d in deps):
            continue
        members = package_files(folder, root)
        if members and members <= files:
            deps.append(folder.as_posix())
            left -= members
    deps += [f.as_posix() for f in left]
    return sorted(deps)


def script_of(cmd: str) -> Path:
    """``stages/x.py`` of ``python -m stages.x ...`` (run as a module so the workspace's own ``aes`` is imported)."""
    tokens = cmd.split()
    if tokens[:2] != ["python", "-m"] or not tokens[2].startswith("stages."):
        raise ValueError(f"{cmd!r}: run stages as modules (python -m stages.<name>)")
    return Path(*tokens[2].split(".")).with_suffix(".py")


def dep_name(dep) -> str:
    return dep if isinstance(dep, str) else next(iter(dep))


def is_code_dep(dep: str) -> bool:
    return Path(dep).parts[0] in CODE_ROOTS


def expected_code_deps(cmd: str, root: Path = ROOT) -> list[str]:
    """The code deps a stage with command ``cmd`` must declare: its script first, then its import closure collapsed."""
    script = script_of(cmd)
    return [script.as_posix(), *[d for d in collapse(import_closure(script, root) - {script}, root)]]


def load_dvc_yaml(path: Path):
    """dvc.yaml as ruamel's round-trip document (comments and key order kept)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    return yaml, yaml.load(path.read_text())


def compare(root: Path = ROOT) -> dict[str, dict[str, list[str]]]:
    """{stage: {"missing": [...], "extra": [...]}} for every stage whose code deps differ from its imports."""
    _, doc = load_dvc_yaml(root / "dvc.yaml")
    out = {}
    for name, stage in doc["stages"].items():
        have = [dep_name(d) for d in stage.get("deps", []) if is_code_dep(dep_name(d))]
        want = expected_code_deps(stage["cmd"], root)
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        if missing or extra:
            out[name] = {"missing": missing, "extra": extra}
    return out


def write(root: Path = ROOT) -> list[str]:
    """Rewrite every stage's code deps in dvc.yaml (script first, closure next, data deps after, as before). Returns the stages changed."""
    yaml, doc = load_dvc_yaml(root / "dvc.yaml")
    changed = []
    for name, stage in doc["stages"].items():
        deps = stage.get("deps", [])
        have = [d for d in deps if is_code_dep(dep_name(d))]
        want = expected_code_deps(stage["cmd"], root)
        if [dep_name(d) for d in have] == want:
            continue
        others = [d for d in deps if not is_code_dep(dep_name(d))]
        deps.clear()
        deps.extend([*want, *others])
        changed.append(name)
    if changed:
        with open(root / "dvc.yaml", "w") as handle:
            yaml.dump(doc, handle)
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the code deps in dvc.yaml")
    args = parser.parse_args(argv)
    if args.write:
        changed = write()
        print(f"dvc.yaml: code deps rewritten for {', '.join(changed)}" if changed else "dvc.yaml: code deps already match the imports")
        return 0
    diff = compare()
    for name, d in diff.items():
        print(f"{name}: missing {d['missing'] or 'none'}; not imported {d['extra'] or 'none'}")
    if not diff:
        print("dvc.yaml: every stage's code deps equal its imports")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
