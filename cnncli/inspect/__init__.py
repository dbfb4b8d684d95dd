"""Layer 6: what a run gets right and what it learned: evaluation, prediction, filters and activations."""
