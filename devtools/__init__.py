"""What the tests (tests/), the benchmarks (bench/) and the scripts (scripts/) share, so that none of them
imports another's helpers: where things are (paths.py), a real server in its own uvicorn process (servers.py),
resident memory from /proc (memory.py), the compute pipeline in this process (compute.py), OpenAPI documents
compared across processes (openapi.py) and a byte-level BPE tokenizer for tiny models (tokenizer.py).

A development package: it is not installed with the service (pyproject's packages are service and schemas),
and is imported from the repository's root. Kept light: nothing here imports torch at import time."""
