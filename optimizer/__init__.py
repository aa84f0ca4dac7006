"""Optuna studies over mixtures and stage schedules."""
