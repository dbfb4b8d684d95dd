"""Layer 5: run directories: file layout, checkpoints (the only code that knows the format), loading a run back."""
