"""Frozen encoders: resolve a model param to weights (resolve, mpnet), tokenise, pool and embed (embedding)."""
