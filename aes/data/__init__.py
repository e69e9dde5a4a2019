"""The data contract: fetch and validate ELLIPSE (corpus), carve the locked test and CV folds (splits)."""
