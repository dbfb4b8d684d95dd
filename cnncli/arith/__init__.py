"""Layer 1: conv arithmetic in pure Python (tokens, formulas, shapes, the zoo, explanations, drawings).

Nothing here imports jax, numpy or rich: `conv-arith` answers in a fraction of a second.
"""
