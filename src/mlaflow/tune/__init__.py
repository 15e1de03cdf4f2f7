"""The tuning stage: search spaces (space.py) and Optuna studies on validation accuracy (study.py)."""
