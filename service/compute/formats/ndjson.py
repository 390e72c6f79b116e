"""application/x-ndjson: one JSON object per line, sent as each is ready. First `{"meta", "tokens"}` (meta
is known before anything is computed; its elapsed_ms counts up to this line), then one
`{"layer": i, <tensors>}` per layer of a model in the order of the forward pass, each sent as soon as it is
computed (so a process holds one layer at a time), or one line of tensors without a model. An error after
the first line ends the stream with a line `{"error": {"status": ..., "detail": ...}}`
(service/errors.py stream_error_line). A model's top-level sections (predictions, output_similarity) make one
line after the layers; with `generate`, one line `{"generated": {"text": b, "position": i, "token": "..."}}`
per generated token comes first, as each is made."""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from service.compute.encoding import encode_object
from service.compute.formats.result import Result


def ndjson_lines(result: Result) -> Iterator[bytes]:
    """Each line, with its newline, computed as it is asked for."""
    if result.then is not None:
        for event in result.prelude or ():
            yield orjson.dumps(event) + b"\n"
        result = result.then()
    changes = {} if result.layers is None else {"layer": sorted(set(result.order or ()))}
    tokens = orjson.dumps(result.tokens)
    yield b'{"meta":' + result.meta(**changes) + b',"tokens":' + tokens + b"}\n"
    if result.layers is None:
        yield encode_object(dict(result.tensors), result.decimals) + b"\n"
        return
    for index, tensors in result.layers:
        yield encode_object({"layer": index, **tensors}, result.decimals) + b"\n"
        del tensors  # not held while the next layer is computed
    if result.sections is not None:
        yield encode_object(result.sections(), result.decimals) + b"\n"
