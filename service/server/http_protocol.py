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
  ATTENTION_BODY_TIMEOUT_S between two pieces (time the application itself takes to read does not count);
  else 408 and the connection is closed. An idle socket cannot hold a file descriptor for long.
- Connections: at most ATTENTION_MAX_CONNECTIONS open; the next one is answered 503 (Retry-After) and closed.
- Bodies in flight: the bodies of requests not yet answered, over all connections, hold at most
  ATTENTION_MAX_BODY_BYTES_IN_FLIGHT bytes (never less than one ATTENTION_MAX_REQUEST_BYTES). A request is
  charged its Content-Length when its headers arrive (or the bytes received, for a chunked body) and the
  charge is given back when it is answered or its connection ends; one that does not fit is answered 503 with
  Retry-After before its body is read (or, chunked, once it grows past the room left), instead of buffered.
  A Content-Length over ATTENTION_MAX_REQUEST_BYTES is not charged: the application refuses it (413) unread.

Every refusal here is counted by reason in CONNECTION_REFUSALS (/metrics: attention_connections_refused) and
is a JSON `{"detail": ...}` with `Connection: close`; the connection then stops reading requests, discards
what the client still sends for at most LINGER_S and LINGER_BYTES (so that the client reads the answer rather
than a reset, without a client that keeps sending costing the event loop) and is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from service.settings import Settings, get_settings

HTTP_PROTOCOL = "service.server.http_protocol:HttpProtocol"  # uvicorn's --http, wherever the service runs

LINGER_S = 1.0
LINGER_BYTES = 2**18  # drained at most after a refusal, then reading pauses: a client still sending blocks

log = logging.getLogger("attention_service.http")

# refusals by reason, over every connection of this process: one of REFUSAL_REASONS
REFUSAL_REASONS = (
    "header_too_large",
    "header_timeout",
    "body_timeout",
    "connections",
    "body_bytes_in_flight",
)
CONNECTION_REFUSALS: Counter[str] = Counter()
# the key of the app's Settings in the lifespan state, which uvicorn hands to each protocol as `app_state`
HTTP_SETTINGS = "attention_settings"


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    max_body_bytes_in_flight: int  # never less than one max_request_bytes
    max_request_bytes: int

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
        )


class _Refused(Exception):
    """Raised from a parser callback once the request is answered here: stops the parser."""


@dataclass
class _Upload:
    """A request body's charge against the bytes in flight."""

    declared: int  # its Content-Length, 0 when chunked
    received: int = 0
    charged: int = 0


