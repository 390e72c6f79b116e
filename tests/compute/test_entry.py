"""Where a compute process starts (service/compute/entry.py): waiting OpenMP threads sleep rather than spin
unless the operator chose a policy (docs/operations.md, "Threads and kernels")."""

from __future__ import annotations

import os

import pytest

from service.compute import entry, process


def policy_when_serving(monkeypatch: pytest.MonkeyPatch) -> str | None:
    """OMP_WAIT_POLICY as it is when the process's serve() starts."""
    seen: list[str | None] = []
    monkeypatch.setattr(os, "environ", dict(os.environ))  # what the call sets is undone
    monkeypatch.setattr(process, "serve", lambda *args: seen.append(os.environ.get("OMP_WAIT_POLICY")))
    entry.compute_process(None, None, None)  # type: ignore[arg-type]
    return seen[0]


def test_a_compute_process_lets_waiting_threads_sleep(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "")
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert policy_when_serving(monkeypatch) == "PASSIVE"


def test_an_operators_wait_policy_is_kept(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert policy_when_serving(monkeypatch) == "ACTIVE"
