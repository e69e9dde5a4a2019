"""Load and validate ``params.yaml``.

The schema below is the single list of known keys. A key that is unknown, missing or of the
wrong type stops the stage with a message naming the key (and the closest known key for typos).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml

from aes.errors import AESError

# The fine-tuning objectives and the dvc.yaml stage that trains each (one loop, three stages).
OBJECTIVE_STAGES = {"erm": "finetune_cv", "grl": "grl_cv", "dro": "dro_cv"}
OBJECTIVES = tuple(OBJECTIVE_STAGES)

# key -> type, or (type, allowed values). float keys accept ints; nested dicts are sections.
SCHEMA: dict[str, Any] = {
    "objective": (str, OBJECTIVES),
    "data": {
        "source": (str, ("local", "upstream", "csv")),
        "local_dir": str,
        "csv_path": str,
        "zip_password": str,
    },
    "prepare": {
        "target": (str, ("Overall", "Cohesion", "Syntax", "Vocabulary", "Phraseology", "Grammar", "Conventions")),
        "min_words": int,
        "max_words": int,
        "invalid_rows": (str, ("error", "drop")),
        "test_fraction": float,
        "test_candidates": int,
        "n_folds": int,
        "seed": int,
    },
    "embed": {"model": str, "max_length": int, "batch_size": int},
    "gbm": {
        "text_stats": bool,
        "n_estimators": int,
        "learning_rate": float,
        "max_depth": int,
        "min_child_weight": float,
        "subsample": float,
        "colsample_bytree": float,
        "reg_lambda": float,
        "early_stopping_rounds": int,
        "inner_val_fraction": float,
        "n_jobs": int,
        "seed": int,
    },
    "finetune": {
        "model": str,
        "max_length": int,
        "trainable_layers": int,
        "epochs": int,
        "batch_size": int,
        "grad_accum_steps": int,
        "encoder_lr": float,
        "head_lr": float,
        "layer_lr_decay": float,
        "weight_decay": float,
        "warmup_ratio": float,
        "dropout": float,
        "reinit_top_layers": int,
        "gradient_checkpointing": bool,
        "lora": bool,
        "lora_r": int,
        "lora_alpha": int,
        "lora_dropout": float,
        "lora_target_modules": list,
        "mixed_precision": (str, ("no", "bf16", "fp16")),
        "device": (str, ("auto", "cpu", "cuda")),
        "inner_val_fraction": float,
        "eval_batch_size": int,
        "seed": int,
    },
    "erm": {},
    "grl": {"max_weight": float, "adversary_hidden": int, "adversary_lr": float},
    "dro": {"eta": float, "size_adjustment": float},
    "report": {
        "min_prompt_n": int,
        "bootstrap_resamples": int,
        "bootstrap_seed": int,
        "probe_folds": int,
        "calibration": bool,
        "decision_metric": str,
        "min_gain": float,
        "max_worst_prompt_drop": float,
    },
    "final_test": {"override": bool},
}


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 scalars, as DVC reads and writes params.yaml.

    PyYAML implements YAML 1.1, where unquoted ``no``/``yes``/``on``/``off`` are booleans and
    ``2e-5`` is a string. ``dvc exp run -S`` rewrites params.yaml with ruamel (YAML 1.2) and drops
    quotes that YAML 1.2 does not need (``"no"`` becomes ``no``), so we read it the way DVC does.
    """


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
Yaml12Loader.add_implicit_resolver(  # exponent without a dot: 2e-5, 1E3
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _type_ok(value: Any, expected: type) -> bool:
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def validate(params: Any, schema: dict[str, Any] = SCHEMA, where: str = "", source: str = "params.yaml") -> dict:
    """Check ``params`` against ``schema``; return it with float keys cast to float."""
    if not isinstance(params, dict):
        raise AESError(f"{source}: {where or 'top level'} must be a mapping, got {type(params).__name__}")
    out: dict[str, Any] = {}
    for key in params:
        if key not in schema:
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f" (did you mean '{where}{close[0]}'?)" if close else ""
            known = ", ".join(schema) or "none"
            raise AESError(f"{source}: unknown key '{where}{key}'{hint}; known keys here: {known}")
    for key, spec in schema.items():
        name = f"{where}{key}"
        if key not in params:
            raise AESError(f"{source}: missing key '{name}'")
        value = params[key]
        if isinstance(spec, dict):
            out[key] = validate(value if value is not None else {}, spec, f"{name}.", source)
            continue
        expected, choices = spec if isinstance(spec, tuple) else (spec, None)
        if not _type_ok(value, expected):
            raise AESError(
                f"{source}: key '{name}' must be {expected.__name__}, got {value!r} ({type(value).__name__})"
            )
        if choices is not None and value not in choices:
            raise AESError(f"{source}: key '{name}' must be one of {', '.join(choices)}; got {value!r}")
        out[key] = float(value) if expected is float else value
    return out


def load_params(path: str | Path = "params.yaml") -> dict:
    """Read and validate the params file. Returns the nested dict."""
    path = Path(path)
    if not path.exists():
        raise AESError(f"{path}: params file not found (run stages from the repository root)")
    try:
        raw = yaml.load(path.read_text(), Loader=Yaml12Loader)
    except yaml.YAMLError as err:
        raise AESError(f"{path}: not valid YAML: {err}") from None
    return validate(raw, SCHEMA, "", str(path))


def stage_for_objective(objective: str) -> str:
    """dvc.yaml stage of a fine-tuning objective ('erm' -> 'finetune_cv'); AESError for an unknown one."""
    if objective not in OBJECTIVE_STAGES:
        raise AESError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)} (params.yaml key 'objective')")
    return OBJECTIVE_STAGES[objective]
