"""The gated final_test stage: train the chosen configuration on all CV essays and score the locked test once."""
