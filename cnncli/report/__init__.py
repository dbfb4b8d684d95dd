"""Layer 7: the only printers: rich on a terminal, JSON lines for scripts, one module per command family."""
