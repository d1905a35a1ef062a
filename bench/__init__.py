"""Benchmarks: each prints JSON and reports every figure beside the raw limit measured in the
same run (a ratio), never an absolute number alone."""
