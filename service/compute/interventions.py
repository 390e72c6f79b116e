"""`interventions` in a model's own forward pass, through the attention function the service registers
(service/compute/models/forward.py calls an AttentionEdit in every layer): knockout removes query-key pairs
before the softmax (their scaled scores -inf, per head); ablate and patch replace heads' context before W_o
(zeros, its mean over the text's real query positions, or the context a clean pass computes for another text
of the same token count). Several apply together, in the order given; each is checked against the model and
the texts first (a 422 naming the intervention's field)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from schemas.interventions import Ablate, Intervention, Knockout, Patch
from service.compute.attention import AllowedPositions
from service.compute.models.registry import LoadedModel
from service.compute.models.tokenizer import Encoded
from service.errors import RequestError

Context = Float[Tensor, "batch head query_pos d_v"]


@dataclass
class Edits:
    """The AttentionEdit of one request: knockouts by layer (head, query, key index triples, True = kept), and
    context replacements by layer (heads, then zeros / mean / a patch source's context)."""

    real: Bool[Tensor, "batch pos"] | None  # the texts' real tokens (None: no padding)
    knockouts: dict[int, list[Knockout]] = field(default_factory=lambda: defaultdict(list))
    replacements: dict[int, list[tuple[list[int], str, Context | None]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    @property
    def first_layer(self) -> int | None:
        """The first layer edited (None: none); the layers before it compute what a clean pass does."""
        edited = [layer for layer, items in (*self.knockouts.items(), *self.replacements.items()) if items]
        return min(edited, default=None)

    def allowed(
        self, layer: int, allowed: AllowedPositions | None, query: Tensor, key: Tensor
    ) -> AllowedPositions | None:
        knockouts = self.knockouts.get(layer)
        if not knockouts:
            return allowed
        batch, heads, query_pos = query.shape[:3]
        key_pos = key.shape[2]
        kept = torch.ones(heads, query_pos, key_pos, dtype=torch.bool, device=query.device)
        for knockout in knockouts:
            which = knockout.heads if knockout.heads is not None else list(range(heads))
            h = torch.tensor(which, device=query.device)[:, None, None]
            q = torch.tensor(knockout.queries, device=query.device)[None, :, None]
            k = torch.tensor(knockout.keys, device=query.device)[None, None, :]
            kept[h, q, k] = False
        return kept[None] if allowed is None else allowed & kept[None]

    def context(self, layer: int, context: Context) -> Context:
        replacements = self.replacements.get(layer)
        if not replacements:
            return context
        context = context.clone()
        for heads, how, source in replacements:
            if how == "zero":
                context[:, heads] = 0.0
            elif how == "mean":
                context[:, heads] = self._mean(context[:, heads])
            else:
                assert source is not None
                context[:, heads] = source[:, heads].to(context.dtype)
        return context

    def _mean(self, context: Context) -> Context:
        """Each text's mean over its real query positions, at every position."""
        if self.real is None:
            return context.mean(dim=2, keepdim=True).expand_as(context)
        real = self.real.to(device=context.device, dtype=context.dtype)[
            :, None, :, None
        ]  # [batch, 1, pos, 1]
        mean = (context * real).sum(dim=2, keepdim=True) / real.sum(dim=2, keepdim=True)
        return mean.expand_as(context)


def _check_index(loc: tuple[str | int, ...], values: list[int], bound: int, what: str) -> None:
    for index, value in enumerate(values):
        if value >= bound:
            raise RequestError((*loc, index), f"found {value}; expected {what} 0 to {bound - 1}")


def plan_edits(
    interventions: list[Intervention], model: LoadedModel, encoded: Encoded, unlike_the_model: str | None
) -> Edits:
    """The request's interventions checked (layer, heads, positions, patch texts) and turned into Edits;
    each patch text's source context comes from a clean pass over it. `unlike_the_model`: how the request's
    settings differ from the model's forward pass, where interventions run (a 422)."""
    if unlike_the_model is not None:
        raise RequestError(
            ("interventions",),
            f"found interventions with {unlike_the_model}; interventions run in the model's own forward "
            "pass: ask for its settings, or leave them out",
        )
    batch, seq = encoded.input_ids.shape
    real = None if bool(encoded.attention_mask.all()) else encoded.attention_mask.bool()
    edits = Edits(real)
    patches: dict[int, list[tuple[int, Patch]]] = defaultdict(list)
    for index, intervention in enumerate(interventions):
        kind, spec = intervention.kind, intervention.spec
        loc: tuple[str | int, ...] = ("interventions", index, kind)
        if spec.layer >= model.num_layers:
            raise RequestError(
                (*loc, "layer"),
                f"found layer {spec.layer}; the model {model.name!r} has layers 0 to {model.num_layers - 1}",
            )
        if spec.heads is not None:
            _check_index((*loc, "heads"), spec.heads, model.num_heads, f"heads of {model.name!r}:")
        if isinstance(spec, Knockout):
            _check_index((*loc, "queries"), spec.queries, seq, "query positions")
            _check_index((*loc, "keys"), spec.keys, seq, "key positions")
            edits.knockouts[spec.layer].append(spec)
        elif isinstance(spec, Ablate):
            edits.replacements[spec.layer].append((spec.heads, spec.with_, None))
        else:
            patches[spec.layer].append((index, spec))
            edits.replacements[spec.layer].append((spec.heads, "patch", None))
    _fill_patch_sources(edits, patches, model, encoded)
    return edits


def _fill_patch_sources(
    edits: Edits, patches: dict[int, list[tuple[int, Patch]]], model: LoadedModel, encoded: Encoded
) -> None:
    """Each patch's source context: the patch text tokenized as the request's texts are, checked to have
    their token count, through a clean forward pass up to the last layer patched."""
    if not patches:
        return
    lengths = set(encoded.lengths)
    sources: dict[str, Encoded] = {}
    for index, patch in (item for items in patches.values() for item in items):
        ids = model.tokenizer(patch.text, split_special_tokens=True, return_tensors="pt")["input_ids"]
        if lengths != {ids.shape[1]}:
            raise RequestError(
                ("interventions", index, "patch", "text"),
                f"found a patch text of {ids.shape[1]} tokens; expected the token count of the request's "
                f"texts ({', '.join(map(str, encoded.lengths))}): patching replaces position by position",
            )
        sources[patch.text] = Encoded([], ids, torch.ones_like(ids), [ids.shape[1]], False)
    contexts: dict[tuple[str, int], Context] = {}
    for text, source in sources.items():
        layers = sorted(layer for layer, items in patches.items() if any(p.text == text for _, p in items))
        for step in model.forward.layers(source.input_ids, None, last=max(layers), keep=layers):
            contexts[text, step.layer] = step.internals.context
    for layer, items in patches.items():
        texts = iter(patch.text for _, patch in items)
        edits.replacements[layer] = [
            (heads, how, contexts[next(texts), layer] if how == "patch" else source)
            for heads, how, source in edits.replacements[layer]
        ]
