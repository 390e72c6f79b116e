"""Helpers of the tests alone: the guarded server's settings and /metrics (http.py), a stub compute process
for the pool (stub_compute.py), tiny models (models.py, families.py), references (reference.py; recomputed.py:
transformers' float64 reference for a recomputed attention), response formats (formats.py), KServe's SDK
imported lazily (kserve.py) and Chromium (browser.py). What the benchmarks and scripts share with the tests
is in devtools/.

Kept light: nothing here imports torch at import time, so the stub compute process starts in a blink."""
