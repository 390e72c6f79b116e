"""Resident memory from /proc, for the tests and benchmarks that bound it: one process, a process with all its
descendants (the server and its compute processes), and the peak of a process tree during a block."""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType

from devtools.processes import descendants


def resident_mb(pid: int) -> float:
    """The resident memory (VmRSS) of one process."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024


def tree_resident_mb(pid: int) -> float:
    """The resident memory of the process and all its descendants; one that ends meanwhile counts nothing."""
    total = 0.0
    for member in (pid, *descendants(pid)):
        try:
            total += resident_mb(member)
        except (OSError, StopIteration):  # ended (or a zombie without VmRSS)
            continue
    return total


class PeakResident:
    """`with PeakResident(pid) as memory:` samples the tree's resident memory every `period` s during the
    block; then `memory.rest` (before it), `memory.peak` and `memory.above_rest` are in MB."""

    def __init__(self, pid: int, period: float = 0.01):
        self.pid, self.period = pid, period
        self.rest = self.peak = tree_resident_mb(pid)
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="peak-resident", daemon=True)

    def _watch(self) -> None:
        while not self._done.wait(self.period):
            self.peak = max(self.peak, tree_resident_mb(self.pid))

    @property
    def above_rest(self) -> float:
        return self.peak - self.rest

    def __enter__(self) -> PeakResident:
        self._watcher.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._done.set()
        self._watcher.join()
        self.peak = max(self.peak, tree_resident_mb(self.pid))
