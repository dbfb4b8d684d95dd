"""Layer 3: optional native kernels: oneDNN convolutions as XLA FFI custom calls (`onednn.py`, `onednn_conv.cc`)."""
