"""A model's forward pass resumed at a layer, from a clean pass over the same tokens.

An intervention changes nothing before its layer, so an intervened pass whose layers no one inspects (a
request for predictions or output_similarity only) starts at its first intervened layer: from the hidden
states the clean pass fed that layer, each later layer is called as the clean pass called it (the same
mask, positions, rotary cos and sin), then the model's final norm gives its last_hidden_state. Both passes
attend as a pass that summarizes runs the layers it keeps none of: torch's SDPA, no weights materialized
(forward.py); the edits apply inside the service's attention function, to the heads' context (ablate,
patch) and to the mask (knockout: that layer attends with the whole mask, in blocks of rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from service.compute.models.flow import _hidden as hidden_of  # the one reading of a layer call's input
from service.compute.models.flow import _output as output_of
from service.compute.models.forward import (
    AttentionEdit,
    BlockCall,
    ModelForward,
    Summarize,
    WholePass,
    layers_called_alone,
)


@dataclass(frozen=True)
class CleanPass:
    """What a clean pass over some tokens leaves for the passes resumed from it: how it called each layer
    (the layer's input hidden states first; empty when not recorded) and the model's final hidden states."""

    calls: list[BlockCall]
    final: Float[Tensor, "batch pos d_model"]


def held_elements(forward: ModelForward, batch: int, seq: int) -> int:
    """Numbers a clean pass with its calls holds: every layer's input hidden states and the final ones."""
    return (len(forward.parts) + 1) * batch * seq * forward.d_model


def clean_pass(
    forward: ModelForward,
    input_ids: Int[Tensor, "batch pos"],
    key_mask: Bool[Tensor, "batch pos"] | None,
    with_calls: bool,
) -> CleanPass:
    """The model's own pass with no edit, every layer through SDPA; `with_calls`: keep how it called each
    layer, to resume from."""
    whole = WholePass()
    every = range(len(forward.parts))
    steps = forward.layers(
        input_ids,
        key_mask,
        last=len(forward.parts) - 1,
        keep=(),
        whole=whole,
        summarize=Summarize(None),
        blocks=every if with_calls else (),
    )
    for _ in steps:  # keeps no layer: the pass runs whole on the first step asked
        pass
    assert whole.final is not None
    return CleanPass([whole.calls[layer] for layer in every] if with_calls else [], whole.final)


def resumed(
    forward: ModelForward, clean: CleanPass, start: int, edit: AttentionEdit
) -> Float[Tensor, "batch pos d_model"]:
    """The final hidden states of the pass with `edit`, which changes no layer before `start`: the layers
    from `start` on, called as `clean` called them, from the hidden states it fed layer `start`."""
    assert clean.calls, "a clean pass recorded with its calls"
    if start >= len(clean.calls):  # no layer edited
        return clean.final
    hidden = hidden_of(clean.calls[start])
    with layers_called_alone(forward, WholePass(edit)), torch.inference_mode():
        for call in clean.calls[start:]:
            if call.args:
                hidden = output_of(call.module(hidden, *call.args[1:], **call.kwargs))
            else:
                hidden = output_of(call.module(**{**call.kwargs, "hidden_states": hidden}))
        norm = forward.family.final_norm(forward.model)
        return hidden if norm is None else norm(hidden)
