"""Offline fixtures: tiny random-initialised models and a real BPE tokenizer trained on tests/data; a tiny GGUF
file; and, for the ``real_model`` tier, the real SmolLM2-135M-Instruct (skipped when its package is absent)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import NoReturn

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

from scott_distill.checkpoints import BUNDLED_CHECKPOINTS  # noqa: E402
from scott_distill.demo.tokenizer import train_bpe_tokenizer  # noqa: E402

TESTS_DIR = Path(__file__).parent
# SCOTT_SHARED_DATA: the mutation runner (scripts/mutation.py) runs the tests from a copy in mutants/, one folder
# deeper than the repository, and points it at the real folder.
SHARED_DATA = Path(os.environ.get("SCOTT_SHARED_DATA") or TESTS_DIR.parent.parent / "shared" / "data").resolve()
SEED = 1234
VOCAB = 400


def in_ci() -> bool:
    """``CI`` set to a true value (``.ci/run`` sets ``CI=true`` unless the caller set it)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def skip_unless_ci(reason: str) -> NoReturn:
    """Skip a test whose real data or real model is missing; in CI that is a failure, not a skip: a suite that
    silently skips its real-data tier passes without testing what users run."""
    if in_ci():
        pytest.fail(f"{reason}; CI=true, so real-data and real-model tests must run (set CI=false to allow skips)",
                    pytrace=False)
    pytest.skip(reason)


def shared_data_or_skip(*parts: str) -> Path:
    """Path under ../shared/data, or skip: the folder exists in CI, not on a user's machine."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        skip_unless_ci(f"real data not available at {path} (only present on the project's CI machines)")
    return path


@pytest.fixture
def cose_rows():
    """The first 10 real CoS-E dev rows (normalised schema): the rationalization tests' data."""
    from scott_distill.tasks import load_task

    return load_task("cose", str(shared_data_or_skip("cose_v1", "dev.csv"))).select(range(10))


@pytest.fixture
def teacher(tokenizer):
    """A tiny random GPT-2 teacher over the suite's BPE vocabulary."""
    return make_gpt2(len(tokenizer))


@pytest.fixture(scope="session")
def tokenizer():
    texts = (TESTS_DIR / "data" / "corpus.txt").read_text().splitlines()
    return train_bpe_tokenizer(texts, vocab_size=VOCAB, padding_side="left")


#: settings of the session tokenizer that a test may change for itself but must give back
SHARED_TOKENIZER_SETTINGS = ("padding_side", "truncation_side", "model_max_length", "chat_template",
                             "special_tokens_map")


def _tokenizer_state(tok) -> dict:
    """What a test could change on the shared tokenizer: its settings, its length, and the backend's spec (vocabulary,
    merges, normalizer, pre-tokenizer, post-processor, added tokens) without the padding and truncation state that
    every call resets. Computed here, not with the package's `tokenizer_fingerprint`, so that a mutant of that
    function (mutation testing) cannot fail every test through this fixture."""
    state = {name: getattr(tok, name, None) for name in SHARED_TOKENIZER_SETTINGS}
    state["len"] = len(tok)
    spec = json.loads(tok.backend_tokenizer.to_str())
    spec.pop("padding", None)
    spec.pop("truncation", None)
    state["backend"] = json.dumps(spec, sort_keys=True)
    return state


@pytest.fixture(autouse=True)
def _shared_tokenizer_given_back(request):
    """Fail a test that leaves the session ``tokenizer`` changed.

    The fixture is shared by hundreds of tests: one that left it right-padded made a later shared-prefix test fail
    only in some test orders (mutmut's clean run, whose order follows string hashing, failed in 5 of 7 runs).
    """
    if "tokenizer" not in request.fixturenames:
        yield
        return
    tok = request.getfixturevalue("tokenizer")
    before = _tokenizer_state(tok)
    yield
    after = _tokenizer_state(tok)
    changed = sorted(name for name in before if before[name] != after[name])
    for name in changed:  # give the simple settings back, so that one offender fails alone
        if name in ("padding_side", "truncation_side", "model_max_length", "chat_template"):
            setattr(tok, name, before[name])
    assert not changed, f"the test left the session tokenizer changed: {changed}"


