"""Prompt-holdout automated essay scoring on ELLIPSE.

One module per concern: ``data`` (fetch, validate), ``splits`` (locked test, CV folds),
``metrics`` (half-band QWK and friends), ``evaluation`` (the artifact contract every model
writes), ``models`` (encoder resolution), ``embedding``, ``gbm``, ``objectives``,
``training``, ``report`` and ``runs`` (detached runs on a GPU box).
"""

__version__ = "0.1.0"
