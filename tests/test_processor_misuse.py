"""The processor and the fused path under the mistakes users make (issue #13): each test names the mistake.

References are independent of the code under test: ``scott_reference_loop`` recomputes both branches
from scratch, one unpadded row at a time (tests/test_processor.py).
"""

from __future__ import annotations

import gc
import inspect
import math
import re
import warnings
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_gpt2, make_llama, make_t5, smollm2_tokenizer
from test_processor import (
    CONTRAST,
    GOLD,
    MAX_NEW,
    encode,
    make_positional_gpt2,
    reference_scores,
    scott_reference_loop,
    trim,
)
from transformers import LogitsProcessor

import scott_distill
from scott_distill import ContrastiveRationaleLogitsProcessor, SharedPrefix, contrastive_generate
from scott_distill.teacher.scoring import contrastive_scores, left_padded, stop_token_ids_for

FOUR_GOLD = GOLD + ["Q: What do bees make? A: The answer is honey."]


def greedy(model, tokenizer, gold, proc, end=(1,), **gen):
    """Generated tokens of plain ``generate(logits_processor=[proc])`` (decoder-only: prompt cut off).

    Deliberately the long-standing call (no ``with``, no ``generate_kwargs``), so that the tests of
    wrong rows fail on the rows, not on a missing API.
    """
    out = model.generate(**gold, logits_processor=[proc], eos_token_id=sorted(end) or None, max_new_tokens=MAX_NEW,
                         do_sample=False, pad_token_id=0, **gen)
    return out[:, 1:] if model.config.is_encoder_decoder else out[:, gold["input_ids"].shape[1]:]


# ------------------------------------------------------------------------------------------------
# Silent wrong tokens
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_contrast", [1, 2])
def test_contrast_batch_dividing_the_gold_batch_is_refused(tokenizer, n_contrast):
    """4 different gold prompts with 2 (or 1) contrast rows looked like beam / return-sequence expansion."""
    model = make_gpt2(len(tokenizer))
    gold = encode(tokenizer, FOUR_GOLD)
    con = encode(tokenizer, CONTRAST[:n_contrast])
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask)
    with pytest.raises(ValueError, match="one contrast row per input row"):
        greedy(model, tokenizer, gold, proc)


def test_real_expansion_still_accepted(tokenizer):
    """2 prompts x num_return_sequences=2 are 2 groups of identical rows: one contrast row each is right."""
    model = make_gpt2(len(tokenizer))
    gold = encode(tokenizer, GOLD[:2])
    con = encode(tokenizer, CONTRAST[:2])
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask)
    out = model.generate(**gold, logits_processor=[proc], max_new_tokens=4, do_sample=True, num_return_sequences=2,
                         pad_token_id=0)
    assert out.shape[0] == 4


def test_encoder_decoder_contrast_batch_dividing_the_gold_batch_is_refused(tokenizer):
    """T5's decoder rows all start from the same token, so the check reads generate's encoder batch."""
    model = make_t5(len(tokenizer))
    gold = encode(tokenizer, FOUR_GOLD, "right")
    con = encode(tokenizer, CONTRAST[:2], "right")
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask)
    with pytest.raises(ValueError, match="one contrast row per input row"), proc:
        greedy(model, tokenizer, gold, proc)
    # the hook that counts generate's encoder rows is gone after the block
    assert not model.get_encoder()._forward_pre_hooks


def _encoded_rows_error(encoded: int, expanded: int) -> str:
    """The documented refusal, written out: one contrast row here, ``encoded`` input rows seen by the encoder."""
    return re.escape(
        f"`contrast_input_ids` has 1 rows but generate() encoded {encoded} input rows ({expanded} after expansion); "
        "it needs one contrast row per input row of generate() (generate expands them by num_beams / "
        "num_return_sequences itself)."
    )


def test_encoder_row_check_sees_every_way_the_encoder_is_called(tokenizer):
    """One contrast row for two T5 inputs: the decoder rows (two start tokens) look like an expansion of one row,
    so only the encoder's row count tells. It is read however the encoder gets its input: ``inputs_embeds`` given to
    ``generate``, or encoder outputs computed by the user (ids positional, by keyword, embeddings after a positional
    ``None``) and given to ``generate``. The message names both counts (found by mutation testing: each of these
    calls slipped past the check, and a changed message went unseen)."""
    model = make_t5(len(tokenizer))
    two = encode(tokenizer, GOLD[:2], "right")
    proc = ContrastiveRationaleLogitsProcessor(model, encode(tokenizer, CONTRAST[:1], "right").input_ids)
    kw = dict(max_new_tokens=2, do_sample=False, pad_token_id=0)
    encoder = model.get_encoder()
    with torch.no_grad():
        embeds = encoder.embed_tokens(two.input_ids)
    calls = {
        "inputs_embeds to generate": lambda: model.generate(inputs_embeds=embeds, attention_mask=two.attention_mask,
                                                            **proc.generate_kwargs(), **kw),
    }
    for name, encode_call in {
        "positional ids": lambda: encoder(two.input_ids),
        "keyword ids": lambda: encoder(input_ids=two.input_ids),
        "keyword embeddings": lambda: encoder(inputs_embeds=embeds),
        "positional None, keyword embeddings": lambda: encoder(None, inputs_embeds=embeds),
    }.items():
        def call(encode_call=encode_call):
            with torch.no_grad():
                encoded = encode_call()
            return model.generate(encoder_outputs=encoded, attention_mask=two.attention_mask,
                                  **proc.generate_kwargs(), **kw)
        calls[f"encoder_outputs from {name}"] = call
    for name, call in calls.items():
        with proc, pytest.raises(ValueError, match=f"^{_encoded_rows_error(2, 2)}$"):
            call()
            pytest.fail(name)
    # the same calls with one input row are accepted
    with proc:
        model.generate(inputs_embeds=embeds[:1], attention_mask=two.attention_mask[:1], **proc.generate_kwargs(), **kw)


