"""What the routes need of the computation, declared: the compute pool (compute_pool.py, compute processes)
and the Ray replica (service/ray_serve/replica.py, one compute thread) both implement Compute."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NamedTuple, Protocol

from schemas.service_info import ModelInfo
from service.protocol import ATTEND, ResponseFormat, Started

FrameSender = Callable[[bytes], Awaitable[None]]
ClientWatch = Callable[[], Awaitable[object]]  # returns when the client goes away


class Held(NamedTuple):
    """An answer whose place stays taken until `release()` is called, once the answer is delivered. A
    streamed answer's further frames come with `stream`, None for an answer in one piece."""

    status: int
    content: bytes
    release: Callable[[], None]
    stream: Callable[[FrameSender], Awaitable[None]] | None = None


class Compute(Protocol):
    """The computation behind the routes, started by the app's lifespan (service/server/app.py)."""

    @property
    def started(self) -> Started | None:
        """The start-up report (device, torch version and threads, models); None until started."""
        ...

    @property
    def up(self) -> int:
        """How many compute processes (or threads) compute now; 0 while every one is being replaced."""
        ...

    @property
    def models(self) -> list[ModelInfo]:
        """The pretrained models, as the start-up report describes them."""
        ...

    async def run(
        self,
        body: bytes,
        disconnected: ClientWatch | None = None,
        media: ResponseFormat = ResponseFormat.JSON,
        kind: int = ATTEND,
        client: str = "",
    ) -> Held:
        """The answer to the request `body` of `kind` (service/protocol.py) in the format `media`, its place
        still taken (the caller calls `release` once it is delivered, after delivering a stream's rest with
        `stream`). Raises ClientGone once `disconnected()` returns before the answer, Overloaded,
        NoComputeProcess, TimedOut or ComputeProcessDied (service/errors.py)."""
        ...

    async def shutdown(self) -> None: ...


def described_models(started: Started) -> list[ModelInfo]:
    """The models of a start-up report (plain JSON across the socket) as the /models schema."""
    return [ModelInfo.model_validate({**entry, "toy": False}) for entry in started["models"]]
