"""Drivers that use everything else: the CPU demo, the model comparison, benchmarks."""
