"""`predict`: a model's next-token (or masked-token) distribution at chosen positions, from its language-model
head applied to the final hidden states of those positions alone, as the top-level `predictions` tensors
(schemas/interventions.py names their axes): top tokens and probabilities, the log-probabilities of
requested targets, and with an intervened pass, KL(clean || intervened)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from schemas.interventions import PREDICTION_AXES, Predict
from service.compute.models.registry import LoadedModel
from service.compute.models.tokenizer import Encoded
from service.errors import LimitExceeded, RequestError
from service.settings import Settings


@dataclass(frozen=True)
class PredictionPlan:
    """What `predict` asks of a model, checked against the texts: the positions of each text (as many for
    every text), the top_k and the target ids."""

    positions: list[list[int]]  # [batch][position]
    top_k: int
    targets: list[str]
    target_ids: list[int]

    @property
    def count(self) -> int:
        return len(self.positions[0])


def _no_head(model: LoadedModel) -> RequestError:
    return RequestError(
        ("predict",),
        f"found predict for the model {model.name!r}, which has no language-model head (its folder's "
        "config.json names no ...ForCausalLM, ...LMHeadModel or ...ForMaskedLM); expected a model with one "
        "(GET /models: lm_head)",
    )


def _positions(predict: Predict, model: LoadedModel, encoded: Encoded) -> list[list[int]]:
    lengths = encoded.lengths
    if predict.positions is not None:
        shortest = min(lengths)
        for index, position in enumerate(predict.positions):
            if position >= shortest:
                raise RequestError(
                    ("predict", "positions", index),
                    f"found position {position}; expected positions below {shortest}, the token count of "
                    "the shortest text (every text is predicted at these positions)",
                )
        return [list(predict.positions) for _ in lengths]
    assert model.lm_head is not None
    if model.lm_head.kind == "causal":
        return [[length - 1] for length in lengths]
    mask_id = model.tokenizer.mask_token_id
    found = [
        [i for i, token in enumerate(ids[:n].tolist()) if token == mask_id]
        for ids, n in zip(encoded.input_ids, lengths, strict=True)
    ]
    counts = [len(positions) for positions in found]
    if mask_id is None or not counts[0] or len(set(counts)) > 1:
        raise RequestError(
            ("predict", "positions"),
            f"found {counts} mask tokens ({model.tokenizer.mask_token!r}) in the texts; a masked LM predicts "
            "at each text's mask tokens by default, so expected at least one and as many in every text, or "
            "`positions`",
        )
    return found


def target_ids(predict: Predict, model: LoadedModel) -> list[int]:
    """The ids of `predict.targets`, each one token of the vocabulary (a 422 otherwise)."""
    tokenizer = model.tokenizer
    ids = []
    for index, target in enumerate(predict.targets or ()):
        token_id = tokenizer.convert_tokens_to_ids(target)
        if token_id is None or (token_id == tokenizer.unk_token_id and target != tokenizer.unk_token):
            pieces = tokenizer.tokenize(target)
            raise RequestError(
                ("predict", "targets", index),
                f"found {target!r}, which is not one token of the vocabulary of {model.name!r} (the "
                f"tokenizer writes it as {pieces[:8]}); expected a vocabulary entry as the tokenizer "
                "writes it",
            )
        ids.append(int(token_id))
    return ids


def plan_predictions(predict: Predict, model: LoadedModel, encoded: Encoded) -> PredictionPlan:
    if model.lm_head is None:
        raise _no_head(model)
    return PredictionPlan(
        _positions(predict, model, encoded),
        min(predict.top_k, model.vocab_size),
        list(predict.targets or ()),
        target_ids(predict, model),
    )


def check_prediction_limits(settings: Settings, plan: PredictionPlan, vocab: int, passes: int) -> None:
    """The logits over the vocabulary at every predicted position (per pass: clean and intervened), and the
    numbers the sections return, against the limits (413), before any forward pass."""
    batch = len(plan.positions)
    held = passes * batch * plan.count * vocab
    if held > settings.max_compute_elements:
        raise LimitExceeded(
            "ATTENTION_MAX_COMPUTE_ELEMENTS",
            settings.max_compute_elements,
            held,
            f"logits held for the predictions ({passes} pass(es) x {batch} texts x {plan.count} positions x "
            f"{vocab} vocabulary entries)",
        )
    returned = passes * batch * plan.count * (2 * plan.top_k + len(plan.targets) + 1)
    if returned > settings.max_response_elements:
        raise LimitExceeded(
            "ATTENTION_MAX_RESPONSE_ELEMENTS",
            settings.max_response_elements,
            returned,
            "numbers in the predictions (top tokens and probabilities, targets, kl)",
        )


def log_probs(
    model: LoadedModel, final: Float[Tensor, "batch pos d_model"], plan: PredictionPlan
) -> Float[Tensor, "batch position vocab"]:
    """The head's log-softmax at the planned positions (in float32 at least: a half-precision model's logits
    are widened before the softmax, as its own loss does)."""
    assert model.lm_head is not None
    rows: Int[Tensor, "batch 1"] = torch.arange(final.shape[0], device=final.device)[:, None]
    at: Int[Tensor, "batch position"] = torch.tensor(plan.positions, device=final.device)
    with torch.inference_mode():
        logits = model.lm_head.logits(final[rows, at])
    wide = logits.dtype if logits.dtype == torch.float64 else torch.float32
    return F.log_softmax(logits.to(wide), dim=-1)


def predictions(
    model: LoadedModel,
    plan: PredictionPlan,
    logprobs: Float[Tensor, "batch position vocab"],
    clean: Float[Tensor, "batch position vocab"] | None = None,
) -> dict[str, Any]:
    """The `predictions` object; `clean`: the clean pass's log-probabilities, for `kl`."""
    top = logprobs.topk(plan.top_k, dim=-1)
    ids = top.indices.tolist()
    convert = model.tokenizer.convert_ids_to_tokens
    section: dict[str, Any] = {
        "top_tokens": [[convert(ranked) for ranked in text] for text in ids],
        "top_probs": top.values.exp(),
    }
    if plan.targets:
        section["target_logprobs"] = logprobs[..., plan.target_ids]
    if clean is not None:  # KL(clean || intervened) = sum p_clean (log p_clean - log p_intervened)
        section["kl"] = (clean.exp() * (clean - logprobs)).sum(-1).clamp_min(0.0)
    return section


def prediction_axes(plan: PredictionPlan, batch: int, names: list[str], prefix: str) -> dict[str, Any]:
    """meta.axes and meta.shapes entries ("predictions.top_probs", ...) of the names returned."""
    lengths = {"batch": batch, "position": plan.count, "rank": plan.top_k, "target": len(plan.targets)}
    axes = {f"{prefix}.{name}": list(PREDICTION_AXES[name]) for name in names}  # type: ignore[index]
    shapes = {key: [lengths[axis] for axis in value] for key, value in axes.items()}
    return {"axes": axes, "shapes": shapes}
