"""The request's rules between fields, written as JSON Schema so that the OpenAPI document refuses what the
service refuses: exactly one input form (`{}` is invalid), `query`, `key` and `value` together, `context`
only with `embeddings`, the text-only and toy-only settings, and the all-or-none explicit weights.

They use the keywords that code generators ignore (`not`, `if`/`then` inside `allOf`), so a generated client
keeps one flat request model while validators and contract testers apply the rules. "Absent" here always
means absent or null: the service reads null as absent. Unions are written as `anyOf` of plain types, with
"all" as a one-value `enum`: the form openapi-python-client round-trips (it dropped the integer branch of
`int | list[int] | Literal["all"]`)."""

from __future__ import annotations

import sys
from typing import Any

JsonDict = dict[str, Any]

NULL: JsonDict = {"type": "null"}
NOT_NULL: JsonDict = {"not": NULL}


def _absent(*fields: str) -> JsonDict:
    """Each of `fields` absent or null."""
    return {"properties": dict.fromkeys(fields, NULL)}


def _present(*fields: str) -> JsonDict:
    """Each of `fields` given, not null."""
    return {"required": list(fields), "properties": dict.fromkeys(fields, NOT_NULL)}


def _all(*parts: JsonDict) -> JsonDict:
    """The conditions of `parts` together (their required lists and properties merged)."""
    merged: JsonDict = {}
    for part in parts:
        for key, value in part.items():
            if key == "required":
                merged["required"] = [*merged.get("required", []), *value]
            elif key == "properties":
                merged["properties"] = {**merged.get("properties", {}), **value}
            else:
                merged[key] = value
    return merged


def _when(condition: JsonDict, then: JsonDict) -> JsonDict:
    return {"if": condition, "then": then}


def _whitespace_class() -> str:
    """A regex class of the characters str.isspace() calls whitespace (Python's own test of a blank text),
    spelled out so that ECMA-262 and Python regex engines read it alike."""
    runs: list[list[int]] = []
    for code in range(sys.maxunicode + 1):
        if chr(code).isspace():
            if runs and runs[-1][1] == code - 1:
                runs[-1][1] = code
            else:
                runs.append([code, code])
    return "".join(f"\\u{a:04x}" + (f"-\\u{b:04x}" if b > a else "") for a, b in runs)


# some character that is not whitespace: a text the service does not refuse as empty
NOT_BLANK = f"[^{_whitespace_class()}]"


def text_json_schema(schema: JsonDict) -> None:
    text: JsonDict = {"type": "string", "pattern": NOT_BLANK}
    schema.pop("anyOf", None)
    schema["anyOf"] = [text, {"type": "array", "items": text, "minItems": 1}, NULL]


def layer_json_schema(schema: JsonDict) -> None:
    index: JsonDict = {"type": "integer", "minimum": 0}
    schema.pop("anyOf", None)
    schema["anyOf"] = [
        index,
        {"type": "array", "items": index, "minItems": 1, "uniqueItems": True},
        {"type": "string", "enum": ["all"]},
        NULL,
    ]


DIRECT = ("query", "key", "value")
TOY_MODEL = "toy"  # the `model` of toy mode
TOY: JsonDict = {"required": ["model"], "properties": {"model": {"const": TOY_MODEL}}}
MODEL_ONLY = ("predict", "interventions", "generate")  # a pretrained model's text alone
TEXT_ONLY = ("model", "layer", "d_model", *MODEL_ONLY)


def input_forms_json_schema(schema: JsonDict) -> None:
    """AttendRequest: one of embeddings (with an optional context), query + key + value, or text."""
    schema["not"] = _absent("embeddings", *DIRECT, "text")  # some input
    schema["allOf"] = [
        _when(_present("text"), _absent("embeddings", "context", *DIRECT, "attention_mask")),
        _when(_absent("text"), _absent(*TEXT_ONLY)),
        _when(_present("embeddings"), _absent(*DIRECT)),
        *(_when(_present(name), _all(_present(*DIRECT), _absent("weights", "context"))) for name in DIRECT),
        _when(_present("context"), _present("embeddings")),
        # the toy model has no layers; a pretrained one (named, or the default) brings its own embeddings
        _when(_all(_present("text"), TOY), _absent("layer", *MODEL_ONLY)),
        _when(_all(_present("text"), {"not": TOY}), _absent("weights", "d_model")),
    ]


INTERVENTION_KINDS = ("ablate", "knockout", "patch")


def intervention_json_schema(schema: JsonDict) -> None:
    """Intervention: exactly one of ablate, knockout, patch."""
    schema["not"] = _absent(*INTERVENTION_KINDS)
    schema["allOf"] = [
        _when(_present(kind), _absent(*(other for other in INTERVENTION_KINDS if other != kind)))
        for kind in INTERVENTION_KINDS
    ]


QKV_MATRICES = ("w_q", "w_k", "w_v")  # given together or not at all
EXPLICIT_ONLY = ("w_o", "b_q", "b_k", "b_v", "b_o")


def weights_json_schema(schema: JsonDict) -> None:
    """WeightSpec: w_q, w_k, w_v all given or all generated; w_o and the biases only with them; b_o with
    w_o."""
    schema["allOf"] = [
        *(_when(_present(name), _present(*QKV_MATRICES)) for name in (*QKV_MATRICES, *EXPLICIT_ONLY)),
        _when(_present("b_o"), _present("w_o")),
    ]