def test_with_blocks_hook_only_an_encoder_and_leave_the_processor_reusable(tokenizer):
    """The row-counting hook: none on a decoder-only model (whose ``get_encoder()`` is the model itself), exactly one
    on a T5 encoder however often the block is entered, none after it; a second ``with`` block still checks the rows,
    and the processor still works outside any block afterwards (found by mutation testing)."""
    def hooks(model):
        return sum(len(m._forward_pre_hooks) for m in model.modules())

    gpt2 = make_gpt2(len(tokenizer))
    con = encode(tokenizer, CONTRAST)
    proc = ContrastiveRationaleLogitsProcessor(gpt2, con.input_ids, con.attention_mask)
    with proc:
        assert hooks(gpt2) == 0

    t5 = make_t5(len(tokenizer))
    one, two = encode(tokenizer, GOLD[:1], "right"), encode(tokenizer, GOLD[:2], "right")
    proc = ContrastiveRationaleLogitsProcessor(t5, encode(tokenizer, CONTRAST[:1], "right").input_ids)
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    with proc, proc:
        assert hooks(t5) == 1 and len(t5.get_encoder()._forward_pre_hooks) == 1
    assert hooks(t5) == 0
    with proc:
        inside = t5.generate(**one, **proc.generate_kwargs(), **kw)
    with proc, pytest.raises(ValueError, match=f"^{_encoded_rows_error(2, 2)}$"):
        t5.generate(**two, **proc.generate_kwargs(), **kw)
    outside = t5.generate(**one, **proc.generate_kwargs(), **kw)  # no block: no row count, no stale one either
    assert torch.equal(inside, outside)
    assert hooks(t5) == 0


@pytest.mark.parametrize("factory", [make_positional_gpt2, make_llama], ids=["gpt2", "llama"])
def test_right_padded_contrast_prompts_are_repadded(tokenizer, factory):
    """GPT-2 / Llama tokenizers pad on the right by default; the rows must still be right."""
    model = factory(len(tokenizer))
    stop = [tokenizer.convert_tokens_to_ids(".")]
    end = {1, *stop}
    gold = encode(tokenizer, GOLD, "left")
    right = encode(tokenizer, CONTRAST, "right")
    assert (right.attention_mask[:, -1] == 0).any()  # the mistake is really made
    proc = ContrastiveRationaleLogitsProcessor(model, right.input_ids, right.attention_mask, alpha=0.3,
                                               stop_token_ids=stop)
    got = trim(greedy(model, tokenizer, gold, proc, end), end)
    assert got == scott_reference_loop(model, tokenizer, GOLD, CONTRAST, 0.3, MAX_NEW, end)


@pytest.mark.parametrize("shared_prefix", ["auto", None])
@pytest.mark.parametrize("factory", [make_positional_gpt2, make_llama], ids=["gpt2", "llama"])
def test_fused_right_padded_tensor_prompts_are_repadded(tokenizer, factory, shared_prefix):
    """With a shared prefix (``"auto"``) and without one: the prefix split re-pads on its own, so only the run without
    it shows whether the prompts themselves are re-padded (found by mutation testing: dropping that passed)."""
    model = factory(len(tokenizer))
    stop = [tokenizer.convert_tokens_to_ids(".")]
    end = {1, *stop}
    gold = dict(encode(tokenizer, GOLD, "right"))
    con = dict(encode(tokenizer, CONTRAST, "right"))
    out = contrastive_generate(model, None, gold, con, alpha=0.3, max_new_tokens=MAX_NEW, stop_token_ids=stop,
                               pad_token_id=0, do_sample=False, shared_prefix=shared_prefix)
    assert trim(out, end) == scott_reference_loop(model, tokenizer, GOLD, CONTRAST, 0.3, MAX_NEW, end)


def test_all_padding_row_is_refused(tokenizer):
    model = make_gpt2(len(tokenizer))
    con = encode(tokenizer, CONTRAST)
    mask = con.attention_mask.clone()
    mask[1] = 0
    with pytest.raises(ValueError) as err:
        ContrastiveRationaleLogitsProcessor(model, con.input_ids, mask)
    # exact: the regex passed a misspelt argument name (processor.__init__ mutants: the name given to left_padded)
    assert str(err.value) == "`contrast_input_ids` rows [1] are all padding (attention mask all zeros)."


class _FirstScores(LogitsProcessor):
    """Keeps the scores of the first step (put it after the contrast processor)."""

    def __init__(self):
        self.scores = None

    def __call__(self, input_ids, scores):
        if self.scores is None:
            self.scores = scores.clone()
        return scores


@pytest.mark.slow
@torch.no_grad()
def test_real_smollm2_tokenizer_default_right_padding(smollm2):
    """SmolLM2's tokenizer pads on the right by default: the user's natural call must give right rows.

    A wrong contrast row rarely flips a real model's greedy token at alpha 0.5, so the combined scores of
    the first step are compared too, with one unpadded forward per row and branch."""
    model, tok = smollm2[0], smollm2_tokenizer()
    assert tok.padding_side == "right"
    gold_texts = ["Q: Where would you keep milk cold?\nA: The answer is fridge. Because",
                  "Q: Is a whale a mammal?\nA: The answer is yes. Because"]
    con_texts = ["Q: Where would you keep milk cold?\nA: The answer is oven. Because",
                 "Q: Is a whale a mammal? Think about it.\nA: The answer is no. Because"]
    con = tok(con_texts, return_tensors="pt", padding=True)  # right-padded, as the tokenizer does by default
    assert (con.attention_mask[:, -1] == 0).any()
    tok.padding_side = "left"
    gold = tok(gold_texts, return_tensors="pt", padding=True)
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, alpha=0.5)
    first = _FirstScores()
    out = model.generate(**gold, logits_processor=[proc, first], max_new_tokens=6, do_sample=False)
    end = {model.generation_config.eos_token_id}
    got = trim(out[:, gold.input_ids.shape[1]:], end)
    tok.padding_side = "right"
    assert got == scott_reference_loop(model, tok, gold_texts, con_texts, 0.5, 6, end)
    for row, (g, c) in enumerate(zip(gold_texts, con_texts)):
        lg = model(tok(g, return_tensors="pt").input_ids).logits[0, -1]
        lc = model(tok(c, return_tensors="pt").input_ids).logits[0, -1]
        expect = torch.log_softmax(lg, -1) - 0.5 * torch.log_softmax(lc, -1)
        assert torch.allclose(first.scores[row], expect, atol=2e-3), (row, (first.scores[row] - expect).abs().max())


