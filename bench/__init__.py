"""Benchmarks of the rank path and the collector (see bench/README.md,
``python -m bench.rank --help`` and ``python -m bench.collector --help``).
Not part of the installed package."""
