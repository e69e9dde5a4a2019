"""The real `dvc repro` in a temporary copy of the repository, on synthetic ELLIPSE-shaped
essays and a tiny random encoder: every stage runs, the frozen pass runs once and is shared, a
second repro runs nothing, metrics show, and switching `objective` re-runs `report` alone."""

from __future__ import annotations

import json

import pytest

from aes.core.io import sha256_file
from aes.core.registry import FROZEN_PASS, MODEL_STAGES, OBJECTIVE_STAGES
from tests.synthetic import write_ellipse_csv
from tests.tiny_pipeline import make_pipeline_repo, run
from tests.yamlio import load_yaml

TRAITS = ["Cohesion", "Syntax", "Vocabulary", "Phraseology", "Grammar", "Conventions"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("repo")
    (root / "data" / "external").mkdir(parents=True)
    write_ellipse_csv(root / "data" / "external" / "own.csv", n_prompts=14, per_prompt=9, seed=5)  # git-ignored
    make_pipeline_repo(root, tiny_encoder, "data/external/own.csv")
    first = run(["dvc", "repro"], root)
    return root, first


def test_every_stage_writes_the_contract(repo):
    root, first = repo
    for stage in ["fetch", "topics", "prepare", "embed", *MODEL_STAGES, "prompt_probe", "report"]:
        assert f"Running stage '{stage}'" in first.stdout
    for stage in MODEL_STAGES:
        metrics = json.loads((root / "metrics" / f"{stage}.json").read_text())
        assert {"qwk", "rmse", "mae", "within_one_step", "n", "runtime_s"} <= set(metrics)
        assert metrics["n"]["folds"] == 3
        for name in ("by_prompt", "by_grade", "by_band"):
            assert (root / "plots" / stage / f"{name}.csv").exists()
        assert metrics["n"]["seeds"] == (1 if stage == "linear_cv" or stage == "lp_cv" else 2)
        assert list(metrics["traits"]) == [*TRAITS, "mean_qwk_pooled", "mean_qwk_pooled_sd"]  # params.yaml's seven targets
    report = json.loads((root / "metrics" / "report.json").read_text())
    assert set(report["traits"]) == set(MODEL_STAGES) and report["targets"] == ["Overall", *TRAITS]
    assert "mean trait QWK" in (root / "reports" / "decision.md").read_text()
    assert report["decision"] and report["q1"]["verdict"] in ("better", "not better", "inconclusive")
    assert set(report["q2"]) == {"grl", "dro"}
    assert not run(["git", "status", "--porcelain", "README.md"], root).stdout  # no stage writes outside dvc.yaml
    assert "Running stage 'final_test'" not in first.stdout  # frozen: the locked test is never scored by repro


def test_one_forward_pass_serves_the_embeddings_and_every_fine_tune(repo):
    root, first = repo
    log = first.stdout + first.stderr
    # stage embed, once per DAG run: the embeddings and the fine-tune's trunk from the same pass
    assert log.count("the fine-tune's frozen pass came from the same forward pass") == 1
    assert "frozen layers" not in log  # no stage ran the bottom layers on their own
    shared = sha256_file(root / FROZEN_PASS / "hidden.npy")
    for stage in OBJECTIVE_STAGES.values():
        assert f"{stage}: read the frozen pass of stage embed" in log
        assert json.loads((root / "metrics" / f"{stage}.json").read_text())["frozen_pass_sha256"] == shared


TRAINING_STAGES = {"finetune_cv", "grl_cv", "dro_cv"}


@pytest.mark.parametrize("module, stale", [
    # imported lazily (inside functions) by topics, embed, lp_cv and the fine-tunes; gbm_cv and
    # linear_cv read the embeddings through aes/encoders/store.py only, prepare reads topics' file
    ("aes/encoders/resolve.py", {"topics", "embed", "lp_cv", *TRAINING_STAGES}),
    ("aes/encoders/mpnet.py", {"topics", "embed", "lp_cv", *TRAINING_STAGES}),
    # an objective (the DRO loss) is the fine-tunes' alone: embed and lp_cv keep their results
    ("aes/finetune/objectives.py", TRAINING_STAGES),
])
def test_editing_a_module_makes_exactly_its_stages_stale(repo, module, stale):
    """What tests/test_stage_deps.py guarantees statically, seen through `dvc status` (the gated
    final_test stage is frozen, so DVC never lists it)."""
    root, _ = repo
    path = root / module
    original = path.read_text()
    try:
        path.write_text(original + "\n# edited\n")
        status = json.loads(run(["dvc", "status", "--json"], root).stdout)
        changed = {name for name, entries in status.items() if any("changed deps" in e for e in entries if isinstance(e, dict))}
        assert changed == stale, status
    finally:
        path.write_text(original)
    assert json.loads(run(["dvc", "status", "--json"], root).stdout) == {}  # __pycache__ is ignored by .dvcignore


def test_plots_render(repo):
    root, _ = repo
    out = run(["dvc", "plots", "show", "--json"], root)
    assert "per_prompt_qwk" in out.stdout and "confusion" in out.stdout


def test_second_repro_runs_nothing(repo):
    root, _ = repo
    second = run(["dvc", "repro"], root)
    assert "Running stage" not in second.stdout
    shown = run(["dvc", "metrics", "show", "--json"], root)
    assert "gbm_cv" in shown.stdout and "qwk" in shown.stdout


def test_objective_switch_reruns_report_only(repo):
    """What users run: `dvc exp run -S objective=...` (DVC rewrites params.yaml as YAML 1.2)."""
    root, _ = repo
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "first run"], root)
    params = load_yaml((root / "params.yaml").read_text())
    other = "grl" if params["objective"] != "grl" else "dro"
    out = run(["dvc", "exp", "run", "-S", f"objective={other}"], root)
    ran = [line for line in out.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'report':"]
    report = json.loads((root / "metrics" / "report.json").read_text())
    assert report["candidate"]["objective"] == other
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], root).stdout)
    assert any(key.startswith("candidate.") for key in diff.get("metrics/report.json", {}))


