"""The compute pool and the admission gate: all torch work runs in compute processes, never in this one.

max_concurrent compute processes (service/compute/process.py) answer requests one at a time each. A process
holds at most PIPELINE requests: the one it computes and the next, already sent, so that it goes from one to
the next without waiting for this process. Up to max_queue more requests wait here; beyond that a request is
refused at once (503 with Retry-After). No request waits and computes longer than request_timeout_s: past it
the answer is a 504 and a process still computing it is killed and replaced, so a runaway computation gives
its core and memory back. A process that dies (killed by the operating system for memory, say) fails the
request it was computing with a 503 and is replaced too; the requests sent to it behind that one go to another
process. A client that disconnects gives its place back at once, unless its request is being computed: that
place stays taken until the computation ends or its time limit kills it. A request already sent to a process
but not yet started there (the one behind the job it computes) is cancelled: the server takes its ticket back
(service/protocol.py Tickets), so the process skips it and answers CANCELLED at once, and its place is free at
once; when the process has taken the ticket first, it is computing the request. So a client that sends heavy
requests and hangs up at once cannot keep the processes busy with computations nobody waits for while holding
no place.

A streamed answer (NDJSON) comes as several frames: the first is the answer `run` returns, the others wait
here for `Held.stream` to deliver them. The process's frames are read as fast as it computes them, whether or
not its client reads: a client that stops reading must not hold a compute process (compose runs one) and so
every other client. Its undelivered frames are memory, so they count against the answer bytes in flight as
answers in one piece do: a frame that does not fit the room left, or past the client's share of it, ends the
stream with Overloaded (its error line), and the frames still to come are read and dropped.
The time limit holds until the last frame: past it the stream ends with the TimedOut error and the process is
killed, as when it dies mid-stream. A JSON answer over a frame comes the same way (service/compute/pipeline.py
encoded_frames), bounded by the room alone as an answer in one piece is; its last frame with a status other
than 200 means it broke off (AnswerBroken: JSON has no error line).

A job's computation ends in one place, `_settle` (answered, failed, timed out, or a stream's end), and its
place is freed in one place, `_release`: once its answer is computed, when it failed, or when a client that
left no longer waits for it (a computation whose client left keeps its place until its end); its bytes held
here count until the answer is delivered or dropped. A cancelled job's computation ends when its CANCELLED
frame comes, in `_settle` too.

With dynamic batching a process holds more (held_per_process) and computes several in one forward pass
(service/compute/batching.py), which takes one place for them all (`_places_taken`), as one request computed
alone does: so the requests of a pass whose clients left do not keep the next requests out. When the first
of them runs past its time limit the process is killed as above, and the others, not answered, wait again
here and go to another process within their own time.

Beside them, ATTENTION_LIGHT_PROCESSES light lanes (`lanes`): compute processes that are sent only the
requests of clients whose requests were measured short (fair_queue.py), with small bodies, one per client at
a time, so that while the main processes compute long requests, a short one is computed at once instead of
waiting for them. They time
out, die and are replaced as the others; `up` (readiness, a fast 503 when none) counts the main processes
only, since a light lane cannot compute every request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import socket
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.process import BaseProcess
from typing import Any

import orjson

from schemas.service_info import ModelInfo
from service.compute.entry import compute_process
from service.errors import (
    AnswerBroken,
    ClientGone,
    ComputeProcessDied,
    ModelError,
    NoComputeProcess,
    Overloaded,
    TimedOut,
)
from service.protocol import ATTEND, BATCH_NOTE, REQUEST, ResponseFormat, Started, Tickets
from service.server.answer_frames import AnswerFrames, died
from service.server.compute_interface import ClientWatch, FrameSender, Held, described_models
from service.server.fair_queue import FairQueue
from service.server.shares import crowded, give_back
from service.settings import Settings

log = logging.getLogger("attention_service.compute_pool")
SPAWN = multiprocessing.get_context("spawn")  # fork would copy the event loop's threads and sockets
PIPELINE = 2
STOP_SECONDS = 10
LIGHT_BODY_BYTES = 2**18  # the largest body a light lane computes (ATTENTION_LIGHT_PROCESSES)

Answer = tuple[int, bytes]  # HTTP status, body (its first frame for a stream)
ComputeTarget = Callable[[socket.socket, Tickets, Settings], None]  # a compute process's main function
# what follows a stream's first frame in Job.rest: a frame, None for the end, or why it broke
StreamItem = bytes | Exception | None


@dataclass(eq=False)
class Job:
    body: bytes
    deadline: float  # on the event loop's clock, time.monotonic(), which the compute processes share
    media: ResponseFormat = ResponseFormat.JSON
    answer: asyncio.Future[Answer] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    # what `run` waits on: set with the answer itself (`_tell`), not from the answer's done callback, which
    # would wake `run` a turn of the event loop later (issue 26), or when the client leaves
    woken: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    orphaned: bool = False  # nobody reads its answer (its client left, or stopped reading): frames dropped
    ended: bool = False  # its computation is over: answered in full, failed or timed out
    rest: asyncio.Queue[StreamItem] | None = None  # a stream's frames after the first (from its first frame)
    timer: asyncio.TimerHandle | None = None  # its deadline
    kind: int = ATTEND  # what the body is (service/protocol.py)
    ticket: int = -1  # its number at the process it was last sent to: its ticket's (service/protocol.py)
    cancelled: bool = False  # its ticket taken back before the process started it: it is skipped there
    held_bytes: int = 0  # of its answer, held here until it is delivered (max_answer_bytes_in_flight)
    cut: bool = False  # a stream whose frames outgrew the room for answers: ended, the rest dropped
    client: str = ""  # the client's address
    sent_at: float = 0.0  # when it was last sent to a process (the time it computed counts from there)


def held_per_process(settings: Settings) -> int:
    """Requests sent to a compute process at once: PIPELINE, or with dynamic batching two batches' worth
    (one computed, the next gathering), so that a batch can fill up (service/compute/batching.py)."""
    return PIPELINE if settings.batch_window_ms == 0 else max(PIPELINE, 2 * settings.batch_max_requests)


class ComputeProcess:
    """One compute process, the server's end of its socket, and the jobs sent to it, in the order it
    answers."""

    def __init__(
        self,
        process: BaseProcess,
        transport: asyncio.Transport,
        frames: AnswerFrames,
        tickets: Tickets,
        started: Started,
    ):
        self.process, self.transport, self.frames, self.started = process, transport, frames, started
        self.tickets = tickets
        self.sent: deque[Job] = deque()
        self.numbered = 0  # jobs sent so far: the next one's number
        self.timed_out = False
        self.free_at = 0.0  # when it last answered: the next job computes from then (or from its sending)
        self.light = False  # a light lane: sent only the requests of clients measured short
        self.first = True  # its next frame is the first of the answer to sent[0]

    @classmethod
    async def start(cls, settings: Settings, target: ComputeTarget) -> ComputeProcess:
        ours, theirs = socket.socketpair()
        tickets = Tickets(held_per_process(settings))
        process = SPAWN.Process(
            target=target, args=(theirs, tickets, settings), name="attention-compute", daemon=True
        )
        await asyncio.to_thread(process.start)
        theirs.close()
        transport, frames = await asyncio.get_running_loop().create_unix_connection(AnswerFrames, sock=ours)
        try:
            status, report, _ = await frames.report
        except ComputeProcessDied:
            transport.close()
            tickets.close()
            raise ModelError(
                f"the compute process exited with code {process.exitcode} while starting"
            ) from None
        if status != 200:
            transport.close()
            tickets.close()
            raise ModelError(orjson.loads(report)["detail"])
        return cls(process, transport, frames, tickets, orjson.loads(report))

    def send(self, job: Job, company: bool) -> None:
        """Sends `job`; `company`: other requests are waiting or computing in the service (with none, the
        process does not wait for requests to batch it with: service/compute/batching.py gather)."""
        job.ticket, self.numbered = self.numbered, self.numbered + 1
        self.tickets.issue(job.ticket)  # before the request: the process looks for it once it has read it
        self.sent.append(job)
        head = REQUEST.pack(job.deadline, job.kind, job.media, company, len(job.body))
        self.transport.writelines((head, job.body))

    def cancel(self, job: Job) -> bool:
        """Takes back the ticket of `job`, sent here: True if the process had not started it (it skips it),
        False if it is computing it."""
        return self.tickets.take(job.ticket)

    def computing_beside_first(self, admitted: set[Job]) -> int:
        """The admitted jobs sent here behind the first that the process has started (their tickets taken):
        computed in one pass with it (dynamic batching: service/compute/batching.py takes a pass's tickets
        when it starts), or the next one, started just after the first was answered."""
        behind = itertools.islice(self.sent, 1, None)
        return sum(
            1
            for job in behind
            if job in admitted and not job.cancelled and not self.tickets.waiting(job.ticket)
        )

    def stop_computing(self, job: Job) -> None:
        """Asks the process to stop `job`, which it computes, between two of its frames (service/stops.py):
        nobody will read the rest of its answer."""
        self.tickets.stops.stop(job.ticket)

    def kill(self) -> None:
        """Stops the process in the middle of a request that ran past its time limit."""
        self.timed_out = True
        self.process.kill()

    async def stop(self) -> None:
        """Closing the socket ends the process's loop once it has answered; it is killed if it has not ended
        within STOP_SECONDS."""
        self.transport.close()
        await asyncio.to_thread(self.process.join, STOP_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            await asyncio.to_thread(self.process.join)
        self.tickets.close()


class ComputePool:
    """The compute processes behind the routes (service/server/compute_interface.py Compute)."""

    def __init__(
        self,
        settings: Settings,
        on_replace: Callable[[str], None] = lambda reason: None,
        target: ComputeTarget = compute_process,
        on_skip: Callable[[], None] = lambda: None,
        on_batch: Callable[[int], None] = lambda size: None,
    ):
        self.settings, self.target = settings, target
        self.held = held_per_process(settings)
        self.pass_size = settings.batch_max_requests if settings.batch_window_ms > 0 else 1
        # a light lane computing is a place too (the message of a refusal names it)
        self.capacity = settings.max_concurrent + settings.light_processes + settings.max_queue
        self.timeout = settings.request_timeout_s
        self.admitted: set[Job] = set()  # waiting, computing, or answered and not yet delivered
        # by client: a client whose requests take long waits behind the short requests of others
        self.waiting: FairQueue[Job] = FairQueue(settings.light_request_s, settings.send_ahead_request_s)
        self.processes: set[ComputeProcess] = set()
        self.lanes: set[ComputeProcess] = set()  # the light lanes (ATTENTION_LIGHT_PROCESSES)
        self.on_replace = on_replace  # told why each process is replaced (for metrics)
        self.on_skip = on_skip  # told of each job never computed because its client left (for metrics)
        self.on_batch = on_batch  # told how many requests each forward pass computed (for metrics)
        # each process's answer reader, and replacements under way
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self.started: Started | None = None
        self.described: list[ModelInfo] = []
        self.answer_bytes = 0  # of answers computed and not yet delivered: at most max_answer_bytes_in_flight
        self.answer_bytes_by_client: Counter[str] = Counter()  # the same, by client address

    async def start(self) -> Started:
        """Starts every compute process; raises ModelError if any fails (the service must not start)."""
        count, lanes = self.settings.max_concurrent, self.settings.light_processes
        started = await asyncio.gather(
            *(self._start_process(light=number >= count) for number in range(count + lanes)),
            return_exceptions=True,
        )
        for process in started:
            if isinstance(process, ComputeProcess):
                self._add(process)
        failure = next((error for error in started if isinstance(error, BaseException)), None)
        if failure is not None:
            await self.shutdown()
            raise failure
        self.started = next(iter(self.processes)).started
        self.described = described_models(self.started)
        return self.started

    @property
    def models(self) -> list[ModelInfo]:
        """The models as the compute processes reported them at start-up (see ModelRegistry.describe)."""
        return self.described

    @property
    def up(self) -> int:
        """Compute processes running, not counting those being replaced nor the light lanes."""
        return len(self.processes)

    def _everyone(self) -> itertools.chain[ComputeProcess]:
        """Every compute process running: the main ones and the light lanes."""
        return itertools.chain(self.processes, self.lanes)

    def _computing(self, job: Job) -> ComputeProcess | None:
        """The process computing `job` (the first job sent to it), if any."""
        return next((p for p in self._everyone() if p.sent and p.sent[0] is job), None)

    async def _start_process(self, light: bool) -> ComputeProcess:
        process = await ComputeProcess.start(self.settings, self.target)
        process.light = light
        return process

    async def run(
        self,
        body: bytes,
        disconnected: ClientWatch | None = None,
        media: ResponseFormat = ResponseFormat.JSON,
        kind: int = ATTEND,
        client: str = "",
    ) -> Held:
        """The status and body a compute process answers to the request `body` in the format `media`, with the
        job's place still taken: the caller calls `release` once the answer is delivered (undelivered, it is
        memory); a stream's caller first delivers the rest of it with `stream`. `disconnected()` returns when
        the client goes away (started only once the request is admitted); `kind` says what the body is
        (service/protocol.py); `client` is the client's address, whose share of the answer bytes is bounded
        (service/server/shares.py)."""
        if not self.processes:
            raise NoComputeProcess(
                "no compute process is running (they are being replaced, which takes seconds); retry shortly"
            )
        if self._places_taken() >= self.capacity:
            raise Overloaded.no_place(self.capacity, self.settings.light_processes)
        limit, share = self.settings.max_answer_bytes_in_flight, self.settings.client_share
        holds = self.answer_bytes_by_client[client]
        if self.answer_bytes >= limit or crowded(self.answer_bytes, limit, holds, share):
            raise Overloaded(self._no_room_for_answers(""))
        loop = asyncio.get_running_loop()
        job = Job(body, deadline=loop.time() + self.timeout, media=media, kind=kind, client=client)
        self.admitted.add(job)
        self.waiting.append(job)
        self._dispatch()
        # the time limit holds whether or not the client stays: at the deadline the job ends with a 504 (or
        # its stream with TimedOut) and a process still computing it is killed
        job.timer = loop.call_at(job.deadline, self._time_out, job)
        watcher = asyncio.ensure_future(disconnected()) if disconnected is not None else None
        if watcher is not None:
            watcher.add_done_callback(partial(_wake, job.woken))
        try:
            await job.woken  # cancelled with `run`, the answer is not: it is set as if `run` still waited
        finally:
            if watcher is not None:
                watcher.cancel()
        if job.answer.done():
            status, content = job.answer.result()  # raises TimedOut or ComputeProcessDied
            stream = None if job.rest is None else partial(self._stream, job)
            return Held(status, content, partial(self._release, job), stream)
        # the client left: its place is given back at once, unless it is being computed: then the place stays
        # taken until the computation ends (its answer is dropped) or its deadline kills it, so that clients
        # who hang up cannot have more computations running than there are places
        job.orphaned = True
        if self._withdraw(job):
            self.on_skip()
            self._release(job)
        else:
            self._stop_computing(job)  # a stream stops after its first line
        raise ClientGone()

    def _places_taken(self) -> int:
        """The admitted jobs, a process computing several in one pass (dynamic batching) taking one place for
        them all: a place is a computation or a request waiting for one (max_concurrent + max_queue), so that
        a pass of k requests, which takes about the time of one, does not keep k - 1 waiting requests out.
        The tickets are looked at only when the admitted jobs alone fill the places."""
        taken = len(self.admitted)
        if taken < self.capacity:
            return taken
        return taken - sum(process.computing_beside_first(self.admitted) for process in self._everyone())

    def _answer_room(self) -> int:
        return self.settings.max_answer_bytes_in_flight - self.answer_bytes

    def _fits(self, job: Job, size: int) -> bool:
        """Whether `size` more bytes of a stream's unread lines fit: within max_answer_bytes_in_flight and its
        client's share of it. The share holds even while there is room: a stream's lines keep coming after it
        was admitted, and a client that stops reading must not take the room that the answers of others need
        (they would be computed, then dropped for want of room). A JSON answer sent in pieces is an answer in
        one piece that is never held whole here: bounded by the room alone, as that one is."""
        limit, total = self.settings.max_answer_bytes_in_flight, self.answer_bytes + size
        if job.media == ResponseFormat.JSON:
            return total <= limit
        holds = self.answer_bytes_by_client[job.client] + size
        return total <= limit and holds <= self.settings.client_share * limit

    def _hold(self, job: Job, size: int) -> None:
        """Counts `size` bytes of the answer to `job` as held here until they are delivered."""
        job.held_bytes += size
        self.answer_bytes += size
        self.answer_bytes_by_client[job.client] += size

    def _let_go(self, job: Job, size: int) -> None:
        """Counts `size` bytes of the answer to `job` as delivered, or dropped."""
        job.held_bytes -= size
        self.answer_bytes -= size
        give_back(self.answer_bytes_by_client, job.client, size)

    def _no_room_for_answers(self, what: str) -> str:
        """Why an answer (`what` does not fit, or none when empty) is refused for want of room."""
        answer = f"{what}: " if what else ""
        return (
            f"{answer}the server holds {self.answer_bytes:,} bytes of answers its clients have not read yet "
            f"(ATTENTION_MAX_ANSWER_BYTES_IN_FLIGHT={self.settings.max_answer_bytes_in_flight:,}, of which "
            f"one client holds at most a share, ATTENTION_CLIENT_SHARE={self.settings.client_share:g}, once "
            "they run short); retry shortly"
        )

    def _withdraw(self, job: Job) -> bool:
        """Makes sure a job whose client left is never computed, if it is not being computed: True then (taken
        out of the queue, or cancelled at the process it was sent to, which answers it CANCELLED), False if a
        process is computing it: the first job sent to it (being computed, or about to be), or one behind it
        that the process has started already (its ticket taken, its answer to the job before not yet read)."""
        if job in self.waiting:
            self.waiting.remove(job)
        else:
            process = next((p for p in self._everyone() if job in p.sent), None)
            if process is None or process.sent[0] is job or not process.cancel(job):
                return False
            job.cancelled = True
        if job.timer is not None:
            job.timer.cancel()  # it computes nothing that its deadline must stop
        return True

    def _time_out(self, job: Job) -> None:
        """The job's deadline: it fails with TimedOut (a stream under way ends with it), and the process
        computing it, if any, is killed (a job sent to a process but not yet started is skipped there: the
        process sees its deadline has passed)."""
        if job.ended:
            return
        self._settle(job, TimedOut.after(self.timeout))
        computing = self._computing(job)
        if computing is not None:
            computing.kill()

    def _stop_computing(self, job: Job) -> None:
        """Asks the process computing `job`, if any, to stop it: nobody will read the rest of its answer (a
        stream is stopped between two lines; its place is freed when the process says it has stopped)."""
        computing = self._computing(job)
        if computing is not None:
            computing.stop_computing(job)

    def _settle(self, job: Job, outcome: Answer | Exception | None) -> None:
        """The one place where a job's computation ends: its waiter is told (once). A failure frees its place
        at once; an answer keeps it until delivered (`_release`), unless nobody is left to deliver it to. A
        stream under way (its first frame answered) ends with `outcome` None, or with the error that broke
        it, which its reader gets after the frames before it."""
        if job.ended:
            return  # its deadline passed first; this late answer is dropped
        job.ended = True
        if job.timer is not None:
            job.timer.cancel()
        if job in self.waiting:
            self.waiting.remove(job)
        if job.rest is not None:
            if job.orphaned:
                self._release(job)
                return
            if not job.cut:
                job.rest.put_nowait(outcome if isinstance(outcome, Exception) else None)
            # computed: its place is free, its undelivered frames stay counted (as an answer in one piece)
            self.admitted.discard(job)
            return
        assert outcome is not None
        if isinstance(outcome, Exception):
            _tell(job, outcome)
            self._release(job)
        else:
            self._hold(job, len(outcome[1]))
            _tell(job, outcome)
            # computed: its place is free (its bytes stay counted until it is delivered), so that clients
            # slow to read their answers take memory, bounded, not the places of the others
            self.admitted.discard(job)
            if job.orphaned:
                self._release(job)

    def _release(self, job: Job) -> None:
        """Frees the job's place and its bytes: its answer is delivered, or there is none to deliver. A stream
        still being computed keeps its place until it ends; from now on its frames are dropped."""
        if job.rest is not None:
            job.orphaned = True
            _drop_queued(job.rest)
            if not job.ended:
                self._stop_computing(job)
        self._let_go(job, job.held_bytes)
        if job.rest is None or job.ended:
            self.admitted.discard(job)

    def _open_stream(self, job: Job, first: Answer) -> None:
        """A stream's first frame: the answer `run` returns; the frames after it go to `job.rest`."""
        job.rest = asyncio.Queue()
        if job.answer.done():  # already told it failed
            return
        if job.media == ResponseFormat.JSON:  # a piece of an answer counted whole, as one in one piece is
            self._hold(job, len(first[1]))
        _tell(job, first)
        if job.orphaned:  # its client left while it waited: nobody delivers it
            self._release(job)

    def _stream_frame(self, job: Job, content: bytes) -> None:
        """One frame after a stream's first, held for its reader and counted until delivered; never waited
        for, so that the process's next frame is read at once: a client that stops reading holds memory,
        bounded, not the process. A frame that does not fit (`_fits`) ends the stream with Overloaded, after
        the frames before it; it and the frames after it are dropped."""
        if job.ended or job.orphaned or job.cut or job.rest is None:
            return
        if not self._fits(job, len(content)):
            job.cut = True
            self._stop_computing(job)
            what = f"this stream's next {len(content):,} bytes do not fit ({job.held_bytes:,} not yet read)"
            job.rest.put_nowait(Overloaded(self._no_room_for_answers(what)))
            return
        self._hold(job, len(content))
        job.rest.put_nowait(content)

    async def _stream(self, job: Job, send: FrameSender) -> None:
        """Delivers a stream's frames after its first with `send`, until its end; raises TimedOut or
        ComputeProcessDied when it broke off (the frames before that are delivered first)."""
        assert job.rest is not None
        while True:
            item = await job.rest.get()
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            await send(item)
            self._let_go(job, len(item))

    def _dispatch(self) -> None:
        """Sends waiting jobs to the processes with room (which job: fair_queue.py): an idle process first, a
        light lane before a main process (it keeps the main processes free for the long requests), and of the
        busy main processes the least loaded: a short request sent ahead to a main process busy with a long
        one would wait for it, which is what the light lanes are for."""
        while self.waiting:
            candidates = sorted(
                (p for p in self._everyone() if len(p.sent) < self.held),
                key=lambda p: (bool(p.sent), not p.light, len(p.sent)),
            )
            taken = next(
                (
                    (process, job)
                    for process in candidates
                    if (job := self.waiting.take(bool(process.sent), self._light if process.light else None))
                    is not None
                ),
                None,
            )
            if taken is None:
                return
            process, job = taken
            job.sent_at = asyncio.get_running_loop().time()
            process.send(job, company=len(self.admitted) > 1)  # admitted: waiting or computing, with `job`

    def _light(self, job: Job) -> bool:
        """Whether a light lane may compute `job`: its client's requests were measured short, its body is
        small (a 32 MB body of numbers, refused from its commas, still takes a lane a while to read), and its
        client has less than one pass of requests on the lanes (one request with dynamic batching off): a
        client measured short could then send long requests with small bodies, light until the first is
        measured, and hold the lanes with them; it holds them for one pass at most, and its others wait for
        the main processes. One request, not one pass, made a well-behaved client's concurrent requests (a
        page, or every user behind one proxy) wait behind the long ones on the main processes: the hostile
        bench's p99 went from 1.7x to 3.3x quiet's."""
        on_lanes = sum(sent.client == job.client for lane in self.lanes for sent in lane.sent)
        return (
            len(job.body) <= LIGHT_BODY_BYTES and self.waiting.light(job.client) and on_lanes < self.pass_size
        )

    def _add(self, process: ComputeProcess) -> None:
        (self.lanes if process.light else self.processes).add(process)
        process.frames.room = self._answer_room
        process.frames.listen(partial(self._on_frame, process), partial(self._on_lost, process))
        self._dispatch()

    def _spawn_task(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _on_frame(
        self, process: ComputeProcess, status: int, content: bytes | None, last: bool, length: int
    ) -> None:
        """A frame from `process` (service/server/answer_frames.py), as soon as it has come."""
        if status == BATCH_NOTE:  # between two answers (service/compute/batching.py)
            self.on_batch(int(content or b"1"))
            return
        first, job, broken = process.first, process.sent[0], None
        if content is None:  # an answer that does not fit the room left: read and dropped
            too_large = f"this answer's {length:,} bytes do not fit"
            self._settle(process.sent.popleft(), Overloaded(self._no_room_for_answers(too_large)))
        elif first and last:
            self._settle(process.sent.popleft(), (status, content))
        elif first:
            self._open_stream(job, (status, content))
        elif last and status != 200 and job.media == ResponseFormat.JSON:
            # a JSON answer in pieces has no line to say it broke off: its delivery ends unfinished
            broken = AnswerBroken(f"the compute process broke off this answer with status {status}")
        elif content:
            self._stream_frame(job, content)
        if last and not first:  # a stream's end
            self._settle(process.sent.popleft(), broken)
        process.first = last
        # only an answer in one piece is bounded by the room once it comes (a stream's frames: _stream_frame)
        process.frames.room = self._answer_room if last else None
        if last:
            self._measure(process, job)
            self._dispatch()

    def _on_lost(self, process: ComputeProcess) -> None:
        self._lost(process, died())

    def _measure(self, process: ComputeProcess, job: Job) -> None:
        """The time `job`, just answered, took to compute, for its client's turns (fair_queue.py)."""
        now = asyncio.get_running_loop().time()
        began, process.free_at = max(job.sent_at, process.free_at), now
        if not job.cancelled:
            self.waiting.measured(job.client, now - began)

    def _lost(self, process: ComputeProcess, died: ComputeProcessDied) -> None:
        """The process ended: the job it was computing fails, the jobs behind it wait again."""
        (self.lanes if process.light else self.processes).discard(process)
        if process.sent:
            self._settle(process.sent.popleft(), died)
        # those cancelled (their client left, their place free) are not computed elsewhere either
        behind = [job for job in process.sent if not job.answer.done() and not job.cancelled]
        self.waiting.extendleft(reversed(behind))
        process.sent.clear()
        self._dispatch()
        if not self.closing:
            reason = "timeout" if process.timed_out else "died"
            log.warning("compute process %d ended (%s); starting a new one", process.started["pid"], reason)
            self.on_replace(reason)
            self._spawn_task(self._replace(process))

    async def _replace(self, process: ComputeProcess) -> None:
        """Starts a process in place of `process`, retrying on any failure (a model that no longer loads, no
        file descriptor or memory left for a moment) after 0.5 s, then twice as long each time up to 10 s:
        the pool must come back once the cause goes away."""
        await process.stop()
        delay, longest = 0.5, 10.0
        while not self.closing:
            try:
                fresh = await self._start_process(light=process.light)
            except Exception:
                log.exception("a new compute process failed to start; trying again in %g s", delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, longest)
                continue
            self._add(fresh)
            return

    async def shutdown(self) -> None:
        self.closing = True
        await asyncio.gather(*(process.stop() for process in self._everyone()))
        for task in list(self.tasks):
            task.cancel()
        self.processes.clear()
        self.lanes.clear()


def _tell(job: Job, outcome: Answer | Exception) -> None:
    """Sets the answer to `job` (its first frame for a stream) and wakes its `run` at once."""
    if isinstance(outcome, Exception):
        job.answer.set_exception(outcome)
        job.answer.exception()  # retrieved: a waiter that has gone must not log it as never retrieved
    else:
        job.answer.set_result(outcome)
    _wake(job.woken)


def _wake(woken: asyncio.Future[None], *_: Any) -> None:
    """Wakes a `run` (its client left, or its answer came), unless it has been woken or cancelled."""
    if not woken.done():
        woken.set_result(None)


def _drop_queued(queue: asyncio.Queue[StreamItem]) -> None:
    """Empties a stream's queue (its frames' bytes are given back by the caller)."""
    while not queue.empty():
        queue.get_nowait()
