"""Text bombs are refused before any heavy work (issue 12, item 4): the batch, the characters and tokens of
each text and the estimated sizes are checked before a text is tokenized in full or any embedding is built,
so a refusal costs milliseconds, whatever the size of the texts."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from devtools.compute import InProcess
from service.compute.models.tokenizer import readable_prefix
from service.compute.toy import toy_token_count, toy_tokens

FAST_S = 2.0  # generous: a refusal takes milliseconds; the machine is shared

TOY_BOMB = {  # 1.5 MB: 64 texts of 4096 tokens with d_model 1024, over the element limits
    "text": [" ".join(f"w{row}x{i}" for i in range(4096)) for row in range(64)],
    "model": "toy",
    "d_model": 1024,
}
MANY_TEXTS = ["a"] * 1_000_000  # a million one-character texts
LONG_TEXT = "word " * 5_500_000  # one text of 5.5 million words


def timed_post(compute: InProcess, body: dict[str, Any]) -> tuple[int, Any, float]:
    content = orjson.dumps(body)
    started = time.perf_counter()
    reply = compute.post(content)
    return reply.status_code, reply.json(), time.perf_counter() - started


def test_toy_bomb_is_the_413_of_the_limits_at_once(compute):
    status, body, seconds = timed_post(compute, TOY_BOMB)
    assert status == 413, body
    assert body["limit"] in ("ATTENTION_MAX_RESPONSE_ELEMENTS", "ATTENTION_MAX_COMPUTE_ELEMENTS")
    assert seconds < FAST_S


@pytest.mark.parametrize("model", ["toy", None], ids=["toy", "pretrained"])
def test_a_million_texts_are_refused_from_the_batch_at_once(compute, model):
    compute.post({"text": "warm up"})  # the model loads on first use
    body = {"text": MANY_TEXTS} | ({"model": model} if model else {})
    status, answer, seconds = timed_post(compute, body)
    assert status == 413, answer
    # the texts, counted as the body's strings: the texts and the keys and values beside them
    assert answer["limit"] == "ATTENTION_MAX_BATCH" and 1_000_000 <= answer["estimate"] <= 1_000_003
    assert seconds < FAST_S


def test_a_text_of_millions_of_words_is_refused_at_once_in_toy_mode(compute):
    status, answer, seconds = timed_post(compute, {"text": LONG_TEXT, "model": "toy"})
    assert status == 413, answer
    assert answer["limit"] == "ATTENTION_MAX_SEQ"
    assert seconds < FAST_S


def test_a_text_of_millions_of_words_is_refused_at_once_by_a_model(compute):
    compute.post({"text": "warm up"})  # the model loads on first use
    status, answer, seconds = timed_post(compute, {"text": LONG_TEXT})
    assert status == 422, answer
    assert answer["detail"][0]["loc"] == ["body", "text"]
    assert "truncate" in answer["detail"][0]["msg"]
    assert seconds < FAST_S


def test_a_text_of_millions_of_words_is_truncated_quickly(compute):
    compute.post({"text": "warm up"})
    started = time.perf_counter()
    reply = compute.post({"text": LONG_TEXT, "truncate": True, "layer": 0, "include": ["weights"]})
    seconds = time.perf_counter() - started
    assert reply.status_code == 200, reply.text
    tokens = reply.json()["tokens"][0]
    max_length = compute.models.get("all-MiniLM-L6-v2").max_length
    assert len(tokens) == max_length and tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert set(tokens[1:-1]) == {"word"}
    assert seconds < 2 * FAST_S


@pytest.mark.parametrize(
    "text",
    ["猫吃鱼", " 猫 吃鱼 ", "one", "  one  ", "a b", "a\u3000b\u2028c\x1cd", "tab\tand\nnew line", "x " * 50],
)
def test_toy_token_count_is_the_number_of_toy_tokens(text):
    count = len(toy_tokens(text))
    assert toy_token_count(text, 1000) == count
    capped = toy_token_count(text, 1)  # over the cap: some number over it
    assert capped == count if count <= 1 else capped > 1


def test_a_text_is_read_up_to_its_last_space_within_the_bound():
    assert readable_prefix("short text", 100) == "short text"
    assert readable_prefix("abc def ghi", 9) == "abc def"
    assert readable_prefix("abcdefghi", 4) == "abcd"  # no whitespace to cut at


def test_a_text_whose_characters_give_too_few_tokens_is_refused(compute):
    """Past the characters read, a text is refused when they do not already fill the model's maximum."""
    text = "a" + " " * 20_000 + "b"
    status, answer, seconds = timed_post(compute, {"text": text, "truncate": True})
    assert status == 422, answer
    assert answer["detail"][0]["loc"] == ["body", "text"]
    assert "20,002 characters" in answer["detail"][0]["msg"]
