"""Dynamic batching's wait (service/compute/batching.py gather) as a compute process sees it, over a real
socket pair with requests framed as the server frames them (service/protocol.py REQUEST): a request sent with
company (other requests waiting or computing in the service) waits the window for others to share its pass; a
request sent alone waits for nobody, so a client sending one request at a time is not slowed by the window."""

from __future__ import annotations

import json
import socket
import threading
import time

from service.compute.batching import gather
from service.compute.gathering import Requests
from service.protocol import ATTEND, REQUEST, ResponseFormat
from service.settings import Settings

WINDOW_MS = 1000.0
SETTINGS = Settings(batch_window_ms=WINDOW_MS, batch_max_requests=4)
BODY = json.dumps({"text": "The cat sat on the mat", "layer": 0, "include": ["weights"]}).encode()


def framed(company: bool) -> bytes:
    deadline = time.monotonic() + 60
    return REQUEST.pack(deadline, ATTEND, ResponseFormat.JSON, company, len(BODY)) + BODY


def gathered_after(first_company: bool, later: int = 0) -> tuple[int, float]:
    """How many requests gather returns for a first request sent with or without company, and the seconds it
    took; `later` more requests are sent 50 ms after the first."""
    server, process = socket.socketpair()
    with server, process:
        server.sendall(framed(first_company))
        timer = threading.Timer(0.05, lambda: server.sendall(framed(True) * later))
        timer.start()
        requests = Requests(process)
        first = requests.next()
        assert first is not None and first.company is first_company
        began = time.monotonic()
        turns = gather(first, requests, SETTINGS)
        took = time.monotonic() - began
        timer.join()
    return len(turns), took


def test_a_request_sent_alone_does_not_wait_for_the_window():
    count, took = gathered_after(first_company=False)
    assert count == 1
    assert took < WINDOW_MS / 1000 / 2, f"a lone request waited {took:.3f} s for a pass that cannot form"


def test_a_request_with_company_waits_the_window_and_shares_its_pass():
    count, took = gathered_after(first_company=True, later=2)
    assert count == 3  # the two sent 50 ms later came within the window
    assert took >= WINDOW_MS / 1000 * 0.9  # fewer than batch_max_requests: it waited the whole window


def test_requests_already_sent_behind_a_lone_one_still_share_its_pass():
    server, process = socket.socketpair()
    with server, process:
        server.sendall(framed(False) + framed(True))
        requests = Requests(process)
        first = requests.next()
        assert first is not None
        began = time.monotonic()
        assert len(gather(first, requests, SETTINGS)) == 2
        assert time.monotonic() - began < WINDOW_MS / 1000 / 2
