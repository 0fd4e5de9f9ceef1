"""Speed, memory and scaling benchmarks (pytest-benchmark). Run ``python benchmarks/run.py [--quick]``."""
