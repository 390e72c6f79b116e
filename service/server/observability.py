"""What the service tells its operators: Prometheus metrics, one JSON log line per request, a request id.

The observer is plain ASGI (no per-request task or body copy), called from the service's one ASGI layer
(service/server/app.py ServiceLayer): it stamps each response with X-Request-ID
(the caller's, when it sends a sane one, else a fresh one), counts requests by route and status, observes
latency and bytes out, and logs method, route, status, duration and bytes, never bodies or headers (so no
API key reaches the logs).
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.server.http_protocol import CONNECTION_REFUSALS, REFUSAL_REASONS

log = logging.getLogger("attention_service.requests")

LABELLED_ROUTES = ("/attend", "/models", "/healthz", "/readyz", "/metrics", "/")
SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "attention_requests",
            "Requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "attention_request_duration_seconds",
            "Time from request to the last byte out.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("attention_requests_in_flight", "Requests being served now.", registry=r)
        self.rejected = Counter(
            "attention_rejected",
            "Requests refused to protect the service, by reason.",
            ["reason"],
            registry=r,
        )
        self.bytes_out = Counter(
            "attention_response_bytes", "Response body bytes sent, by route.", ["route"], registry=r
        )
        self.replaced = Counter(
            "attention_compute_processes_replaced",
            "Compute processes replaced, by reason: "
            "timeout (killed past ATTENTION_REQUEST_TIMEOUT_S) or died.",
            ["reason"],
            registry=r,
        )
        self.compute_up = Gauge(
            "attention_compute_processes_up",
            "Compute processes running, not counting those being replaced (ATTENTION_MAX_CONCURRENT when "
            "all are up).",
            registry=r,
        )
        self.skipped = Counter(
            "attention_computations_skipped",
            "Requests never computed because their client left before a compute process started them "
            "(waiting in the queue, or already sent to a compute process, which skips them).",
            registry=r,
        )
        self.batch_sizes = Histogram(
            "attention_batch_size",
            "Requests computed in one forward pass of a model, one observation per pass (dynamic batching, "
            "ATTENTION_BATCH_WINDOW_MS; text requests that could share a pass, 1 when one went alone).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.model_load = Gauge(
            "attention_model_load_seconds", "Time to load each model.", ["model"], registry=r
        )
        self.device = Gauge(
            "attention_device_info", "The compute device (value 1).", ["device", "torch_version"], registry=r
        )
        r.register(ConnectionRefusals())


class ConnectionRefusals(Collector):
    """The HTTP protocol's refusals (service/server/http_protocol.py): they happen before a request reaches
    the application, so they are read from the protocol's own counts."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "attention_connections_refused",
            "Connections answered and closed by the HTTP protocol before the application, by reason: "
            "header_too_large (431), header_timeout and body_timeout (408), connections and "
            "body_bytes_in_flight (503).",
            labels=["reason"],
        )
        for reason in REFUSAL_REASONS:
            family.add_metric([reason], CONNECTION_REFUSALS[reason])
        yield family


LABELLED_OIP_ROUTES = (
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/{name}",
    "/v2/models/{name}/ready",
    "/v2/models/{name}/infer",
)


def _oip_route(path: str) -> str:
    """An Open Inference Protocol path with its model name (and version) as placeholders."""
    parts = path.split("/")
    if parts[1:3] == ["v2", "models"] and len(parts) > 3:
        versioned = len(parts) > 5 and parts[4] == "versions"
        parts = [*parts[:3], "{name}", *parts[6 if versioned else 4 :]]
    return "/".join(parts)


def route_of(path: str) -> str:
    """A bounded set of labels: the routes, /static, or other (so that random paths cannot grow the
    metrics)."""
    if path in LABELLED_ROUTES:
        return path
    if path.startswith("/v2") and (route := _oip_route(path)) in LABELLED_OIP_ROUTES:
        return route
    return "/static" if path.startswith("/static/") else "other"


class RequestObserver:
    """Observes each HTTP request: its X-Request-ID (answered with the headers of `stamped`), its counts, its
    latency, its bytes out and its log line. Called by the service's one ASGI layer (service/server/app.py
    ServiceLayer), not a layer of its own: each layer is one more coroutine per request and each send
    wrapper one more call per message (issue 26)."""

    def __init__(self, metrics: Metrics, stamped: tuple[tuple[bytes, bytes], ...] = ()):
        self.metrics, self.stamped = metrics, stamped
        # each label set's children (counts, latency, bytes), looked up once: prometheus_client's lookup,
        # labels(), validates and locks each time; as bounded as the label sets themselves
        self.children: dict[tuple[str, str, int], tuple[Counter, Histogram, Counter]] = {}

    async def __call__(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        # ids only correlate log lines: Python's own generator, no system call (os.urandom) per request
        request_id = given if SANE_ID.fullmatch(given) else f"{random.getrandbits(128):032x}"
        scope.setdefault("state", {})["request_id"] = request_id
        started, answer = time.perf_counter(), {"status": 500, "bytes": 0}
        stamped = ((b"x-request-id", request_id.encode()), *self.stamped)

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), *stamped]
            elif message["type"] == "http.response.body":
                answer["bytes"] += len(message.get("body", b""))
            await send(message)

        route, method = route_of(scope["path"]), scope["method"]
        metrics = self.metrics
        metrics.in_flight.inc()
        try:
            await app(scope, receive, observed_send)
        finally:
            seconds = time.perf_counter() - started
            metrics.in_flight.dec()
            status = answer["status"]
            counted, timed, sized = self._children(route, method, status)
            counted.inc()
            timed.observe(seconds)
            sized.inc(answer["bytes"])
            log.info(
                "request",
                extra={
                    "fields": {
                        "request_id": request_id,
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 3),
                        "bytes_out": answer["bytes"],
                    }
                },
            )

    def _children(self, route: str, method: str, status: int) -> tuple[Counter, Histogram, Counter]:
        children = self.children.get((route, method, status))
        if children is None:
            metrics = self.metrics
            children = self.children[route, method, status] = (
                metrics.requests.labels(route, method, str(status)),
                metrics.latency.labels(route),
                metrics.bytes_out.labels(route),
            )
        return children
