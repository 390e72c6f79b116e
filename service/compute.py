"""The compute processes and the admission gate: all torch work runs in compute processes, never in this one.

max_concurrent compute processes (service/worker.py) answer requests one at a time each. A process holds at
most PIPELINE requests: the one it computes and the next, already sent, so that it goes from one to the next
without waiting for this process. Up to max_queue more requests wait here; beyond that a request is refused at
once (503 with Retry-After). No request waits and computes longer than request_timeout_s: past it the answer is
a 504 and a process still computing it is killed and replaced, so a runaway computation gives its core and
memory back. A process that dies (killed by the operating system for memory, say) fails the request it was
computing with a 503 and is replaced too; the requests sent to it behind that one go to another process. A
client that disconnects gives its place back at once.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from service.errors import ClientGone, ModelError, Overloaded, TimedOut, WorkerDied
from service.protocol import ANSWER, REQUEST, Started, compute_process
from service.settings import Settings

log = logging.getLogger("attention_service.compute")
SPAWN = multiprocessing.get_context("spawn")  # fork would copy the event loop's threads and sockets
PIPELINE = 2
STOP_SECONDS = 10


@dataclass(eq=False)
class Job:
    body: bytes
    answer: asyncio.Future[tuple[int, bytes]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    abandoned: bool = False  # its client left or its time ran out: its place is free, its answer is dropped


class Worker:
    """One compute process, the server's end of its socket, and the jobs sent to it, in the order it answers."""

    def __init__(self, process: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, started: Started):
        self.process, self.reader, self.writer, self.started = process, reader, writer, started
        self.sent: deque[Job] = deque()
        self.timed_out = False

    @classmethod
    async def start(cls, settings: Settings) -> Worker:
        ours, theirs = socket.socketpair()
        process = SPAWN.Process(target=compute_process, args=(theirs, settings), name="attention-compute", daemon=True)
        await asyncio.to_thread(process.start)
        theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=2**20)
        try:
            status, report = await read_answer(reader)
        except WorkerDied:
            raise ModelError(f"the compute process exited with code {process.exitcode} while starting") from None
        if status != 200:
            writer.close()
            raise ModelError(orjson.loads(report)["detail"])
        return cls(process, reader, writer, orjson.loads(report))

    def send(self, job: Job) -> None:
        self.sent.append(job)
        self.writer.writelines((REQUEST.pack(len(job.body)), job.body))

    def stop_computing(self) -> None:
        """Kills the process in the middle of a request that ran past its time limit."""
        self.timed_out = True
        self.process.kill()

    async def stop(self) -> None:
        """Closing the socket ends the process's loop once it has answered; it is killed if it has not ended
        within STOP_SECONDS."""
        self.writer.close()
        await asyncio.to_thread(self.process.join, STOP_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            await asyncio.to_thread(self.process.join)


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    try:
        status, length = ANSWER.unpack(await reader.readexactly(ANSWER.size))
        return status, await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        raise WorkerDied("the compute process stopped while computing this request; it is being replaced, "
                         "retry shortly") from None


class ComputePool:
    def __init__(self, settings: Settings, on_replace: Callable[[str], None] = lambda reason: None):
        self.settings = settings
        self.capacity = settings.max_concurrent + settings.max_queue
        self.timeout = settings.request_timeout_s
        self.admitted = 0  # jobs waiting or sent, not abandoned; changed on the event loop only
        self.waiting: deque[Job] = deque()
        self.workers: set[Worker] = set()
        self.on_replace = on_replace  # told why each process is replaced (for metrics)
        self.tasks: set[asyncio.Task[None]] = set()  # each worker's answer reader, and replacements under way
        self.closing = False

    async def start(self) -> Started:
        """Starts every compute process; raises ModelError if any fails (the service must not start)."""
        started = await asyncio.gather(*(Worker.start(self.settings) for _ in range(self.settings.max_concurrent)),
                                       return_exceptions=True)
        for worker in started:
            if isinstance(worker, Worker):
                self._add(worker)
        failure = next((error for error in started if isinstance(error, BaseException)), None)
        if failure is not None:
            await self.shutdown()
            raise failure
        self.started = next(iter(self.workers)).started
        return self.started

    @property
    def models(self) -> list[dict[str, Any]]:
        """The models as the compute processes reported them at start-up (see ModelRegistry.describe)."""
        return self.started["models"]

    @property
    def up(self) -> int:
        """Compute processes running, not counting those being replaced."""
        return len(self.workers)

    async def run(self, body: bytes, disconnected: Callable[[], Awaitable[None]] | None = None) -> tuple[int, bytes]:
        """The status and JSON body a compute process answers to the request `body`; `disconnected()` returns
        when the client goes away (started only once the request is admitted)."""
        if self.admitted >= self.capacity:
            raise Overloaded(f"all {self.capacity} places (ATTENTION_MAX_CONCURRENT computing + ATTENTION_MAX_QUEUE "
                             "waiting) are taken; retry shortly")
        job = Job(body)
        self.admitted += 1
        self.waiting.append(job)
        self._dispatch()
        watcher = asyncio.ensure_future(disconnected()) if disconnected is not None else None
        try:
            done, _ = await asyncio.wait({job.answer} if watcher is None else {job.answer, watcher},
                                         timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if watcher is not None:
                watcher.cancel()
        if job.answer in done:
            return job.answer.result()
        client_left = watcher is not None and watcher in done
        self._abandon(job, stop_computing=not client_left)
        if client_left:
            raise ClientGone()
        raise TimedOut(f"the request took longer than ATTENTION_REQUEST_TIMEOUT_S={self.timeout:g} s (waiting "
                       "and computing); ask for less (fewer layers, tensors or tokens) or retry later")

    def _abandon(self, job: Job, stop_computing: bool) -> None:
        """Frees the job's place. One that ran out of time and is being computed is stopped; one whose client
        left is not (a replacement process takes seconds to start), its answer is dropped."""
        job.abandoned = True
        self.admitted -= 1
        if job in self.waiting:
            self.waiting.remove(job)
            return
        computing = next((worker for worker in self.workers if worker.sent and worker.sent[0] is job), None)
        if stop_computing and computing is not None:
            computing.stop_computing()

    def _dispatch(self) -> None:
        """Sends waiting jobs to the processes with room, the least loaded first."""
        while self.waiting:
            worker = min(self.workers, key=lambda w: len(w.sent), default=None)
            if worker is None or len(worker.sent) >= PIPELINE:
                return
            worker.send(self.waiting.popleft())

    def _add(self, worker: Worker) -> None:
        self.workers.add(worker)
        self._spawn_task(self._read_answers(worker))
        self._dispatch()

    def _spawn_task(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _read_answers(self, worker: Worker) -> None:
        while True:
            try:
                answer = await read_answer(worker.reader)
            except WorkerDied as died:
                self._lost(worker, died)
                return
            job = worker.sent.popleft()
            if not job.abandoned:
                self.admitted -= 1
                job.answer.set_result(answer)
            self._dispatch()

    def _lost(self, worker: Worker, died: WorkerDied) -> None:
        """The process ended: the job it was computing fails (unless abandoned), the jobs behind it wait again."""
        self.workers.discard(worker)
        if worker.sent:
            computing = worker.sent.popleft()
            if not computing.abandoned:
                self.admitted -= 1
                computing.answer.set_exception(died)
        self.waiting.extendleft(reversed([job for job in worker.sent if not job.abandoned]))
        worker.sent.clear()
        self._dispatch()
        if not self.closing:
            reason = "timeout" if worker.timed_out else "died"
            log.warning("compute process %d ended (%s); starting a new one", worker.started["pid"], reason)
            self.on_replace(reason)
            self._spawn_task(self._replace(worker))

    async def _replace(self, worker: Worker) -> None:
        await worker.stop()
        while not self.closing:
            try:
                fresh = await Worker.start(self.settings)
            except ModelError:
                log.exception("a new compute process failed to start; trying again in 5 s")
                await asyncio.sleep(5)
                continue
            self._add(fresh)
            return

    async def shutdown(self) -> None:
        self.closing = True
        await asyncio.gather(*(worker.stop() for worker in self.workers))
        for task in list(self.tasks):
            task.cancel()
        self.workers.clear()
