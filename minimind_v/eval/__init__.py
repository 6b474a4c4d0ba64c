"""Evaluation: answer normalisation and scoring rules (score.py), running a model over a set (evaluate.py)."""
