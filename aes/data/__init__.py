"""The data contract: the datasets (datasets, ellipse, asap), fetch and validate them (corpus), split by protocol (splits, protocols)."""
