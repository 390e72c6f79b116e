"""Giving memory back after a large request: glibc keeps the heap it freed (and raises its mmap threshold
after big frees), so a compute process that once held gigabytes for one request would keep them. After a
request that grew the process, malloc_trim returns the free heap to the operating system.

Within a request, the same raised threshold makes the peak: once a mapped chunk of up to 32 MB is freed, glibc
serves allocations below its size from the heap, so the 25 MB tensors of a 16k-token layer (hidden states, q,
k, v) land between small ones that outlive them and the heap grows past them instead of reusing their place.
A fixed threshold (MMAP_THRESHOLD_BYTES) keeps every large tensor mapped apart and unmapped when freed: the
peak of every summary of a 6-layer model at 16k tokens went from 708-806 MB above rest to 489-507
(docs/summaries.md)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

GROWTH_BYTES = 32 * 2**20  # trimming costs milliseconds: only after a request that grew the process this much
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter; setting it also stops glibc from raising it
# above a blocked computation's 4 MB blocks (2^20 float32 scores), which the heap reuses from block to block
# without page faults; below a long input's per-layer tensors
MMAP_THRESHOLD_BYTES = 8 * 2**20


class MemoryKeeper:
    """Made once a compute process is at rest: fixes glibc's mmap threshold from then on, and trims the heap
    after each request that grew the process (`after_request`)."""

    def __init__(self) -> None:
        library = ctypes.util.find_library("c")
        libc = ctypes.CDLL(library) if library else None
        self.malloc_trim = getattr(libc, "malloc_trim", None)  # glibc only (not musl, not macOS)
        mallopt = getattr(libc, "mallopt", None)
        if self.malloc_trim is not None and mallopt is not None:
            mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        self.statm = os.open("/proc/self/statm", os.O_RDONLY) if os.path.exists("/proc/self/statm") else None
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.rest = self.resident()

    def resident(self) -> int:
        """Resident bytes of this process (0 without /proc); one read of a held file: microseconds."""
        if self.statm is None:
            return 0
        return int(os.pread(self.statm, 64, 0).split()[1]) * self.page

    def after_request(self) -> None:
        if self.malloc_trim is not None and self.resident() > self.rest + GROWTH_BYTES:
            self.malloc_trim(0)
