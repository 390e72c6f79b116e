"""Giving memory back after a large request: glibc keeps the heap it freed (and raises its mmap threshold
after big frees), so a compute process that once held gigabytes for one request would keep them. After a
request that grew the process, malloc_trim returns the free heap to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

GROWTH_BYTES = 32 * 2**20  # trimming costs milliseconds: only after a request that grew the process this much


class MemoryKeeper:
    def __init__(self) -> None:
        library = ctypes.util.find_library("c")
        libc = ctypes.CDLL(library) if library else None
        self.malloc_trim = getattr(libc, "malloc_trim", None)  # glibc only (not musl, not macOS)
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
