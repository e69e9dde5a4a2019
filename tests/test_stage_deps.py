"""Every stage's code deps in dvc.yaml equal the import closure of its script (aes.ops.stage_deps):
a missing dep would leave a stale result looking current, an extra one re-runs stages an edit cannot
affect. Also: dvc.yaml and aes.core.registry name the same stages and model outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from aes.core.params import parse_yaml
from aes.core.registry import MODEL_STAGES, OBJECTIVE_STAGES, STAGES, metrics_path, predictions_path, representation_paths
from aes.ops.stage_deps import collapse, compare, expected_code_deps, import_closure, script_of

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = parse_yaml((ROOT / "dvc.yaml").read_text(), "dvc.yaml")["stages"]


@pytest.mark.parametrize("name", sorted(DVC_YAML))
def test_stage_code_deps_equal_its_imports(name):
    """Neither a module the script can import is missing, nor is a module it never imports a dep."""
    diff = compare(ROOT).get(name)
    assert diff is None, (f"dvc.yaml stage '{name}': missing {diff['missing']}, not imported {diff['extra']}; "
                          "run `python -m aes.ops.stage_deps --write`")


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


def test_collapse_names_a_folder_only_when_every_file_in_it_is_imported(tmp_path):
    for name in ("aes/__init__.py", "aes/a/__init__.py", "aes/a/x.py", "aes/b/__init__.py", "aes/b/y.py", "aes/b/z.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    files = {Path(p) for p in ("aes/__init__.py", "aes/a/__init__.py", "aes/a/x.py", "aes/b/__init__.py", "aes/b/y.py")}
    assert collapse(files, tmp_path) == ["aes/__init__.py", "aes/a", "aes/b/__init__.py", "aes/b/y.py"]


def test_expected_deps_start_with_the_script_and_reject_a_non_module_command():
    assert expected_code_deps("python -m stages.fetch")[0] == "stages/fetch.py"
    with pytest.raises(ValueError, match="python -m stages"):
        script_of("python stages/fetch.py")


def test_no_stage_depends_on_the_launcher():
    for name, stage in DVC_YAML.items():
        assert not any("aes/ops" in str(p) for p in import_closure(script_of(stage["cmd"]))), name
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
