"""aes.ops.tune: candidate overrides and the rule that picks an invariance objective's strength."""

import pytest

from aes.ops.tune import STRENGTH, candidate_params, choose_strengths

PARAMS = {"finetune": {"max_length": 512, "trainable_layers": 1, "lp_ft": True}, "grl": {"max_weight": 0.3, "adversary_lr": 1e-3},
          "dro": {"eta": 0.01, "size_adjustment": 0.0}}


def test_candidate_params_override_finetune_and_dotted_sections_without_touching_the_input():
    cand = {"name": "x", "objective": "grl", "max_length": 256, "trainable_layers": -1, "grl.max_weight": 1.0}
    out = candidate_params(PARAMS, cand)
    assert out["finetune"] == {"max_length": 256, "trainable_layers": -1, "lp_ft": True}
    assert out["grl"] == {"max_weight": 1.0, "adversary_lr": 1e-3}
    assert out["dro"] == PARAMS["dro"]
    assert PARAMS["finetune"]["max_length"] == 512 and PARAMS["grl"]["max_weight"] == 0.3  # the caller's dict is unchanged


def test_strength_grid_is_the_whole_encoder_and_names_each_objectives_strength_key():
    assert all(c["trainable_layers"] == -1 for c in STRENGTH)
    assert [c["objective"] for c in STRENGTH].count("erm") == 1
    assert all("grl.max_weight" in c for c in STRENGTH if c["objective"] == "grl")
    assert all("dro.eta" in c for c in STRENGTH if c["objective"] == "dro")


def row(objective, qwk, offset, strength=None):
    key = {"grl": "grl.max_weight", "dro": "dro.eta"}.get(objective)
    return {"name": f"{objective} {strength}", "objective": objective, "inner_qwk_pooled": qwk, "inner_offset_rms": offset,
            **({key: strength} if key else {})}


def test_choose_strengths_takes_the_smallest_offset_among_strengths_that_keep_pooled_qwk():
    rows = [row("erm", 0.50, 0.20),
            row("grl", 0.495, 0.18, 0.1),   # within min_gain of ERM
            row("grl", 0.490, 0.12, 0.3),   # exactly min_gain below ERM: still kept
            row("grl", 0.45, 0.05, 1.0),    # smallest offset but loses 0.05 QWK: excluded
            row("dro", 0.40, 0.30, 0.01), row("dro", 0.42, 0.25, 0.1)]  # every strength loses > min_gain
    chosen = choose_strengths(rows, min_gain=0.01)
    assert chosen["grl"]["grl.max_weight"] == 0.3 and "smallest inner offset" in chosen["grl"]["rule"]
    assert chosen["dro"]["dro.eta"] == 0.1 and "highest pooled QWK" in chosen["dro"]["rule"]


def test_choose_strengths_needs_one_erm_reference():
    with pytest.raises(ValueError, match="exactly one ERM row"):
        choose_strengths([row("grl", 0.5, 0.1, 0.3)], 0.01)
