"""Every supported model_type, as a tiny random model loaded through ATTENTION_MODELS like an operator's:
each layer's weights against transformers' eager output_attentions, scores against q @ k^T (each query
head with its kv head), output against the model's own attention-block output (a hook on W_o), a padded
batch against its texts one by one, masks (causal, sliding window, padding), soft-capping, rotary q and k,
and what the service refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import service.compute.attention as attention
import service.compute.models.forward as forward
from service.compute.models.registry import load_model
from service.errors import ModelError
from tests.support.compute import InProcess
from tests.support.families import FAMILY_TYPES, FLOAT64_EXACT, SENTENCES, WINDOW

# where each family keeps its attention block's output projection, written out here (not taken from the
# service's own table) so that the reference hooks what the model really runs
W_O = {
    "bert": "encoder.layer.{}.attention.output.dense",
    "roberta": "encoder.layer.{}.attention.output.dense",
    "xlm-roberta": "encoder.layer.{}.attention.output.dense",
    "distilbert": "transformer.layer.{}.attention.out_lin",
    "modernbert": "layers.{}.attn.Wo",
    "gpt2": "h.{}.attn.c_proj",
    **{t: "layers.{}.self_attn.o_proj" for t in ("llama", "mistral", "qwen2", "gemma", "gemma2")},
}
DECODERS = ("gpt2", "llama", "mistral", "qwen2", "gemma", "gemma2")
ROTARY = ("modernbert", "llama", "mistral", "qwen2", "gemma", "gemma2")


def reference(folder: Path, model_type: str, texts: list[str], dtype: torch.dtype = torch.float32) -> Any:
    """transformers' eager attention weights per layer, each layer's W_o output, the tokens and the
    padding mask, for `texts` padded on the right (a pad token borrowed from EOS where the tokenizer has
    none)."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder, attn_implementation="eager", dtype=dtype).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    outputs: list[torch.Tensor] = []
    hooks = [
        model.get_submodule(W_O[model_type].format(i)).register_forward_hook(
            lambda m, i, o: outputs.append(o.detach())
        )
        for i in range(model.config.num_hidden_layers)
    ]
    with torch.no_grad():
        result = model(**encoded, output_attentions=True)
    for hook in hooks:
        hook.remove()
    mask = encoded["attention_mask"].bool()
    tokens = [
        tokenizer.convert_ids_to_tokens(ids[: int(n)])
        for ids, n in zip(encoded["input_ids"], mask.sum(1), strict=True)
    ]
    return result.attentions, outputs, mask, tokens


