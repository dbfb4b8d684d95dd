"""Layer 6: the train step, optimizer, session and loop; typed progress events; dry-run plans; profiling."""
