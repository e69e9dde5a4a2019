"""Operations no stage runs: the detached-run launcher for the GPU box (aes-run). Editing it re-runs nothing."""
