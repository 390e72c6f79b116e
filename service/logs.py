"""The log lines as JSON, in both processes: one format for every line, the service's own and uvicorn's."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

# uvicorn's access log record: its args are these, in this order (uvicorn/protocols/http/*_impl.py)
ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class JsonFormatter(logging.Formatter):
    # the last second formatted and its text: a line per request, most in the same second as the one before
    # (strftime is most of a line's formatting); one tuple, replaced whole, so threads never mix two
    _second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._second_of(record.created) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        args = record.args if record.name == "uvicorn.access" else None
        if isinstance(args, tuple) and len(args) == len(ACCESS_FIELDS):
            entry.update(zip(ACCESS_FIELDS, args, strict=True))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()  # str: a field of any type is still written

    def _second_of(self, created: float) -> str:
        second, text = self._second
        if int(created) != second:
            second = int(created)
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return text


def log_json_to_stderr() -> None:
    """Every log line of the process as one JSON object: the service's own (start-up, model loads, one per
    request) on stderr; uvicorn's (start-up, shutdown, errors; its access log when it is on), where uvicorn
    writes them; and warnings, Python's and other libraries', on stderr."""
    _json_handler(logging.getLogger("attention_service"), logging.INFO)
    # uvicorn set up its loggers with its text formatters before it imported the app; a --log-config of the
    # operator's own (any other formatter) is left alone
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if type(handler.formatter).__module__ == "uvicorn.logging":
                handler.setFormatter(JsonFormatter())
    logging.captureWarnings(True)  # to the logger py.warnings, which reaches the root's handler
    _json_handler(logging.getLogger(), logging.WARNING)


def _json_handler(logger: logging.Logger, level: int) -> None:
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
