"""The procedural grape-bunch renderer (exact masks) and its exports."""
