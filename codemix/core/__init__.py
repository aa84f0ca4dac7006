"""The ground every other part of codemix stands on: errors, counts, atomic files, locks,
signals, secrets and progress lines. Standard library only, so the trainer can use it on a
bare accelerator host."""
