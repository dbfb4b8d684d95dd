"""Layer 3: process-wide JAX settings and the device mesh / multi-process start-up."""
