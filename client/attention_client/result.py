"""What `attend` returns: the tensors as numpy arrays with their axes, a model's layers by layer index, the
tokens and `meta`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import cast

import numpy as np
import numpy.typing as npt

from attention_client.errors import AttentionError
from attention_client.wire import Meta

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]  # top_keys: key positions


class NotReturned(AttentionError, KeyError):
    """A tensor or layer that the response does not hold (not asked for in `include` or `layer`)."""

    def __str__(self) -> str:  # KeyError's own str() would quote the message
        return str(self.args[0])


class Tensors(Mapping[str, FloatArray]):
    """The returned tensors of one computation, by name (`q`, `weights`, ...), as float64 arrays (masked
    entries -inf) whose axes are `axes[name]`. The top level of a response, or one layer of a model.

    Under grouped-query attention (a model with fewer key/value heads than query heads) `k`, `v` and
    `k_pre_rotary` have the axis `kv_head` instead of `head`; `per_query_head(name)` repeats them to one
    entry per query head."""

    def __init__(
        self,
        arrays: dict[str, FloatArray],
        axes: Mapping[str, tuple[str, ...]],
        where: str = "",
        *,
        kv_head_of: Sequence[int] | None = None,
    ):
        self._arrays, self._where, self._kv_head_of = arrays, where, kv_head_of
        self.axes: dict[str, tuple[str, ...]] = {name: axes[name] for name in arrays}

    def per_query_head(self, name: str) -> FloatArray:
        """`name` with the axis `head` (one entry per query head): a tensor with the axis `kv_head` repeated
        so that query head h holds its kv head `meta["kv_head_of"][h]`, any other tensor as it is."""
        array, axes = self[name], self.axes[name]
        if "kv_head" not in axes or self._kv_head_of is None:  # decode checked that kv_head_of comes with it
            return array
        return np.take(array, list(self._kv_head_of), axis=axes.index("kv_head"))

    def __getitem__(self, name: str) -> FloatArray:
        try:
            return self._arrays[name]
        except KeyError:
            raise NotReturned(self._not_returned(name)) from None

    def _not_returned(self, name: str) -> str:
        returned = ", ".join(self._arrays) or "none"
        return f"{name!r} was not returned{self._where} (returned: {returned}); ask for it in `include`"

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def _shapes(self) -> list[str]:
        return [f"{name}{list(array.shape)}" for name, array in self._arrays.items()]

    def __repr__(self) -> str:
        return f"Tensors({', '.join(self._shapes())})"

    @property
    def q(self) -> FloatArray:
        """Q [batch, head, query_pos, d_k]."""
        return self["q"]

    @property
    def k(self) -> FloatArray:
        """K [batch, head or kv_head, key_pos, d_k]."""
        return self["k"]

    @property
    def v(self) -> FloatArray:
        """V [batch, head or kv_head, key_pos, d_v]."""
        return self["v"]

    @property
    def scores(self) -> FloatArray:
        """Q K^T [batch, head, query_pos, key_pos]."""
        return self["scores"]

    @property
    def scaled_scores(self) -> FloatArray:
        """scores * scale, masked entries -inf [batch, head, query_pos, key_pos]."""
        return self["scaled_scores"]

    @property
    def weights(self) -> FloatArray:
        """The softmax of each row of scaled_scores [batch, head, query_pos, key_pos]."""
        return self["weights"]

    @property
    def context(self) -> FloatArray:
        """weights V per head [batch, head, query_pos, d_v]."""
        return self["context"]

    @property
    def output(self) -> FloatArray:
        """concat(heads) W_o + b_o [batch, query_pos, d_out]."""
        return self["output"]

    @property
    def q_pre_rotary(self) -> FloatArray:
        """A rotary model's Q before the rotary embedding [batch, head, query_pos, d_k]."""
        return self["q_pre_rotary"]

    @property
    def k_pre_rotary(self) -> FloatArray:
        """A rotary model's K before the rotary embedding [batch, head or kv_head, key_pos, d_k]."""
        return self["k_pre_rotary"]

    @property
    def entropy(self) -> FloatArray:
        """Each row's entropy in nats [batch, head, query_pos]."""
        return self["entropy"]

    @property
    def top_keys(self) -> IntArray:
        """The key positions of each row's `top_k` largest weights, largest first [batch, head, query_pos,
        rank] (int64)."""
        return cast(IntArray, self["top_keys"])

    @property
    def top_weights(self) -> FloatArray:
        """The weights at top_keys [batch, head, query_pos, rank]."""
        return self["top_weights"]

    @property
    def received(self) -> FloatArray:
        """The weight each key receives, summed over the real queries [batch, head, key_pos]."""
        return self["received"]

    @property
    def pooled_weights(self) -> FloatArray:
        """The weights averaged over pool x pool blocks [batch, head, query_block, key_block]."""
        return self["pooled_weights"]

    @property
    def previous_token_score(self) -> FloatArray:
        """TransformerLens' previous-token head score [batch, head]."""
        return self["previous_token_score"]

    @property
    def duplicate_token_score(self) -> FloatArray:
        """TransformerLens' duplicate-token head score [batch, head]."""
        return self["duplicate_token_score"]

    @property
    def induction_score(self) -> FloatArray:
        """TransformerLens' induction head score [batch, head]."""
        return self["induction_score"]

    @property
    def sink_score(self) -> FloatArray:
        """The mean weight on key position 0 [batch, head]."""
        return self["sink_score"]

    @property
    def rollout(self) -> FloatArray:
        """Attention rollout through the model's layers up to this one [batch, query_pos, key_pos]."""
        return self["rollout"]

    @property
    def norms(self) -> FloatArray:
        """Norm-based attention ||w_ij f_h(x_j)|| [batch, head, query_pos, key_pos]."""
        return self["norms"]

    @property
    def norms_summed(self) -> FloatArray:
        """||sum_h w^h_ij f_h(x_j)|| [batch, query_pos, key_pos]."""
        return self["norms_summed"]

    @property
    def value_zeroing(self) -> FloatArray:
        """Value zeroing: each row the share of each key in the change of the layer's output
        [batch, query_pos, key_pos]."""
        return self["value_zeroing"]