def _lora_gpt2(vocab_size: int):
    peft = pytest.importorskip("peft")
    base = make_positional_gpt2(vocab_size)
    torch.manual_seed(5)
    # init_lora_weights=False: a non-zero (unmerged) adapter, so the wrapper really changes the outputs
    config = peft.LoraConfig(r=4, target_modules=["c_attn"], init_lora_weights=False, fan_in_fan_out=True)
    return peft.get_peft_model(base, config).eval()


def test_peft_wrapped_teacher_keeps_position_ids(tokenizer):
    """PeftModel.forward has no `position_ids` parameter; the base model's forward decides."""
    model = _lora_gpt2(len(tokenizer))
    stop = [tokenizer.convert_tokens_to_ids(".")]
    end = {1, *stop}
    gold = encode(tokenizer, GOLD)
    con = encode(tokenizer, CONTRAST)
    ref = scott_reference_loop(model, tokenizer, GOLD, CONTRAST, 0.3, MAX_NEW, end)
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, alpha=0.3,
                                               stop_token_ids=stop)
    assert trim(greedy(model, tokenizer, gold, proc, end), end) == ref
    fused = contrastive_generate(model, tokenizer, GOLD, CONTRAST, alpha=0.3, max_new_tokens=MAX_NEW,
                                 stop_token_ids=stop, do_sample=False)
    assert trim(fused, end) == ref


# ------------------------------------------------------------------------------------------------
# State and resources
# ------------------------------------------------------------------------------------------------


class _GrabCache(LogitsProcessor):
    """Runs after the contrast processor and keeps weak references to its cache / encoder outputs."""

    def __init__(self, proc):
        self.proc, self.refs = proc, []

    def __call__(self, input_ids, scores):
        state = self.proc._state
        if not self.refs and state is not None:
            self.refs.append(weakref.ref(state.branch.cache))
            if state.branch.encoder_outputs is not None:
                self.refs.append(weakref.ref(state.branch.encoder_outputs))
        return scores


@pytest.mark.parametrize("factory", [make_gpt2, make_t5], ids=["gpt2", "t5"])
def test_contrast_cache_freed_when_generation_ends(tokenizer, factory):
    model = factory(len(tokenizer))
    side = "right" if model.config.is_encoder_decoder else "left"
    gold = encode(tokenizer, GOLD, side)
    con = encode(tokenizer, CONTRAST, side)
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask)
    grab = _GrabCache(proc)
    with proc:
        model.generate(**gold, logits_processor=[proc, grab], max_new_tokens=4, do_sample=False, pad_token_id=0)
        assert proc.holds_cache and all(r() is not None for r in grab.refs)
    gc.collect()
    assert len(grab.refs) == (2 if model.config.is_encoder_decoder else 1)
    assert not proc.holds_cache
    assert all(r() is None for r in grab.refs)  # KV cache (and T5 encoder outputs) really freed


def test_reset_frees_cache_without_with_block(tokenizer):
    model = make_gpt2(len(tokenizer))
    gold = encode(tokenizer, GOLD)
    con = encode(tokenizer, CONTRAST)
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask)
    grab = _GrabCache(proc)
    model.generate(**gold, logits_processor=[proc, grab], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert proc._state is not None  # documented: lives until reset / next call / with-block end
    proc.reset()
    gc.collect()
    assert grab.refs[0]() is None


def test_a_refused_new_call_leaves_no_cache_and_the_next_call_works(tokenizer):
    """The processor held a cache from a first call; a second call with four prompts for three contrast rows is a
    new call (the cache is dropped) and is refused. Afterwards the processor holds no cache and a correct third call
    decodes what a fresh processor decodes (found by mutation testing: a non-``None`` placeholder left as the
    state made ``holds_cache`` say True after the refusal)."""
    model = make_gpt2(len(tokenizer))
    gold, con = encode(tokenizer, GOLD), encode(tokenizer, CONTRAST)
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask)
    first = greedy(model, tokenizer, gold, proc)
    assert proc.holds_cache
    with pytest.raises(ValueError, match="one contrast row per input row"):
        greedy(model, tokenizer, encode(tokenizer, FOUR_GOLD), proc)
    assert not proc.holds_cache
    assert torch.equal(greedy(model, tokenizer, gold, proc), first)


def test_generate_rationales_processor_path_leaves_no_cache(tokenizer, monkeypatch):
    """generate_rationales (use_fused=False) runs each batch inside `with proc:`."""
    import datasets

    from scott_distill import generate_rationales

    model = make_gpt2(len(tokenizer))
    seen: list[ContrastiveRationaleLogitsProcessor] = []
    real_enter = ContrastiveRationaleLogitsProcessor.__enter__

    def spy_enter(self):
        seen.append(self)
        return real_enter(self)

    monkeypatch.setattr(ContrastiveRationaleLogitsProcessor, "__enter__", spy_enter)
    rows = datasets.Dataset.from_list([
        {"id": str(i), "question": q, "choices": ["fridge", "oven", "shelf"], "answer": "fridge", "rationale": ""}
        for i, q in enumerate(["Where is milk kept cold?", "Where do you keep butter?", "Where is cheese stored?"])
    ])
    generate_rationales(rows, model, tokenizer, task="csqa", batch_size=2, max_new_tokens=3, use_fused=False,
                        show_progress=False)
    assert seen and not any(p.holds_cache for p in seen)


