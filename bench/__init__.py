"""Benchmarks: each measures its A and B in one process, alternating, after a warm-up (`make bench`)."""
