"""OpenAPI documents compared across processes: FastAPI names the operation of a GET-and-HEAD route (/healthz,
/readyz) and the title of its response schema after whichever method its set of methods yields first, which
changes with each process's hash seed: two processes serving the same app can differ in those names only."""

from __future__ import annotations

import json
from typing import Any


def comparable(document: dict[str, Any]) -> dict[str, Any]:
    """The document with the names of every GET-and-HEAD route's operations taken from GET."""
    paths = {}
    for path, operations in document["paths"].items():
        if {"get", "head"} <= set(operations):
            named = json.dumps(operations).replace('_head"', '_get"').replace(' Head"', ' Get"')
            operations = json.loads(named)
        paths[path] = operations
    return {**document, "paths": paths}
