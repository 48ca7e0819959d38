"""Benchmarks: `python -m bench.rush` (not part of the test suite)."""
