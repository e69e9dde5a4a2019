"""Stage names and the files they exchange: the one place the code looks them up.

``dvc.yaml`` declares the same names and paths (a test holds the two together). Every path is
relative to the repository root; functions take ``root`` so tests can run in a temporary copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aes.core.errors import AESError

# ------------------------------------------------------------------ stages (dvc.yaml order)
FETCH, PREPARE, EMBED, REPORT, FINAL_TEST = "fetch", "prepare", "embed", "report", "final_test"
TOPICS = "topics"  # the groups the splits keep whole (prompts, or topic clusters of prompts): fetch -> topics -> prepare
PROBE_STAGE = "prompt_probe"  # prompt-leakage probe of every representation (read by report)
BASELINE_STAGE = "gbm_cv"  # frozen embeddings + writing features -> XGBoost
LINEAR_STAGE = "linear_cv"  # linear probe on the same frozen embeddings
LP_STAGE = "lp_cv"  # the fine-tune's linear-probe phase on the frozen pass (same model and length)
FROZEN_STAGES = (BASELINE_STAGE, LINEAR_STAGE, LP_STAGE)
# The fine-tuning objectives and the stage that trains each (one loop, three stages).
OBJECTIVE_STAGES = {"erm": "finetune_cv", "grl": "grl_cv", "dro": "dro_cv"}
OBJECTIVES = tuple(OBJECTIVE_STAGES)
ERM_STAGE = OBJECTIVE_STAGES["erm"]
# Stages whose result depends on the training seed (subsampling, initialisation, batch order);
# the ridge probes are deterministic.
SEEDED_STAGES = (BASELINE_STAGE, *OBJECTIVE_STAGES.values())
# Stages that write the model artifact contract (aes.core.artifacts), frozen models first.
MODEL_STAGES = (*FROZEN_STAGES, *OBJECTIVE_STAGES.values())
STAGES = (FETCH, TOPICS, PREPARE, EMBED, BASELINE_STAGE, LINEAR_STAGE, LP_STAGE, *OBJECTIVE_STAGES.values(), PROBE_STAGE, REPORT, FINAL_TEST)
MODEL_LABELS = {
    BASELINE_STAGE: "frozen: embeddings + writing features -> XGBoost",
    LINEAR_STAGE: "frozen: linear probe on the embeddings",
    LP_STAGE: "frozen: linear probe at the fine-tune's length (LP phase)",
    "finetune_cv": "fine-tune ERM",
    "grl_cv": "fine-tune GRL",
    "dro_cv": "fine-tune group DRO",
}
# The handcrafted writing-feature groups (aes/features/groups.py FEATURE_GROUPS, same names and
# order; a test holds the two together). Named here so params validation (aes/core/params.py) can
# check `gbm.features` and `finetune.features` without importing the feature code into every stage.
WRITING_FEATURE_GROUPS = ("length", "lexical", "sophistication", "spelling", "readability", "complexity", "punctuation", "syntax")
# `gbm.features`: the switch that adds the frozen embeddings as columns, then any writing-feature groups.
EMBEDDINGS_SWITCH = "embeddings"
GBM_FEATURE_SWITCHES = (EMBEDDINGS_SWITCH, *WRITING_FEATURE_GROUPS)
# `normalise` (aes/features/normalise.py): how inputs are scaled. The first value of each is inductive
# (training-fold statistics only); the others read each prompt's own essays, never its scores: transductive.
FEATURE_NORMALISATIONS = ("training_fold", "prompt_minmax", "prompt_zscore")
EMBEDDING_NORMALISATIONS = ("as_is", "prompt_mean")
# How raw outputs are mapped onto the grid (aes/core/calibration.py): every model stage writes all of
# them; `report.calibration` names the one the calibrated verdicts read (or none).
CALIBRATIONS = ("inner", "other_folds", "prompt_spread")
TRANSDUCTIVE_CALIBRATIONS = ("prompt_spread",)  # read the held-out prompt's predictions (never its scores)

def is_transductive(normalise: Mapping) -> bool:
    """True when either setting reads the held-out prompt's essays (never its scores)."""
    return normalise["features"] != "training_fold" or normalise["embeddings"] != "as_is"