def test_new_call_on_prefix_plus_one_token_says_reset(tokenizer):
    model = make_gpt2(len(tokenizer))
    gold = encode(tokenizer, GOLD)
    con = encode(tokenizer, CONTRAST)
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask)
    out = model.generate(**gold, logits_processor=[proc], max_new_tokens=MAX_NEW, min_new_tokens=MAX_NEW,
                         do_sample=False, pad_token_id=0)
    length = gold.input_ids.shape[1] + 2  # the old prompt plus two of its generated tokens
    follow_up = {"input_ids": out[:, :length], "attention_mask": torch.ones_like(out[:, :length])}
    follow_up["attention_mask"][:, : gold.input_ids.shape[1]] = gold.attention_mask
    # generate called the processor last with the prompt plus MAX_NEW - 1 tokens; the follow-up's first call is
    # the old prompt plus one generated token (its prefix), plus one more
    seen, back = gold.input_ids.shape[1] + MAX_NEW - 1, gold.input_ids.shape[1] + 1
    expected = (
        f"ContrastiveRationaleLogitsProcessor: the sequence moved back to an earlier prefix (length {back} of the "
        f"{seen} tokens it last saw) plus one token. Either this is a new generate() call whose prompt is a prefix of "
        "an earlier output plus one token: call `proc.reset()` before it, or run each call inside `with proc:` (both "
        "fix it). Or it is assisted / speculative generation (assistant_model, prompt_lookup_num_tokens), which rolls "
        "sequences back and is not supported."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        model.generate(**follow_up, logits_processor=[proc], max_new_tokens=3, do_sample=False, pad_token_id=0)
    proc.reset()
    a = model.generate(**follow_up, logits_processor=[proc], max_new_tokens=3, do_sample=False, pad_token_id=0)
    fresh = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask)
    b = model.generate(**follow_up, logits_processor=[fresh], max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert torch.equal(a, b)
    with proc:  # the with-block resets on entry, so the same follow-up works without reset()
        c = model.generate(**follow_up, logits_processor=[proc], max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert torch.equal(a, c)


# ------------------------------------------------------------------------------------------------
# Numbers and arguments
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), -float("inf"), np.float64("nan")])
def test_non_finite_alpha_is_refused(tokenizer, alpha):
    model = make_gpt2(len(tokenizer))
    con = encode(tokenizer, CONTRAST)
    with pytest.raises(ValueError, match="`alpha` must be finite"):
        ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, alpha=alpha)
    with pytest.raises(ValueError, match="`alpha` must be finite"):
        contrastive_generate(model, tokenizer, GOLD, CONTRAST, alpha=alpha)


@pytest.mark.parametrize("alpha", [np.float32(0.3), np.float64(0.3), torch.tensor(0.3), torch.tensor([0.3])],
                         ids=["np32", "np64", "torch0d", "torch1"])
def test_numpy_and_torch_scalar_alpha_accepted(tokenizer, alpha):
    model = make_gpt2(len(tokenizer))
    gold = encode(tokenizer, GOLD)
    con = encode(tokenizer, CONTRAST)
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, alpha=alpha)
    assert isinstance(proc.alpha, float) and proc.alpha == pytest.approx(0.3)
    plain = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, alpha=float(proc.alpha))
    assert torch.equal(greedy(model, tokenizer, gold, proc), greedy(model, tokenizer, gold, plain))
    fused = contrastive_generate(model, tokenizer, GOLD, CONTRAST, alpha=alpha, max_new_tokens=3)
    assert fused.shape[0] == 3


@pytest.mark.parametrize("alpha", ["0.5", True, torch.tensor([0.1, 0.2]), 1j])
def test_non_real_alpha_is_refused_with_what_was_given(tokenizer, alpha):
    model = make_gpt2(len(tokenizer))
    con = encode(tokenizer, CONTRAST)
    with pytest.raises(ValueError, match="`alpha` must be a real"):
        ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, alpha=alpha)


def test_scalar_tensors_for_alpha_and_plausibility_threshold():
    """A 0-d real tensor is a number for both settings; a boolean tensor is no weight, whatever its shape, and the
    message says what it got."""
    from scott_distill.teacher.scoring import check_alpha, check_plausibility_threshold

    assert check_plausibility_threshold(torch.tensor(0.25)) == 0.25
    assert check_plausibility_threshold(np.float32(0.5)) == 0.5
    assert check_alpha(torch.tensor(0.5, dtype=torch.float64)) == 0.5
    with pytest.raises(ValueError, match=r"^`alpha` must be a real scalar, got a tensor of shape \(\) and dtype "
                                         r"torch.bool\.$"):
        check_alpha(torch.tensor(True))
    with pytest.raises(ValueError, match=r"shape \(1,\) and dtype torch.bool\.$"):
        check_alpha(torch.tensor([True]))
    with pytest.raises(ValueError, match=r"`plausibility_threshold` must be a number in \[0, 1\] or None, got "
                                         r"tensor\(True\)\.$"):
        check_plausibility_threshold(torch.tensor(True))


def test_check_alpha_boundaries_and_exact_messages():
    """``alpha`` >= 0 with 0 allowed; the warning starts at exactly 1 without a threshold (documented rule) and its
    whole text is given; a non-number is refused naming its type and value."""
    from scott_distill.teacher.scoring import check_alpha

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_alpha(0) == 0.0 and check_alpha(0.999) == 0.999 and check_alpha(1, 0.1) == 1.0
    for alpha in (1, 2.5):
        with pytest.warns(UserWarning) as caught:
            assert check_alpha(alpha) == float(alpha)
        assert [str(w.message) for w in caught] == [
            f"alpha={float(alpha)} >= 1 without `plausibility_threshold`: the contrastive score then favours tokens "
            "that are unlikely under both prompts. Set e.g. plausibility_threshold=0.1 (or alpha < 1)."]
    for alpha, given in [("0.5", "str '0.5'"), (1j, "complex 1j"), ([0.5], "list [0.5]")]:
        with pytest.raises(ValueError) as err:
            check_alpha(alpha)
        assert str(err.value) == f"`alpha` must be a real number >= 0, got {given}."
    with pytest.raises(ValueError) as err:
        check_alpha(math.inf)
    assert str(err.value) == "`alpha` must be finite, got inf."
    with pytest.raises(ValueError) as err:
        check_alpha(-0.5)
    assert str(err.value) == "`alpha` must be >= 0, got -0.5."


