"""Benchmarks of the rank path and the collector (see bench/README.md and
``python -m bench.run --help``). Not part of the installed package."""
