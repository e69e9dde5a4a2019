"""Frozen-embedding baselines: gradient boosting over the embed stage's vectors and writing features (gbm), the ridge probe (linear)."""