def test_check_plausibility_threshold_is_the_closed_interval_zero_one():
    """Both ends of [0, 1] are allowed (0: off, 1: only the gold maximum) and come back as floats; anything outside,
    NaN, a string or a bool is refused with the exact message."""
    from scott_distill.teacher.scoring import check_plausibility_threshold

    assert check_plausibility_threshold(None) is None
    for value in (0, 0.0, 0.5, 1, 1.0, np.float64(1.0), torch.tensor(0.0)):
        got = check_plausibility_threshold(value)
        assert type(got) is float and got == float(value), value
    for value in (-0.1, -1e-9, 1.0000001, 1.5, 2, math.nan, "0.5", True):
        with pytest.raises(ValueError) as err:
            check_plausibility_threshold(value)
        assert str(err.value) == f"`plausibility_threshold` must be a number in [0, 1] or None, got {value!r}."


def test_negative_alpha_message_says_negative(tokenizer):
    model = make_gpt2(len(tokenizer))
    con = encode(tokenizer, CONTRAST)
    with pytest.raises(ValueError, match=r"`alpha` must be >= 0, got -0.1"):
        ContrastiveRationaleLogitsProcessor(model, con.input_ids, alpha=np.float32(-0.1).item())


def test_float_contrast_ids_refused_up_front(tokenizer):
    model = make_gpt2(len(tokenizer))
    con = encode(tokenizer, CONTRAST)
    with pytest.raises(ValueError, match="contrast_input_ids.*integer token ids"):
        ContrastiveRationaleLogitsProcessor(model, con.input_ids.float(), con.attention_mask)
    with pytest.raises(ValueError, match=r"gold_prompts\['input_ids'\].*integer token ids"):
        contrastive_generate(model, None, {"input_ids": con.input_ids.float()}, dict(con), pad_token_id=0)


def test_alpha_at_least_one_without_plausibility_warns(tokenizer):
    model = make_gpt2(len(tokenizer))
    con = encode(tokenizer, CONTRAST)
    with pytest.warns(UserWarning, match="plausibility_threshold"):
        ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, alpha=1.0)
    with pytest.warns(UserWarning, match="plausibility_threshold"):
        contrastive_generate(model, tokenizer, GOLD, CONTRAST, alpha=1.5, max_new_tokens=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, alpha=1.0,
                                            plausibility_threshold=0.1)
        ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, alpha=0.9)


@pytest.mark.skipif("mutants" in Path(scott_distill.__file__).parts,
                    reason="mutmut's trampolines add frames to every call: the warning's location moves under mutmut")
def test_alpha_warning_points_at_the_line_that_built_the_processor(tokenizer):
    """The alpha >= 1 warning names the user's line (``stacklevel``), for the processor and for the fused path, not
    the check inside the library (which would make every warning point at scott_distill/teacher/scoring.py)."""
    model = make_gpt2(len(tokenizer))
    con = encode(tokenizer, CONTRAST)
    with pytest.warns(UserWarning, match="plausibility_threshold") as caught:
        line = inspect.currentframe().f_lineno + 1
        ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, alpha=1.0)
    with pytest.warns(UserWarning, match="plausibility_threshold") as fused:
        fused_line = inspect.currentframe().f_lineno + 1
        contrastive_generate(model, tokenizer, GOLD, CONTRAST, alpha=1.5, max_new_tokens=1)
    assert [(w.filename, w.lineno) for w in caught if "plausibility_threshold" in str(w.message)] == [(__file__, line)]
    assert [(w.filename, w.lineno) for w in fused if "plausibility_threshold" in str(w.message)] == [
        (__file__, fused_line)]


def test_processor_called_outside_generate_returns_the_dtype_of_its_scores(tokenizer):
    """``generate`` hands processors float32 scores, but the processor is a public ``LogitsProcessor``: a custom
    loop over a bfloat16 teacher calls it with bfloat16 logits and gets bfloat16 scores back, the element-wise
    reference rounded to bfloat16 (found by mutation testing: the cast back was dropped and no test saw it)."""
    model = make_gpt2(len(tokenizer)).to(torch.bfloat16)
    gold = tokenizer(GOLD[0], return_tensors="pt").input_ids
    con = tokenizer(CONTRAST[0], return_tensors="pt").input_ids
    proc = ContrastiveRationaleLogitsProcessor(model, con, alpha=0.3)
    with torch.no_grad():
        scores = model(input_ids=gold).logits[:, -1]
        contrast = model(input_ids=con).logits[:, -1]
    assert scores.dtype == torch.bfloat16
    with proc:
        out = proc(gold, scores)
    assert out.dtype == torch.bfloat16
    ref = torch.tensor(reference_scores(scores.float(), contrast.float(), 0.3)).to(torch.bfloat16)
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)


def test_nan_in_contrast_logits_falls_back_to_gold_for_that_row():
    scores = torch.tensor([[0.0, 2.0, 1.0], [1.0, 0.0, 3.0]])
    contrast = torch.tensor([[0.0, float("nan"), 0.0], [0.5, 0.0, 1.0]])
    with pytest.warns(RuntimeWarning, match="NaN") as record:
        out = contrastive_scores(scores, contrast, 0.5)
    assert str(record[0].message) == ("The contrast branch produced NaN logits in 1 row(s); those rows use the gold "
                                      "branch alone at this step (check the teacher's dtype / the contrast prompts).")
    assert not torch.isnan(out).any()
    assert torch.allclose(out[0], torch.log_softmax(scores[0], -1))  # gold branch alone
    expect = torch.log_softmax(scores[1], -1) - 0.5 * torch.log_softmax(contrast[1], -1)
    assert torch.allclose(out[1], expect)  # other rows untouched


@pytest.mark.parametrize("alpha", [0.5, 4.0, 4.5, 10.0, 1e6, 1e30])
def test_contrast_minus_inf_never_gives_plus_inf(alpha):
    scores = torch.tensor([[0.0, 1.0, 2.0]])
    contrast = torch.tensor([[0.0, float("-inf"), 1.0]])
    out = contrastive_scores(scores, contrast, alpha)
    assert torch.isfinite(out).all()
    assert int(out.argmax()) == 1  # the token the contrast rules out is favoured, finitely


