"""uvicorn's httptools protocol with the limits it lacks against hostile or broken clients.

Served with `uvicorn --http service.server.http_protocol:HttpProtocol` (HTTP_PROTOCOL: scripts/serve.sh, the
Dockerfile's CMD and the test servers of devtools/servers.py all name it); its limits are the app's own
settings (service/settings.py), which the app's lifespan hands to uvicorn's protocols in the lifespan state
(HTTP_SETTINGS), so the command line names nothing else. Another app served with it (the benchmark's
baseline, measured under the same limits) gets the settings of the environment, as the service's app would.

- Request line and headers: at most ATTENTION_MAX_HEADER_BYTES, else 431. httptools has no such bound and
  grows a header value that arrives in pieces by copying it whole each time, so one endless header would hold
  the event loop for seconds.
- Time: the request line and headers must arrive within ATTENTION_HEADER_TIMEOUT_S of the connection (or of
  the request's first byte on a kept-alive one), and a body must not stall for more than
  ATTENTION_BODY_TIMEOUT_S between two pieces, nor arrive slower on average than
  ATTENTION_MIN_BODY_BYTES_PER_S after its first ATTENTION_BODY_TIMEOUT_S (time the application itself takes
  to read does not count); else 408 and the connection is closed. An idle socket, or one sent a byte now and
  then, cannot hold a file descriptor for long.
- Pipelining: at most PIPELINED requests of a connection wait behind the one being answered; the rest of what
  the client sent stays unparsed and the connection unread until they are answered (a flood of tiny pipelined
  requests would otherwise be parsed into memory without bound).
- An answer that leaves its request's body unread (a 413 for a body over ATTENTION_MAX_REQUEST_BYTES, which
  the application refuses unread, a 401 or 415) ends the connection as a refusal does (below), so that the
  rest of the body is not read and discarded without end, and says so (`Connection: close`, written when
  the answer starts before the body has all arrived); so does an answer with `Connection: close`.
- Connections: at most ATTENTION_MAX_CONNECTIONS open; the next one is answered 503 (Retry-After) and closed.
- Bodies in flight: the bodies of requests not yet answered, over all connections, hold at most
  ATTENTION_MAX_BODY_BYTES_IN_FLIGHT bytes (never less than one ATTENTION_MAX_REQUEST_BYTES). A request is
  charged the bytes of its body as they arrive (what it declares costs nothing until it is sent) and the
  charge is given back when it is answered or its connection ends; one that grows past the room left is
  answered 503 with Retry-After, instead of buffered. A Content-Length over ATTENTION_MAX_REQUEST_BYTES is not
  charged: the application refuses it (413) unread.
- Shares: once more than 1 - ATTENTION_CLIENT_SHARE of the connections (or of the bytes in flight) is taken, a
  client address holding ATTENTION_CLIENT_SHARE of it or more gets no more (503): one client cannot take them
  all from the others.

Every refusal here is counted by reason in CONNECTION_REFUSALS (/metrics: attention_connections_refused) and
is a JSON `{"detail": ...}` with `Connection: close`, written after the answers to the requests before it on
the connection (pipelined); the connection then stops reading requests, discards what the client still sends
for at most LINGER_S and LINGER_BYTES (so that the client reads the answer rather than a reset, without a
client that keeps sending costing the event loop) and is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn._types import ASGISendEvent
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from service.server import pacing
from service.server.shares import crowded, give_back
from service.settings import Settings, get_settings

HTTP_PROTOCOL = "service.server.http_protocol:HttpProtocol"  # uvicorn's --http, wherever the service runs

LINGER_S = 1.0
LINGER_BYTES = 2**18  # drained at most after a refusal, then reading pauses: a client still sending blocks
PIPELINED = 8  # requests of one connection parsed and waiting behind the one being answered, at most
PARSE_PIECE = 4096  # what the client sent is parsed this much at a time, so that parsing stops at PIPELINED

log = logging.getLogger("attention_service.http")

# refusals by reason, over every connection of this process: one of REFUSAL_REASONS
REFUSAL_REASONS = (
    "header_too_large",
    "header_timeout",
    "body_timeout",
    "body_too_slow",
    "connections",
    "body_bytes_in_flight",
)
CONNECTION_REFUSALS: Counter[str] = Counter()
# the key of the app's Settings in the lifespan state, which uvicorn hands to each protocol as `app_state`
HTTP_SETTINGS = "attention_settings"
# the ASGI extension (scope["extensions"]) of each request served here: a ClientLeaving
CLIENT_LEAVING = "attention.client_leaving"


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    max_body_bytes_in_flight: int  # never less than one max_request_bytes
    max_request_bytes: int
    min_body_bytes_per_s: int
    client_share: float
    pipelined_per_s: float
    pipelined_burst: int

    @classmethod
    def of(cls, app_state: dict[str, Any]) -> Limits:
        """The limits of the app's settings, from uvicorn's lifespan state (service/server/app.py puts them
        there before the server accepts its first connection); for an app that puts none there, those of the
        environment."""
        published = app_state.get(HTTP_SETTINGS)
        settings = published if isinstance(published, Settings) else get_settings()
        return cls(
            max_header_bytes=settings.max_header_bytes,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            max_connections=settings.max_connections,
            max_body_bytes_in_flight=max(settings.max_body_bytes_in_flight, settings.max_request_bytes),
            max_request_bytes=settings.max_request_bytes,
            min_body_bytes_per_s=settings.min_body_bytes_per_s,
            client_share=settings.client_share,
            pipelined_per_s=settings.pipelined_per_s,
            pipelined_burst=settings.pipelined_burst,
        )


class _Refused(Exception):
    """Raised from a parser callback once the request is answered here: stops the parser."""


class _LingeringClose:
    """The connection's transport as a request's answer sees it: an answer that closes the connection
    (`Connection: close`) ends it as a refusal does, with a linger, so that a client still sending its body
    reads the answer rather than a reset.

    The answer's head (uvicorn writes its status line and headers on their own) is held until its body's
    first write and goes out with it in one writelines: one send instead of two, which wakes the client once
    (issue 26: a small answer costs the event loop and its reader one system call less). A body that does not
    follow in the same step of the event loop (a HEAD answer, a body sent from another task) finds the head
    already written, at the loop's next step."""

    def __init__(self, protocol: HttpProtocol, cycle: RequestResponseCycle):
        self.protocol, self.transport, self.cycle = protocol, protocol.transport, cycle
        self.head: bytes | None = None  # the answer's head, not yet written
        self.head_seen = False

    def write(self, data: bytes) -> None:
        if not self.head_seen and self.cycle.response_started:  # uvicorn's first write once started: the head
            self.head_seen = True
            self.head = data
            self.protocol.loop.call_soon(self.write_head)
            return
        if self.head is None:
            self.transport.write(data)
            return
        head, self.head = self.head, None
        self.transport.writelines((head, data))  # uvloop: one writev, the body not copied

    def write_head(self) -> None:
        """The head, if its body has not taken it along."""
        if self.head is not None:
            head, self.head = self.head, None
            if not self.transport.is_closing():
                self.transport.write(head)

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.write_head()
        self.protocol.end_after_answer()


