"""What `predict` and `interventions` add to a model's forward pass: the pass runs whole (to the model's final
hidden states) with the request's edits in its attention; with interventions and `clean` (the default) a
second, clean pass gives `output_similarity`, `predictions_clean` and `predictions.kl`. The top-level
sections are made once the layers have been read (the intervened pass is then complete).

A request that returns no layer's internals (`include: []`) runs its passes alone, before its (empty) layers
are read: the clean pass, kept for the last few inputs, and the intervened pass resumed from it at the first
layer the interventions edit (service/compute/models/resumed.py), both through SDPA."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Int
from torch import Tensor

from schemas.axes import TensorName
from schemas.interventions import OUTPUT_SIMILARITY_AXES, PREDICTION_AXES
from schemas.request import AttendRequest
from service.compute.attention import Overflow
from service.compute.interventions import Edits, plan_edits
from service.compute.models.forward import WholePass
from service.compute.models.registry import LoadedModel
from service.compute.models.resumed import CleanPass, clean_pass, held_elements, resumed
from service.compute.models.tokenizer import Encoded
from service.compute.predictions import (
    PredictionPlan,
    check_prediction_limits,
    log_probs,
    plan_predictions,
    prediction_axes,
    predictions,
)
from service.settings import Settings

# the clean passes (each layer's input hidden states and the final ones) by model and tokens, least recently
# used first; a few small ones only
CLEAN_CACHE_ENTRIES = 8
CLEAN_CACHE_ELEMENTS = 2**22  # numbers of one entry ((layers + 1) x batch x pos x d_model): larger not kept
_CLEAN_PASSES: OrderedDict[tuple[object, ...], CleanPass] = OrderedDict()


@dataclass
class Effects:
    """One request's predictions and interventions, planned (and checked) before any forward pass."""

    model: LoadedModel
    input_ids: Int[Tensor, "batch pos"]
    key_mask: Bool[Tensor, "batch pos"] | None
    plan: PredictionPlan | None
    edits: Edits | None
    clean: bool
    whole: WholePass

    @classmethod
    def of(
        cls,
        request: AttendRequest,
        model: LoadedModel,
        encoded: Encoded,
        key_mask: Bool[Tensor, "batch pos"] | None,
        settings: Settings,
        unlike_the_model: str | None,
    ) -> Effects | None:
        """`unlike_the_model`: how the request's settings differ from the model's forward pass, if they do."""
        if request.predict is None and request.interventions is None:
            return None
        plan = None if request.predict is None else plan_predictions(request.predict, model, encoded)
        if plan is not None:
            passes = 2 if request.interventions is not None and request.clean else 1
            check_prediction_limits(settings, plan, model.vocab_size, passes)
        edits = (
            None
            if request.interventions is None
            else plan_edits(request.interventions, model, encoded, unlike_the_model)
        )
        return cls(model, encoded.input_ids, key_mask, plan, edits, request.clean, WholePass(edits))

    @property
    def resumable(self) -> bool:
        """Whether the clean pass over these tokens, with how it called each layer, is small enough to
        keep."""
        batch, seq = self.input_ids.shape
        return held_elements(self.model.forward, batch, seq) <= CLEAN_CACHE_ELEMENTS

    def runs_alone(self, returned: tuple[TensorName, ...]) -> bool:
        """Whether run_alone gives this request's passes: it returns no layer's internals, and its intervened
        pass (if any) can resume from a clean pass small enough to keep."""
        return not returned and (self.edits is None or self.resumable)

    def run_alone(self) -> None:
        """The passes of a request that returns no layer's internals: the clean one, and with interventions
        the intervened one resumed at the first layer they edit; its final hidden states in whole.final."""
        clean = self._clean()
        final = clean.final
        if self.edits is not None:
            first = self.edits.first_layer
            start = self.model.num_layers if first is None else first
            final = resumed(self.model.forward, clean, start, self.edits)
        if not bool(torch.isfinite(final).all()):  # no layer's internals were checked
            raise Overflow("final hidden states", final.dtype)
        self.whole.final = final

    def sections(self) -> dict[str, Any]:
        """The top-level `predictions`, `predictions_clean`, `output_similarity`, once the (intervened) pass
        has run whole."""
        final = self.whole.final
        assert final is not None  # the layers were read: the pass ran to its end
        clean_final = self._clean().final if self.edits is not None and self.clean else None
        sections: dict[str, Any] = {}
        if self.plan is not None:
            intervened = log_probs(self.model, final, self.plan)
            clean = None if clean_final is None else log_probs(self.model, clean_final, self.plan)
            sections["predictions"] = predictions(self.model, self.plan, intervened, clean)
            if clean is not None:
                sections["predictions_clean"] = predictions(self.model, self.plan, clean)
        if clean_final is not None:
            similarity = F.cosine_similarity(clean_final.double(), final.double(), dim=-1)  # [batch, pos]
            sections["output_similarity"] = similarity.to(final.dtype)
        return sections

    def _clean(self) -> CleanPass:
        """The clean pass over the request's tokens: kept for the last few inputs of this process, since a
        sweep over heads sends the same text again and again with another intervention."""
        key = (
            self.model.name,
            tuple(self.input_ids.shape),
            self.input_ids.numpy().tobytes(),
            None if self.key_mask is None else self.key_mask.numpy().tobytes(),
        )
        found = _CLEAN_PASSES.get(key)
        if found is not None:
            _CLEAN_PASSES.move_to_end(key)
            return found
        kept = self.resumable
        clean = clean_pass(self.model.forward, self.input_ids, self.key_mask, with_calls=kept)
        if kept:
            _CLEAN_PASSES[key] = clean
            while len(_CLEAN_PASSES) > CLEAN_CACHE_ENTRIES:
                _CLEAN_PASSES.popitem(last=False)
        return clean

    def axes(self, batch: int, seq: int) -> dict[str, Any]:
        """meta.axes and meta.shapes of the sections returned."""
        axes: dict[str, Any] = {}
        shapes: dict[str, Any] = {}
        with_clean = self.edits is not None and self.clean
        if self.plan is not None:
            names = [n for n in PREDICTION_AXES if n != "target_logprobs" or self.plan.targets]
            for prefix, kl in (("predictions", with_clean), ("predictions_clean", False)):
                if prefix == "predictions_clean" and not with_clean:
                    continue
                found = prediction_axes(self.plan, batch, [n for n in names if n != "kl" or kl], prefix)
                axes |= found["axes"]
                shapes |= found["shapes"]
        if with_clean:
            axes["output_similarity"] = list(OUTPUT_SIMILARITY_AXES)
            shapes["output_similarity"] = [batch, seq]
        return {"axes": axes, "shapes": shapes}
