"""The report stage: paired prompt bootstrap, prompt-leakage probe, calibration, decision, plots, assembly; README table command."""
