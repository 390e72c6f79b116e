"""A compute process gives back the memory of a large request (issue 12, item 8): glibc keeps a freed heap,
so without malloc_trim one large request would leave the process hundreds of megabytes larger for good."""

from __future__ import annotations

import time

import pytest

from devtools.memory import resident_mb
from devtools.servers import Server
from tests.server.test_reliability import compute_processes

# 1024 x 1024 embeddings: a 10 MB body parsed into a million Python floats, then 32 MB tensors
LARGE = {"embeddings": [[[0.123456] * 1024] * 1024], "num_heads": 4, "include": ["output"]}


@pytest.mark.slow
def test_after_a_large_request_the_compute_process_returns_to_its_size_at_rest():
    with Server({"ATTENTION_MAX_CONCURRENT": "1"}) as srv:
        (pid,) = compute_processes(srv)
        assert srv.post({"embeddings": [[1.0, 0.0], [0.0, 1.0]]}).status_code == 200
        rest = resident_mb(pid)
        response = srv.post(LARGE)
        assert response.status_code == 200, response.text[:300]
        time.sleep(0.5)
        after = resident_mb(pid)
        assert after < rest + 40, f"at rest {rest:.0f} MB, after a large request {after:.0f} MB"
