"""A random-weight Llama with room for long inputs (32,768 positions by default), saved as an operator's
folder, and a text of an exact token count for it: the model of the summaries' memory test and benchmark."""

from __future__ import annotations

from pathlib import Path

WORDS = "the cat ate the fish because it was hungry said tom and then it slept"
LONG_POSITIONS = 32768


def save_long_llama(
    folder: Path,
    d_model: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    positions: int = LONG_POSITIONS,
) -> Path:
    """A Llama of these sizes (rotary, causal, grouped-query when kv_heads < heads) and its byte-level BPE
    tokenizer (adds BOS), weights drawn from seed 0."""
    import torch
    from transformers import LlamaConfig, LlamaModel

    from devtools.tokenizer import train_tokenizer

    tokenizer = train_tokenizer("<s> $A", [WORDS], max_length=positions)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=positions,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    LlamaModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def text_of_tokens(folder: Path, tokens: int) -> str:
    """A text that the folder's tokenizer makes exactly `tokens` tokens of (BOS included)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    words = WORDS.split()
    text = " ".join(words[i % len(words)] for i in range(tokens))
    ids = tokenizer(text)["input_ids"][:tokens]
    return str(tokenizer.decode(ids[1:]))  # without BOS: the tokenizer adds it again
