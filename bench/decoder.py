"""The decoder scenarios' model: a random-weight Llama-family model about the size of MiniLM (6 layers,
d_model 384, 12 heads, 4 kv heads) with its language-model head (LlamaForCausalLM, for the interventions
scenario's predictions), saved as an operator's folder (config.json, model.safetensors, a byte-level BPE
tokenizer that adds BOS), for the service (ATTENTION_MODELS) and the baseline alike."""

from __future__ import annotations

import os
from pathlib import Path

SENTENCE = "The cat ate the fish because it was hungry said Tom"  # 12 tokens with BOS
# 64 tokens with BOS: each lower-case word of SENTENCE is one token of the tokenizer trained on it
TEXT_64 = (
    SENTENCE
    + " the cat ate the fish because it was hungry said Tom" * 4
    + " the cat ate the fish because it was"
)
MODEL_NAME = "bench-llama"
FOLDER_VARIABLE = "BENCH_LLAMA_FOLDER"  # where the baseline finds the same folder


def save_bench_llama(folder: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from devtools.tokenizer import BOS, EOS, PAD, train_tokenizer

    tokenizer = train_tokenizer("<s> $A", [SENTENCE], max_length=512)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=384,
        intermediate_size=1536,
        num_hidden_layers=6,
        num_attention_heads=12,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def bench_llama_folder() -> Path:
    return Path(os.environ[FOLDER_VARIABLE])
