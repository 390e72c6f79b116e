"""`generate`: greedy decoding with a decoder's own forward pass and key/value cache (its attention the
service's), text by text (each prompt unpadded, as generate() sees a single text), the argmax of the last
position's logits each step, stopping early at an end-of-text token (which is kept, as generate() keeps
it). The generated tokens come out as they are made (a stream sends them before the layers); the prompts
with their generated tokens then make the Encoded whose internals the request returns."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import torch

from service.compute.models.registry import LoadedModel
from service.compute.models.tokenizer import Encoded
from service.errors import RequestError


def check_generation(model: LoadedModel, encoded: Encoded, max_new_tokens: int) -> int:
    """The longest text once generated (what the 413 estimate counts), after the 422s: an encoder, a
    decoder without a language-model head, more tokens than the model's positions."""
    if not model.forward.causal:
        raise RequestError(
            ("generate",),
            f"found generate for {model.name!r}, an encoder; expected a decoder (GET /models: kind decoder)",
        )
    if model.lm_head is None:
        raise RequestError(
            ("generate",),
            f"found generate for {model.name!r}, which has no language-model head (its folder's config.json "
            "names no ...ForCausalLM or ...LMHeadModel); expected a decoder with one",
        )
    longest = max(encoded.lengths) + max_new_tokens
    if longest > model.max_length:
        raise RequestError(
            ("generate", "max_new_tokens"),
            f"found {max_new_tokens} new tokens after a prompt of {max(encoded.lengths)}: {longest} tokens; "
            f"the model {model.name!r} takes at most {model.max_length}",
        )
    return longest


def _end_ids(model: Any) -> set[int]:
    """The end-of-text ids generate() stops at: the generation config's (one or a list), else the config's."""
    ends = getattr(model.generation_config, "eos_token_id", None)
    if ends is None:
        ends = model.config.eos_token_id
    if ends is None:
        return set()
    return {int(end) for end in (ends if isinstance(ends, list) else [ends])}


class Generation:
    """Greedy generation of up to `max_new_tokens` after each text; iterate `tokens()` to run it, then
    `encoded()` is the prompts with their generated tokens (padded on the right)."""

    def __init__(self, model: LoadedModel, prompts: Encoded, max_new_tokens: int):
        assert model.lm_head is not None
        self.model, self.prompts, self.max_new_tokens = model, prompts, max_new_tokens
        self.sequences: list[list[int]] = []

    def tokens(self) -> Iterator[dict[str, Any]]:
        """One event per generated token, {"text": b, "position": i, "token": "..."}, as it is made."""
        lm = self.model.lm_head.model  # type: ignore[union-attr]
        ends = _end_ids(lm)
        # the key/value cache's argument: `cache` since transformers 5.x, `past_key_values` before
        cache_name = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"
        device = lm.device
        for text, length in enumerate(self.prompts.lengths):
            sequence = self.prompts.input_ids[text, :length].tolist()
            step_ids = torch.tensor([sequence], device=device)
            cache = None
            with torch.inference_mode():
                for _ in range(self.max_new_tokens):
                    out = lm(input_ids=step_ids, use_cache=True, logits_to_keep=1, **{cache_name: cache})
                    cache = getattr(out, cache_name)
                    token = int(out.logits[0, -1].argmax())
                    sequence.append(token)
                    yield {
                        "text": text,
                        "position": len(sequence) - 1,
                        "token": self.model.tokenizer.convert_ids_to_tokens(token),
                    }
                    if token in ends:
                        break
                    step_ids = torch.tensor([[token]], device=device)
            self.sequences.append(sequence)

    def encoded(self) -> Encoded:
        tokenizer = self.model.tokenizer
        longest = max(len(sequence) for sequence in self.sequences)
        pad = int(tokenizer.pad_token_id)
        ids = torch.tensor([s + [pad] * (longest - len(s)) for s in self.sequences])
        mask = torch.tensor([[1] * len(s) + [0] * (longest - len(s)) for s in self.sequences])
        return Encoded(
            tokens=[tokenizer.convert_ids_to_tokens(row.tolist()) for row in ids],
            input_ids=ids,
            attention_mask=mask,
            lengths=[len(s) for s in self.sequences],
            truncated=self.prompts.truncated,
        )

    @property
    def generated(self) -> list[int]:
        return [len(s) - n for s, n in zip(self.sequences, self.prompts.lengths, strict=True)]