def post(families: InProcess, body: dict[str, Any]) -> Any:
    response = families.post(body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_every_layer_matches_transformers_eager(families, family_folders, model_type):
    body = post(families, {"text": SENTENCES, "model": model_type})
    attentions, outputs, mask, tokens = reference(family_folders[model_type], model_type, SENTENCES)
    assert [t[: len(r)] for t, r in zip(body["tokens"], tokens, strict=True)] == tokens
    assert body["meta"]["lengths"] == [len(t) for t in tokens]
    real = mask.numpy()
    for entry in body["layers"]:
        index = entry["layer"]
        weights = np.asarray(entry["weights"])
        reference_weights = attentions[index].numpy()
        rows = np.broadcast_to(real[:, None, :, None], weights.shape)  # the real queries' rows
        np.testing.assert_allclose(
            weights[rows], reference_weights[rows], atol=1e-5, err_msg=f"layer {index}"
        )
        np.testing.assert_allclose(
            np.asarray(entry["output"])[real],
            outputs[index].numpy()[real],
            atol=1e-5,
            err_msg=f"layer {index}",
        )
        assert weights.std() > 0.01  # far from uniform: agreement means something


@pytest.mark.parametrize("model_type", FLOAT64_EXACT)
def test_float64_models_match_transformers_to_1e_9(families, family_folders, model_type):
    body = post(families, {"text": SENTENCES[:2], "model": f"{model_type}-f64", "dtype": "float64"})
    attentions, outputs, mask, _ = reference(
        family_folders[model_type], model_type, SENTENCES[:2], torch.float64
    )
    real = mask.numpy()
    for entry in body["layers"]:
        weights = np.asarray(entry["weights"])
        rows = np.broadcast_to(real[:, None, :, None], weights.shape)
        np.testing.assert_allclose(weights[rows], attentions[entry["layer"]].numpy()[rows], atol=1e-9)
        np.testing.assert_allclose(
            np.asarray(entry["output"])[real], outputs[entry["layer"]].numpy()[real], atol=1e-9
        )


def kv_index(meta: dict[str, Any]) -> list[int]:
    return meta["kv_head_of"] or list(range(meta["num_heads"]))


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_scores_are_q_dot_k_of_each_heads_kv_head(families, model_type):
    body = post(families, {"text": SENTENCES[0], "model": model_type, "dtype": "float64"})
    meta = body["meta"]
    heads, kv_heads = meta["num_heads"], meta["num_kv_heads"]
    for entry in body["layers"]:
        q, k = np.asarray(entry["q"]), np.asarray(entry["k"])
        assert q.shape[1] == heads and k.shape[1] == kv_heads  # k is not repeated per query head
        expected = np.einsum("bhqd,bhkd->bhqk", q, k[:, kv_index(meta)])
        np.testing.assert_allclose(np.asarray(entry["scores"]), expected, atol=1e-9)
        context = np.einsum(
            "bhqk,bhkd->bhqd", np.asarray(entry["weights"]), np.asarray(entry["v"])[:, kv_index(meta)]
        )
        np.testing.assert_allclose(np.asarray(entry["context"]), context, atol=1e-9)


def test_grouped_query_meta_and_axes(families):
    meta = post(families, {"text": "Hi there", "model": "gemma2"})["meta"]
    assert (meta["num_heads"], meta["num_kv_heads"], meta["kv_head_of"]) == (4, 2, [0, 0, 1, 1])
    assert meta["axes"]["k"] == ["batch", "kv_head", "key_pos", "d_k"] and meta["shapes"]["k"][1] == 2
    assert meta["axes"]["q"] == ["batch", "head", "query_pos", "d_k"]
    assert meta["d_k"] == 16 and meta["d_model"] == 32  # Gemma's heads are wider than d_model / heads
    gemma = post(families, {"text": "Hi there", "model": "gemma"})["meta"]
    assert gemma["kv_head_of"] == [0, 0, 0, 0]
    plain = post(families, {"text": "Hi there", "model": "gpt2"})["meta"]
    assert plain["num_kv_heads"] == 4 and plain["kv_head_of"] is None
    assert plain["axes"]["k"] == ["batch", "head", "key_pos", "d_k"]


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_masks_are_null_in_scaled_scores(families, model_type):
    """Decoders: causal; windowed layers: keys further than the window; a padded batch: the padding."""
    body = post(
        families, {"text": SENTENCES[:2], "model": model_type, "include": ["scaled_scores", "weights"]}
    )
    meta = body["meta"]
    lengths, seq = meta["lengths"], meta["seq"]
    assert meta["causal"] is (model_type in DECODERS)
    windows = meta["sliding_window"] or [None] * len(meta["layer"])
    assert seq > WINDOW + 2
    for entry, window in zip(body["layers"], windows, strict=True):
        scaled = entry["scaled_scores"]
        for b, length in enumerate(lengths):
            for i in range(length):
                for j in range(seq):
                    allowed = j < length
                    if model_type in DECODERS:
                        allowed &= j <= i and (window is None or j > i - window)
                    elif window is not None:  # ModernBERT: local_attention keys, centred
                        allowed &= abs(i - j) <= window // 2
                    masked = [scaled[b][h][i][j] is None for h in range(meta["num_heads"])]
                    assert masked == [not allowed] * meta["num_heads"], (entry["layer"], b, i, j)


def test_windows_and_caps_are_reported(families):
    mistral = post(families, {"text": "Hi there", "model": "mistral", "layer": [2, 0]})["meta"]
    assert mistral["sliding_window"] == [WINDOW, WINDOW] and mistral["positions"] == "rotary"
    qwen = post(families, {"text": "Hi there", "model": "qwen2"})["meta"]
    assert qwen["sliding_window"] == [None, WINDOW, WINDOW]
    gemma2 = post(families, {"text": "Hi there", "model": "gemma2"})["meta"]
    assert gemma2["softcap"] == 2.0 and gemma2["scale"] == pytest.approx(12**-0.5)
    assert gemma2["sliding_window"] == [WINDOW, None, WINDOW]
    gpt2 = post(families, {"text": "Hi there", "model": "gpt2"})["meta"]
    assert gpt2["sliding_window"] is None and gpt2["softcap"] is None and gpt2["positions"] == "absolute"


def test_soft_cap_is_applied_in_scaled_scores(families):
    body = post(families, {"text": SENTENCES[0], "model": "gemma2", "dtype": "float64"})
    meta = body["meta"]
    cap, scale = meta["softcap"], meta["scale"]
    capped_somewhere = False
    for entry in body["layers"]:
        scores = np.asarray(entry["scores"])
        scaled = np.asarray(
            [
                [[[np.nan if x is None else x for x in row] for row in h] for h in b]
                for b in entry["scaled_scores"]
            ]
        )
        live = ~np.isnan(scaled)
        np.testing.assert_allclose(scaled[live], (cap * np.tanh(scores * scale / cap))[live], atol=1e-12)
        capped_somewhere |= bool(np.abs(scores * scale)[live].max() > cap)
    assert capped_somewhere  # scores beyond the cap: capping changed them


@pytest.mark.parametrize("model_type", ROTARY)
def test_rotary_q_and_k_are_the_rotated_projections(families, family_folders, model_type):
    from transformers import AutoModel

    body = post(
        families,
        {
            "text": SENTENCES[0],
            "model": model_type,
            "layer": 1,
            "include": ["q", "k", "q_pre_rotary", "k_pre_rotary"],
        },
    )
    entry = body["layers"][0]
    q, k = torch.tensor(entry["q"]), torch.tensor(entry["k"])
    q_pre, k_pre = torch.tensor(entry["q_pre_rotary"]), torch.tensor(entry["k_pre_rotary"])
    assert q_pre.shape == q.shape and k_pre.shape == k.shape
    model = AutoModel.from_pretrained(family_folders[model_type])
    seq = q.shape[2]
    positions = torch.arange(seq)[None]
    rotary = model.rotary_emb
    cos, sin = (
        rotary(q_pre, positions, "sliding_attention")
        if model_type == "modernbert"
        else rotary(q_pre, positions)
    )
    half = q.shape[-1] // 2

    def rotated(x):
        turned = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos[:, None] + turned * sin[:, None]

    torch.testing.assert_close(rotated(q_pre), q, atol=1e-5, rtol=0)
    torch.testing.assert_close(rotated(k_pre), k, atol=1e-5, rtol=0)
    assert not torch.allclose(q_pre[:, :, 1:], q[:, :, 1:], atol=1e-3)  # the rotation moved them


def test_pre_rotary_of_a_model_without_rotation_is_a_clear_422(families):
    response = families.post({"text": "Hi", "model": "gpt2", "include": ["q_pre_rotary"]})
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "include"] and "absolute positions, no rotary embedding" in detail["msg"]
    for body in ({"embeddings": [[1.0, 0.0]]}, {"text": "Hi", "model": "toy"}):
        response = families.post({**body, "include": ["q", "k_pre_rotary"]})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"][0]
        assert detail["loc"] == ["body", "include"] and "found k_pre_rotary" in detail["msg"]


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_padded_batch_equals_texts_one_by_one(families, model_type):
    include = ["weights", "output", "k", "v"]
    batch = post(families, {"text": SENTENCES, "model": model_type, "include": include})
    for index, text in enumerate(SENTENCES):
        alone = post(families, {"text": text, "model": model_type, "include": include})
        n = len(alone["tokens"][0])
        assert batch["tokens"][index][:n] == alone["tokens"][0]
        for padded, single in zip(batch["layers"], alone["layers"], strict=True):
            np.testing.assert_allclose(
                np.asarray(padded["weights"])[index, :, :n, :n], np.asarray(single["weights"])[0], atol=1e-5
            )
            assert np.all(np.asarray(padded["weights"])[index, :, :, n:] == 0)
            for name in ("output", "k", "v"):
                got = np.asarray(padded[name])[index]
                np.testing.assert_allclose(
                    got[:n] if name == "output" else got[:, :n], np.asarray(single[name])[0], atol=1e-5
                )


