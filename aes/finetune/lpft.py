"""LP-FT's head maths (Kumar et al. 2022): the fine-tuned head that starts at the linear probe's predictions.

With an ``init_head`` (the fold's linear probe from stage ``lp_cv``) the head starts at the probe's
weights, so step 0 predicts what the probe predicts and fine-tuning begins from a good head instead
of a random one. The probe carries its own writing-feature scaling (fitted on the same training
fold); :func:`head_from_probe` maps it onto the head's exactly, features part included.
"""

from __future__ import annotations

import numpy as np

from aes.core.errors import AESError
from aes.finetune.frozen_pass import check_feature_groups


def head_from_probe(probe, hidden_size: int, mean: np.ndarray, std: np.ndarray, scaling=None) -> tuple[np.ndarray, np.ndarray]:
    """The head (weight (T, H + d), bias (T,)) that predicts z = (y - mean) / std with the probe's y, exactly.

    probe: a RidgeFit y ~= [pooled (H), probe.scaling.apply(x) (d)] @ weight + bias on the unit range
    (weight (H + d,) or (H + d, T)); mean, std: (T,) the fold's target scaling; scaling: the head's
    own FeatureScaling (or None without features). The probe's standardisation and the head's may
    differ (the head's is fitted on the essays the fold trains on, the probe's on the whole training
    fold): since z_probe = z_head * sd_h / sd_p + (mean_h - mean_p) / sd_p, the feature rows are
    rescaled and the shift goes into the bias, so both predict the same y for the same essay.
    Raises AESError naming ``finetune.features`` when the probe's features are not the head's.
    """
    check_feature_groups(probe.scaling.groups if probe.scaling is not None else (), scaling.groups if scaling is not None else (),
                         "the linear probe of stage lp_cv", rerun="lp_cv")
    weight = np.asarray(probe.weight, dtype=np.float64).reshape(len(probe.weight), -1)  # (H + d, T)
    bias = np.atleast_1d(np.asarray(probe.bias, dtype=np.float64)).copy()
    d = 0 if scaling is None else len(scaling.names)
    if weight.shape != (hidden_size + d, len(mean)):
        raise AESError(f"the linear probe maps {weight.shape[0]} features to {weight.shape[1]} target(s) but the model reads "
                       f"{hidden_size} pooled + {d} writing-feature columns and has {len(mean)} target(s); re-run `dvc repro lp_cv`")
    if d:
        p = probe.scaling
        w_text, w_feat = weight[:hidden_size], weight[hidden_size:]
        bias = bias + ((scaling.mean - p.mean) / p.sd) @ w_feat
        weight = np.vstack([w_text, w_feat * (scaling.sd / p.sd)[:, None]])
    return (weight / std).T, (bias - mean) / std
