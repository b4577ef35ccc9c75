"""A real byte-level BPE tokenizer trained locally (no Hub): the demo's tokenizer, also used by the tests."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "train_bpe_tokenizer"]

# Order fixes the ids: pad=0 (T5's decoder start), eos=1, unk=2, bos=3.
SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>", "bos_token": "<s>"}


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 512, padding_side: str = "left"
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it as a ``PreTrainedTokenizerFast``.

    Byte-level BPE encodes any string, so models built on it can be fed arbitrary text.
    """
    if vocab_size < 300:
        raise ValueError(f"`vocab_size` must be >= 300 (256 bytes + specials + merges), got {vocab_size}.")
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, padding_side=padding_side, **SPECIAL_TOKENS)