def test_decoder_tokens_show_bos_as_the_tokenizer_adds_it(families):
    llama = post(families, {"text": "The cat", "model": "llama", "include": ["weights"]})["tokens"][0]
    assert llama[0] == "<s>" and "".join(llama[1:]) == "TheĠcat"  # byte-level BPE: Ġ marks a leading space
    gpt2 = post(families, {"text": "The cat", "model": "gpt2", "include": ["weights"]})["tokens"][0]
    assert "".join(gpt2) == "TheĠcat"  # GPT-2 adds no BOS


@pytest.mark.parametrize("model_type", ["llama", "gemma2", "modernbert"])
@pytest.mark.parametrize("change", [{"scale": 0.1}, {"dtype": "float64"}, {"causal": True}])
def test_request_settings_change_only_the_layers_asked_for(families, model_type, change):
    asked = {"text": SENTENCES[0], "model": model_type, "layer": [0, 2], "include": ["scores", "weights"]}
    plain, changed = post(families, asked), post(families, {**asked, **change})
    for before, after in zip(plain["layers"], changed["layers"], strict=True):
        np.testing.assert_allclose(after["scores"], before["scores"], atol=1e-4)
        moved = not np.allclose(after["weights"], before["weights"], atol=1e-3)
        # a decoder is causal already; a float64 recomputation agrees with the model's float32
        assert moved is ("scale" in change or ("causal" in change and model_type == "modernbert"))