def inputs_record(normalise: Mapping, reads_features: bool = True, reads_embeddings: bool = True) -> dict:
    """What a model's metrics record of its input normalisation: the settings it honours and whether that is transductive.

    A model that reads no writing features (or no embeddings) is unaffected by that setting and
    records ``training_fold`` (``as_is``) for it, so a linear probe on embeddings alone is never
    labelled transductive by a feature setting it does not read.
    """
    features = normalise["features"] if reads_features else "training_fold"
    embeddings = normalise["embeddings"] if reads_embeddings else "as_is"
    record = {"features": features, "embeddings": embeddings}
    return {**record, "transductive": is_transductive(record)}


def inputs_label(record: Mapping | None) -> str:
    """Short table label of a model's inputs record: 'inductive' or 'transductive (...)'."""
    if not record or not record.get("transductive"):
        return "inductive"
    parts = [p for p in (record["features"] if record["features"] != "training_fold" else "",
                         "embeddings prompt-centred" if record["embeddings"] != "as_is" else "") if p]
    return "transductive (" + ", ".join(parts).replace("prompt_minmax", "features min-max per prompt").replace(
        "prompt_zscore", "features z-scored per prompt") + ")"


_WITH_FEATURES_LABELS = {
    LP_STAGE: "frozen: linear probe + writing features at the fine-tune's length (LP phase)",
    **{stage: f"{MODEL_LABELS[stage]} with writing features" for stage in OBJECTIVE_STAGES.values()},
}


def model_label(stage: str, features=()) -> str:
    """Readable name of a model stage; ``features``: the writing-feature groups its head reads (``finetune.features``
    as recorded in the stage's metrics), which change the label of lp_cv and the fine-tunes when non-empty."""
    if features and stage in _WITH_FEATURES_LABELS:
        return _WITH_FEATURES_LABELS[stage]
    return MODEL_LABELS[stage]


def stage_for_objective(objective: str) -> str:
    """The stage of a fine-tuning objective ('erm' -> 'finetune_cv'); AESError for an unknown one."""
    if objective not in OBJECTIVE_STAGES:
        raise AESError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)} (params.yaml key 'objective')")
    return OBJECTIVE_STAGES[objective]


# ------------------------------------------------------------------ files
RAW_CSV = Path("data/raw/corpus.csv")  # fetch -> prepare: the chosen dataset's rows as published
PROVENANCE = Path("data/provenance.json")
TOPICS_JSON = Path("data/topics.json")  # topics -> prepare: {"groups": "prompt"} or the topic of every prompt
ESSAYS = Path("data/prepared/essays.csv")  # prepare -> every later stage
SPLITS = Path("data/prepared/splits.json")
PREPARE_METRICS = Path("metrics/prepare.json")
EMBEDDINGS = Path("data/embeddings")  # embed -> gbm_cv, report, final_test
EMBED_METRICS = Path("metrics/embed.json")
FROZEN_PASS = Path("data/frozen_pass")  # embed -> lp_cv and the three fine-tuning stages
PROBE_JSON = Path("metrics/prompt_probe.json")  # prompt_probe -> report
REPORT_JSON = Path("metrics/report.json")  # report -> final_test
DECISION_MD = Path("reports/decision.md")
REPORT_PLOTS = Path("plots/report")
FINAL_TEST_JSON = Path("metrics/final_test.json")
DVCLIVE = Path("dvclive")  # training curves, one folder per fine-tuning stage
CHECKPOINTS = Path(".checkpoints")  # git- and DVC-ignored fold checkpoints of a running stage


def metrics_path(stage: str, root: Path = Path(".")) -> Path:
    return root / "metrics" / f"{stage}.json"


def predictions_path(stage: str, root: Path = Path(".")) -> Path:
    return root / "data" / "predictions" / f"{stage}.csv"


def inner_predictions_path(stage: str, root: Path = Path(".")) -> Path:
    """A model stage's inner predictions: essays of each fold's training side held out of the model that predicted them."""
    return root / "data" / "predictions" / f"{stage}_inner.csv"


def plots_dir(stage: str, root: Path = Path(".")) -> Path:
    return root / "plots" / stage


def models_dir(stage: str, root: Path = Path(".")) -> Path:
    return root / "models" / stage


def representation_paths(stage: str, root: Path = Path(".")) -> tuple[Path, Path]:
    """(pooled vectors .npy (n, H) float32, ids .csv with record_id, fold) of a fine-tuning stage."""
    folder = root / "data" / "representations"
    return folder / f"{stage}.npy", folder / f"{stage}_ids.csv"


def dvclive_dir(stage: str, root: Path = Path(".")) -> Path:
    return root / DVCLIVE / stage
