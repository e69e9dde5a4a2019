"""Every model predicts every declared target (issue 17): the fine-tune's multi-output head, its
weighted loss, and the reduction to the one-output head when the other targets weigh 0."""

import numpy as np
import pandas as pd
import pytest
import torch

from aes.baseline.linear import fit_ridge
from aes.data.corpus import declared_targets, target_matrix
from aes.finetune.folds import load_cv
from aes.finetune.loop import Trainer
from aes.finetune.runtime import make_accelerator, predict_batches
from aes.finetune.objectives import GroupDRO, Objective
from tests.training_fixtures import make_training_repo, one_torch_thread

SCORES = ["Overall", "Cohesion", "Syntax", "Vocabulary", "Phraseology", "Grammar", "Conventions"]


def test_erm_loss_is_the_weighted_mean_of_the_per_target_mse():
    pred, target = torch.randn(6, 3), torch.randn(6, 3)
    per_target = ((pred - target) ** 2).mean(dim=0)
    loss, _ = Objective([6], fold=0, target_weights=[2.0, 1.0, 1.0]).loss(pred, target, None, torch.zeros(6, dtype=torch.long), 0.0)
    torch.testing.assert_close(loss, (2 * per_target[0] + per_target[1] + per_target[2]) / 4)
    only_first, _ = Objective([6], fold=0, target_weights=[1.0, 0.0, 0.0]).loss(pred, target, None, torch.zeros(6, dtype=torch.long), 0.0)
    one, _ = Objective([6], fold=0).loss(pred[:, 0], target[:, 0], None, torch.zeros(6, dtype=torch.long), 0.0)
    torch.testing.assert_close(only_first, one)


def test_dro_group_loss_uses_the_same_weighted_loss():
    torch.manual_seed(0)
    pred, target, group = torch.randn(8, 3), torch.randn(8, 3), torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    multi = GroupDRO([3, 2, 3], fold=0, eta=0.5, size_adjustment=0.0, target_weights=[1.0, 0.0, 0.0])
    single = GroupDRO([3, 2, 3], fold=0, eta=0.5, size_adjustment=0.0)
    for _ in range(3):
        a, _ = multi.loss(pred, target, None, group, 0.0)
        b, _ = single.loss(pred[:, 0], target[:, 0], None, group, 0.0)
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(multi.q, single.q)
    weighted = GroupDRO([3, 2, 3], fold=0, eta=0.0, size_adjustment=0.0, target_weights=[1.0, 1.0, 2.0])
    loss, _ = weighted.loss(pred, target, None, group, 0.0)
    essay = ((pred - target) ** 2) @ torch.tensor([0.25, 0.25, 0.5])
    expected = torch.stack([essay[group == g].mean() for g in range(3)]).mean()  # eta 0: q stays uniform
    torch.testing.assert_close(loss, expected)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("traits_repo")
    # the targets axis on the text-only head (its probes below are fitted on the pooled text alone)
    params = make_training_repo(root, tiny_encoder, epochs=1, seeds=[3], features=[])
    return params, load_cv(root)


def _with(params, **finetune):
    return {**params, "finetune": {**params["finetune"], **finetune}}


@pytest.mark.parametrize("lp_ft", [False, True])
def test_seven_output_head_with_zero_trait_weights_is_the_one_output_head(repo, lp_ft):
    """Same seed, same fold: weights [1, 0, ..., 0] on seven targets predict the primary target as a one-target run does."""
    params, cv = repo
    one_cv = cv.drop(columns=SCORES[1:])
    assert declared_targets(cv) == SCORES and declared_targets(one_cv) == ["Overall"]
    with one_torch_thread():
        acc = make_accelerator(params["finetune"])
        seven = Trainer(_with(params, target_weights=[1.0] + [0.0] * 6), "erm", acc)
        one = Trainer(_with(params, target_weights=[1.0]), "erm", acc, backbone=seven.backbone)
        every = Trainer(_with(params, target_weights=[1.0] * 7), "erm", acc, backbone=seven.backbone)
        data = seven.prepare(cv["text"].tolist())
        train = np.flatnonzero(cv["fold"].to_numpy() != 0)
        probe7 = probe1 = None
        if lp_ft:
            _, pooled = predict_batches(seven.backbone.pristine_model(), seven.backbone, data, train, 16, acc)
            groups = cv["prompt"].to_numpy()[train]
            probe7 = fit_ridge(pooled, target_matrix(cv)[train], groups, [1.0, 100.0], 2)
            probe1 = fit_ridge(pooled, target_matrix(one_cv)[train], groups, [1.0, 100.0], 2)
        r7 = seven.train_fold(cv, data, 0, seed=3, init_head=probe7)
        r1 = one.train_fold(one_cv, data, 0, seed=3, init_head=probe1)
        rall = every.train_fold(cv, data, 0, seed=3, init_head=probe7)
    n_val = int((cv["fold"] == 0).sum())
    assert r7["pred_unit"].shape == rall["pred_unit"].shape == (n_val, 7) and r1["pred_unit"].shape == (n_val, 1)
    np.testing.assert_allclose(r7["pred_unit"][:, 0], r1["pred_unit"][:, 0], atol=1e-4)
    assert np.abs(rall["pred_unit"][:, 0] - r1["pred_unit"][:, 0]).max() > 1e-4  # the traits' losses do move the encoder
    assert r7["targets"] == SCORES and len(r7["target_mean"]) == 7