def test_bfloat16_load_dtype(families, family_folders):
    folder = family_folders["llama"]
    compute = InProcess.from_env(
        {"ATTENTION_MODELS": json.dumps({"llama-bf16": {"path": str(folder), "dtype": "bfloat16"}})}
    )
    body = post(
        compute, {"text": SENTENCES[0], "model": "llama-bf16", "include": ["weights"], "dtype": "bfloat16"}
    )
    described = next(m for m in compute.models.describe() if m["name"] == "llama-bf16")
    assert described["dtype"] == "bfloat16" and described["loaded"] is True
    assert compute.models.get("llama-bf16").forward.model.dtype == torch.bfloat16
    attentions, *_ = reference(folder, "llama", [SENTENCES[0]])
    for entry in body["layers"]:
        np.testing.assert_allclose(np.asarray(entry["weights"]), attentions[entry["layer"]].numpy(), atol=0.1)


def test_text_over_the_models_positions_is_a_422_before_running_it(families):
    response = families.post({"text": " ".join(["cat"] * 60), "model": "roberta"})
    assert response.status_code == 422
    msg = response.json()["detail"][0]["msg"]
    assert "at most 48" in msg and "truncate" in msg  # RoBERTa: 50 position slots, two reserved


def test_describe_lists_family_facts(families):
    described = {m["name"]: m for m in families.models.describe()}
    gemma2 = described["gemma2"]
    assert {k: gemma2[k] for k in ("family", "kind", "positions", "heads", "kv_heads", "head_size")} == {
        "family": "gemma2",
        "kind": "decoder",
        "positions": "rotary",
        "heads": 4,
        "kv_heads": 2,
        "head_size": 16,
    }
    assert gemma2["window"] == WINDOW and gemma2["max_length"] == 48 and gemma2["dtype"] == "float32"
    assert gemma2["parameters"] > 0 and isinstance(gemma2["loaded"], bool)
    assert described["distilbert-f64"]["dtype"] == "float64" and described["bert"]["kind"] == "encoder"


def test_unsupported_model_type_is_refused_with_the_supported_list(tmp_path, family_folders):
    import shutil

    folder = tmp_path / "opt"
    shutil.copytree(family_folders["gpt2"], folder)
    from transformers import OPTConfig

    OPTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, ffn_dim=32).save_pretrained(folder)
    with pytest.raises(
        ModelError, match="found model_type 'opt'; supported: model_type bert, roberta.*gemma2"
    ):
        load_model("opt", folder)


@pytest.mark.parametrize("model_type", ["llama", "gemma2"])
def test_a_decoder_streams_each_layer_as_its_forward_pass_reaches_it(families, monkeypatch, model_type):
    """NDJSON: layer 0's line comes before layer 1's attention runs (the forward pass waits for the stream),
    and the lines carry what the JSON answer does."""
    body = {"text": SENTENCES, "model": model_type, "layer": "all", "include": ["weights", "k"]}
    expected = post(families, body)
    computed: list[int] = []
    attend_heads = attention.attend_heads

    def recorded(*args: Any, **kwargs: Any) -> Any:
        computed.append(len(computed))
        return attend_heads(*args, **kwargs)

    monkeypatch.setattr(forward, "attend_heads", recorded)  # the name the forward pass calls
    frames = families.stream(body)
    assert json.loads(next(frames)[1])["meta"]["layer"] == expected["meta"]["layer"] and computed == []
    assert json.loads(next(frames)[1]) == expected["layers"][0] and computed == [0]
    rest = [json.loads(content) for _, content, last in frames if not last]
    assert rest == expected["layers"][1:] and len(computed) == len(expected["layers"])


def test_heads_select_query_heads_and_leave_the_kv_head_axis_whole(families):
    """Under grouped-query attention `heads` cuts the head axis (q, weights) and leaves k and v, whose axis is
    kv_head, whole; the values are those of the full answer."""
    body = {"text": "Hi there", "model": "gemma2", "include": ["q", "k", "weights"]}
    full = post(families, body)
    cut = post(families, {**body, "heads": [1, 3]})
    assert cut["meta"]["shapes"]["weights"][1] == 2 and cut["meta"]["shapes"]["k"][1] == 2
    for whole, part in zip(full["layers"], cut["layers"], strict=True):
        np.testing.assert_array_equal(np.array(part["q"]), np.array(whole["q"])[:, [1, 3]])
        np.testing.assert_array_equal(np.array(part["k"]), np.array(whole["k"]))
        assert np.array(part["weights"]).shape[1] == 2