def make_gpt2(vocab_size: int, seed: int = SEED, **kw) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab_size, n_positions=1024, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=3, eos_token_id=1, pad_token_id=0, **kw)
    return GPT2LMHeadModel(cfg).eval()


def make_llama(vocab_size: int, seed: int = SEED, **kw) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=3, eos_token_id=1, pad_token_id=0, **kw)
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


# -- GGUF files ------------------------------------------------------------------------------------------------

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def write_tiny_llama_gguf(path: Path, tokenizer, seed: int = SEED) -> Path:
    """A real GGUF file (llama architecture, F32 tensors, byte-level BPE vocabulary of ``tokenizer``): 0.1 MB."""
    gguf = pytest.importorskip("gguf")
    import numpy as np

    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    tokens = [""] * len(model["vocab"])
    for token, index in model["vocab"].items():
        tokens[index] = token
    specials = set(tokenizer.all_special_tokens)
    hidden, ff, layers, heads, kv_heads = 32, 64, 2, 4, 2
    head_dim = hidden // heads
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> np.ndarray:
        return (torch.randn(*shape, generator=g) * 0.2).numpy().astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(layers)
    writer.add_context_length(512)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_rope_dimension_count(head_dim)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in specials else 1 for t in tokens])  # 3: control (special) token
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model["merges"]])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(TINY_CHAT_TEMPLATE)
    writer.add_tensor("token_embd.weight", rand(len(tokens), hidden))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", rand(hidden, hidden))
        writer.add_tensor(f"blk.{i}.attn_k.weight", rand(kv_heads * head_dim, hidden))
        writer.add_tensor(f"blk.{i}.attn_v.weight", rand(kv_heads * head_dim, hidden))
        writer.add_tensor(f"blk.{i}.attn_output.weight", rand(hidden, hidden))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", rand(ff, hidden))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", rand(ff, hidden))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", rand(hidden, ff))
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))  # no output.weight: tied embeddings
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, tokenizer) -> Path:
    """A folder holding exactly one GGUF file, ``tiny.gguf``; returns the file's path."""
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", tokenizer)


# -- real_model tier -------------------------------------------------------------------------------------------

SMOLLM2 = "smollm2-135m-instruct"


MINILM = "minilm-l6-v2"


def skip_without_bundled(name: str) -> None:
    """Skip (in CI: fail; reason: the install command) unless the package shipping the bundled checkpoint ``name``
    is installed, and for a GGUF the `gguf` reader too."""
    spec = BUNDLED_CHECKPOINTS[name]
    needs = [spec.module] + (["gguf"] if spec.filename.endswith(".gguf") else [])
    if any(importlib.util.find_spec(module) is None for module in needs):
        skip_unless_ci(f"real {name} not installed: {spec.install_command}")


def skip_without_smollm2() -> None:
    """Skip (reason: the install command) unless the bundled SmolLM2 GGUF and the `gguf` reader are installed."""
    skip_without_bundled(SMOLLM2)


def smollm2_folder() -> str:
    """The converted checkpoint of the real SmolLM2-135M-Instruct (skips, with the install command, without it).

    Every test loads SmolLM2 from here (``scott_distill.checkpoints.resolve_checkpoint``): the first run converts
    the GGUF once into ``$HF_HOME/scott_distill/converted`` (30-80 s); later loads take about a second.
    ``tests/test_checkpoints.py`` checks that this folder equals transformers' direct GGUF load.
    """
    skip_without_smollm2()
    from scott_distill.checkpoints import resolve_checkpoint

    return resolve_checkpoint(SMOLLM2)


def smollm2_tokenizer():
    """A fresh SmolLM2 tokenizer with its own defaults (right padding), for tests that change it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_folder())


@pytest.fixture(scope="session")
def smollm2():
    """``(model, tokenizer)`` of the real SmolLM2-135M-Instruct, float32, eval mode; the tokenizer is
    left-padded (the teacher's side). Shared by the session: tests must not change them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_folder()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder, padding_side="left")
    return model, tok