def test_alpha_zero_keeps_minus_inf():
    scores = torch.tensor([[0.0, float("-inf"), 1.0], [float("-inf")] * 3])
    out = contrastive_scores(scores, scores, 0.0)
    assert torch.isneginf(out[0, 1]) and torch.isneginf(out[1]).all()
    assert out[0, 2] == pytest.approx(-math.log1p(math.exp(-1.0)))


# ------------------------------------------------------------------------------------------------
# One way to say "stop here"; processor order
# ------------------------------------------------------------------------------------------------


def test_generate_kwargs_make_generate_stop_where_the_stop_rule_stops(tokenizer):
    """The docs' mistake: stop ids given to the processor only, so generate never stopped at them."""
    model = make_positional_gpt2(len(tokenizer))
    model.generation_config.eos_token_id = None  # only the user's stop ids end a row
    gold = encode(tokenizer, GOLD)
    con = encode(tokenizer, CONTRAST)
    ref_any = scott_reference_loop(model, tokenizer, GOLD, CONTRAST, 0.3, MAX_NEW, set())
    stop = [ref_any[0][3], ref_any[2][5]]  # tokens the teacher does produce: rows must end there
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, alpha=0.3,
                                               stop_token_ids=stop)
    assert proc.generate_kwargs()["eos_token_id"] == sorted(stop)
    with proc:
        out = model.generate(**gold, **proc.generate_kwargs(), max_new_tokens=MAX_NEW, do_sample=False,
                             pad_token_id=0)[:, gold.input_ids.shape[1]:]
    ref = scott_reference_loop(model, tokenizer, GOLD, CONTRAST, 0.3, MAX_NEW, set(stop))
    for row, expect in zip(out.tolist(), ref):
        assert row[: len(expect)] == expect
        if expect[-1] in stop:  # generate stopped: only padding after the end token
            assert set(row[len(expect):]) <= {0}
    assert any(r[-1] in stop and len(r) < MAX_NEW for r in ref)  # the test does exercise stopping


def test_generate_kwargs_carry_the_model_eos(tokenizer):
    model = make_gpt2(len(tokenizer))
    con = encode(tokenizer, CONTRAST)
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, stop_token_ids=[9, 9, 5])
    kwargs = proc.generate_kwargs()
    assert kwargs["eos_token_id"] == [1, 5, 9] and list(kwargs["logits_processor"]) == [proc]
    with pytest.raises(TypeError, match="eos_token_id"):  # end ids can't also be given to generate alone
        model.generate(**encode(tokenizer, GOLD), **kwargs, eos_token_id=[1], max_new_tokens=2)
    model.generation_config.eos_token_id = None
    bare = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask)
    assert "eos_token_id" not in bare.generate_kwargs()
    # one stop id (the usual newline) and no model eos: generate must still be told to stop there
    one = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, stop_token_ids=[7])
    assert one.generate_kwargs()["eos_token_id"] == [7]


def _penalised(logits: torch.Tensor, seen: list[int], penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty written out (what generate's RepetitionPenaltyLogitsProcessor does)."""
    out = logits.clone()
    for t in set(seen):
        out[t] = out[t] * penalty if out[t] < 0 else out[t] / penalty
    return out


@torch.no_grad()
def test_processors_before_shape_gold_branch_only(tokenizer):
    """Documented order: generate's repetition penalty acts on the gold scores before the contrast;
    the contrast branch sees the raw teacher. Checked against a loop that does exactly that."""
    model = make_positional_gpt2(len(tokenizer))
    model.generation_config.eos_token_id = None
    gold = encode(tokenizer, GOLD)
    con = encode(tokenizer, CONTRAST)
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, alpha=0.3)
    got = greedy(model, tokenizer, gold, proc, end=(), repetition_penalty=1.8).tolist()
    for g_text, c_text, row in zip(GOLD, CONTRAST, got):
        g, c = tokenizer(g_text)["input_ids"], tokenizer(c_text)["input_ids"]
        out: list[int] = []
        for _ in range(MAX_NEW):
            lg = _penalised(model(torch.tensor([g + out])).logits[0, -1], g + out, 1.8)
            lc = model(torch.tensor([c + out])).logits[0, -1]
            out.append(int((torch.log_softmax(lg, -1) - 0.3 * torch.log_softmax(lc, -1)).argmax()))
        assert row == out


# ---- found by mutation testing (docs/testing.md) ----

def test_stop_token_ids_are_every_token_holding_the_stop_text_plus_eos(tokenizer):
    """Independent reference: decode each id of the vocabulary and keep those whose text holds the stop string;
    EOS is added when the tokenizer has one, and only then."""
    want = [i for i in range(len(tokenizer)) if "." in tokenizer.decode([i])]
    assert want, "the test vocabulary has tokens with a '.'"
    eos = tokenizer.eos_token_id
    assert eos is not None
    assert stop_token_ids_for(tokenizer, ".") == want + [eos]
    newline = [i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i])]
    assert newline and stop_token_ids_for(tokenizer) == newline + [eos]  # the default stop is a newline
    saved = tokenizer.eos_token
    try:
        tokenizer.eos_token = None
        assert tokenizer.eos_token_id is None
        assert stop_token_ids_for(tokenizer, ".") == want
    finally:
        tokenizer.eos_token = saved


def test_all_padding_row_error_names_the_argument():
    ids = torch.tensor([[5, 6], [0, 0]])
    with pytest.raises(ValueError) as err:
        left_padded(ids, torch.tensor([[1, 1], [0, 0]]))
    assert str(err.value) == "`input_ids` rows [1] are all padding (attention mask all zeros)."


def test_fused_prompt_mask_of_another_shape_is_refused_with_the_exact_message(tokenizer):
    """found by mutation testing: the message was never checked (a ValueError(None) passed)."""
    model = make_gpt2(len(tokenizer))
    con = encode(tokenizer, CONTRAST)
    bad = {"input_ids": con.input_ids, "attention_mask": con.attention_mask[:, :-1]}
    with pytest.raises(ValueError) as err:
        contrastive_generate(model, None, bad, dict(con), pad_token_id=0)
    assert str(err.value) == (f"`gold_prompts['attention_mask']` must have the shape of its `input_ids` "
                              f"{tuple(con.input_ids.shape)}.")
    with pytest.raises(ValueError) as err:
        contrastive_generate(model, None, dict(con), {"input_ids": con.input_ids, "attention_mask": [[1]]},
                             pad_token_id=0)
    assert str(err.value).startswith("`contrast_prompts['attention_mask']` must have the shape")