class Layers(Mapping[int, Tensors]):
    """A pretrained model's layers by the model's layer index (`layers[3]`), in the order returned."""

    def __init__(self, layers: dict[int, Tensors]):
        self._layers = layers

    def __getitem__(self, index: int) -> Tensors:
        try:
            return self._layers[index]
        except KeyError:
            returned = ", ".join(map(str, self._layers)) or "none: the request named no model"
            raise NotReturned(
                f"layer {index!r} was not returned (returned: {returned}); ask for it in `layer`"
            ) from None

    def __iter__(self) -> Iterator[int]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def __repr__(self) -> str:
        return f"Layers({list(self._layers)})"


class Predictions:
    """A model's predictions at `meta["predicted_positions"]`: `top_tokens` [batch][position][rank] (strings
    as the tokenizer writes them), and float64 arrays `top_probs` [batch, position, rank],
    `target_logprobs` [batch, position, target] (with `targets`), `kl` [batch, position] (with interventions
    and a clean pass; None otherwise)."""

    def __init__(
        self,
        top_tokens: list[list[list[str]]],
        top_probs: FloatArray,
        target_logprobs: FloatArray | None,
        kl: FloatArray | None,
    ):
        self.top_tokens, self.top_probs, self.target_logprobs, self.kl = (
            top_tokens,
            top_probs,
            target_logprobs,
            kl,
        )

    def __repr__(self) -> str:
        return f"Predictions(top_probs{list(self.top_probs.shape)})"


class Attention(Tensors):
    """The answer of `attend`. Without a model the tensors are here (`result.weights`); with one they are per
    layer (`result.layers[i].weights`). `tokens` [batch][seq] with `text` (else empty); `meta` as the service
    sent it; `request_id` the X-Request-ID the service logged the request under. With `predict`:
    `predictions` (and `predictions_clean` with interventions); with interventions: `output_similarity`."""

    def __init__(
        self,
        arrays: dict[str, FloatArray],
        axes: Mapping[str, tuple[str, ...]],
        *,
        layers: Layers,
        tokens: list[list[str]],
        meta: Meta,
        request_id: str | None,
        predictions: Predictions | None = None,
        predictions_clean: Predictions | None = None,
        output_similarity: FloatArray | None = None,
    ):
        super().__init__(arrays, axes, kv_head_of=meta.get("kv_head_of"))
        self.layers, self.tokens, self.meta, self.request_id = layers, tokens, meta, request_id
        self.predictions, self.predictions_clean = predictions, predictions_clean
        self.output_similarity = output_similarity  # [batch, query_pos], with interventions and a clean pass

    def _not_returned(self, name: str) -> str:
        if self.layers and not self._arrays:
            layers = list(self.layers)
            return f"with a model the tensors are per layer: result.layers[i][{name!r}] for i in {layers}"
        return super()._not_returned(name)

    def __repr__(self) -> str:
        layers = [f"layers={list(self.layers)}"] if self.layers else []
        return f"Attention({', '.join([*self._shapes(), *layers])})"
