"""A stub compute process for driving service.server.compute_pool.ComputePool without torch: it speaks the
frames of service/protocol.py and answers by the body it gets.

    b"echo..."    200, the body itself
    b"pid"        200, this process's id
    b"computed"   200, how many requests this process computed before this one (skipped ones are not)
    b"sleep:0.5"  200, b"slept", after 0.5 s
    b"company"    200, b"1" if the server sent it with company (other requests in the service), else b"0"
    b"noted:3"    a BATCH_NOTE frame of 3 (a batch of three is about to be answered), then 200, b"noted"
    b"crash"      the process exits at once (as if the kernel's out-of-memory killer took it)
    b"stream:3:0.1"  a stream: 200 b"first", then b"line 0" ... b"line 2", each after 0.1 s, then its end
    b"stream-crash:2"  a stream: b"first", b"line 0", b"line 1", then the process exits
    b"stream-broken:2"  a stream: b"first", b"line 0", b"line 1", then a last frame 422 b"broke" (the
                      computation failed after its first frame)
    otherwise     400, b"unknown"

Its start-up report is Started with no models; with default_model "fail" it reports 503 instead (a model that
cannot be served). Module level and light, so that a spawned process imports it quickly. serve_passes, below,
computes in passes of several requests (dynamic batching)."""

from __future__ import annotations

import json
import os
import socket
import time

from service.compute.gathering import Requests
from service.protocol import ANSWER, BATCH_NOTE, REQUEST, Started, Tickets, skipped
from service.settings import Settings

FAIL_MODEL = "fail"


def _send(channel: socket.socket, status: int, body: bytes, last: bool = True) -> None:
    channel.sendall(ANSWER.pack(status, last, len(body)) + body)


def _stream(channel: socket.socket, body: bytes) -> None:
    command, count, *pause = body.decode().split(":")
    _send(channel, 200, b"first", last=False)
    for index in range(int(count)):
        time.sleep(float(pause[0]) if pause else 0)
        _send(channel, 200, f"line {index}".encode(), last=False)
    if command == "stream-crash":
        os._exit(1)
    if command == "stream-broken":
        _send(channel, 422, b"broke", last=True)
        return
    _send(channel, 200, b"", last=True)


def _answer(body: bytes, computed: int) -> tuple[int, bytes]:
    if body.startswith(b"echo"):
        return 200, body
    if body == b"pid":
        return 200, str(os.getpid()).encode()
    if body == b"computed":
        return 200, str(computed).encode()
    if body.startswith(b"sleep:"):
        time.sleep(float(body.removeprefix(b"sleep:")))
        return 200, b"slept"
    if body == b"crash":
        os._exit(1)
    return 400, b"unknown"


def serve(channel: socket.socket, tickets: Tickets, settings: Settings) -> None:
    """The stub's main function, a ComputeTarget: report, then answer until the server closes the socket,
    computing only the requests whose ticket it takes, as the real one (service/protocol.py)."""
    if settings.default_model == FAIL_MODEL:
        _send(channel, 503, json.dumps({"detail": "the stub cannot serve its model"}).encode())
        return
    report = Started(pid=os.getpid(), device="stub", torch_version="none", threads_in_use=1, models=[])
    _send(channel, 200, json.dumps(report).encode())
    requests = channel.makefile("rb")
    number = computed = 0
    while len(head := requests.read(REQUEST.size)) == REQUEST.size:
        deadline, _, _, company, length = REQUEST.unpack(head)
        body = requests.read(length)
        skip = skipped(tickets, number, deadline)
        number += 1
        if skip is not None:
            _send(channel, *skip)
            continue
        if body.startswith(b"stream"):
            _stream(channel, body)
        elif body == b"company":  # whether the server said other requests were in the service with it
            _send(channel, 200, str(int(company)).encode())
        elif body.startswith(b"noted:"):
            _send(channel, BATCH_NOTE, body.removeprefix(b"noted:"))
            _send(channel, 200, b"noted")
        else:
            _send(channel, *_answer(body, computed))
        computed += 1


def serve_passes(channel: socket.socket, tickets: Tickets, settings: Settings) -> None:
    """serve's twin for dynamic batching: every body is b"pass:SECONDS:WINDOW", and a request is computed in
    one pass with those that come within WINDOW seconds after it (as service/compute/batching.py: their
    tickets taken when the pass starts), which lasts the longest SECONDS of them; then a BATCH_NOTE and each
    answer, b"slept", in order (a request whose ticket the server took back, or past its deadline, is
    answered as skipped)."""
    report = Started(pid=os.getpid(), device="stub", torch_version="none", threads_in_use=1, models=[])
    _send(channel, 200, json.dumps(report).encode())
    requests = Requests(channel)
    while (first := requests.next()) is not None:
        window = float(first.body.decode().split(":")[2])
        gathered = [first, *requests.within(window, 2 * settings.batch_max_requests)]
        skips = {sent.number: skipped(tickets, sent.number, sent.deadline) for sent in gathered}
        computed = [sent for sent in gathered if skips[sent.number] is None]
        time.sleep(max((float(sent.body.decode().split(":")[1]) for sent in computed), default=0))
        _send(channel, BATCH_NOTE, str(len(computed)).encode())
        for sent in gathered:
            skip = skips[sent.number]
            _send(channel, *(skip[:2] if skip is not None else (200, b"slept")))
