"""Layer 3: PNG pictures (Pillow, matplotlib): image grids, filter mosaics, training curves."""
