"""The doors of a compute process, by the kind of request the socket carries (service/protocol.py): /attend's
(pipeline.py) and the Open Inference Protocol's infer (oip/), siblings over the same dispatch (dispatch.py).
A compute process (process.py) and the Ray replica (service/ray_serve/replica.py) both answer through this
table."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from service.compute.models.registry import ModelRegistry
from service.compute.oip import answer_infer
from service.compute.pipeline import frames
from service.protocol import ATTEND, OIP_INFER, Frame, ResponseFormat
from service.settings import Settings

# a request's body, the settings, the models, the response format asked for, and whether the frames are held
# together before they are sent (a Ray replica: the limits then count a whole stream) -> its answer's frames
Door = Callable[[bytes, Settings, ModelRegistry, ResponseFormat, bool], Iterable[Frame]]


def infer_frames(
    envelope: bytes, settings: Settings, models: ModelRegistry, media: ResponseFormat, joined: bool
) -> Iterable[Frame]:
    """The Open Inference Protocol's answer: one frame, in its own format whatever the Accept header."""
    return [(*answer_infer(envelope, settings, models), True)]


DOORS: dict[int, Door] = {ATTEND: frames, OIP_INFER: infer_frames}
