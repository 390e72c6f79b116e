"""A process's descendants and CPU time, from /proc: what the benchmarks divide by the requests served (CPU
per request, which a machine loaded by other work changes much less than requests/s)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """The processes `pid` started, theirs, and so on (not `pid` itself); one that ends meanwhile is left
    out."""
    found, unvisited = [], [pid]
    while unvisited:
        current = unvisited.pop()
        try:
            # a child belongs to the thread that made it
            for thread in Path(f"/proc/{current}/task").iterdir():
                children = [int(child) for child in (thread / "children").read_text().split()]
                found.extend(children)
                unvisited.extend(children)
        except OSError:  # ended
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of one process so far (all its threads); 0 once it has ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # the command name (2nd field) may hold spaces: the fields after it start past its closing parenthesis
    fields = stat[stat.rindex(")") + 2 :].split()
    user, system = int(fields[11]), int(fields[12])  # utime and stime, the 14th and 15th fields
    return (user + system) / TICKS_PER_S


@dataclass
class TreeCpu:
    """CPU seconds of a process and, apart, of its descendants."""

    own: float
    descendants: float


def tree_cpu_seconds(pid: int) -> TreeCpu:
    return TreeCpu(cpu_seconds(pid), sum(cpu_seconds(child) for child in descendants(pid)))
