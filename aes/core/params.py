"""The machinery that validates ``params.yaml``, and the schema of its sections that no dataset owns.

:data:`BASE_SCHEMA` lists the known keys of the pipeline's sections, their types and their
allowed values or ranges; the dataset keys (``data.dataset``, ``data.source``, ``data.<name>``,
``prepare.<name>``) are declared with the datasets and composed into the whole schema by
:mod:`aes.data.params` (``load_params``), which knows the dataset registry: ``aes.core`` imports
nothing from the rest of the package. A key that is unknown, missing, of the
wrong type or out of range stops the stage with a message naming the key (and the closest known
key for typos). The file is read as YAML 1.2 with ruamel.yaml, the library DVC itself uses to
read and rewrite it (``dvc exp run -S``).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from aes.core.errors import AESError
from aes.core.metrics import METRIC_DIRECTION
from aes.core.registry import (
    CALIBRATIONS,
    EMBEDDING_NORMALISATIONS,
    FEATURE_NORMALISATIONS,
    GBM_FEATURE_SWITCHES,
    OBJECTIVES,
    WRITING_FEATURE_GROUPS,
)
from aes.core.schema import Choice, Float, Int, Key, ListOf, OptionalSection

SEEDS = ListOf(int)  # training seeds: every model is trained once per seed
METRICS = ListOf(str, choices=tuple(METRIC_DIRECTION))  # metric keys a verdict rule reads


FRACTION = Float(gt=0, lt=1)  # a share of essays held out: strictly between 0 and 1
RATE = Float(ge=0, lt=1)  # a probability or ratio that may be 0 (dropout, warm-up, optional split)

# The sections of every pipeline, whatever the dataset. The data and prepare sections' dataset
# keys (data.dataset, data.source, data.<name>, prepare.targets' choices, prepare.<name>) are composed in
# by aes.data.params, where the datasets are known; this package imports nothing above aes.core.
BASE_SCHEMA: dict[str, Any] = {
    "objective": Choice(*OBJECTIVES),
    "data": {},
    "prepare": {
        # score columns to predict, primary first (Q1, Q2, calibration and the locked test read the
        # primary); the scores they may name are the datasets' (aes.data.params)
        "targets": ListOf(str),
        "invalid_rows": Choice("error", "drop"),
        "seed": Int(ge=0),
    },
    # how every model's inputs are scaled: training-fold statistics (inductive) or within each prompt
    # from its own essays, never its scores (transductive; aes/features/normalise.py)
    "normalise": {"features": Choice(*FEATURE_NORMALISATIONS), "embeddings": Choice(*EMBEDDING_NORMALISATIONS)},
    "embed": {"model": Key(str), "max_length": Int(ge=2), "batch_size": Int(ge=1), "mixed_precision": Choice("no", "bf16")},
    "gbm": {
        "features": ListOf(str, choices=GBM_FEATURE_SWITCHES),  # embeddings and/or writing-feature groups, in any order
        "n_estimators": Int(ge=1),
        "learning_rate": Float(gt=0),
        "max_depth": ListOf(int),  # candidate depths, chosen on the inner split
        "min_child_weight": Float(ge=0),
        "subsample": Float(gt=0, le=1),
        "colsample_bytree": Float(gt=0, le=1),
        "reg_lambda": Float(ge=0),
        "early_stopping_rounds": Int(ge=1),
        "inner_val_fraction": FRACTION,
        "n_jobs": Int(ge=1),
        # several targets (aes/baseline/gbm.py): the primary's inner choice reused by one traits model
        # (primary_choice), or one joint model chosen on all targets (vector leaves | a tree per target)
        "multi_strategy": Choice("primary_choice", "multi_output_tree", "one_output_per_tree"),
        "seeds": SEEDS,
    },
    "linear": {
        "alphas": ListOf(float),  # ridge penalties tried; one is chosen per fold on inner prompt-grouped folds
        "inner_folds": Int(ge=2),
        # lp_cv with finetune.features: weights of the standardised writing-feature block tried beside the
        # penalty (penalty on the features = alpha / weight**2); > 0, checked by check_cross_keys
        "feature_weights": ListOf(float),
    },
    "finetune": {
        "model": Key(str),
        "max_length": Int(ge=2),
        "trainable_layers": Int(ge=-1),  # -1: the whole encoder
        "epochs": Int(ge=1),
        "lp_ft": Key(bool),  # start from the linear-probe head (stage lp_cv) instead of a random one
        "batch_size": Int(ge=1),
        "group_by_length": Key(bool),  # batches of similar-length essays (less padding)
        "grad_accum_steps": Int(ge=1),
        "encoder_lr": Float(ge=0),
        "head_lr": Float(gt=0),
        "layer_lr_decay": Float(gt=0),
        "weight_decay": Float(ge=0),
        "warmup_ratio": RATE,
        "dropout": RATE,
        "reinit_top_layers": Int(ge=0),
        "gradient_checkpointing": Key(bool),
        "lora": Key(bool),
        "lora_r": Int(ge=1),
        "lora_alpha": Int(ge=1),
        "lora_dropout": RATE,
        "lora_target_modules": Key(list, min_len=1),
        "mixed_precision": Choice("no", "bf16", "fp16"),
        "device": Choice("auto", "cpu", "cuda"),
        "inner_val_fraction": RATE,  # 0: no inner split, train a fixed number of epochs
        "eval_batch_size": Int(ge=1),
        "max_train_essays": Int(ge=0),  # a seeded sample of this many training essays per fold and seed (ASAP's budget; smoke runs); 0: all
        # loss weight of each of prepare.targets (same order); checked against it by check_cross_keys
        "target_weights": ListOf(float, unique=False),
        # writing-feature groups the regression head reads beside the pooled text (lp_cv's probe too); [] = text only
        "features": Key(list, item=str, item_choices=WRITING_FEATURE_GROUPS, unique=True),
        "seeds": SEEDS,
    },
    "erm": {},
    "grl": {"max_weight": Float(ge=0), "adversary_hidden": Int(ge=1), "adversary_lr": Float(gt=0)},
    "dro": {"eta": Float(ge=0), "size_adjustment": Float(ge=0)},
    "report": {
        "min_prompt_n": Int(ge=1),
        "bootstrap_resamples": Int(ge=1),
        "bootstrap_seed": Int(ge=0),
        # what the bootstrap resamples besides seeds: whole prompts, or essays within each prompt (few prompts)
        "bootstrap_unit": Choice("prompt", "essay_within_prompt"),
        "probe_folds": Int(ge=2),
        # the calibration whose scores get their own Q1/Q2 verdicts beside the raw ones (aes/core/calibration.py)
        "calibration": Choice(*CALIBRATIONS, "none"),
        "q1_metrics": METRICS,  # Q1 verdict: ERM vs the strongest frozen model, on each of these
        "q2_metrics": METRICS,  # Q2 verdicts: GRL and DRO vs ERM, on each of these
        "min_gain": Float(ge=0),
    },
    "final_test": {"override": Key(bool)},
}


def _type_ok(value: Any, expected: type) -> bool:
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _check_leaf(value: Any, spec: Key, name: str, source: str) -> Any:
    if not _type_ok(value, spec.type):
        raise AESError(f"{source}: key '{name}' must be {spec.type.__name__}, got {value!r} ({type(value).__name__})")
    if spec.choices is not None and value not in spec.choices:
        raise AESError(f"{source}: key '{name}' must be one of {', '.join(spec.choices)}; got {value!r}")
    if spec.type in (int, float) and not spec.in_range(value):
        raise AESError(f"{source}: key '{name}' must be {spec.range_text()}; got {value!r}")
    if spec.min_len is not None and len(value) < spec.min_len:
        raise AESError(f"{source}: key '{name}' must have at least {spec.min_len} item(s); got {value!r}")
    if spec.type is list:
        return _check_items(value, spec, name, source)
    return float(value) if spec.type is float else value


def _check_items(value: list, spec: Key, name: str, source: str) -> list:
    if spec.item is not None:
        bad = [v for v in value if not _type_ok(v, spec.item)]
        if bad:
            raise AESError(f"{source}: key '{name}' must be a list of {spec.item.__name__}; got {value!r} ({bad[0]!r} is not)")
    if spec.item_choices is not None:
        for v in value:
            if v not in spec.item_choices:
                close = difflib.get_close_matches(str(v), [str(c) for c in spec.item_choices], n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise AESError(f"{source}: key '{name}' has unknown item {v!r}{hint}; known: {', '.join(map(str, spec.item_choices))}")
    if spec.unique:
        repeated = sorted({v for v in value if value.count(v) > 1}, key=str)
        if repeated:
            raise AESError(f"{source}: key '{name}' repeats {', '.join(map(repr, repeated))}; every item must be distinct; got {value!r}")
    return [float(v) for v in value] if spec.item is float else list(value)


def validate(params: Any, schema: dict[str, Any], where: str = "", source: str = "params.yaml") -> dict:
    """Check ``params`` against ``schema``; return it with float keys cast to float.

    A section declared :class:`~aes.core.schema.OptionalSection` may be left out (it is then
    absent from the result); when present it is checked like any other.
    """
    if not isinstance(params, dict):
        raise AESError(f"{source}: {where or 'top level'} must be a mapping, got {type(params).__name__}")
    for key in params:
        if key not in schema:
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f" (did you mean '{where}{close[0]}'?)" if close else ""
            known = ", ".join(schema) or "none"
            raise AESError(f"{source}: unknown key '{where}{key}'{hint}; known keys here: {known}")
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        name = f"{where}{key}"
        if isinstance(spec, OptionalSection):
            if key not in params:
                continue
            spec = spec.schema
        if key not in params:
            raise AESError(f"{source}: missing key '{name}'")
        value = params[key]
        if isinstance(spec, dict):
            out[key] = validate(value if value is not None else {}, spec, f"{name}.", source)
        else:
            out[key] = _check_leaf(value, spec, name, source)
    return out


def check_cross_keys(params: dict, source: str = "params.yaml") -> dict:
    """Rules that tie keys of different non-dataset sections together; returns ``params`` unchanged.

    finetune.target_weights has one weight (>= 0) per prepare.targets entry, at least one of them
    > 0; every linear.feature_weights entry is > 0; report.calibration: inner needs
    finetune.inner_val_fraction > 0. (The dataset's own rules:
    :func:`aes.data.registry.check_dataset_keys`.)
    """
    targets, weights = params["prepare"]["targets"], params["finetune"]["target_weights"]
    if len(weights) != len(targets):
        raise AESError(f"{source}: key 'finetune.target_weights' has {len(weights)} weight(s) but key 'prepare.targets' "
                       f"lists {len(targets)} target(s) ({', '.join(targets)}); give one weight per target, in the same order")
    if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
        raise AESError(f"{source}: key 'finetune.target_weights' must be >= 0 with at least one weight > 0; got {weights!r}")
    block = params["linear"]["feature_weights"]
    if any(w <= 0 for w in block):
        raise AESError(f"{source}: key 'linear.feature_weights' must be > 0 (a weight w penalises the writing features by alpha / w**2); "
                       f"got {block!r}")
    if params["report"]["calibration"] == "inner" and params["finetune"]["inner_val_fraction"] <= 0:
        raise AESError(f"{source}: key 'report.calibration' is 'inner', which fits each fine-tune's cut-points on its inner held-out "
                       "slice, but key 'finetune.inner_val_fraction' is 0 (no slice); set it > 0 (default 0.2) or choose "
                       "report.calibration: other_folds | prompt_spread | none")
    return params


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML 1.2 text the way DVC does (``no`` is a string, ``2e-5`` a float); plain Python types."""
    from ruamel.yaml import YAML, YAMLError

    try:
        return YAML(typ="safe", pure=True).load(text)
    except YAMLError as err:
        raise AESError(f"{source}: not valid YAML: {err}") from None


