"""What handing a small request to a compute process and back costs the server's event loop (issue 26),
counted rather than timed: the turns of the loop (each one a select/epoll_wait system call and the loop's own
work) from a request's sending to its `run` returning the answer. One compute process of the real protocol
(service/protocol.py) that answers at once (bench/instant.py answer_at_once), requests one after the other, so
that each waits for its answer once: the turn that wakes on the answer, then one per hop from the answer's
bytes to the awaiting `run`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bench.instant import answer_at_once
from service.errors import ComputeProcessDied
from service.protocol import ANSWER, Frame
from service.server.answer_frames import AnswerFrames
from service.server.compute_pool import ComputePool
from service.settings import Settings

BODY = json.dumps({"embeddings": [[1.0, 0.0], [0.0, 1.0]]}).encode()
REQUESTS = 50


async def _turns_per_request() -> float:
    settings = Settings(max_concurrent=1, light_processes=0, batch_window_ms=0)
    pool = ComputePool(settings, target=answer_at_once)
    await pool.start()
    selector: Any = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    select, turns = selector.select, []

    def counted(timeout: float | None = None) -> Any:
        turns.append(timeout)
        return select(timeout)

    try:
        for _ in range(3):  # the first requests' one-off costs
            (await pool.run(BODY)).release()
        selector.select = counted
        for _ in range(REQUESTS):
            held = await pool.run(BODY)
            assert held.status == 200
            held.release()
    finally:
        selector.select = select
        await pool.shutdown()
    return len(turns) / REQUESTS


def test_an_answer_resumes_its_waiting_run_on_the_turn_of_the_event_loop_after_the_one_that_reads_it():
    """The turn that reads the answer's frame and hands it on at once (service/server/answer_frames.py), and
    the one that resumes `run`: not one more to wake a task reading a StreamReader, nor one more to go from
    the answer's future to what `run` waits on (a done callback is called a turn later). 4 on main."""
    assert asyncio.run(_turns_per_request()) <= 2.0


def _frames(*frames: tuple[int, bool, bytes]) -> bytes:
    return b"".join(ANSWER.pack(status, last, len(content)) + content for status, last, content in frames)


async def _read_in_pieces(wire: bytes, piece: int, room: int | None) -> tuple[Frame, list[Any], bool]:
    """The report and the frames after it that AnswerFrames hands on when `wire` comes `piece` bytes at a
    time, with `room` bytes of room for an answer in one piece; whether the end was told."""
    frames, got, lost = AnswerFrames(), [], []
    frames.listen(lambda *frame: got.append(frame), lambda: lost.append(True))
    frames.room = None if room is None else (lambda: room)
    for start in range(0, len(wire), piece):
        frames.data_received(wire[start : start + piece])
        assert len(frames.buffer) <= max(piece, ANSWER.size + 5)  # a dropped answer is never held whole
    frames.connection_lost(None)
    return await frames.report, got, bool(lost)


@pytest.mark.parametrize("piece", [1, 2, 7, 11, 4096])
def test_answer_frames_are_handed_on_whole_however_their_bytes_come(piece: int):
    wire = _frames((200, True, b"report"), (200, False, b"line"), (200, True, b""), (0, True, b"2"))
    report, got, lost = asyncio.run(_read_in_pieces(wire, piece, room=None))
    assert report == (200, b"report", True)
    assert got == [(200, b"line", False, 4), (200, b"", True, 0), (0, b"2", True, 1)]
    assert lost


@pytest.mark.parametrize("piece", [1, 3, 4096])
def test_an_answer_in_one_piece_that_does_not_fit_the_room_is_dropped_as_it_comes(piece: int):
    large = bytes(range(256)) * 40
    wire = _frames((200, True, b"report"), (200, True, large), (200, True, b"small"))
    _, got, _ = asyncio.run(_read_in_pieces(wire, piece, room=100))
    assert got == [(200, None, True, len(large)), (200, b"small", True, 5)]


def test_a_socket_that_ends_before_its_report_fails_the_start_and_frames_before_listen_wait_for_it():
    async def run() -> tuple[list[Any], list[bool]]:
        ended = AnswerFrames()
        ended.connection_lost(None)
        with pytest.raises(ComputeProcessDied):
            await ended.report
        early = AnswerFrames()
        early.data_received(_frames((200, True, b"report"), (200, True, b"answer")))
        early.connection_lost(None)
        got: list[Any] = []
        lost: list[bool] = []
        early.listen(lambda *frame: got.append(frame), lambda: lost.append(True))
        return got, lost

    assert asyncio.run(run()) == ([(200, b"answer", True, 6)], [True])
