"""What scenario a) of the benchmark measures the service against besides the naive baseline: the echo
endpoint (bench/echo.py, the framework's floor), and the CPU time per request of a server's process and of its
children (devtools/processes.py), which bench/bench.py prints beside requests/s."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from bench.bench import A_GOLDEN, ECHOED, ECHOES, fetch, measure_at, scenarios, start
from bench.instant import CANNED
from devtools.processes import cpu_seconds, descendants, tree_cpu_seconds

BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"


def test_the_cpu_time_of_a_process_and_of_its_descendants_apart():
    # a parent that burns 0.3 s of CPU and starts a child that burns 0.6 s, then both wait to be measured
    child = BURN.format(seconds=0.6) + "time.sleep(30)\n"
    parent = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {child!r}])\n"
        + BURN.format(seconds=0.3)
        + "time.sleep(30)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", parent])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            spent = tree_cpu_seconds(process.pid)
            if spent.own >= 0.3 and spent.descendants >= 0.6:
                break
            time.sleep(0.05)
        (kid,) = descendants(process.pid)
        assert 0.3 <= spent.own < 0.6  # the interpreter's start-up on top of the 0.3 s burnt
        assert 0.6 <= spent.descendants < 0.9
        assert cpu_seconds(kid) == pytest.approx(spent.descendants, abs=0.05)
    finally:
        for pid in descendants(process.pid):
            subprocess.run(["kill", str(pid)], check=False)
        process.kill()
        process.wait()
    assert cpu_seconds(process.pid) == 0.0  # ended: nothing to read


@pytest.mark.slow
def test_the_echo_endpoint_answers_the_body_and_is_measured_with_its_cpu_per_request():
    assert A_GOLDEN in ECHOED
    body = json.dumps(scenarios()[A_GOLDEN]).encode()
    server = start("bench.echo:app")
    try:
        assert asyncio.run(fetch(server.port, body)) == (200, body)
        result = measure_at(A_GOLDEN, "echo", server.port, body, 1, 2, pid=server.process.pid)
    finally:
        server.stop()
    assert result.requests > 0 and result.errors == 0
    assert result.response_bytes == len(body)
    assert result.server_cpu_us is not None and result.server_cpu_us > 0
    assert result.children_cpu_us == 0  # the echo computes nowhere else


@pytest.mark.slow
def test_the_typed_echo_answers_the_same_json_through_a_declared_body_parameter():
    """bench/echo.py's second floor: the body parsed into a dict[str, Any] and returned as JSON by FastAPI."""
    body = json.dumps(scenarios()[A_GOLDEN]).encode()
    server = start(ECHOES["typed-echo"])
    try:
        status, answered = asyncio.run(fetch(server.port, body))
        refused = server.post(b"[1, 2]")  # not an object: FastAPI's own 422
    finally:
        server.stop()
    assert status == 200 and json.loads(answered) == json.loads(body)
    assert refused.status_code == 422


@pytest.mark.slow
@pytest.mark.parametrize("app", ["bench.instant:in_process", "bench.instant:processes"])
def test_the_service_without_its_computation_answers_through_every_layer(app: str) -> None:
    """bench/instant.py: the service's app (the API key, the request id, the limits) answering at once."""
    body = json.dumps(scenarios()[A_GOLDEN]).encode()
    server = start(app)
    try:
        answered = server.post(body, headers={"x-request-id": "floor-1"})
        refused = server.post(body, headers={"content-type": "text/plain"})
        compute_processes = len(descendants(server.process.pid))
    finally:
        server.stop()
    assert answered.status_code == 200 and answered.content == CANNED
    assert answered.headers["x-request-id"] == "floor-1"
    assert answered.headers["x-content-type-options"] == "nosniff"
    assert refused.status_code == 415
    # the processes' app hands each request to compute processes (and multiprocessing's resource tracker)
    assert (compute_processes > 0) == (app == "bench.instant:processes")