def read_params_file(path: str | Path) -> Any:
    """The parsed (not yet validated) params file; AESError when it is missing."""
    path = Path(path)
    if not path.exists():
        raise AESError(f"{path}: params file not found (run stages from the repository root)")
    return parse_yaml(path.read_text(), str(path))


def read_overrides(path: str | Path) -> dict[str, Any]:
    """The ``-S key=value`` overrides of a profile file (profiles/gpu.args), values parsed as DVC parses them.

    Lines starting with ``#`` are comments (the README's command drops them with ``grep -v '^#'``).
    """
    path = Path(path)
    if not path.exists():
        raise AESError(f"{path}: profile file not found")
    tokens = " ".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")).split()
    if tokens[0::2] != ["-S"] * (len(tokens) // 2) or len(tokens) % 2:
        raise AESError(f"{path}: every override must be '-S key=value'")
    return parse_override_items(tokens[1::2], str(path))


def parse_override_items(items: list[str], source: str) -> dict[str, Any]:
    """{dotted key: value} of ``key=value`` items (the words after each ``-S``), values parsed as DVC parses them."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise AESError(f"{source}: override {item!r} has no '='")
        out[key] = parse_yaml(value, source)
    return out


def apply_overrides(params: dict, overrides: dict[str, Any], source: str = "overrides") -> dict:
    """A copy of ``params`` with dotted ``overrides`` ({"finetune.epochs": 2}) applied, not yet validated
    (:func:`aes.data.params.with_overrides` validates the result against the whole schema)."""
    import copy

    out = copy.deepcopy(params)
    for key, value in overrides.items():
        *path, leaf = key.split(".")
        section = out
        for part in path:
            section = section.get(part) if isinstance(section, dict) else None
        if not isinstance(section, dict) or leaf not in section:
            raise AESError(f"{source}: '{key}' is not a params key")
        section[leaf] = value
    return out