def test_fused_prompt_errors_name_the_argument_and_what_was_given(tokenizer):
    """The exact text of every prompt error of the fused path (found by mutation testing: messages replaced by
    ``None``, the wrong object described, a boolean or 1-D id tensor let through, a string or a list with a number
    not refused, the argument's name dropped from the all-padding error all passed)."""
    model = make_gpt2(len(tokenizer))
    con = dict(encode(tokenizer, CONTRAST))
    width = con["input_ids"].shape[1]

    def message(gold, contrast=con, tok=None, **kw):
        with pytest.raises(ValueError) as err:
            contrastive_generate(model, tok, gold, contrast, max_new_tokens=1, **kw)
        return str(err.value)

    assert message({"attention_mask": con["attention_mask"]}, pad_token_id=0) == (
        "`gold_prompts` given as a mapping must contain `input_ids`.")
    ids_error = "`gold_prompts['input_ids']` must be a 2-D tensor of integer token ids, got "
    for ids, given in [(con["input_ids"].float(), f"Tensor of shape (3, {width}), dtype torch.float32"),
                       (con["input_ids"].bool(), f"Tensor of shape (3, {width}), dtype torch.bool"),
                       (con["input_ids"][0], f"Tensor of shape ({width},), dtype torch.int64"),
                       ([[5, 6, 7]], "list")]:  # a list has no shape: "list  ()" before `described`
        assert message({"input_ids": ids}, pad_token_id=0) == ids_error + given + "."
    mask = con["attention_mask"].clone()
    mask[1] = 0
    assert message({"input_ids": con["input_ids"], "attention_mask": mask}, pad_token_id=0) == (
        "`gold_prompts['input_ids']` rows [1] are all padding (attention mask all zeros).")
    strings_error = "`gold_prompts` must be a list of strings or a mapping with `input_ids`."
    assert message(GOLD[0], CONTRAST[0], tokenizer) == strings_error  # one string, not a list of them
    assert message([GOLD[0], 5], CONTRAST[:2], tokenizer) == strings_error
    model.generation_config.pad_token_id = None
    assert message(dict(encode(tokenizer, GOLD))) == (
        "No pad token: pass `pad_token_id` or a tokenizer with `pad_token` set.")


def test_all_padding_rows_error_lists_the_first_ten():
    """Found by mutation testing (scoring.left_padded__mutmut_11): the list is cut at ten rows, not eleven."""
    mask = torch.zeros(12, 3, dtype=torch.long)
    mask[0] = 1
    with pytest.raises(ValueError) as err:
        left_padded(torch.ones(12, 3, dtype=torch.long), mask, name="contrast_input_ids")
    assert str(err.value) == ("`contrast_input_ids` rows [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] are all padding "
                              "(attention mask all zeros).")


def test_left_padded_against_a_row_by_row_reference(caplog):
    """Each row's tokens moved to the end, in order, pads before them: a hand-written loop as the reference. A row
    one token shorter (padding in the last column only) must be re-padded too, and a batch that is already
    left-padded comes back as it was, without the "right-padded" message (scoring.left_padded__mutmut_15 / _16 /
    _17 let through a one-token gap or logged a false re-padding)."""
    import logging

    def reference(ids, mask):
        out_ids, out_mask = [], []
        for row, m in zip(ids.tolist(), mask.tolist()):
            tokens = [t for t, k in zip(row, m) if k]
            pads = [t for t, k in zip(row, m) if not k]
            out_ids.append(pads + tokens)
            out_mask.append([0] * len(pads) + [1] * len(tokens))
        return torch.tensor(out_ids), torch.tensor(out_mask)

    cases = {
        "one short by one": ([[5, 6, 7, 8], [9, 10, 11, 0]], [[1, 1, 1, 1], [1, 1, 1, 0]]),
        "right-padded": ([[5, 6, 0, 0], [9, 10, 11, 12], [13, 0, 0, 0]], [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]),
        "holes": ([[5, 0, 6, 0], [7, 8, 9, 10]], [[1, 0, 1, 0], [1, 1, 1, 1]]),
    }
    for name, (ids, mask) in cases.items():
        ids, mask = torch.tensor(ids), torch.tensor(mask)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="scott_distill.teacher.scoring"):
            got_ids, got_mask = left_padded(ids, mask)
        want_ids, want_mask = reference(ids, mask)
        assert got_ids.tolist() == want_ids.tolist() and got_mask.tolist() == want_mask.tolist(), name
        assert "right-padded" in caplog.text, name
    ids, mask = torch.tensor([[0, 5, 6], [7, 8, 9]]), torch.tensor([[0, 1, 1], [1, 1, 1]])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="scott_distill.teacher.scoring"):
        got_ids, got_mask = left_padded(ids, mask)
    assert got_ids.tolist() == ids.tolist() and got_mask.tolist() == mask.tolist()
    assert caplog.text == ""


def test_decoder_position_ids_by_hand():
    """Left-padded rows count from 0 at their first token, and pads get position 0, as transformers' generate does
    (scoring.decoder_position_ids__mutmut_13 gave pads 1)."""
    from scott_distill.teacher.scoring import decoder_position_ids

    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert decoder_position_ids(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]]
    assert decoder_position_ids(mask.bool()).tolist() == decoder_position_ids(mask).tolist()


def test_nan_in_the_gold_scores_gives_minus_inf_never_nan():
    """A gold row holding a NaN (an fp16 teacher that overflowed) has no usable distribution: the whole row is
    excluded (-inf) for every alpha, never NaN; the other rows are the plain formula."""
    scores = torch.tensor([[0.0, float("nan"), 1.0], [0.0, 1.0, 2.0]])
    contrast = torch.tensor([[0.5, 0.0, 1.0], [1.0, 0.0, 0.5]])
    for alpha in (0.0, 0.5):
        out = contrastive_scores(scores, contrast, alpha)
        assert torch.isneginf(out[0]).all(), alpha
        expect = torch.log_softmax(scores[1], -1) - alpha * torch.log_softmax(contrast[1], -1)
        torch.testing.assert_close(out[1], expect)


