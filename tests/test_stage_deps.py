"""Every stage's code dependencies are complete by construction: the transitive closure of the
`aes` modules a stage script imports (top-level and inside functions) must be covered by the
stage's `deps` in dvc.yaml, or DVC could not tell that a committed result is stale.
Also: dvc.yaml and aes.core.registry name the same stages and model outputs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from aes.core.params import parse_yaml
from aes.core.registry import MODEL_STAGES, OBJECTIVE_STAGES, STAGES, metrics_path, predictions_path, representation_paths

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = parse_yaml((ROOT / "dvc.yaml").read_text(), "dvc.yaml")["stages"]


def module_file(name: str) -> Path | None:
    """aes.x.y -> aes/x/y.py or aes/x/y/__init__.py (relative to the repo), None outside aes."""
    if name != "aes" and not name.startswith("aes."):
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate.relative_to(ROOT)
    return None


def imported_modules(path: Path) -> set[str]:
    """Every aes module named by an import anywhere in the file, plus the packages that import runs."""
    names = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from aes.report import plots`
    found = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing aes.a.b runs aes/__init__, aes/a/__init__ too
            if module_file(".".join(parts[:i])) is not None:
                found.add(".".join(parts[:i]))
    return found


def import_closure(script: Path) -> set[Path]:
    """Files of the aes package that running ``script`` can import, transitively."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for name in imported_modules(todo.pop()):
            path = module_file(name)
            if path not in seen:
                seen.add(path)
                todo.append(path)
    return seen


def script_of(stage: dict) -> Path:
    """stages/x.py of ``cmd: python -m stages.x ...`` (-m: the workspace's own aes/ is imported, not an installed one)."""
    tokens = stage["cmd"].split()
    assert tokens[:2] == ["python", "-m"], f"{stage['cmd']!r}: run stages as modules (python -m stages.<name>)"
    return Path(*tokens[2].split(".")).with_suffix(".py")


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(d) or Path(d) in path.parents for d in deps)


@pytest.mark.parametrize("name", sorted(DVC_YAML))
def test_stage_deps_cover_every_imported_module(name):
    stage = DVC_YAML[name]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in stage["deps"]]
    script = script_of(stage)
    assert str(script) in deps, f"{name}: its script {script} is not a dep"
    missing = sorted(str(p) for p in import_closure(script) if not covered(p, deps))
    assert not missing, f"dvc.yaml stage '{name}' imports {missing} but does not depend on them"


def test_closure_follows_imports_inside_functions():
    """embedding.embed_texts imports aes.encoders.resolve lazily; the closure must still see it."""
    assert Path("aes/encoders/resolve.py") in import_closure(Path("stages/embed.py"))


TRAINING = {"aes/finetune/loop.py", "aes/finetune/objectives.py", "aes/finetune/cv.py"}


def test_frozen_stages_do_not_depend_on_the_training_loop():
    """Editing the fold loop or an objective (the DRO loss) re-runs the fine-tuning stages only: stage
    embed imports neither them nor the frozen baselines' models, lp_cv not the loop or its objectives."""
    embed = {str(p) for p in import_closure(Path("stages/embed.py"))}
    assert not embed & (TRAINING | {"aes/baseline/gbm.py", "aes/baseline/linear.py"})
    assert {"aes/finetune/frozen_pass.py", "aes/features/groups.py"} <= embed
    assert not {str(p) for p in import_closure(Path("stages/lp_cv.py"))} & TRAINING
    for name in ("embed", "lp_cv"):
        assert "aes/finetune" not in DVC_YAML[name]["deps"], name  # its files are listed one by one


def test_no_stage_depends_on_the_launcher():
    for name, stage in DVC_YAML.items():
        assert not any("aes/ops" in str(p) for p in import_closure(script_of(stage))), name
        assert not any(str(d).startswith("aes/ops") or d == "aes" for d in stage["deps"]), name


def test_registry_names_the_dvc_stages_and_their_outputs():
    assert list(DVC_YAML) == list(STAGES)
    for stage in MODEL_STAGES:
        outs = {next(iter(o)) if isinstance(o, dict) else o for o in DVC_YAML[stage]["outs"]}
        metrics = {next(iter(m)) for m in DVC_YAML[stage]["metrics"]}
        assert str(predictions_path(stage)) in outs and str(metrics_path(stage)) in metrics, stage
    for stage in OBJECTIVE_STAGES.values():
        outs = {next(iter(o)) if isinstance(o, dict) else o for o in DVC_YAML[stage]["outs"]}
        assert {str(p) for p in representation_paths(stage)} <= outs, stage
