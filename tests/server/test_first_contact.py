"""What a new user meets first, over HTTP: the refusals of the commonest mistakes say what was found and what
is expected (an empty body, a misspelt field, a blank text, a layer in the wrong form or repeated), the worked
examples of Swagger UI show the tutorial's numbers, and every documented error status has an example that is
an answer the service really gives."""

from __future__ import annotations

from typing import Any

import numpy as np

from schemas.response import ErrorBody
from service.server.openapi_examples import load_golden


def refusal(server: Any, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = server.post(body)
    assert response.status_code == 422, response.text
    detail: list[dict[str, Any]] = response.json()["detail"]
    return detail


def test_an_empty_body_names_text_among_the_inputs(server):
    (item,) = refusal(server, {})
    assert "`text`" in item["msg"] and "`embeddings`" in item["msg"], item


def test_a_misspelt_field_is_told_with_the_closest_and_the_accepted_ones(server):
    (item,) = refusal(server, {"txt": "hello"})
    assert item["loc"] == ["body", "txt"] and item["type"] == "extra_forbidden"
    assert "did you mean `text`?" in item["msg"]
    assert "expected one of: " in item["msg"] and "embeddings" in item["msg"] and "layer" in item["msg"]
    (nested,) = refusal(server, {"embeddings": [[1.0, 0.0]], "weights": {"sed": 3}})
    assert nested["loc"] == ["body", "weights", "sed"] and "did you mean `seed`?" in nested["msg"]
    (far,) = refusal(server, {"text": "hi", "zzzz": 1})
    assert "did you mean" not in far["msg"] and "expected one of: " in far["msg"]


def test_a_blank_text_is_called_whitespace_where_it_is(server):
    (plain,) = refusal(server, {"text": "   ", "model": "toy"})
    assert plain["loc"] == ["body", "text"] and "text[0]" not in plain["msg"]
    assert "only whitespace" in plain["msg"] and "empty" not in plain["msg"]
    (listed,) = refusal(server, {"text": ["a cat", ""], "model": "toy"})
    assert "an empty text at text[1]" in listed["msg"]


def test_a_layer_in_the_wrong_form_gets_one_message_listing_the_forms(server):
    for layer, found in (("last", "layer = 'last'"), ([0, "1"], "layer[1] = '1'"), (True, "layer = true")):
        (item,) = refusal(server, {"text": "hi", "layer": layer})
        assert found in item["msg"], item
        assert 'a layer index (0, 1, ...), a list of distinct indexes, or "all"' in item["msg"], item


def test_a_repeated_layer_is_refused_as_a_repeated_head_is(server):
    (layer,) = refusal(server, {"text": "hi", "layer": [1, 0, 1]})
    assert layer["loc"] == ["body", "layer"] and "layer[2] = 1, a repeat of layer[0]" in layer["msg"]
    (heads,) = refusal(server, {"text": "hi", "heads": [0, 0]})
    assert "a repeat of" in heads["msg"]


def test_the_worked_examples_show_the_tutorials_numbers(server):
    examples = server.client.get("/openapi.json").json()["paths"]["/attend"]["post"]["requestBody"][
        "content"
    ]["application/json"]["examples"]
    cat = load_golden("seed_cat_eats_fish")
    answer = server.post(examples["cat_eats_fish"]["value"]).json()
    assert answer["q"][0][0][0] == [0.6, 0.47]  # float32 alone would say 0.47000003
    assert np.asarray(answer["q"]).reshape(3, 2).tolist() == cat["expected"]["q"]
    assert "float32" in examples["cat_eats_fish"]["description"]


def test_every_error_example_is_a_true_answer(server):
    document = server.client.get("/openapi.json").json()
    examples: dict[str, Any] = {}
    for path, operations in document["paths"].items():
        if path.startswith("/v2"):
            continue
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if status.startswith(("4", "5")) and "content" in response:  # HEAD answers have no body
                    example = response["content"]["application/json"]["example"]
                    ErrorBody.model_validate(example)
                    assert "string" not in str(example), (path, status, example)
                    examples[f"{path} {status}"] = example
    assert {"/attend 413", "/attend 422", "/readyz 503"} <= set(examples)
    assert examples["/readyz 503"] != examples["/attend 503"]  # each route's own
    misspelt = server.post({"txt": "The cat ate the fish"})
    assert misspelt.json() == examples["/attend 422"]
    html = server.post({"text": "hi", "model": "toy"}, headers={"accept": "text/html"})
    assert html.status_code == 406 and html.json() == examples["/attend 406"]
    plain = server.client.post("/attend", content=b"{}", headers={"content-type": "text/plain"})
    assert plain.status_code == 415 and plain.json() == examples["/attend 415"]
    too_long = server.post({"text": "a " * 5000, "model": "toy"})
    assert too_long.status_code == 413 and too_long.json() == examples["/attend 413"]
