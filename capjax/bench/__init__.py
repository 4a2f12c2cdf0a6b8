"""Benchmarks: `python -m capjax.bench <name> [options]` (see `python -m capjax.bench --help`)."""
