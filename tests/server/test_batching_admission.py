"""Dynamic batching and the places of the admission gate, over real HTTP (service/server/compute_pool.py,
service/compute/batching.py): a compute process computing a pass of several requests takes one place, as a
process computing one request does, so that clients who send and disconnect while their pass is computed (a
load generator cut at the end of a run) do not keep the requests that come next out with 503s.

The pass is made to start with all its requests at once: a request that cannot share a pass (BLOCKER) keeps
the only compute process busy while they arrive, and the process then finds ATTENTION_BATCH_MAX_REQUESTS of
them waiting (no window to wait out)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from devtools.servers import Server
from tests.server.test_batching import BLOCKER, post
from tests.support.http import metric

pytestmark = pytest.mark.slow

PASS = 4  # requests in the pass whose clients leave
# one compute process, and places for it and four waiting requests: the four of the pass fill them while the
# blocker computes, and four well-behaved requests must find room once their clients have left
ENV = {
    "ATTENTION_MAX_CONCURRENT": "1",
    "ATTENTION_MAX_QUEUE": str(PASS),
    "ATTENTION_BATCH_WINDOW_MS": "200",
    "ATTENTION_BATCH_MAX_REQUESTS": str(PASS),
    "ATTENTION_MAX_COMPUTE_ELEMENTS": str(10**9),  # the four fit one pass, not halved
    "ATTENTION_TORCH_THREADS": "1",  # the passes take about as long on a machine of many cores
}
# seconds of compute, four together (8 texts of 502 tokens through six layers on one thread), a small answer
HEAVY = {"text": [" ".join(["cat"] * 500)] * 2, "layer": 5, "include": ["output"], "heads": [0]}
LEFT = 'attention_rejected_total{reason="client_disconnected"}'
SKIPPED = "attention_computations_skipped_total"


def sent_and_left_open(server: Server, body: dict[str, object]) -> socket.socket:
    """A connection that has sent `body` and will never read its answer."""
    content = json.dumps(body).encode()
    connection = socket.create_connection(("127.0.0.1", server.port))
    connection.sendall(
        b"POST /attend HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(content)}\r\n\r\n".encode()
        + content
    )
    return connection


def wait_for(condition: Callable[[], bool], seconds: float = 60.0) -> None:
    until = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < until, "timed out waiting"
        time.sleep(0.02)


def passes_of(server: Server, size: int) -> float:
    """Passes of `size` requests so far (attention_batch_size's bucket counts are cumulative)."""
    at_most, below = (
        metric(server, f'attention_batch_size_bucket{{le="{n:.1f}"}}') for n in (size, size - 1)
    )
    return at_most - below


def leave_during_a_pass(server: Server, pool: ThreadPoolExecutor) -> tuple[float, float]:
    """PASS requests sent while BLOCKER computes, whose clients leave once their pass has started and before
    it ends (the server sees them go); the requests skipped so far and the passes of PASS before them."""
    blocker = pool.submit(post, server, BLOCKER)
    wait_for(lambda: metric(server, "attention_requests_in_flight ") >= 2)  # with /metrics's own
    leaving = [sent_and_left_open(server, HEAVY) for _ in range(PASS)]
    wait_for(lambda: metric(server, "attention_requests_in_flight ") >= 2 + PASS)
    skipped, left, passes = metric(server, SKIPPED), metric(server, LEFT), passes_of(server, PASS)
    assert blocker.result().status_code == 200
    time.sleep(0.3)  # the process takes the four at once and starts computing them: seconds
    for connection in leaving:
        connection.close()
    wait_for(lambda: metric(server, LEFT) == left + PASS)  # the server saw them go: none was answered
    return skipped, passes


def test_requests_whose_clients_left_during_their_pass_keep_one_place_not_four():
    with Server(ENV) as server, ThreadPoolExecutor(PASS + 1) as pool:
        skipped, passes = leave_during_a_pass(server, pool)
        # well-behaved requests now, each alone in its pass (a layer of its own), while the four compute
        answers = [
            pool.submit(post, server, {"text": "The cat sat.", "layer": layer, "include": ["weights"]})
            for layer in range(PASS)
        ]
        statuses = [answer.result().status_code for answer in answers]
        # the clients left while their pass was computed (not before it started: they would have been
        # skipped), in one pass of four
        assert metric(server, SKIPPED) == skipped
        assert passes_of(server, PASS) == passes + 1
        assert statuses == [200] * PASS, [answer.result().text for answer in answers]
        assert metric(server, 'attention_rejected_total{reason="overloaded"}') == 0


def test_a_part_of_a_batch_whose_clients_left_before_it_started_is_not_computed():
    # four texts at most in a pass: the four requests are computed in two passes of two, one after the other;
    # the clients leave during the first, so the second's two are skipped (their tickets are taken when their
    # pass starts, not with the first's), their places free at once
    with Server({**ENV, "ATTENTION_MAX_BATCH": "4"}) as server, ThreadPoolExecutor(2) as pool:
        skipped, _ = leave_during_a_pass(server, pool)
        pairs = passes_of(server, 2)
        assert post(server, {"text": "The cat sat."}).status_code == 200  # after the pass, in order
        assert metric(server, SKIPPED) == skipped + 2
        assert passes_of(server, 2) == pairs + 1
