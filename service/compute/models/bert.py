"""The BERT family's forward pass with the service's attention module as its attention.

The model's embeddings, then layer by layer: service/compute/attention.py, then the layer's own residual,
LayerNorm and MLP. Another family slots in beside this file with the same three parts: its embeddings, each
layer's projections, and the rest of each layer after its attention.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from service.compute.attention import AttentionInternals, Projections, attention_on
from service.compute.device import Converter
from service.errors import ModelError

SUPPORTED_TYPES = (
    "bert",
)  # models whose layers expose attention.self.{query,key,value} and attention.output.dense


class LayerPass(NamedTuple):
    """One layer of the forward pass: the hidden states entering it, its weights, and its attention's
    internals."""

    layer: int
    hidden: Float[Tensor, "batch pos d_model"]
    projections: Projections
    internals: AttentionInternals


def check_supported(name: str, config: Any) -> None:
    """Encoders whose attention is exactly the service's: BERT with absolute positions, not a decoder."""
    positions = getattr(config, "position_embedding_type", None) or "absolute"
    decoder = bool(getattr(config, "is_decoder", False))
    if config.model_type not in SUPPORTED_TYPES or positions != "absolute" or decoder:
        raise ModelError(
            f"model {name!r}: found model_type {config.model_type!r}, position_embedding_type {positions!r}, "
            f"is_decoder {decoder}; supported: model_type {' or '.join(SUPPORTED_TYPES)} "
            "with absolute positions, not a decoder"
        )


class BertForward:
    """A transformers BertModel (eval mode, float32, CPU) whose attention is the service's."""

    def __init__(self, model: Any):
        self.model = model
        config = model.config
        self.num_heads: int = config.num_attention_heads
        self.d_head: int = config.hidden_size // config.num_attention_heads
        self.scale = 1.0 / math.sqrt(self.d_head)  # the model's own
        self.native = Converter(model.device, model.dtype)  # the forward runs as the model does

    def projections(self, layer: int) -> Projections:
        """That layer's W_q, W_k, W_v, W_o and biases, turned from nn.Linear's out_in into the in_out
        layout."""
        block = self.model.encoder.layer[layer].attention
        linears = {"q": block.self.query, "k": block.self.key, "v": block.self.value, "o": block.output.dense}
        return Projections(
            **{f"w_{n}": m.weight.detach().T for n, m in linears.items()},
            **{f"b_{n}": m.bias.detach() for n, m in linears.items()},
        )

    def _rest_of_layer(
        self,
        layer: int,
        hidden: Float[Tensor, "batch pos d_model"],
        attention_output: Float[Tensor, "batch pos d_model"],
    ) -> Float[Tensor, "batch pos d_model"]:
        """After the attention: residual and LayerNorm around its output (after W_o), then the MLP block with
        its own residual and LayerNorm; the hidden states entering the next layer."""
        block = self.model.encoder.layer[layer]
        attended = block.attention.output.LayerNorm(attention_output + hidden)
        return block.output(block.intermediate(attended), attended)  # type: ignore[no-any-return]

    def layers(
        self, input_ids: Int[Tensor, "batch pos"], key_mask: Bool[Tensor, "batch pos"] | None, last: int
    ) -> Iterator[LayerPass]:
        """The forward pass up to layer `last`, one LayerPass per layer as it is computed."""
        with torch.inference_mode():
            hidden = self.model.embeddings(input_ids=input_ids)  # [batch, pos, d_model], entering layer 0
            for index in range(last + 1):
                projections = self.projections(index)
                internals = attention_on(
                    self.native,
                    hidden,
                    hidden,
                    hidden,
                    projections,
                    self.num_heads,
                    self.scale,
                    False,
                    key_mask,
                    layer=index,
                )
                yield LayerPass(index, hidden, projections, internals)
                if index < last:
                    hidden = self._rest_of_layer(index, hidden, internals.output)  # entering layer index + 1
