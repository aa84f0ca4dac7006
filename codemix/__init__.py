"""codemix: pick the code share and stage schedule of a pretraining mixture from proxy runs."""