def test_plausibility_threshold_zero_is_off_and_one_keeps_the_top_tokens():
    """``plausibility_threshold`` 0 keeps every token (as None does); 1 keeps only the tokens at the gold maximum
    (p >= 1 * max p), ties included: the rule is ``p >= threshold * max p``."""
    scores = torch.tensor([[2.0, 0.0, 2.0, 1.0], [0.0, 3.0, 1.0, 1.0]])
    contrast = torch.tensor([[0.0, 1.0, 3.0, 0.5], [2.0, 0.0, 0.0, 1.0]])
    free = contrastive_scores(scores, contrast, 0.5)
    assert torch.equal(contrastive_scores(scores, contrast, 0.5, plausibility_threshold=0.0), free)
    top = contrastive_scores(scores, contrast, 0.5, plausibility_threshold=1.0)
    keep = torch.tensor([[True, False, True, False], [False, True, False, False]])
    assert torch.equal(top[keep], free[keep]) and torch.isneginf(top[~keep]).all()


# -- the constructor's argument checks, found by mutation testing (processor.__init__): exact messages ---------------


def test_alpha_defaults_to_the_reference_codes_half(tokenizer):
    """SCOTT's reference code uses alpha 0.5; the docstring promises it as the default (and 0.5 < 1 warns nothing)."""
    con = encode(tokenizer, CONTRAST)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        proc = ContrastiveRationaleLogitsProcessor(make_gpt2(len(tokenizer)), con.input_ids)
    assert proc.alpha == 0.5


@pytest.mark.parametrize(
    "wrong",
    [
        lambda enc, n: (enc.input_ids.tolist(), "list"),  # token ids as Python lists
        lambda enc, n: (enc, "BatchEncoding"),  # the tokenizer's whole output instead of its input_ids
        lambda enc, n: (enc.input_ids[0], f"Tensor of shape ({n},)"),  # one prompt without its batch dimension
        lambda enc, n: (enc.input_ids[None], f"Tensor of shape (1, 3, {n})"),
    ],
    ids=["list", "batch-encoding", "1-d", "3-d"],
)
def test_contrast_ids_that_are_not_a_2d_tensor_are_refused_with_the_exact_message(tokenizer, wrong):
    con = encode(tokenizer, CONTRAST)
    ids, got = wrong(con, con.input_ids.shape[1])
    with pytest.raises(ValueError) as err:
        ContrastiveRationaleLogitsProcessor(make_gpt2(len(tokenizer)), ids)
    assert str(err.value) == f"`contrast_input_ids` must be a 2-D LongTensor of shape (batch_size, length), got {got}."


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool, torch.complex64], ids=["float", "bool", "complex"])
def test_contrast_ids_of_a_non_integer_dtype_are_refused_with_the_exact_message(tokenizer, dtype):
    """A boolean tensor (e.g. an attention mask passed as the ids) is no token ids either."""
    con = encode(tokenizer, CONTRAST)
    with pytest.raises(ValueError) as err:
        ContrastiveRationaleLogitsProcessor(make_gpt2(len(tokenizer)), con.input_ids.to(dtype), con.attention_mask)
    assert str(err.value) == (f"`contrast_input_ids` must hold integer token ids, got dtype {dtype} "
                              "(tokenize the prompts; do not pass embeddings or probabilities).")


@pytest.mark.parametrize(
    "wrong",
    [
        # a list has no shape: the message said "got ()", as if it were a 0-d tensor, before `_described`
        lambda enc, n: (enc.attention_mask.tolist(), "list"),
        lambda enc, n: (enc.attention_mask[:, :-1], f"Tensor of shape (3, {n - 1})"),
        lambda enc, n: (enc.attention_mask[0], f"Tensor of shape ({n},)"),
    ],
    ids=["list", "shorter", "1-d"],
)
def test_contrast_mask_of_another_shape_is_refused_with_the_exact_message(tokenizer, wrong):
    con = encode(tokenizer, CONTRAST)
    width = con.input_ids.shape[1]
    mask, got = wrong(con, width)
    with pytest.raises(ValueError) as err:
        ContrastiveRationaleLogitsProcessor(make_gpt2(len(tokenizer)), con.input_ids, mask)
    assert str(err.value) == ("`contrast_attention_mask` must be a tensor with the shape of `contrast_input_ids` "
                              f"(3, {width}), got {got}.")


def test_shared_prefix_with_an_encoder_decoder_model_is_refused_with_the_exact_message(tokenizer):
    ids = tokenizer(["Q: where is the cat now", "Q: where is the dog now"])["input_ids"]
    prefix = SharedPrefix.of(make_gpt2(len(tokenizer)), ids)  # built on a decoder-only model, given with a T5
    assert prefix is not None
    con = tokenizer(["Q: where is the cat now"], return_tensors="pt")
    with pytest.raises(ValueError) as err:
        ContrastiveRationaleLogitsProcessor(make_t5(len(tokenizer)), con.input_ids, shared_prefix=prefix)
    assert str(err.value) == "`shared_prefix` needs a decoder-only model: an encoder is bidirectional."


def test_contrast_rows_without_the_shared_prefix_are_refused_naming_the_argument(tokenizer):
    model = make_gpt2(len(tokenizer))
    ids = tokenizer(["Q: where is the cat now", "Q: where is the dog now"])["input_ids"]
    prefix = SharedPrefix.of(model, ids)
    assert prefix is not None
    con = tokenizer(["Q: where is the cat now", "A: something else entirely"], return_tensors="pt",
                    padding=True, padding_side="left")
    with pytest.raises(ValueError) as err:
        ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, shared_prefix=prefix)
    assert str(err.value) == (f"`contrast_input_ids` rows [1] do not start with the shared prefix's {len(prefix)} "
                              "tokens.")
