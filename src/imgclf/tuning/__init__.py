"""`python -m imgclf tune`: an Optuna search over train's hyperparameters (not a stage)."""
