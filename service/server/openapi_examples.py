"""One-click request examples for Swagger UI, built from the worked examples in service/golden/
(copies of shared/golden/, which the tests keep identical)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def load_golden(name: str) -> dict[str, Any]:
    example: dict[str, Any] = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    return example


# the worked examples show the tutorial's numbers: rounded, where float32 arithmetic would show its noise
ROUNDED = {"decimals": 4}
WHY_ROUNDED = (
    "Rounded to 4 decimals (`decimals`): the service computes in float32 by default, about 7 significant "
    "digits, in which 0.47 is 0.47000003; without `decimals` the numbers are float32's own, and "
    '"dtype": "float64" computes in double precision.'
)


@cache
def request_examples() -> dict[str, dict[str, Any]]:
    cat = load_golden("seed_cat_eats_fish")
    age = load_golden("seed_age_lookup")

    def cat_request(layout: str) -> dict[str, Any]:
        weights = {f"w_{m}": cat[f"w_{m}_{layout}"] for m in "qkv"}
        return {"embeddings": cat["embeddings"], "weights": {**weights, "layout": layout}, **ROUNDED}

    lookup = {"query": age["query"], "key": age["key"], "value": age["value"], **ROUNDED}
    return {
        "cat_eats_fish": {
            "summary": "猫 吃 鱼: one head, d_model 4, d_k 2, math layout (golden)",
            "description": "Self-attention over three tokens with W given as [d_model, d_k] (Q = X @ W_q). "
            "Expected q row 0: 0.6 0.47; weights row 0: 0.3168 0.3370 0.3462; output row 0: 0.4743 0.5875. "
            + WHY_ROUNDED,
            "value": cat_request("in_out"),
        },
        "cat_eats_fish_torch_layout": {
            "summary": "猫 吃 鱼 with torch.nn.Linear.weight matrices (layout out_in)",
            "description": "The same numbers, with each W given as [d_k, d_model], as nn.Linear stores it.",
            "value": cat_request("out_in"),
        },
        "age_lookup": {
            "summary": "Attention as a soft look-up: average age of people surnamed Zhang (golden)",
            "description": "Q, K, V given directly (no projections). Keys embed 张三, 张三-2, 李四, 张麻子; "
            "values are their ages. The answer, 19.47, is the weighted average age. Scale 1/sqrt(3).",
            "value": lookup,
        },
        "age_lookup_unscaled": {
            "summary": "The same look-up without scaling (scale 1): sharper weights, answer 19.33",
            "value": {**lookup, "scale": 1.0},
        },
        "minilm_layer0": {
            "summary": "A sentence through all-MiniLM-L6-v2, layer 0",
            "description": "Real pretrained attention: 12 heads of a 6-layer BERT, tokens included.",
            "value": {
                "text": "Attention is all you need",
                "layer": 0,
                "include": ["weights", "output"],
                "decimals": 4,
            },
        },
        "minilm_all_layers": {
            "summary": '"The cat ate the fish because it was hungry", every layer\'s weights',
            "description": 'Which token does "it" attend to, layer by layer and head by head?',
            "value": {
                "text": "The cat ate the fish because it was hungry",
                "layer": "all",
                "include": ["weights"],
                "decimals": 4,
            },
        },
        "toy_cat_eats_fish": {
            "summary": "Toy mode: 猫 吃 鱼 with seeded embeddings and weights",
            "description": "No pretrained model: each token gets a seeded 4-number embedding, "
            "then xavier weights.",
            "value": {
                "text": "猫 吃 鱼",
                "model": "toy",
                "d_model": 4,
                "weights": {"seed": 0},
                "decimals": 4,
            },
        },
        "random_causal_multihead": {
            "summary": "Seeded random weights, 2 heads, causal, padding mask, rounded",
            "description": "Weights from xavier_uniform with seed 7 are the same on every machine. "
            "The last key is padding; with causal the first query still sees key 0.",
            "value": {
                "embeddings": [[0.8, 0.2, 0.4, 0.1], [0.1, 0.9, 0.3, 0.7], [0.3, 0.1, 0.9, 0.2]],
                "weights": {"init": "xavier_uniform", "seed": 7},
                "num_heads": 2,
                "causal": True,
                "attention_mask": [[1, 1, 0]],
                "include": ["weights", "context", "output"],
                "decimals": 4,
            },
        },
    }
