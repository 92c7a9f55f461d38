"""Per-layer measurements of how far a paradigm's outputs are from exact arithmetic."""
