"""Training loop, evaluation and checkpoints."""
