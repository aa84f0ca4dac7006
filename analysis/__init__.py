"""Results tables, response surfaces, scaling curves, predictions and reports."""
