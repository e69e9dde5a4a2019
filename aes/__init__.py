"""Prompt-holdout automated essay scoring on ELLIPSE.

Sub-packages, one per concern, so that ``dvc.yaml`` can depend on whole folders:
``core`` (errors, params, registry, metrics, artifacts, io, progress), ``data`` (corpus, splits),
``encoders`` (model resolution, embedding), ``baseline`` (gbm), ``finetune`` (training),
``report`` (comparison and decision), ``holdout`` (final_test) and ``ops`` (aes-run; no stage).
"""

__version__ = "0.1.0"