def _closing_if_body_unread(cycle: RequestResponseCycle) -> Callable[[ASGISendEvent], Awaitable[None]]:
    """The cycle's `send`, which marks an answer started before its request's body was read with
    `Connection: close`: such a connection ends after the answer (on_response_complete), and a client told
    nothing would send its next request on it and read "Server disconnected" (httpx writes a request's head
    and body apart, so a 401 or 415 answered from the head alone raced the body's arrival)."""
    send = cycle.send

    async def send_closing(message: ASGISendEvent) -> None:
        if message["type"] == "http.response.start" and cycle.more_body:
            cycle.keep_alive = False  # uvicorn writes `connection: close` and closes after the answer
        await send(message)

    return send_closing


class ClientLeaving:
    """Called, a future that is done once the request's client has gone: the moment its `receive()` would
    answer http.disconnect, without a task waiting in `receive()` for it (issue 26: the compute pool watches
    every request's client while it waits for its answer, and a task per request cost the event loop its
    creation, a step and a cancellation). Like `receive()`, it resumes reading the connection (unless it is
    held), so that the client's leaving is seen."""

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self.cycle = cycle
        self.waiting: list[asyncio.Future[None]] = []

    def __call__(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        cycle = self.cycle
        if cycle.disconnected or cycle.response_complete:
            future.set_result(None)
            return future
        cycle.flow.resume_reading()
        self.waiting = [waiting for waiting in self.waiting if not waiting.done()]
        self.waiting.append(future)
        return future

    def gone(self) -> None:
        """The client has gone (uvicorn marked the request disconnected): every future is done."""
        for future in self.waiting:
            if not future.done():
                future.set_result(None)
        self.waiting.clear()


def _extensions(cycle: RequestResponseCycle) -> dict[str, Any]:
    """The request's ASGI extensions (uvicorn's scope has none of its own)."""
    scope: dict[str, Any] = cycle.scope  # type: ignore[assignment]
    extensions: dict[str, Any] = scope.setdefault("extensions", {})
    return extensions


def _told_if_gone(cycle: RequestResponseCycle | None) -> None:
    """Tells the request's ClientLeaving if it is disconnected."""
    if cycle is not None and cycle.disconnected:
        leaving = _extensions(cycle).get(CLIENT_LEAVING)
        if isinstance(leaving, ClientLeaving):
            leaving.gone()


class _Flow(FlowControl):
    """uvicorn's flow control, whose reading a held connection does not resume: an application that reads its
    request (or waits for the client to leave) resumes reading, which must not let a pipelining client send
    more requests while PIPELINED wait."""

    held = False

    def resume_reading(self) -> None:
        if not self.held:
            super().resume_reading()


@dataclass
class _Upload:
    """A request body's charge against the bytes in flight."""

    received: int = 0
    charged: int = 0


class HttpProtocol(HttpToolsProtocol):
    flow: _Flow
    body_bytes_in_flight: ClassVar[int] = 0  # over every connection of this process
    # by client address, over every connection of this process (an address appears while it holds some)
    connections_by_client: ClassVar[Counter[str]] = Counter()
    body_bytes_by_client: ClassVar[Counter[str]] = Counter()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = Limits.of(app_state)
        self.pacing = pacing.shared(self.limits.pipelined_per_s, self.limits.pipelined_burst)
        self.reading_head = True  # between requests or within a request line and headers
        self.head_bytes = 0
        self.refused = False
        self.dropped = 0  # bytes received after a refusal
        self.uploads: dict[RequestResponseCycle, _Upload] = {}
        self.header_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.body_seen = 0.0  # loop time of the body's last piece
        self.body_started = 0.0  # loop time of the end of its headers, on by the time the application held it
        self.body_checked = 0.0  # loop time the body's timer last looked
        self.address = ""  # the client's
        self.counted = False  # in connections_by_client
        self.linger: asyncio.TimerHandle | None = None
        self.unparsed = b""  # received, not yet parsed: it waits for the pipelined requests to be answered
        self.running: RequestResponseCycle | None = None  # the request whose application runs
        self.refusal = b""  # the answer to a refused request, written once the answers before it are
        self.paced: asyncio.TimerHandle | None = None  # the next pipelined request's turn (pacing.py)

    # connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        open_ = len(self.connections)
        super().connection_made(transport)
        self.flow = _Flow(transport)
        self.address = self.client[0] if self.client else ""
        limit, holds = self.limits.max_connections, HttpProtocol.connections_by_client[self.address]
        full = open_ >= limit
        if full or crowded(open_ + 1, limit, holds + 1, self.limits.client_share):
            self.connections.discard(self)  # closing: it must not keep the next client out
            log.warning("refused a connection: %d open (ATTENTION_MAX_CONNECTIONS)", len(self.connections))
            share = "" if full else f"; this client holds {holds} (ATTENTION_CLIENT_SHARE)"
            self._refuse(
                503,
                "connections",
                f"the server holds its most connections (ATTENTION_MAX_CONNECTIONS="
                f"{self.limits.max_connections}){share}; retry shortly",
                retry_after=True,
            )
            return
        HttpProtocol.connections_by_client[self.address] += 1
        self.counted = True
        self.header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self.header_timer, self.body_timer, self.linger, self.paced):
            if timer is not None:
                timer.cancel()
        self.header_timer = self.body_timer = self.linger = self.paced = None
        for upload in self.uploads.values():
            self._uncharge(upload)
        self.uploads.clear()
        if self.counted:
            self.counted = False
            give_back(HttpProtocol.connections_by_client, self.address, 1)
        super().connection_lost(exc)
        _told_if_gone(self.cycle)

    def data_received(self, data: bytes) -> None:
        if self.refused:  # answered and closing: what the client still sends is dropped, up to LINGER_BYTES
            self.dropped += len(data)
            if self.dropped > LINGER_BYTES:
                self.transport.pause_reading()
            return
        self._unset_keepalive_if_required()
        if self.unparsed:  # read before reading was held: it waits its turn
            self.unparsed += data
            self._hold()
            return
        view = memoryview(data)
        for offset in range(0, len(view), PARSE_PIECE):
            if self.refused or self.transport.is_closing():
                return
            if len(self.pipeline) >= PIPELINED:
                self.unparsed = bytes(view[offset:])
                break
            if not self._parse(view[offset : offset + PARSE_PIECE]):
                return
        self._hold()

    def _hold(self) -> None:
        """Reading stops while PIPELINED requests (or bytes not yet parsed) wait, until they are answered."""
        self.flow.held = bool(self.unparsed) or len(self.pipeline) >= PIPELINED
        if self.flow.held:
            self.flow.pause_reading()

    def _parse(self, data: memoryview) -> bool:
        """Feeds `data` to the parser; False when the connection no longer reads requests."""
        if self.reading_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        except httptools.HttpParserError as error:
            if isinstance(error.__context__, _Refused):
                return False  # a callback has answered
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return False
        if self.reading_head and self.head_bytes > self.limits.max_header_bytes:
            self._head_too_large()
        elif not self.reading_head:
            self.body_seen = self.loop.time()
            if self.body_timer is None:
                self.body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timed_out)
        return True

    # parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.header_timer is None:
            self.header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_timed_out)

    def on_headers_complete(self) -> None:
        head = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if head > self.limits.max_header_bytes:
            self._head_too_large()
            raise _Refused()
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        self.reading_head, self.head_bytes = False, 0
        self.body_started = self.body_checked = self.loop.time()
        upload = self._upload()
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not before:
            self.cycle.transport = _LingeringClose(self, self.cycle)  # type: ignore[assignment]
            self.cycle.send = _closing_if_body_unread(self.cycle)  # type: ignore[method-assign,assignment]
            _extensions(self.cycle)[CLIENT_LEAVING] = ClientLeaving(self.cycle)
        if upload is not None and self.cycle is not before:
            self.uploads[self.cycle] = upload
        elif upload is not None:  # no cycle (an upgrade): nothing to hold the charge
            self._uncharge(upload)

    def on_body(self, body: bytes) -> None:
        upload = self.uploads.get(self.cycle)
        if upload is not None and not self.cycle.response_complete:
            upload.received += len(body)
            if not self._charge(upload, upload.received):
                self._too_many_bodies(write=self._abandon_cycle())
                raise _Refused()
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.reading_head, self.head_bytes = True, 0
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None

    def on_response_complete(self) -> None:
        for cycle in [cycle for cycle in self.uploads if cycle.response_complete]:
            self._uncharge(self.uploads.pop(cycle))
        if self._paced():
            return
        answered = self.running
        super().on_response_complete()  # starts the next pipelined request, if any
        if self.transport.is_closing():
            return
        if self.refused:
            if not self._answering() and self.linger is None:
                self._close_with(self.refusal)
            return
        if answered is not None and answered.more_body:  # answered before its body was read: it never will be
            self.end_after_answer()
            return
        data, self.unparsed = self.unparsed, b""
        self.flow.held = False
        if data:
            self.data_received(data)  # holds reading again while PIPELINED still wait
        if not self.flow.held:
            self.flow.resume_reading()

    def _paced(self) -> bool:
        """Whether the client's next request, sent before it read this answer (pipelined), waits its turn
        (pacing.py): True then, and the connection is not read until on_response_complete runs again."""
        pipelined = bool(self.pipeline) or bool(self.unparsed)
        if not pipelined or self.refused or self.transport.is_closing():
            return False
        wait = self.pacing.wait(self.address, self.loop.time())
        if wait <= 0:
            return False
        self.flow.held = True
        self.flow.pause_reading()
        self.paced = self.loop.call_later(wait, self._pace_over)
        return True

    def _pace_over(self) -> None:
        self.paced = None
        self.on_response_complete()

    def end_after_answer(self) -> None:
        """No more requests are read on this connection: it ends after a linger (the answer is written)."""
        if self.transport.is_closing() or self.linger is not None:
            return
        self.refused = True
        self.unparsed, self.flow.held = b"", False
        self._close_with(b"")

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self.running = cycle
        super()._start_asgi_task(cycle, app)

    # limits

    def _upload(self) -> _Upload | None:
        """The new request's charge, uncharged yet; None when it is not charged (its Content-Length is over
        max_request_bytes: the application refuses it without reading it)."""
        declared = next((value for name, value in self.headers if name == b"content-length"), None)
        # the parser has checked it is a number
        return _Upload() if declared is None or int(declared) <= self.limits.max_request_bytes else None

    def _charge(self, upload: _Upload, amount: int) -> bool:
        """Raises the upload's charge to `amount` if it fits under the bytes in flight; False if not."""
        more = amount - upload.charged
        if more <= 0:
            return True
        total, limit = HttpProtocol.body_bytes_in_flight + more, self.limits.max_body_bytes_in_flight
        holds = HttpProtocol.body_bytes_by_client[self.address] + more
        share, largest = self.limits.client_share, self.limits.max_request_bytes
        if total > limit or crowded(total, limit, holds, share, floor=largest):
            return False
        HttpProtocol.body_bytes_in_flight += more
        HttpProtocol.body_bytes_by_client[self.address] += more
        upload.charged = amount
        return True

    def _uncharge(self, upload: _Upload) -> None:
        HttpProtocol.body_bytes_in_flight -= upload.charged
        give_back(HttpProtocol.body_bytes_by_client, self.address, upload.charged)
        upload.charged = 0

    def _answering(self) -> bool:
        """An answer to a request before the refused one is under way or waits its turn: ours comes after."""
        running = self.running
        under_way = running is not None and not running.response_complete and not running.disconnected
        return under_way or bool(self.pipeline)

    def _head_too_large(self) -> None:
        self._refuse(
            431,
            "header_too_large",
            "the request line and headers are over ATTENTION_MAX_HEADER_BYTES="
            f"{self.limits.max_header_bytes} bytes",
        )

    def _too_many_bodies(self, *, write: bool) -> None:
        log.warning(
            "refused a request body: %d bytes in flight (ATTENTION_MAX_BODY_BYTES_IN_FLIGHT)",
            HttpProtocol.body_bytes_in_flight,
        )
        self._refuse(
            503,
            "body_bytes_in_flight",
            "the server holds its most bytes of request bodies (ATTENTION_MAX_BODY_BYTES_IN_FLIGHT="
            f"{self.limits.max_body_bytes_in_flight}, of which one client holds at most a share, "
            f"ATTENTION_CLIENT_SHARE={self.limits.client_share:g}, once they run short); retry shortly",
            write=write,
            retry_after=True,
        )

    def _abandon_cycle(self) -> bool:
        """The current request is never answered by its application (a pipelined one is never started, a
        running one sees a disconnect); True if it had not started answering (so we answer in its place)."""
        cycle: RequestResponseCycle | None = self.cycle
        if cycle is None or cycle.response_started:
            return False
        waiting = [entry for entry in self.pipeline if entry[0] is cycle]
        if waiting:
            self.pipeline.remove(waiting[0])
            return True
        cycle.disconnected = True
        cycle.message_event.set()
        _told_if_gone(cycle)
        return True

    def _header_timed_out(self) -> None:
        self.header_timer = None
        if self.transport.is_closing() or self.refused:
            return
        self._refuse(
            408,
            "header_timeout",
            f"the request line and headers took longer than ATTENTION_HEADER_TIMEOUT_S="
            f"{self.limits.header_timeout_s:g} s",
        )

    def _body_timed_out(self) -> None:
        self.body_timer = None
        if self.transport.is_closing() or self.refused or self.reading_head:
            return
        now, timeout = self.loop.time(), self.limits.body_timeout_s
        if self.flow.read_paused:  # the application is not reading: the client is not the one stalling
            self.body_seen = now
            self.body_started += now - self.body_checked
        self.body_checked = now
        upload = self.uploads.get(self.cycle)
        received = 0 if upload is None else upload.received
        stalled_in = self.body_seen + timeout - now
        too_slow_in = self.body_started + timeout + received / self.limits.min_body_bytes_per_s - now
        if min(stalled_in, too_slow_in) > 0:
            self.body_timer = self.loop.call_later(min(stalled_in, too_slow_in), self._body_timed_out)
            return
        if stalled_in <= 0:
            reason, detail = "body_timeout", f"stalled for longer than ATTENTION_BODY_TIMEOUT_S={timeout:g} s"
        else:
            reason, detail = (
                "body_too_slow",
                f"arrived slower than ATTENTION_MIN_BODY_BYTES_PER_S={self.limits.min_body_bytes_per_s} "
                f"after its first ATTENTION_BODY_TIMEOUT_S={timeout:g} s ({received} bytes in "
                f"{now - self.body_started:.0f} s)",
            )
        self._refuse(408, reason, f"the request body {detail}", write=self._abandon_cycle())

    def _refuse(
        self,
        status: int,
        reason: str,
        detail: str,
        *,
        write: bool = True,
        retry_after: bool = False,
    ) -> None:
        """Counts the refusal, answers `status` (when `write`) once the answers to the requests before it are
        written, stops reading requests and closes the connection after a short linger."""
        CONNECTION_REFUSALS[reason] += 1
        self.refused = True
        for timer in (self.header_timer, self.body_timer):
            if timer is not None:
                timer.cancel()
        self.header_timer = self.body_timer = None
        self.unparsed, self.flow.held = b"", False
        if self.transport.is_closing():
            return
        if write:
            body = orjson.dumps({"detail": detail})
            head = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head += [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n",
                b"retry-after: 1\r\n" if retry_after else b"",
                b"\r\n",
                body,
            ]
            self.refusal = b"".join(head)
        self.flow.resume_reading()  # keep draining what the client sends, so that it reads the answer
        if not self._answering():  # else once they are answered (on_response_complete)
            self._close_with(self.refusal)

    def _close_with(self, answer: bytes) -> None:
        """Writes `answer` (if any), then ends the connection after a short linger."""
        if answer:
            self.transport.write(answer)
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.linger = self.loop.call_later(LINGER_S, self.transport.close)