# ------------------------------------------------------------------ the artifact contract, the report, the comparison


def test_trait_qwk_equals_scikit_learns_on_hand_made_data(tmp_path):
    """Per-trait QWK: the half-band rounding of Overall (clip to [1, 5], 2.25 -> 2.5), then sklearn's quadratic kappa."""
    from sklearn.metrics import cohen_kappa_score

    from aes.core.artifacts import make_oof_frame, write_model_outputs
    from tests.report_fixtures import points_to_unit, with_scale

    essays = with_scale(pd.DataFrame({"record_id": [f"r{i}" for i in range(8)], "prompt": ["a"] * 4 + ["b"] * 4, "grade": 9,
                           "fold": [0] * 4 + [1] * 4,
                           "y": [2.0, 3.0, 3.5, 4.0, 2.5, 3.0, 4.5, 1.5],
                           "Overall": [2.0, 3.0, 3.5, 4.0, 2.5, 3.0, 4.5, 1.5],
                           "Grammar": [1.5, 3.0, 4.0, 4.5, 2.0, 3.5, 5.0, 1.0]}))
    pred = np.column_stack([essays["y"] + 0.2, [2.25, 2.74, 4.3, 5.6, 1.74, 3.76, 4.8, 0.2]])  # score points
    metrics = write_model_outputs("linear_cv", make_oof_frame(essays, essays["fold"], points_to_unit(pred)), 1.0, 1, root=tmp_path)
    rounded = [2.5, 2.5, 4.5, 5.0, 1.5, 4.0, 5.0, 1.0]  # written out by hand
    expected = cohen_kappa_score((2 * essays["Grammar"]).astype(int), (2 * np.array(rounded)).astype(int), weights="quadratic")
    assert metrics["traits"]["Grammar"]["qwk_pooled"] == pytest.approx(expected, abs=1e-6)
    assert metrics["traits"]["Grammar"]["rmse"] == pytest.approx(np.sqrt(np.mean((pred[:, 1] - essays["Grammar"]) ** 2)), abs=1e-6)
    assert metrics["traits"]["mean_qwk_pooled"] == pytest.approx(expected, abs=1e-6)  # one trait: its own QWK
    assert metrics["traits"]["Grammar"]["qwk_pooled_sd"] == 0.0  # one seed


def _fake(root, traits=("Cohesion", "Grammar")):
    from tests.report_fixtures import write_fake_workspace

    return write_fake_workspace(root, representations=False, curves=False, n_prompts=8, per_prompt=25, traits=traits)


