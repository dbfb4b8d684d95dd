"""Layer 4: datasets from sources (digits, npz, tfds, folder) as uint8/float arrays, and on-device augmentation."""
