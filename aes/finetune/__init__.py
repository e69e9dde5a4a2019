"""Fine-tuning: the frozen pass and stage embed's driver (frozen_pass, embed), the linear-probe phase (lp, lpft),
backbones and modules, the runtime (accelerator, prediction), fold rows and seeds (folds), one fold loop (loop) with
objective plug-ins (objectives), callbacks, checkpoints and the CV stage driver (cv)."""
