"""Tiny random models of every supported model_type, saved as an operator would find them: a folder with
config.json, model.safetensors and the files of a byte-level BPE tokenizer trained here by `tokenizers`
(devtools/tokenizer.py).

Each has several layers; the decoders with rotary positions use grouped-query attention (fewer kv heads
than heads), windowed families a sliding window shorter than the test texts, and every parameter (biases
included, where the family has them) is drawn at random so that no bias is zero and scores are large
enough for masks, caps and windows to matter.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from devtools.tokenizer import BOS, EOS, PAD, train_tokenizer

SENTENCES = [
    "The cat ate the fish because it was hungry",
    "Hi there",
    "Attention is a soft table look-up over keys and values",
    "A query attends to every key before it, within its window",
]
WINDOW = 4  # sliding window of the windowed families: shorter than the test texts
MAX_POSITIONS = 48
LAYERS = 3

# how each family's tokenizer marks a text: BOS only (Llama, Mistral, Gemma), nothing (GPT-2, Qwen2),
# or a start and an end token (the encoders)
TEMPLATES = {
    "bert": "<s> $A </s>",
    "roberta": "<s> $A </s>",
    "xlm-roberta": "<s> $A </s>",
    "distilbert": "<s> $A </s>",
    "modernbert": "<s> $A </s>",
    "gpt2": "$A",
    "llama": "<s> $A",
    "mistral": "<s> $A",
    "qwen2": "$A",
    "gemma": "<s> $A",
    "gemma2": "<s> $A",
}


def _make(config_class: Any, **settings: Any) -> Any:
    """A config from keyword settings (the config classes' own signatures vary between versions)."""
    return config_class(**settings)


def _common(vocab: int) -> dict[str, Any]:
    return {"vocab_size": vocab, "pad_token_id": PAD, "bos_token_id": BOS, "eos_token_id": EOS}


def _rotary_decoder(config_class: Any, vocab: int, **extra: Any) -> Any:
    settings = {
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": MAX_POSITIONS,
        **_common(vocab),
        **extra,
    }
    return config_class(**settings)


def _configs() -> dict[str, Callable[[int], Any]]:
    import transformers as t

    encoder = {
        "hidden_size": 32,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 4,
        "intermediate_size": 48,
    }
    return {
        "bert": lambda v: _make(t.BertConfig, **encoder, max_position_embeddings=MAX_POSITIONS, **_common(v)),
        # RoBERTa numbers positions from pad_token_id + 1: two more slots for the same texts
        "roberta": lambda v: _make(
            t.RobertaConfig, **encoder, max_position_embeddings=MAX_POSITIONS + 2, **_common(v)
        ),
        "xlm-roberta": lambda v: _make(
            t.XLMRobertaConfig, **encoder, max_position_embeddings=MAX_POSITIONS + 2, **_common(v)
        ),
        "distilbert": lambda v: _make(
            t.DistilBertConfig,
            dim=32,
            n_layers=LAYERS,
            n_heads=4,
            hidden_dim=48,
            max_position_embeddings=MAX_POSITIONS,
            sinusoidal_pos_embds=True,
            vocab_size=v,
            pad_token_id=PAD,
        ),  # fmt: skip
        "modernbert": lambda v: _make(
            t.ModernBertConfig,
            **encoder,
            max_position_embeddings=MAX_POSITIONS,
            local_attention=WINDOW,
            global_attn_every_n_layers=2,
            attention_bias=True,
            **_common(v),
            cls_token_id=BOS,
            sep_token_id=EOS,
        ),  # fmt: skip
        "gpt2": lambda v: _make(
            t.GPT2Config,
            n_embd=32,
            n_layer=LAYERS,
            n_head=4,
            n_positions=MAX_POSITIONS,
            vocab_size=v,
            bos_token_id=BOS,
            eos_token_id=EOS,
        ),  # fmt: skip
        "llama": lambda v: _rotary_decoder(t.LlamaConfig, v, attention_bias=True),
        "mistral": lambda v: _rotary_decoder(t.MistralConfig, v, sliding_window=WINDOW),
        "qwen2": lambda v: _rotary_decoder(
            t.Qwen2Config, v, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1
        ),
        # Gemma: one kv head for four query heads, and heads wider than d_model / heads
        "gemma": lambda v: _rotary_decoder(t.GemmaConfig, v, num_key_value_heads=1, head_dim=16),
        "gemma2": lambda v: _rotary_decoder(
            t.Gemma2Config,
            v,
            head_dim=16,
            sliding_window=WINDOW,
            query_pre_attn_scalar=12,
            attn_logit_softcapping=2.0,
            final_logit_softcapping=None,
        ),  # fmt: skip
    }


FAMILY_TYPES = tuple(TEMPLATES)
DECODERS = ("gpt2", "llama", "mistral", "qwen2", "gemma", "gemma2")
ROTARY = (
    "modernbert",
    "llama",
    "mistral",
    "qwen2",
    "gemma",
    "gemma2",
)  # q and k turned by a rotary embedding
# families whose eager attention computes in the model's dtype throughout: transformers' float64 reference is
# float64 (the others take the softmax in float32)
FLOAT64_EXACT = ("bert", "roberta", "xlm-roberta", "distilbert", "gpt2")


def save_family_model(model_type: str, folder: Path, seed: int = 0) -> Path:
    """A tiny random `model_type` model and its tokenizer in `folder`."""
    import torch
    from transformers import AutoModel

    tokenizer = train_tokenizer(TEMPLATES[model_type], SENTENCES, MAX_POSITIONS)
    config = _configs()[model_type](len(tokenizer))
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