def test_report_has_a_per_trait_table_for_every_model(tmp_path):
    import json
    import warnings

    from aes.core.registry import MODEL_STAGES
    from aes.data.params import validate
    from aes.ops.readme import results_block
    from aes.report.assemble import build_report
    from aes.report.markdown import decision_md
    from tests.committed import committed_params

    _fake(tmp_path)
    params = validate(committed_params())
    params["prepare"]["targets"] = ["Overall", "Cohesion", "Grammar"]
    params["report"].update(bootstrap_resamples=50, calibration="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no representations: the probe is skipped
        report, _ = build_report(params, tmp_path)
    assert set(report["traits"]) == set(MODEL_STAGES)
    for stage in MODEL_STAGES:
        stored = json.loads((tmp_path / f"metrics/{stage}.json").read_text())["traits"]
        assert report["traits"][stage] == stored and list(stored)[:2] == ["Cohesion", "Grammar"]
    md = decision_md(report)
    assert "| model | Overall (primary) | Cohesion | Grammar | mean trait QWK |" in md
    assert md.count("fine-tune ERM |") >= 2  # the headline table and the per-trait table
    assert "| Overall (primary) | Cohesion | Grammar |" in results_block(report)


def test_compare_heads_gives_a_paired_ci_and_refuses_unpaired_files(tmp_path, capsys):
    from aes.core.errors import AESError
    from aes.ops.compare_heads import main
    from aes.report.compare import compare_predictions, read_prediction_table

    _fake(tmp_path)
    good, bad = (read_prediction_table(tmp_path / f"data/predictions/{s}.csv") for s in ("dro_cv", "linear_cv"))  # noise 0.35 vs 0.62
    same = compare_predictions(good, good, n_resamples=100, min_prompt_n=5)
    assert same["delta"]["qwk.pooled"]["gain"] == 0.0 and same["delta"]["qwk.pooled"]["ci_low"] <= 0 <= same["delta"]["qwk.pooled"]["ci_high"]
    better = compare_predictions(good, bad, n_resamples=200, min_prompt_n=5)
    assert better["delta"]["qwk.pooled"]["ci_low"] > 0 and better["delta"]["rmse"]["gain"] > 0
    trait = compare_predictions(good, bad, target="Grammar", n_resamples=200, min_prompt_n=5)
    assert trait["target"] == "Grammar" and trait["delta"]["qwk.pooled"]["gain"] > 0
    with pytest.raises(AESError, match="no predictions for target 'Syntax'"):
        compare_predictions(good, bad, target="Syntax", n_resamples=10)
    with pytest.raises(AESError, match="score different essays"):
        compare_predictions(good, bad[bad["prompt"] != "Prompt 00"], n_resamples=10)
    with pytest.raises(AESError, match="different CV folds"):
        compare_predictions(good, bad.assign(fold=(bad["fold"] + 1) % 5), n_resamples=10)
    a, b = tmp_path / "data/predictions/dro_cv.csv", tmp_path / "data/predictions/linear_cv.csv"
    main([str(a), str(b), "--resamples", "100", "--min-prompt-n", "5", "--params", str(tmp_path / "none.yaml"),
          "--json", str(tmp_path / "cmp.json")])
    out = capsys.readouterr().out
    assert "| qwk.pooled |" in out and "| rmse |" in out and (tmp_path / "cmp.json").exists()
    assert "A vs B on qwk.pooled: **" in out  # the report's rule on params' q2 metrics
    within = compare_predictions(good, bad, n_resamples=200, min_prompt_n=5, unit="essay_within_prompt", verdict_metrics=["qwk.pooled"])
    assert within["unit"] == "essay_within_prompt" and within["verdict"]["verdict"] in {"better", "inconclusive"}
    assert compare_predictions(good, good, n_resamples=50, min_prompt_n=5, verdict_metrics=["qwk.pooled"])["verdict"]["verdict"] == "inconclusive"
    from aes.ops.compare_heads import is_seeded

    assert is_seeded(a) and not is_seeded(b) and is_seeded(tmp_path / "seven.csv")  # dro_cv seeded; linear_cv a ridge probe
    with pytest.raises(SystemExit):
        main([str(a), str(tmp_path / "missing.csv"), "--params", str(tmp_path / "none.yaml")])
    assert "missing.csv: predictions file not found" in capsys.readouterr().err


def test_weighted_loss_stays_float32_under_bf16_autocast():
    """The DRO group sums need float32 losses; a matmul inside autocast would hand back bfloat16."""
    pred, target, group = torch.randn(8, 3), torch.randn(8, 3), torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = GroupDRO([3, 2, 3], fold=0, eta=0.5, size_adjustment=0.0, target_weights=[1.0, 2.0, 1.0]).loss(pred, target, None, group, 0.0)
        essay = Objective([8], fold=0, target_weights=[1.0, 2.0, 1.0]).essay_loss(pred, target)
    assert loss.dtype == essay.dtype == torch.float32
