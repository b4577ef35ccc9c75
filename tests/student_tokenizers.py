"""TEST CODE: tokenizers that behave like the ones users bring, built locally from tests/data/corpus.txt.

* ``llama_style_tokenizer``: BPE with a Metaspace pre-tokenizer (``prepend_scheme="first"``, as Llama /
  SentencePiece tokenizers in ``tokenizers``), digits split one by one (so ``" 1990"`` is ``▁ 1 9 9 0``) and a
  ``<s>`` BOS post-processor; ``append_eos=True`` also appends ``</s>``.
* ``eos_appending_bpe``: the byte-level BPE of conftest with a ``$A </s>`` post-processor.
* ``smollm2_tokenizer``: the real SmolLM2-135M-Instruct tokenizer (``conftest.smollm2_folder``), one per session.

Nothing is downloaded: the toy vocabularies are trained on the repository's own test corpus.
"""

from __future__ import annotations

import functools
import string
from pathlib import Path

import conftest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from scott_distill.demo.tokenizer import SPECIAL_TOKENS, train_bpe_tokenizer

CORPUS = Path(__file__).parent / "data" / "corpus.txt"
# ids fixed by the order of SPECIAL_TOKENS: pad=0, eos=1, unk=2, bos=3
PAD, EOS, UNK, BOS = range(4)


def _texts() -> list[str]:
    return CORPUS.read_text().splitlines()


def llama_style_tokenizer(append_eos: bool = False, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    alphabet = list(string.ascii_letters + string.digits + string.punctuation + "\n") + ["▁"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(_texts(), trainer=trainer)
    single = "<s> $A </s>" if append_eos else "<s> $A"
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=[("<s>", BOS), ("</s>", EOS)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, padding_side="left", **SPECIAL_TOKENS)


def eos_appending_bpe() -> PreTrainedTokenizerFast:
    base = train_bpe_tokenizer(_texts(), vocab_size=400)
    backend = Tokenizer.from_str(base.backend_tokenizer.to_str())
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, padding_side="left", **SPECIAL_TOKENS)


@functools.lru_cache(maxsize=1)
def smollm2_tokenizer() -> PreTrainedTokenizerFast:
    """Loaded once per session; skips with the install command when the package is missing."""
    tok = conftest.smollm2_tokenizer()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
