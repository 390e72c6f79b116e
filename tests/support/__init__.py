"""Helpers shared by the tests and the benchmarks: real servers (servers.py), the compute pipeline in this
process (compute.py), a stub compute process for the pool (stub_compute.py), a tiny BERT (models.py), tiny
models of every family (families.py) and transformers' float64 reference for a recomputed attention
(recomputed.py).

Kept light: nothing here imports torch at import time, so the stub compute process starts in a blink."""
