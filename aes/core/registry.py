"""Stage names and the files they exchange: the one place the code looks them up.

``dvc.yaml`` declares the same names and paths (a test holds the two together). Every path is
relative to the repository root; functions take ``root`` so tests can run in a temporary copy.
"""

from __future__ import annotations

from pathlib import Path

from aes.core.errors import AESError

# ------------------------------------------------------------------ stages (dvc.yaml order)
FETCH, PREPARE, EMBED, REPORT, FINAL_TEST = "fetch", "prepare", "embed", "report", "final_test"
BASELINE_STAGE = "gbm_cv"
# The fine-tuning objectives and the stage that trains each (one loop, three stages).
OBJECTIVE_STAGES = {"erm": "finetune_cv", "grl": "grl_cv", "dro": "dro_cv"}
OBJECTIVES = tuple(OBJECTIVE_STAGES)
ERM_STAGE = OBJECTIVE_STAGES["erm"]
# Stages that write the model artifact contract (aes.core.artifacts), baseline first.
MODEL_STAGES = (BASELINE_STAGE, *OBJECTIVE_STAGES.values())
STAGES = (FETCH, PREPARE, EMBED, *MODEL_STAGES, REPORT, FINAL_TEST)
MODEL_LABELS = {
    BASELINE_STAGE: "baseline (embeddings + XGBoost)",
    "finetune_cv": "fine-tune ERM",
    "grl_cv": "fine-tune GRL",
    "dro_cv": "fine-tune group DRO",
}


def stage_for_objective(objective: str) -> str:
    """The stage of a fine-tuning objective ('erm' -> 'finetune_cv'); AESError for an unknown one."""
    if objective not in OBJECTIVE_STAGES:
        raise AESError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)} (params.yaml key 'objective')")
    return OBJECTIVE_STAGES[objective]


# ------------------------------------------------------------------ files
RAW_CSV = Path("data/raw/ellipse.csv")  # fetch -> prepare
PROVENANCE = Path("data/provenance.json")
ESSAYS = Path("data/prepared/essays.csv")  # prepare -> every later stage
SPLITS = Path("data/prepared/splits.json")
PREPARE_METRICS = Path("metrics/prepare.json")
EMBEDDINGS = Path("data/embeddings")  # embed -> gbm_cv, report, final_test
EMBED_METRICS = Path("metrics/embed.json")
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
