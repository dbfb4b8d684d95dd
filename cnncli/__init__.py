"""cnncli: train, evaluate and inspect convolutional neural networks from the shell."""

__version__ = "0.1.0"
