"""/metrics tells operators how many compute processes are up (what bench/hostile.py polls to time the
service's recovery after an attack): ATTENTION_MAX_CONCURRENT when none is being replaced. That it drops and
comes back when a process is killed is checked where a process is killed, in test_hostile_streams.py."""

from __future__ import annotations

from devtools.servers import Server
from tests.support.http import metric

UP = "attention_compute_processes_up "


def test_metrics_count_the_compute_processes_up(guarded: Server) -> None:
    """The guarded server runs one compute process (tests/conftest.py GUARDED_ENV)."""
    assert metric(guarded, UP) == 1
