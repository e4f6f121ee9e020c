"""Estimators, protocols and plaintext cores; evaluation and baselines."""
