"""The one dispatch under both doors of a compute process (/attend's, pipeline.py, and the Open Inference
Protocol's, oip/): a parsed request goes down the explicit and toy path (explicit.py) or the pretrained path
(pretrained.py), and comes back as a Result that each door writes in its own format."""

from __future__ import annotations

from schemas.request import TOY_MODEL, AttendRequest
from service.compute.explicit import attend_explicit
from service.compute.formats.result import Result
from service.compute.models.registry import ModelRegistry
from service.compute.pretrained import attend_pretrained
from service.settings import Settings


def compute(
    request: AttendRequest, settings: Settings, models: ModelRegistry, started: float, streamed: bool = False
) -> Result:
    """What `request` asks for (a model's layers computed as the result's `layers` are read); raises one of
    service.errors.REQUEST_ERRORS for a request that cannot be served. `started`: time.perf_counter() when the
    request arrived (meta's elapsed_ms); `streamed`: the answer is sent a layer at a time."""
    if request.text is not None and request.model != TOY_MODEL:
        return attend_pretrained(request, settings, models, started, streamed)
    return attend_explicit(request, settings, started)
