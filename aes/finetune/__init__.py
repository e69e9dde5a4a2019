"""Fine-tuning: backbones (cached top layers | whole encoder), objectives (ERM, GRL, DRO), one fold loop, checkpoints, callbacks, the CV stage."""
