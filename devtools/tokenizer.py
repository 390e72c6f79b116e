"""A byte-level BPE tokenizer trained here by `tokenizers`, as the tiny random models of the tests
(tests/support/families.py) and the benchmark's decoder (bench/decoder.py) ship it: no download, and the same
special tokens with the same ids in every one."""

from __future__ import annotations

from typing import Any

VOCAB = 320
SPECIALS = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}
PAD, BOS, EOS = 0, 1, 2  # ids of the special tokens, trained first (SPECIALS' order)


def train_tokenizer(template: str, sentences: list[str], max_length: int) -> Any:
    """A byte-level BPE tokenizer trained on `sentences`, marking each text as `template` says ("<s> $A":
    BOS only, "<s> $A </s>": a start and an end token, "$A": nothing, and then no pad token either, as GPT-2
    and Qwen2 have none of their own)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=list(SPECIALS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(sentences, trainer)
    if template != "$A":
        specials = [(t, tokenizer.token_to_id(t)) for t in ("<s>", "</s>") if t in template]
        tokenizer.post_processor = processors.TemplateProcessing(single=template, special_tokens=specials)
    without_pad = template == "$A"  # GPT-2 and Qwen2 tokenizers have no pad token of their own
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token=None if without_pad else "<pad>",
        model_max_length=max_length,
    )
