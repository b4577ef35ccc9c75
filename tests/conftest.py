"""Offline fixtures: tiny random-initialised models and a real BPE tokenizer trained on tests/data."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from scott_distill.tokenizer_utils import train_bpe_tokenizer  # noqa: E402

TESTS_DIR = Path(__file__).parent
SHARED_DATA = (TESTS_DIR.parent.parent / "shared" / "data").resolve()
SEED = 1234
VOCAB = 400


def shared_data_or_skip(*parts: str) -> Path:
    """Path under ../shared/data, or skip: the folder exists in CI, not on a user's machine."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available at {path} (only present on the project's CI machines)")
    return path


@pytest.fixture(scope="session")
def tokenizer():
    texts = (TESTS_DIR / "data" / "corpus.txt").read_text().splitlines()
    return train_bpe_tokenizer(texts, vocab_size=VOCAB, padding_side="left")


def make_gpt2(vocab_size: int, seed: int = SEED, **kw) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab_size, n_positions=1024, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=3, eos_token_id=1, pad_token_id=0, **kw)
    return GPT2LMHeadModel(cfg).eval()


def make_llama(vocab_size: int, seed: int = SEED) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=3, eos_token_id=1, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


def make_t5(vocab_size: int, seed: int = SEED, **kw) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                   num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, bos_token_id=3, **kw)
    return T5ForConditionalGeneration(cfg).eval()


@pytest.fixture
def gpt2(tokenizer):
    return make_gpt2(len(tokenizer))


@pytest.fixture
def llama(tokenizer):
    return make_llama(len(tokenizer))


@pytest.fixture
def t5(tokenizer):
    return make_t5(len(tokenizer))