def test_gbm_strategy_switch_shows_trait_changes_in_metrics_diff(repo):
    """One tree per target instead of vector leaves: gbm_cv and report re-run, and `dvc metrics diff` shows the traits move."""
    root, _ = repo
    out = run(["dvc", "exp", "run", "-S", "gbm.multi_strategy=one_output_per_tree"], root)
    ran = [line for line in out.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'gbm_cv':", "Running stage 'report':"]
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], root).stdout)
    assert any(key.startswith("traits.") for key in diff.get("metrics/gbm_cv.json", {})), diff.get("metrics/gbm_cv.json")
    assert any(key.startswith("traits.gbm_cv.") for key in diff.get("metrics/report.json", {}))


def test_prompt_normalisation_is_one_setting_away_and_labelled_transductive(repo):
    """`dvc exp run -S normalise.embeddings=prompt_mean`: every model that reads embeddings re-runs, nothing upstream does,
    each records its inputs as transductive, the decision labels them so and `dvc exp show` lists the setting."""
    root, _ = repo
    out = run(["dvc", "exp", "run", "-S", "normalise.embeddings=prompt_mean"], root)
    ran = {line.split("'")[1] for line in out.stdout.splitlines() if line.startswith("Running stage")}
    assert {"gbm_cv", "linear_cv", "lp_cv", "finetune_cv", "grl_cv", "dro_cv", "report"} <= ran
    assert not ran & {"fetch", "topics", "prepare", "embed"}, ran
    for stage in ("gbm_cv", "linear_cv", "lp_cv", "finetune_cv"):
        inputs = json.loads((root / "metrics" / f"{stage}.json").read_text())["inputs"]
        assert inputs["embeddings"] == "prompt_mean" and inputs["transductive"], (stage, inputs)
    assert "[transductive: embeddings prompt-centred]" in (root / "reports" / "decision.md").read_text()
    shown = json.loads(run(["dvc", "exp", "show", "--json"], root).stdout)
    assert "normalise" in json.dumps(shown) and "prompt_mean" in json.dumps(shown)


def test_locked_test_scored_only_when_unfrozen(repo):
    """final_test is frozen: no repro touches it; unfrozen, the README's command scores the locked test once."""
    root, _ = repo
    placeholder = json.loads((root / "metrics" / "final_test.json").read_text())
    assert "not run" in placeholder["status"]
    frozen = run(["dvc", "repro"], root)  # report may have changed since: still the frozen stage must not run
    assert "Running stage 'final_test'" not in frozen.stdout
    assert "not run" in json.loads((root / "metrics" / "final_test.json").read_text())["status"]
    run(["dvc", "unfreeze", "final_test"], root)
    out = run(["dvc", "repro", "-s", "-f", "final_test"], root)  # the README's command
    assert "Running stage 'final_test'" in out.stdout
    run(["dvc", "freeze", "final_test"], root)
    final = json.loads((root / "metrics" / "final_test.json").read_text())
    splits = json.loads((root / "data" / "prepared" / "splits.json").read_text())
    assert final["test"]["n"]["essays"] == splits["test"]["n_essays"] > 0
    assert final["n_train"] == sum(len(fold["val_record_ids"]) for fold in splits["folds"])
    assert -1.0 <= final["test"]["qwk"]["pooled"] <= 1.0
    assert list(final["traits"]) == TRAITS and all(-1.0 <= t["qwk_pooled"] <= 1.0 for t in final["traits"].values())
    assert final["model"] in MODEL_STAGES