class HttpProtocol(HttpToolsProtocol):
    body_bytes_in_flight: ClassVar[int] = 0  # over every connection of this process

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = Limits.of(app_state)
        self.reading_head = True  # between requests or within a request line and headers
        self.head_bytes = 0
        self.refused = False
        self.dropped = 0  # bytes received after a refusal
        self.uploads: dict[RequestResponseCycle, _Upload] = {}
        self.header_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.body_seen = 0.0  # loop time of the body's last piece
        self.linger: asyncio.TimerHandle | None = None

    # connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        full = len(self.connections) >= self.limits.max_connections
        super().connection_made(transport)
        if full:
            self.connections.discard(self)  # closing: it must not keep the next client out
            log.warning("refused a connection: %d open (ATTENTION_MAX_CONNECTIONS)", len(self.connections))
            self._refuse(
                503,
                "connections",
                f"the server holds its most connections (ATTENTION_MAX_CONNECTIONS="
                f"{self.limits.max_connections}); retry shortly",
                retry_after=True,
            )
            return
        self.header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self.header_timer, self.body_timer, self.linger):
            if timer is not None:
                timer.cancel()
        self.header_timer = self.body_timer = self.linger = None
        for upload in self.uploads.values():
            HttpProtocol.body_bytes_in_flight -= upload.charged
        self.uploads.clear()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:  # answered and closing: what the client still sends is dropped, up to LINGER_BYTES
            self.dropped += len(data)
            if self.dropped > LINGER_BYTES:
                self.transport.pause_reading()
            return
        self._unset_keepalive_if_required()
        if self.reading_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as error:
            if isinstance(error.__context__, _Refused):
                return  # a callback has answered
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        if self.reading_head and self.head_bytes > self.limits.max_header_bytes:
            self._head_too_large()
        elif not self.reading_head:
            self.body_seen = self.loop.time()
            if self.body_timer is None:
                self.body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timed_out)

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
        upload = self._upload()
        if upload is not None and upload.declared and not self._charge(upload, upload.declared):
            self._too_many_bodies(write=self._idle())  # no cycle of its own yet: nothing else to tell
            raise _Refused()
        before = self.cycle
        super().on_headers_complete()
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
        super().on_response_complete()

    # limits

    def _upload(self) -> _Upload | None:
        """The new request's charge, uncharged yet; None when it is not charged (its Content-Length is over
        max_request_bytes: the application refuses it without reading it)."""
        declared = next((value for name, value in self.headers if name == b"content-length"), None)
        if declared is None:
            return _Upload(0)
        length = int(declared)  # the parser has checked it is a number
        return _Upload(length) if length <= self.limits.max_request_bytes else None

    def _charge(self, upload: _Upload, amount: int) -> bool:
        """Raises the upload's charge to `amount` if it fits under the bytes in flight; False if not."""
        more = amount - upload.charged
        if more <= 0:
            return True
        if HttpProtocol.body_bytes_in_flight + more > self.limits.max_body_bytes_in_flight:
            return False
        HttpProtocol.body_bytes_in_flight += more
        upload.charged = amount
        return True

    def _uncharge(self, upload: _Upload) -> None:
        HttpProtocol.body_bytes_in_flight -= upload.charged
        upload.charged = 0

    def _idle(self) -> bool:
        """No answer is under way on this connection: one of ours may be written."""
        cycle: RequestResponseCycle | None = self.cycle  # None before the first request
        return cycle is None or cycle.response_complete

    def _head_too_large(self) -> None:
        self._refuse(
            431,
            "header_too_large",
            "the request line and headers are over ATTENTION_MAX_HEADER_BYTES="
            f"{self.limits.max_header_bytes} bytes",
            write=self._idle(),
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
            f"{self.limits.max_body_bytes_in_flight}); retry shortly",
            write=write,
            retry_after=True,
        )

    def _abandon_cycle(self) -> bool:
        """The current request's application sees a disconnect and can no longer answer; True if it had not
        started answering (so we may answer in its place)."""
        cycle: RequestResponseCycle | None = self.cycle
        if cycle is None or cycle.response_started:
            return False
        cycle.disconnected = True
        cycle.message_event.set()
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
            write=self._idle(),
        )

    def _body_timed_out(self) -> None:
        self.body_timer = None
        if self.transport.is_closing() or self.refused or self.reading_head:
            return
        now = self.loop.time()
        if self.flow.read_paused:  # the application is not reading: the client is not the one stalling
            self.body_seen = now
        left = self.body_seen + self.limits.body_timeout_s - now
        if left > 0:
            self.body_timer = self.loop.call_later(left, self._body_timed_out)
            return
        self._refuse(
            408,
            "body_timeout",
            "the request body stalled for longer than ATTENTION_BODY_TIMEOUT_S="
            f"{self.limits.body_timeout_s:g} s",
            write=self._abandon_cycle(),
        )

    def _refuse(
        self, status: int, reason: str, detail: str, *, write: bool = True, retry_after: bool = False
    ) -> None:
        """Counts the refusal, answers `status` (when `write`), stops reading requests and closes the
        connection after a short linger."""
        CONNECTION_REFUSALS[reason] += 1
        self.refused = True
        for timer in (self.header_timer, self.body_timer):
            if timer is not None:
                timer.cancel()
        self.header_timer = self.body_timer = None
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
            self.transport.write(b"".join(head))
        self.flow.resume_reading()  # keep draining what the client sends, so that it reads the answer
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.linger = self.loop.call_later(LINGER_S, self.transport.close)
