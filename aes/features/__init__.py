"""Handcrafted writing features of an essay, read by the gradient-boosting baseline (``gbm.features``),
the linear-probe phase and the fine-tuned heads (``finetune.features``).

- :mod:`aes.features.text`: paragraphs, sentences and words, with ASAP's artefacts undone first;
- :mod:`aes.features.lexicons`: the word look-ups (frequency, spelling, syllables, part of speech);
- :mod:`aes.features.groups`: the eight feature groups (``FEATURE_GROUPS``) and their computation;
- :mod:`aes.features.registry`: the feature table of many essays (:func:`writing_features`);
- :mod:`aes.features.scaling`: :class:`FeatureScaling`, the standardisation a model stores with its fold.
"""

from aes.features.groups import FEATURE_GROUPS
from aes.features.registry import canonical_groups, feature_names, writing_features
from aes.features.scaling import FeatureScaling

__all__ = ["FEATURE_GROUPS", "FeatureScaling", "canonical_groups", "feature_names", "writing_features"]
