"""Frozen-embedding baselines: gradient boosting over the embed stage's vectors (gbm)."""
