"""Layer 2: the recipe (pydantic schema, loading, `--set`) and the facts derived from it without data."""
