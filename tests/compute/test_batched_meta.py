"""A batched pass (service/compute/batching.py) cuts each request's share to the shapes of its answer alone,
read from returned_shapes (service/compute/meta.py) rather than from a meta built, parsed and built again
for its answer (issue 26: each request of a pass built its meta twice). In process: the pass's own function
over requests sent as the server sends them, each answer compared with the same request computed alone."""

from __future__ import annotations

import json
import time

import orjson

from service.compute.batching import Turn, answers, shareable
from service.compute.gathering import Sent
from service.compute.meta import build_meta
from service.protocol import ATTEND, ResponseFormat, Tickets

TEXTS = ["The cat ate the fish", "The dog barked", "A bird sang at dawn today"]


def test_a_pass_builds_each_answers_meta_once_and_each_answer_is_its_own(compute, monkeypatch):
    bodies = [json.dumps({"text": text, "layer": [0, 5], "include": ["weights"]}).encode() for text in TEXTS]
    alone = [compute.post(body).json() for body in bodies]
    built = []

    def counted(*args, **kwargs):
        built.append(1)
        return build_meta(*args, **kwargs)

    monkeypatch.setattr("service.compute.pretrained.build_meta", counted)
    tickets = Tickets(len(bodies))
    turns = []
    for number, body in enumerate(bodies):
        tickets.issue(number)
        deadline = time.monotonic() + 60
        sent = Sent(number, deadline, ATTEND, ResponseFormat.JSON, True, body, time.perf_counter())
        turns.append(Turn(sent, shareable(sent, compute.settings)))
    frames = list(answers(turns, tickets, compute.settings, compute.models))
    replies = [orjson.loads(body) for status, body, _ in frames if status == 200]
    assert [body for status, body, _ in frames if status != 200] == [b"3"]  # one pass of three (BATCH_NOTE)
    assert len(built) == len(bodies)
    for reply, own in zip(replies, alone, strict=True):
        assert reply["meta"]["shapes"] == own["meta"]["shapes"]
        assert reply["tokens"] == own["tokens"]
        for layer, own_layer in zip(reply["layers"], own["layers"], strict=True):
            assert len(layer["weights"][0][0]) == len(own_layer["weights"][0][0])  # cut to its own length
