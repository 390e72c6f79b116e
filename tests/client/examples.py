"""Requests the client tests share: the project's worked examples (../shared/golden) and a MiniLM sentence."""

from __future__ import annotations

import json
from typing import Any, Literal

from attention_client import Weights
from devtools.paths import shared

SENTENCE = "The cat ate the fish because it was hungry"


def golden(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(shared("golden", f"{name}.json").read_text())
    return loaded


def cat_eats_fish_weights(layout: Literal["in_out", "out_in"] = "in_out") -> Weights:
    """The example's W_q, W_k, W_v in either layout."""
    example = golden("seed_cat_eats_fish")
    return {
        "w_q": example[f"w_q_{layout}"],
        "w_k": example[f"w_k_{layout}"],
        "w_v": example[f"w_v_{layout}"],
        "layout": layout,
    }
