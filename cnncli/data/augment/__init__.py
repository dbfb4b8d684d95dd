"""On-device augmentation: ops that run inside the jitted train step.

``primitives`` (Context, Op, per-example application) <- ``ops`` (pixel-wise, label
mixing) and ``geometric`` (affine, RandAugment) <- ``core`` (the op table, validation,
`make_augment`) <- ``preview`` (training step 1's batch, as the network sees it).
"""
