"""The exceptions: one per answer a caller handles differently, each carrying the service's own message.

Network failures (connection refused, a read timeout) are httpx's own exceptions (`httpx.TransportError`)."""

from __future__ import annotations

import json
from typing import Any

import httpx


class AttentionError(Exception):
    """Base of every exception this client raises (besides httpx's transport errors)."""


class ResponseError(AttentionError):
    """A 2xx answer the client cannot read as the wire contract says (wrong media type, ragged tensors,
    shapes that differ from `meta.shapes`): a service of another version, or a proxy in between."""


class APIError(AttentionError):
    """The service answered with an error status. `message` is the service's own text (for a 422 every
    problem, each as `location: message`), `body` the parsed JSON body (or the text), `request_id` the
    X-Request-ID the service logged it under."""

    def __init__(self, status: int, message: str, body: Any, request_id: str | None):
        reason = httpx.codes.get_reason_phrase(status)
        super().__init__(f"{status} {reason}: {message}" if reason else f"{status}: {message}")
        self.status, self.message, self.body, self.request_id = status, message, body, request_id


class InvalidRequest(APIError):
    """422: malformed input. `errors` lists each problem: `loc` (where in the request), `msg` (what was
    found and what was expected) and `type`."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        detail = self.body.get("detail") if isinstance(self.body, dict) else None
        return [item for item in detail if isinstance(item, dict)] if isinstance(detail, list) else []


class Unauthorized(APIError):
    """401: the service needs an API key (`api_key=`, or ATTENTION_API_KEY) and got none or a wrong one."""


class LimitExceeded(APIError):
    """413: the request, or the response it would produce, is over a limit of the service: `limit` names the
    setting, `maximum` its value and `estimate` this request's figure (when the service gives them)."""

    @property
    def limit(self) -> str | None:
        value = _field(self.body, "limit")
        return value if isinstance(value, str) else None

    @property
    def maximum(self) -> int | None:
        return _integer(self.body, "maximum")

    @property
    def estimate(self) -> int | None:
        return _integer(self.body, "estimate")


class ServiceUnavailable(APIError):
    """503: the service is saturated or cannot serve the model. `retry_after` is the wait in seconds the
    service asked for (None when it did not ask: retrying soon will not help); the client has already
    retried as many times as its `retries` allow."""

    def __init__(
        self, status: int, message: str, body: Any, request_id: str | None, retry_after: float | None
    ):
        super().__init__(status, message, body, request_id)
        self.retry_after = retry_after


class ServiceTimeout(APIError):
    """504: the request waited and computed longer than the service's time limit."""


_BY_STATUS: dict[int, type[APIError]] = {
    401: Unauthorized,
    413: LimitExceeded,
    422: InvalidRequest,
    504: ServiceTimeout,
}


def _field(body: Any, name: str) -> object:
    return body.get(name) if isinstance(body, dict) else None


def _integer(body: Any, name: str) -> int | None:
    value = _field(body, name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


MAX_TEXT = 1000  # of a body that is not the service's JSON (a proxy's HTML page, say) in the message


def _message(body: Any) -> str:
    """The service's words: `detail` as a string, or each problem of a list as `loc: msg`."""
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, str):
        return detail if isinstance(body, dict) or len(detail) <= MAX_TEXT else detail[:MAX_TEXT] + " ..."
    if isinstance(detail, list) and detail:
        problems = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(part) for part in item.get("loc", []))
                problems.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                problems.append(str(item))
        return "; ".join(problems)
    return json.dumps(detail) if detail is not None else "(no detail given)"


def error_from(response: httpx.Response, retry_after: float | None) -> APIError:
    """The exception for an error answer."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    message = _message(body) if body != "" else "(empty body)"
    request_id = response.headers.get("x-request-id")
    if response.status_code == 503:
        return ServiceUnavailable(503, message, body, request_id, retry_after)
    kind = _BY_STATUS.get(response.status_code, APIError)
    return kind(response.status_code, message, body, request_id)
