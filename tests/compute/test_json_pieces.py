"""A JSON answer written in pieces (service/compute/encoding.py encode_pieces) and sent in frames
(service/compute/pipeline.py encoded_frames): the same bytes orjson writes for the whole object, and never
held whole by the compute process (issue 23: 148 MB at 16k tokens, held twice)."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import numpy as np
import orjson
import pytest
import torch

import service.compute.encoding as encoding
from devtools.compute import InProcess
from service.compute.encoding import encode_object, encode_pieces
from service.compute.pipeline import PIECE, computed
from service.protocol import ResponseFormat
from tests.support.formats import without_timing

META = b'{"seed":0}'
TEXT = " ".join(["the cat sat on the mat because it was warm and the dog did not mind"] * 20)  # 300 tokens
LARGE = {"text": TEXT, "layer": "all", "include": ["weights"]}  # about 5.8 million numbers, 70 MB of JSON


def sections() -> dict[str, Any]:
    """Tensors of every kind a response holds: floats with -inf and nan, integers, an empty one, layers,
    a nested section, plain values; some larger than a piece, with rows smaller and larger than one."""
    generator = torch.Generator().manual_seed(5)
    scores = torch.randn(2, 3, 9, 11, generator=generator, dtype=torch.float64)
    scores[0, 1, 2, :4] = float("-inf")
    scores[1, 0, 0, 0] = float("nan")
    return {
        "scaled_scores": scores,
        "row": torch.randn(40, generator=generator),
        "empty": torch.zeros(0, 4),
        "layers": [
            {
                "layer": 0,
                "top_keys": torch.randint(0, 10_000, (1, 3, 20, 5), generator=generator),
                "entropy": torch.randn(1, 3, 20, generator=generator),
            },
            {"layer": 3, "weights": torch.rand(1, 2, 6, 30, generator=generator)},
        ],
        "predictions": {"top_tokens": [["a", "b"]], "probabilities": torch.rand(1, 2, generator=generator)},
        "tokens": [["[CLS]", "the", "cat"]],
    }


@pytest.mark.parametrize("decimals", [None, 3])
@pytest.mark.parametrize("piece_numbers", [1, 7, 64, 2**16])
def test_the_pieces_join_to_the_bytes_orjson_writes_for_the_whole_object(
    monkeypatch: pytest.MonkeyPatch, decimals: int | None, piece_numbers: int
) -> None:
    monkeypatch.setattr(encoding, "PIECE_NUMBERS", piece_numbers)
    whole = encode_object(sections(), decimals)[:-1] + b',"meta":' + META + b"}"  # the encoding before
    consumed = sections()
    pieces = [bytes(piece) for piece in encode_pieces(consumed, decimals, lambda: META)]
    assert b"".join(pieces) == whole
    assert max(len(piece) for piece in pieces) < max(piece_numbers, 30) * 30  # bounded by the numbers
    assert consumed == {}  # emptied as written: each layer's tensors freed once out


def test_meta_alone_is_an_object_with_meta() -> None:
    assert b"".join(encode_pieces({}, None, lambda: META)) == b'{"meta":{"seed":0}}'


def test_a_large_answer_comes_in_frames_that_join_to_the_whole_encoding(compute: InProcess) -> None:
    """Over the socket: frames of about PIECE bytes, the first 200 and not last, then an empty last one;
    joined, the answer the whole encoding (orjson of every layer at once, as before) gives."""
    frames = list(compute.stream(LARGE, ResponseFormat.JSON))
    assert len(frames) > 10 and frames[0][0] == 200 and not frames[0][2]
    assert frames[-1] == (200, b"", True) and all(not last for _, _, last in frames[:-1])
    assert all(len(content) < 2 * PIECE for _, content, _ in frames)
    answer = json.loads(b"".join(content for _, content, _ in frames))
    result = computed(json.dumps(LARGE).encode(), compute.settings, compute.models).settled()
    layers = [{"layer": index, **tensors} for index, tensors in result.layers_in_order()]
    before = orjson.loads(encode_object({"layers": layers, "tokens": result.tokens}, None))
    assert {key: value for key, value in answer.items() if key != "meta"} == before
    assert without_timing(answer["meta"]) == without_timing(json.loads(result.meta()))
    np.testing.assert_allclose(np.asarray(answer["layers"][5]["weights"]).sum(-1), 1, rtol=1e-5)


def test_a_small_answer_is_one_frame(compute: InProcess) -> None:
    frames = list(compute.stream({"text": "the cat", "include": ["output"]}, ResponseFormat.JSON))
    assert len(frames) == 1 and frames[0][0] == 200 and frames[0][2]
    assert json.loads(frames[0][1])["meta"]["seq"] == 4


def test_an_error_is_the_whole_answer_before_any_frame(compute: InProcess) -> None:
    frames = list(compute.stream({"text": "the cat", "layer": 99}, ResponseFormat.JSON))
    assert len(frames) == 1 and frames[0][0] == 422 and frames[0][2]


def test_the_compute_process_never_holds_a_large_answer_whole(compute: InProcess) -> None:
    """The Python memory the frames take while they are made and sent one at a time stays a few frames,
    far below the answer (before: the answer whole, then a second copy of it to add meta)."""
    list(compute.stream({"text": "warm", "include": ["weights"]}, ResponseFormat.JSON))  # first-use costs
    tracemalloc.start()
    try:
        size = 0
        for _, content, _ in compute.stream(LARGE, ResponseFormat.JSON):
            size += len(content)
            del content
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size > 50 * 2**20
    assert peak < size / 8, f"{peak / 2**20:.1f} MB held at once for an answer of {size / 2**20:.1f} MB"
