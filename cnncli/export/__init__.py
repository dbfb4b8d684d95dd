"""Layer 6: a trained run as a portable model: StableHLO (jax.export) or ONNX (jax2onnx), verified on export."""
