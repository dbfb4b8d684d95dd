"""On-device augmentation: ops that run inside the jitted train step."""
