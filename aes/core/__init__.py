"""What every stage shares: errors, params schema, stage/path registry, metrics, the artifact contract, file helpers, progress."""
