"""ContrastiveRationaleLogitsProcessor and contrastive_generate against independent no-cache references."""

from __future__ import annotations

import math
import random
import re

import pytest
import torch
from conftest import make_gpt2, make_llama, make_t5
from transformers import LogitsProcessor, LogitsProcessorList, SuppressTokensLogitsProcessor

import scott_distill.teacher._branch as branch_module
import scott_distill.teacher.fused as fused_module
import scott_distill.teacher.processor as processor_module
from scott_distill import ContrastiveRationaleLogitsProcessor, contrastive_generate

GOLD = [
    "Q: Where would you keep milk cold? A: The answer is fridge.",
    "Q: What tool cuts wood? Answer Choices: (a) saw (b) towel (c) pillow A: The answer is saw.",
    "Q: Is a whale a mammal? A: The answer is yes.",
]
CONTRAST = [
    "Q: Where would you keep milk cold? A: The answer is oven.",
    "Q: What tool cuts wood? Answer Choices: (a) saw (b) towel (c) pillow A: The answer is.",
    "Q: Is a whale a mammal? Answer Choices: (a) yes (b) no A: The answer is no.",
]
MAX_NEW = 12


# alpha != 1 - alpha, so that a swapped weight cannot pass the parity tests
ALPHAS = [0.3, 1.0]


def encode(tokenizer, texts, side="left"):
    # padding_side per call: the session tokenizer is shared, and setting it here once broke later tests
    return tokenizer(texts, return_tensors="pt", padding=True, padding_side=side)


def make_positional_gpt2(vocab_size: int, seed: int = 1234):
    """GPT-2 whose absolute position embeddings matter: at the default init (std 0.02) a position shift
    barely moves the tiny model's argmax, so a position-id bug would pass the parity tests unseen."""
    model = make_gpt2(vocab_size, seed=seed)
    with torch.no_grad():
        model.transformer.wpe.weight.mul_(25.0)
    return model


FACTORIES = [make_positional_gpt2, make_llama, make_t5]
FACTORY_IDS = ["gpt2", "llama", "t5"]


# ---------------------------------------------------------------------------------------------
# Independent references: SCOTT's loop (logp1 - alpha*logp2, argmax), full recomputation, no cache,
# one unpadded row at a time, so positions and padding cannot be wrong in them.
# ---------------------------------------------------------------------------------------------


def next_logits(model, prompt_ids: list[int], generated: list[int], start_id: int | None) -> torch.Tensor:
    if model.config.is_encoder_decoder:
        dec = torch.tensor([[start_id, *generated]])
        return model(input_ids=torch.tensor([prompt_ids]), decoder_input_ids=dec).logits[0, -1]
    return model(input_ids=torch.tensor([prompt_ids + generated])).logits[0, -1]


@torch.no_grad()
def scott_reference_loop(model, tokenizer, gold, contrast, alpha, max_new, end_ids):
    start = getattr(model.config, "decoder_start_token_id", None)
    rows = []
    for g_text, c_text in zip(gold, contrast):
        g = tokenizer(g_text)["input_ids"]
        c = tokenizer(c_text)["input_ids"]
        out: list[int] = []
        for _ in range(max_new):
            lg = next_logits(model, g, out, start)
            lc = next_logits(model, c, out, start)
            if int(lg.argmax()) in end_ids:
                tok = int(lg.argmax())
            else:
                tok = int((torch.log_softmax(lg, -1) - alpha * torch.log_softmax(lc, -1)).argmax())
            out.append(tok)
            if tok in end_ids:
                break
        rows.append(out)
    return rows


class NoCacheContrastProcessor(LogitsProcessor):
    """Stateless reference: recomputes the contrast branch from scratch every step.

    Knows nothing of beam reordering: the contrast row of input row r is r // expansion.
    """

    def __init__(self, model, contrast_rows: list[list[int]], alpha: float, prompt_len: int, end_ids):
        self.model, self.rows, self.alpha, self.prompt_len, self.end = model, contrast_rows, alpha, prompt_len, end_ids

    @torch.no_grad()
    def __call__(self, input_ids, scores):
        expand = input_ids.shape[0] // len(self.rows)
        start = getattr(self.model.config, "decoder_start_token_id", None)
        out = torch.empty_like(scores, dtype=torch.float32)
        for r in range(input_ids.shape[0]):
            if self.model.config.is_encoder_decoder:
                generated = input_ids[r, 1:].tolist()
            else:
                generated = input_ids[r, self.prompt_len:].tolist()
            lc = next_logits(self.model, self.rows[r // expand], generated, start)
            lp = torch.log_softmax(scores[r].float(), -1)
            row = lp - self.alpha * torch.log_softmax(lc, -1)
            top = int(scores[r].argmax())
            if top in self.end:
                row = torch.full_like(row, float("-inf"))
                row[top] = 0.0
            out[r] = row
        return out


def trim(rows: torch.Tensor, end_ids) -> list[list[int]]:
    result = []
    for row in rows.tolist():
        cut = []
        for t in row:
            cut.append(t)
            if t in end_ids:
                break
        result.append(cut)
    return result


def run_processor(model, tokenizer, alpha=0.5, stop=(), **gen):
    enc_dec = model.config.is_encoder_decoder
    side = "right" if enc_dec else "left"
    gold = encode(tokenizer, GOLD, side)
    con = encode(tokenizer, CONTRAST, side)
    proc = ContrastiveRationaleLogitsProcessor(
        model, con.input_ids, con.attention_mask, alpha=alpha, stop_token_ids=list(stop)
    )
    out = model.generate(**gold, logits_processor=LogitsProcessorList([proc]), max_new_tokens=MAX_NEW,
                         pad_token_id=tokenizer.pad_token_id, **gen)
    new = out if enc_dec else out[:, gold.input_ids.shape[1]:]
    return new[:, 1:] if enc_dec else new, proc


def greedy_parity(model, tokenizer, alpha):
    """(processor tokens, independent reference tokens) under greedy search with a stop token."""
    stop = [tokenizer.convert_tokens_to_ids(".")]
    end = {1, *stop}
    got, _ = run_processor(model, tokenizer, alpha=alpha, stop=stop, do_sample=False)
    ref = scott_reference_loop(model, tokenizer, GOLD, CONTRAST, alpha, MAX_NEW, end)
    return trim(got, end), ref


@pytest.mark.parametrize("factory", FACTORIES, ids=FACTORY_IDS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_greedy_matches_scott_reference_loop(tokenizer, factory, alpha):
    got, ref = greedy_parity(factory(len(tokenizer)), tokenizer, alpha)
    assert got == ref


@pytest.mark.parametrize("factory", FACTORIES, ids=FACTORY_IDS)
def test_parity_inputs_tell_alpha_from_one_minus_alpha(tokenizer, factory):
    """The parity test has teeth: at alpha=0.3 the reference differs from alpha=0.7."""
    model = factory(len(tokenizer))
    end = {1, tokenizer.convert_tokens_to_ids(".")}
    assert (scott_reference_loop(model, tokenizer, GOLD, CONTRAST, 0.3, MAX_NEW, end)
            != scott_reference_loop(model, tokenizer, GOLD, CONTRAST, 0.7, MAX_NEW, end))


def test_planted_alpha_swap_fails_parity(tokenizer, monkeypatch):
    real = processor_module.contrastive_scores
    monkeypatch.setattr(processor_module, "contrastive_scores",
                        lambda s, c, alpha, **kw: real(s, c, 1 - alpha, **kw))
    got, ref = greedy_parity(make_positional_gpt2(len(tokenizer)), tokenizer, 0.3)
    assert got != ref


def _positions_ignoring_padding(attention_mask):
    return torch.arange(attention_mask.shape[1]).expand_as(attention_mask).clone()


def test_planted_position_id_bug_fails_parity(tokenizer, monkeypatch):
    """GPT-2 (absolute positions) with left-padded contrast rows: positions counted over the padding
    give wrong rows, and the parity test must see it (it did not on the default tiny GPT-2)."""
    monkeypatch.setattr(branch_module, "decoder_position_ids", _positions_ignoring_padding)
    got, ref = greedy_parity(make_positional_gpt2(len(tokenizer)), tokenizer, 0.3)
    assert got != ref


def test_contrast_actually_changes_tokens(tokenizer):
    model = make_gpt2(len(tokenizer))
    got, _ = run_processor(model, tokenizer, alpha=1.0, do_sample=False)
    plain, _ = run_processor(model, tokenizer, alpha=0.0, do_sample=False)
    assert not torch.equal(got, plain)


def count_forwards(model):
    """Forward calls of ``model`` by input length (prefills have length > 1)."""
    lengths: list[int] = []

    def spy(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is None:
            ids = kwargs.get("decoder_input_ids")
        lengths.append(ids.shape[1])

    return lengths, model.register_forward_pre_hook(spy, with_kwargs=True)


@pytest.mark.parametrize("factory", [make_positional_gpt2, make_t5], ids=["gpt2", "t5"])
def test_alpha_zero_equals_plain_generate_without_contrast_branch(tokenizer, factory):
    """alpha=0 is plain decoding and skips the contrast branch (no extra forward)."""
    model = factory(len(tokenizer))
    side = "right" if model.config.is_encoder_decoder else "left"
    gold = encode(tokenizer, GOLD, side)
    for gen in ({"do_sample": False}, {"do_sample": True, "top_k": 20, "temperature": 0.7},
                {"do_sample": False, "num_beams": 3}):
        torch.manual_seed(7)
        plain_calls, hook = count_forwards(model)
        plain = model.generate(**gold, max_new_tokens=MAX_NEW, pad_token_id=0, **gen)
        hook.remove()
        torch.manual_seed(7)
        calls, hook = count_forwards(model)
        got, _ = run_processor(model, tokenizer, alpha=0.0, **gen)
        hook.remove()
        expect = plain[:, 1:] if model.config.is_encoder_decoder else plain[:, gold.input_ids.shape[1]:]
        assert torch.equal(got, expect), gen
        assert len(calls) == len(plain_calls), gen


@pytest.mark.parametrize("factory", [make_positional_gpt2, make_llama, make_t5], ids=["gpt2", "llama", "t5"])
def test_tiny_alpha_runs_contrast_branch_and_equals_plain_generate(tokenizer, factory):
    """alpha -> 0 through the real contrast branch (prefill, cache, beam reordering): greedy and beam
    search pick plain generate's tokens. The alpha=0 test alone never reaches that code."""
    model = factory(len(tokenizer))
    # without end tokens: the stop rule (active for any alpha > 0) would otherwise steer the beams
    model.generation_config.eos_token_id = None
    side = "right" if model.config.is_encoder_decoder else "left"
    gold = encode(tokenizer, GOLD, side)
    for gen in ({"do_sample": False}, {"do_sample": False, "num_beams": 3, "num_return_sequences": 2}):
        plain = model.generate(**gold, max_new_tokens=MAX_NEW, pad_token_id=0, **gen)
        calls, hook = count_forwards(model)
        got, _ = run_processor(model, tokenizer, alpha=1e-5, **gen)
        hook.remove()
        expect = plain[:, 1:] if model.config.is_encoder_decoder else plain[:, gold.input_ids.shape[1]:]
        assert torch.equal(got, expect), gen
        # the contrast branch ran: one forward per step and branch
        assert len(calls) == 2 * got.shape[1], gen


def test_fused_path_starts_the_decoder_where_generate_does(tokenizer):
    """An encoder-decoder whose generation config names another decoder start than its model config:
    ``generate`` starts from the generation config's, and so must the fused path (a mutant that read the
    model config's whenever the generation config had one survived every other test)."""
    model = make_t5(len(tokenizer))
    model.generation_config.eos_token_id = None
    model.generation_config.decoder_start_token_id = 5
    assert model.config.decoder_start_token_id != 5
    gold = encode(tokenizer, GOLD, "right")
    plain = model.generate(**gold, max_new_tokens=MAX_NEW, pad_token_id=0, do_sample=False)
    got = contrastive_generate(model, None, gold, encode(tokenizer, CONTRAST, "right"), alpha=1e-5,
                               max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=0)
    assert plain[0, 0] == 5 and torch.equal(got, plain[:, 1:])


def test_fused_path_falls_back_to_the_model_configs_decoder_start(tokenizer):
    """A generation config without a decoder start (``None``): the fused path starts the decoder at the model
    config's, as the one-row SCOTT loop does (found by mutation testing: a mutant that dropped the fallback, and
    then failed on a ``None`` start, survived)."""
    model = make_t5(len(tokenizer))
    model.generation_config.decoder_start_token_id = None
    assert model.config.decoder_start_token_id == 0
    stop = [tokenizer.convert_tokens_to_ids(".")]
    end = {1, *stop}
    got = contrastive_generate(model, tokenizer, GOLD, CONTRAST, alpha=0.3, max_new_tokens=MAX_NEW,
                               stop_token_ids=stop, do_sample=False)
    assert trim(got, end) == scott_reference_loop(model, tokenizer, GOLD, CONTRAST, 0.3, MAX_NEW, end)


def test_fused_path_runs_a_model_without_a_generation_config(tokenizer):
    """A teacher whose ``generation_config`` was cleared (``None``), with the tokenizer's pad id: the unset sampling
    switch falls back to transformers' default (greedy), and the tokens are the one-row SCOTT loop's (found by
    mutation testing: reading the setting without a default raised ``AttributeError`` and no test noticed)."""
    assert_fused_parity_without_generation_config(make_positional_gpt2(len(tokenizer)), tokenizer)


def assert_fused_parity_without_generation_config(model, tokenizer):
    """Clear ``model.generation_config``; the fused path's tokens (the tokenizer's pad id) are the one-row SCOTT
    loop's."""
    model.generation_config = None
    stop = [tokenizer.convert_tokens_to_ids(".")]
    end = {1, *stop}
    got = contrastive_generate(model, tokenizer, GOLD, CONTRAST, alpha=0.3, max_new_tokens=MAX_NEW,
                               stop_token_ids=stop)
    assert trim(got, end) == scott_reference_loop(model, tokenizer, GOLD, CONTRAST, 0.3, MAX_NEW, end)


def test_fused_path_runs_an_encoder_decoder_without_a_generation_config(tokenizer):
    """A T5 teacher whose ``generation_config`` was cleared: the decoder starts at the model config's start id and
    pads with the tokenizer's pad id (the one-row SCOTT loop's tokens); without a tokenizer or ``pad_token_id`` the
    error says what to pass. Both read the missing config without a default before and raised ``AttributeError``."""
    model = make_t5(len(tokenizer))
    assert_fused_parity_without_generation_config(model, tokenizer)
    gold, con = encode(tokenizer, GOLD, "right"), encode(tokenizer, CONTRAST, "right")
    with pytest.raises(ValueError, match="No pad token: pass `pad_token_id`"):
        contrastive_generate(model, None, dict(gold), dict(con), max_new_tokens=2)


def test_fused_encoder_decoder_prompts_stay_right_padded(tokenizer):
    """An encoder-decoder teacher with *absolute* positions (BART; T5's relative positions hide the padding side):
    string prompts are tokenized with right padding and right-padded tensors are kept as given, so every row decodes
    what it decodes alone, unpadded (found by mutation testing: left padding for encoders too passed every T5
    test). Left-padded tensors really change BART's rows, so the check can fail."""
    from test_student_prompts import make_bart

    model = make_bart(len(tokenizer))
    stop = [tokenizer.convert_tokens_to_ids(".")]
    end = {1, *stop}
    kw = dict(alpha=0.3, max_new_tokens=MAX_NEW, stop_token_ids=stop, do_sample=False)
    ref = scott_reference_loop(model, tokenizer, GOLD, CONTRAST, 0.3, MAX_NEW, end)
    assert trim(contrastive_generate(model, tokenizer, GOLD, CONTRAST, **kw), end) == ref
    right = [dict(encode(tokenizer, texts, "right")) for texts in (GOLD, CONTRAST)]
    assert trim(contrastive_generate(model, None, *right, pad_token_id=0, **kw), end) == ref
    left = [dict(encode(tokenizer, texts, "left")) for texts in (GOLD, CONTRAST)]
    assert trim(contrastive_generate(model, None, *left, pad_token_id=0, **kw), end) != ref


def reference_processor(model, tokenizer, alpha, end):
    enc_dec = model.config.is_encoder_decoder
    gold = encode(tokenizer, GOLD, "right" if enc_dec else "left")
    rows = [tokenizer(t)["input_ids"] for t in CONTRAST]
    return gold, NoCacheContrastProcessor(model, rows, alpha, gold.input_ids.shape[1], end)


@pytest.mark.parametrize("factory", FACTORIES, ids=FACTORY_IDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_search_matches_no_cache_reference(tokenizer, factory, seed):
    model = factory(len(tokenizer), seed=seed)
    end = {1}
    gen = dict(do_sample=False, num_beams=4, num_return_sequences=2, max_new_tokens=MAX_NEW, pad_token_id=0)
    gold, ref_proc = reference_processor(model, tokenizer, 0.3, end)
    ref = model.generate(**gold, logits_processor=LogitsProcessorList([ref_proc]), **gen)
    gen.pop("max_new_tokens")
    gen.pop("pad_token_id")
    got, _ = run_processor(model, tokenizer, alpha=0.3, **gen)
    ref = ref[:, 1:] if model.config.is_encoder_decoder else ref[:, gold.input_ids.shape[1]:]
    assert torch.equal(got, ref)


@pytest.mark.parametrize("factory", [make_positional_gpt2, make_t5], ids=["gpt2", "t5"])
def test_sampling_and_return_sequences_match_reference(tokenizer, factory):
    model = factory(len(tokenizer))
    gen = dict(do_sample=True, temperature=0.8, top_k=30, top_p=0.9, num_return_sequences=3)
    gold, ref_proc = reference_processor(model, tokenizer, 0.3, {1})
    torch.manual_seed(3)
    ref = model.generate(**gold, logits_processor=LogitsProcessorList([ref_proc]), max_new_tokens=MAX_NEW,
                         pad_token_id=0, **gen)
    torch.manual_seed(3)
    got, _ = run_processor(model, tokenizer, alpha=0.3, **gen)
    ref = ref[:, 1:] if model.config.is_encoder_decoder else ref[:, gold.input_ids.shape[1]:]
    assert got.shape[0] == 3 * len(GOLD)
    assert torch.equal(got, ref)


def test_contrast_branch_feeds_one_token_per_step(tokenizer):
    model = make_gpt2(len(tokenizer))
    lengths: list[int] = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: lengths.append(kw["input_ids"].shape[1]),
                                           with_kwargs=True)
    try:
        got, _ = run_processor(model, tokenizer, alpha=0.5, do_sample=False, min_new_tokens=MAX_NEW)
    finally:
        hook.remove()
    # Two prefills (gold by generate, contrast by the processor); every later forward is one token.
    assert got.shape[1] == MAX_NEW
    assert sum(n > 1 for n in lengths) == 2
    assert len(lengths) == 2 * MAX_NEW  # one forward per step and branch


def test_processor_reused_for_second_generate_resets(tokenizer):
    model = make_gpt2(len(tokenizer))
    gold = encode(tokenizer, GOLD)
    con = encode(tokenizer, CONTRAST)
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask)
    first = model.generate(**gold, logits_processor=[proc], max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=0)
    again = model.generate(**gold, logits_processor=[proc], max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=0)
    assert torch.equal(first, again)
    # a different prompt of the length the cached run reached must not be taken as a continuation
    longer = encode(tokenizer, [g + " Because" for g in GOLD])
    fresh = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask)
    a = model.generate(**longer, logits_processor=[proc], max_new_tokens=4, do_sample=False, pad_token_id=0)
    b = model.generate(**longer, logits_processor=[fresh], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(a, b)


def test_new_call_continuing_only_some_rows_restarts_the_contrast_branch(tokenizer):
    """A second ``generate`` (no ``with``, no reset) whose prompts are the first call's output for row 0 and another
    row 1: row 0 looks like one more step of the cached run, row 1 does not. One row without a parent means a new
    call, so every row restarts from its contrast prompt: the tokens equal the no-cache reference's for that call
    (found by mutation testing: "some row has a parent" in place of "every row has one" stepped row 1's stale
    cache)."""
    model = make_positional_gpt2(len(tokenizer))
    model.generation_config.eos_token_id = None  # no end token: both sides run every step
    gold, con = encode(tokenizer, GOLD[:2]), encode(tokenizer, CONTRAST[:2])
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, alpha=0.3)
    kw = dict(do_sample=False, pad_token_id=0)
    first = model.generate(**gold, logits_processor=[proc], max_new_tokens=4, **kw)
    second = first.clone()
    second[1, gold.input_ids.shape[1]:] = first[1, gold.input_ids.shape[1]:].flip(0)  # not a continuation of row 1
    assert not torch.equal(second[1, :-1], first[1, :-1])
    mask = torch.cat([gold.attention_mask, torch.ones(2, 4, dtype=torch.long)], dim=1)
    got = model.generate(input_ids=second, attention_mask=mask, logits_processor=[proc], max_new_tokens=3, **kw)
    rows = [tokenizer(t)["input_ids"] for t in CONTRAST[:2]]
    reference = NoCacheContrastProcessor(model, rows, 0.3, second.shape[1], set())
    ref = model.generate(input_ids=second, attention_mask=mask, logits_processor=[reference], max_new_tokens=3, **kw)
    assert torch.equal(got, ref)


def test_padded_vocabulary_and_earlier_inf_scores(tokenizer):
    model = make_gpt2(len(tokenizer) + 40)  # embedding padded beyond the tokenizer
    gold = encode(tokenizer, GOLD)
    con = encode(tokenizer, CONTRAST)
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, alpha=0.5)
    banned = list(range(len(tokenizer), len(tokenizer) + 40))
    seen = []

    class Spy(LogitsProcessor):
        def __call__(self, input_ids, scores):
            seen.append(scores.clone())
            return scores

    out = model.generate(
        **gold, max_new_tokens=MAX_NEW, do_sample=True, pad_token_id=0,
        logits_processor=LogitsProcessorList([SuppressTokensLogitsProcessor(banned), proc, Spy()]),
    )
    for s in seen:
        assert not torch.isnan(s).any() and not torch.isposinf(s).any()
        assert torch.isneginf(s[:, banned]).all()
    assert out[:, gold.input_ids.shape[1]:].max() < len(tokenizer)


def test_scores_never_nan_or_posinf_edge_cases():
    from scott_distill.teacher.scoring import contrastive_scores

    scores = torch.tensor([[0.0, 1.0, float("-inf")], [float("-inf")] * 3, [2.0, 0.0, 0.0]])
    contrast = torch.tensor([[0.0, float("-inf"), 5.0], [0.0, 0.0, 0.0], [float("-inf"), 0.0, 0.0]])
    out = contrastive_scores(scores, contrast, 0.5)
    assert not torch.isnan(out).any() and not torch.isposinf(out).any()
    assert torch.isneginf(out[0, 2]) and torch.isneginf(out[1]).all()
    # independent check of a finite row
    expect = torch.log_softmax(scores[0, :2], -1)  # the -inf token has zero mass
    assert out[0, 0] == pytest.approx(float(expect[0] - 0.5 * torch.log_softmax(contrast[0], -1)[0]), abs=1e-5)


def reference_scores(scores, contrast, alpha, end=(), beta=None):
    """contrastive_scores written out element by element in plain Python floats (finite inputs)."""
    out = []
    for row, crow in zip(scores.tolist(), contrast.tolist()):
        lse = math.log(sum(math.exp(v) for v in row))
        clse = math.log(sum(math.exp(v) for v in crow))
        gold = [v - lse for v in row]
        combined = [g - alpha * (c - clse) for g, c in zip(gold, crow)]
        if beta:
            combined = [x if g >= max(gold) + math.log(beta) else -math.inf for x, g in zip(combined, gold)]
        top = max(range(len(row)), key=lambda i: row[i])
        if top in end:
            combined = [0.0 if i == top else -math.inf for i in range(len(row))]
        out.append(combined)
    return out


@pytest.mark.parametrize("alpha", [0.1, 0.3, 1.7])
@pytest.mark.parametrize("beta", [None, 0.05])
def test_contrastive_scores_match_elementwise_reference(alpha, beta):
    from scott_distill.teacher.scoring import contrastive_scores

    rng = random.Random(int(alpha * 10) + (beta is not None))
    scores = torch.tensor([[rng.gauss(0, 3) for _ in range(17)] for _ in range(6)])
    contrast = torch.tensor([[rng.gauss(0, 3) for _ in range(17)] for _ in range(6)])
    end = {int(scores[0].argmax()), int(scores[3].argmax())}  # two rows where the stop rule fires
    got = contrastive_scores(scores, contrast, alpha, stop_token_ids=torch.tensor(sorted(end)),
                             plausibility_threshold=beta)
    ref = reference_scores(scores, contrast, alpha, end, beta)
    for g_row, r_row in zip(got.tolist(), ref):
        for g, r in zip(g_row, r_row):
            assert (g == r == -math.inf) or g == pytest.approx(r, abs=1e-4)


def test_end_token_ids_independent_of_order_and_type(gpt2):
    from scott_distill.teacher.scoring import end_token_ids

    gpt2.generation_config.eos_token_id = [7, 1]
    assert end_token_ids(gpt2, (x for x in [9, 1])).tolist() == [1, 7, 9]
    gpt2.generation_config.eos_token_id = None
    none = end_token_ids(gpt2)
    # long even when empty (torch.tensor([]) is float32): the ids index the vocabulary, and a float index raises
    assert none.tolist() == [] and none.dtype == torch.long and torch.zeros(2, 5)[:, none].shape == (2, 0)
    # a model-like object without a generation config (a wrapper, a stub) has only the given stop ids
    assert end_token_ids(object(), [5]).tolist() == [5]
    del gpt2.generation_config.eos_token_id
    assert end_token_ids(gpt2, [2]).tolist() == [2]


def test_stop_rule_forces_end_token_when_teacher_prefers_it():
    from scott_distill.teacher.scoring import contrastive_scores

    scores = torch.tensor([[0.0, 3.0, 2.9], [3.0, 0.0, 2.9]])
    contrast = torch.tensor([[0.0, 9.0, 0.0], [0.0, 0.0, 0.0]])  # contrast hates token 1 -> pushed down
    out = contrastive_scores(scores, contrast, 0.5, stop_token_ids=torch.tensor([1]))
    assert out[0].argmax() == 1 and torch.isneginf(out[0, [0, 2]]).all()
    free = contrastive_scores(scores, contrast, 0.5)
    assert free[0].argmax() == 2  # without the rule the contrast would have moved off the end token
    assert torch.isfinite(out[1]).all()  # row 2's top token is not an end token: untouched


def test_plausibility_threshold_excludes_unlikely_tokens():
    from scott_distill.teacher.scoring import contrastive_scores

    scores = torch.log(torch.tensor([[0.6, 0.3, 0.09, 0.01]]))
    contrast = torch.log(torch.tensor([[0.5, 0.3, 0.1999, 0.0001]]))
    out = contrastive_scores(scores, contrast, 1.0, plausibility_threshold=0.1)
    # p < 0.1 * 0.6 = 0.06 -> token 3 excluded; token 2 (0.09) kept
    assert torch.isneginf(out[0, 3]) and torch.isfinite(out[0, :3]).all()
    assert int(contrastive_scores(scores, contrast, 1.0).argmax()) == 3  # unconstrained picks the implausible one


def test_clear_errors(tokenizer):
    model = make_gpt2(len(tokenizer))
    gold = encode(tokenizer, GOLD)
    con = encode(tokenizer, CONTRAST[:2])
    with pytest.raises(ValueError, match="alpha"):
        ContrastiveRationaleLogitsProcessor(model, con.input_ids, alpha=-0.1)
    short = con.attention_mask[:, :-1]
    expected = (f"`contrast_attention_mask` must be a tensor with the shape of `contrast_input_ids` "
                f"{tuple(con.input_ids.shape)}, got Tensor of shape {tuple(short.shape)}.")
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        ContrastiveRationaleLogitsProcessor(model, con.input_ids, short)
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask)
    with pytest.raises(ValueError, match="contrast_input_ids"):
        model.generate(**gold, logits_processor=[proc], max_new_tokens=3, pad_token_id=0)
    other = make_gpt2(len(tokenizer) + 8)
    con3 = encode(tokenizer, CONTRAST)
    proc = ContrastiveRationaleLogitsProcessor(other, con3.input_ids, con3.attention_mask)
    vocab = len(tokenizer)
    expected = (f"The contrast model's vocabulary ({vocab + 8}) differs from the scores of generate() ({vocab}): "
                "`model` must be the model that is generating.")
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        model.generate(**gold, logits_processor=[proc], max_new_tokens=3, pad_token_id=0)


def test_assisted_generation_is_refused(tokenizer):
    model = make_gpt2(len(tokenizer))
    assistant = make_gpt2(len(tokenizer), seed=99)
    gold = encode(tokenizer, GOLD[:1])
    con = encode(tokenizer, CONTRAST[:1])
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask)
    with pytest.raises(ValueError, match="assisted"):
        model.generate(**gold, logits_processor=[proc], assistant_model=assistant, max_new_tokens=10,
                       do_sample=False, pad_token_id=0)


@pytest.mark.parametrize("factory", FACTORIES, ids=FACTORY_IDS)
def test_fused_path_equals_processor_greedy(tokenizer, factory):
    """Wiring: both paths share contrastive_scores, position ids and end ids (independent check below)."""
    model = factory(len(tokenizer))
    stop = [tokenizer.convert_tokens_to_ids(".")]
    got, _ = run_processor(model, tokenizer, alpha=0.3, stop=stop, do_sample=False)
    fused = contrastive_generate(model, tokenizer, GOLD, CONTRAST, alpha=0.3, max_new_tokens=MAX_NEW,
                                 stop_token_ids=stop)
    end = {1, *stop}
    assert trim(fused, end) == trim(got, end)


def fused_greedy_parity(model, tokenizer, alpha):
    stop = [tokenizer.convert_tokens_to_ids(".")]
    end = {1, *stop}
    fused = contrastive_generate(model, tokenizer, GOLD, CONTRAST, alpha=alpha, max_new_tokens=MAX_NEW,
                                 stop_token_ids=stop, do_sample=False)
    return trim(fused, end), scott_reference_loop(model, tokenizer, GOLD, CONTRAST, alpha, MAX_NEW, end)


@pytest.mark.parametrize("factory", FACTORIES, ids=FACTORY_IDS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_fused_greedy_matches_scott_reference_loop(tokenizer, factory, alpha):
    got, ref = fused_greedy_parity(factory(len(tokenizer)), tokenizer, alpha)
    assert got == ref


def test_planted_position_id_bug_in_fused_fails_parity(tokenizer, monkeypatch):
    monkeypatch.setattr(branch_module, "decoder_position_ids", _positions_ignoring_padding)
    got, ref = fused_greedy_parity(make_positional_gpt2(len(tokenizer)), tokenizer, 0.3)
    assert got != ref


def sampled_pair(model, tokenizer, seed, **sampling):
    """Seeded samples of the processor inside generate and of the fused path, trimmed at end tokens."""
    stop = [tokenizer.convert_tokens_to_ids(".")]
    end = {1, *stop}
    gold = encode(tokenizer, GOLD)
    con = encode(tokenizer, CONTRAST)
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, alpha=0.3,
                                               stop_token_ids=stop)
    torch.manual_seed(seed)
    out = model.generate(**gold, logits_processor=[proc], eos_token_id=sorted(end), max_new_tokens=MAX_NEW,
                         pad_token_id=0, do_sample=True, **sampling)
    torch.manual_seed(seed)
    fused = contrastive_generate(model, tokenizer, GOLD, CONTRAST, alpha=0.3, max_new_tokens=MAX_NEW,
                                 stop_token_ids=stop, do_sample=True, **sampling)
    return trim(out[:, gold.input_ids.shape[1]:], end), trim(fused, end)


SAMPLINGS = [{}, {"temperature": 0.6}, {"top_k": 5}, {"top_p": 0.5}, {"temperature": 1.4, "top_k": 30, "top_p": 0.9}]


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=["defaults", "temperature", "top_k", "top_p", "all"])
def test_fused_sampling_equals_generate_warpers(tokenizer, sampling):
    """Fused sampling == generate's own warpers (temperature, top-k, top-p, generate's defaults: top_k=50)
    applied after the processor, seed for seed."""
    model = make_positional_gpt2(len(tokenizer))
    for seed in range(3):
        via_generate, fused = sampled_pair(model, tokenizer, seed, **sampling)
        assert fused == via_generate, seed


# temperature 2 with top-k 3: over this tiny model's nearly flat top 50 a temperature of 2 hardly moves a seeded
# draw (the same tokens as temperature 1 for seeds 0 and 1); over three tokens it does (seed 0)
BOUNDARY_SAMPLINGS = [{"temperature": 2.0, "top_k": 3}, {"top_k": 0}, {"top_k": 1}, {"top_p": 1.5}]


@pytest.mark.parametrize("sampling", BOUNDARY_SAMPLINGS, ids=["temperature_2", "top_k_0", "top_k_1", "top_p_1.5"])
def test_fused_sampling_equals_generate_at_the_warpers_boundaries(tokenizer, sampling):
    """The values where ``generate`` switches a warper on or off: temperature 2 (on), top-k 0 (off: no filter, not an
    error), top-k 1 (on: only the best token), top-p above 1 (off, accepted without an error). The fused path samples
    what ``generate`` samples, seed for seed (found by mutation testing: thresholds moved to 2.0 / 1 / 2.0 and an
    `or` for an `and` passed the other sampling tests)."""
    model = make_positional_gpt2(len(tokenizer))
    for seed in range(2):
        via_generate, fused = sampled_pair(model, tokenizer, seed, **sampling)
        assert fused == via_generate, seed


@pytest.mark.parametrize("setting", SAMPLINGS[1:], ids=["temperature", "top_k", "top_p", "all"])
def test_fused_sampling_takes_unset_settings_from_the_generation_config(tokenizer, setting):
    """A model whose generation_config sets temperature / top-k / top-p (as chat models ship): called without
    them, the fused path samples as generate does with that config (found by mutation testing: a misspelt
    setting name fell back to transformers' defaults and no test noticed)."""
    model = make_positional_gpt2(len(tokenizer))
    for name, value in setting.items():
        setattr(model.generation_config, name, value)
    pairs = [sampled_pair(model, tokenizer, seed) for seed in range(3)]
    assert all(fused == via for via, fused in pairs)
    # the setting matters: the same seeds without it sample something else
    plain = make_positional_gpt2(len(tokenizer))
    assert any(sampled_pair(plain, tokenizer, seed)[1] != fused for seed, (_, fused) in enumerate(pairs))


@pytest.mark.parametrize("sampling", SAMPLINGS[1:], ids=["temperature", "top_k", "top_p", "all"])
def test_planted_fused_ignoring_warpers_fails(tokenizer, monkeypatch, sampling):
    monkeypatch.setattr(fused_module, "_sampling_warpers", lambda *a, **k: LogitsProcessorList())
    model = make_positional_gpt2(len(tokenizer))
    assert any(fused != via for via, fused in (sampled_pair(model, tokenizer, seed, **sampling) for seed in range(3)))


def test_fused_sampling_is_seeded_and_valid(tokenizer):
    model = make_gpt2(len(tokenizer))
    kw = dict(alpha=0.5, max_new_tokens=MAX_NEW, do_sample=True, temperature=0.9, top_k=40, top_p=0.95)
    a = contrastive_generate(model, tokenizer, GOLD, CONTRAST, generator=torch.Generator().manual_seed(0), **kw)
    b = contrastive_generate(model, tokenizer, GOLD, CONTRAST, generator=torch.Generator().manual_seed(0), **kw)
    c = contrastive_generate(model, tokenizer, GOLD, CONTRAST, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.max() < len(tokenizer)


def test_fused_errors(tokenizer):
    model = make_gpt2(len(tokenizer))
    with pytest.raises(ValueError, match="contrast_prompts"):
        contrastive_generate(model, tokenizer, GOLD, CONTRAST[:2])
    with pytest.raises(ValueError, match="tokenizer"):
        contrastive_generate(model, None, GOLD, CONTRAST)
    with pytest.raises(ValueError, match="alpha"):
        contrastive_generate(model, tokenizer, GOLD, CONTRAST, alpha=-1)


def test_docstring_example_runs():
    import doctest

    import scott_distill.teacher.processor as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 8


def test_encoder_outputs_given_to_generate_decode_as_the_input_ids_do(tokenizer):
    """An encoder-decoder teacher in one ``with`` block: a second ``generate`` that gets precomputed
    ``encoder_outputs`` (no encoder call for the row check to see) decodes exactly what the input ids decode
    (found by mutation testing: a leftover row count from the processor's own encoder call was not cleared)."""
    model = make_t5(len(tokenizer))
    gold = encode(tokenizer, GOLD, "right")
    with torch.no_grad():
        encoded = model.get_encoder()(input_ids=gold.input_ids, attention_mask=gold.attention_mask)
    proc = ContrastiveRationaleLogitsProcessor(model, encode(tokenizer, CONTRAST, "right").input_ids, alpha=0.5)
    kw = dict(max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=0)
    with proc:
        plain = model.generate(**gold, **proc.generate_kwargs(), **kw)
        given = model.generate(encoder_outputs=encoded, attention_mask=gold.attention_mask,
                               **proc.generate_kwargs(), **kw)
    assert torch.equal(plain, given)


# -- contrastive_generate's own body (mutation testing reached it once `@torch.no_grad()` was gone) ---------------


def test_fused_defaults_are_alpha_half_and_128_tokens(tokenizer):
    """The documented defaults: alpha 0.5 (no alpha >= 1 warning) and a budget of 128 new tokens (a model with no
    end token in reach writes exactly 128)."""
    import warnings

    model = make_positional_gpt2(len(tokenizer))
    model.generation_config.eos_token_id = None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        default = contrastive_generate(model, tokenizer, GOLD[:1], CONTRAST[:1])
    assert default.shape == (1, 128)
    assert torch.equal(default, contrastive_generate(model, tokenizer, GOLD[:1], CONTRAST[:1], alpha=0.5))


def test_fused_samples_when_the_generation_config_says_so(tokenizer):
    """``do_sample`` left unset is read from the model's generation config, as ``generate`` reads it."""
    model = make_positional_gpt2(len(tokenizer))
    greedy = contrastive_generate(model, tokenizer, GOLD, CONTRAST, alpha=0.3, max_new_tokens=MAX_NEW).tolist()
    model.generation_config.do_sample = True
    unset = []
    for seed in range(3):
        torch.manual_seed(seed)
        unset.append(contrastive_generate(model, tokenizer, GOLD, CONTRAST, alpha=0.3, max_new_tokens=MAX_NEW).tolist())
        torch.manual_seed(seed)
        explicit = contrastive_generate(model, tokenizer, GOLD, CONTRAST, alpha=0.3, max_new_tokens=MAX_NEW,
                                        do_sample=True).tolist()
        assert unset[-1] == explicit
    assert any(run != greedy for run in unset)


@pytest.mark.parametrize("case", ["stop_token_ids", "generation_config_eos", "tensors_without_tokenizer"])
def test_fused_rows_end_at_their_end_token_and_are_padded_after_it(tokenizer, case):
    """Untrimmed, token for token, against the processor inside ``generate`` (which pads finished rows itself): the
    end token comes from ``stop_token_ids`` or from the generation config's EOS (the stop rule too: a row ends where
    the unmodified teacher's top token is the end token); the padding is the tokenizer's pad id (0) before the
    generation config's (5), and the generation config's without a tokenizer."""
    model = make_positional_gpt2(len(tokenizer))
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 5
    free = contrastive_generate(model, tokenizer, GOLD, CONTRAST, alpha=0.3, max_new_tokens=MAX_NEW).tolist()
    end = free[0][2]  # a token row 0 writes third
    kwargs: dict = {"alpha": 0.3, "max_new_tokens": MAX_NEW}
    gold, contrast, tok, pad = GOLD, CONTRAST, tokenizer, 0
    if case == "generation_config_eos":
        model.generation_config.eos_token_id = end
    else:
        kwargs["stop_token_ids"] = [end]
    if case == "tensors_without_tokenizer":
        gold, contrast, tok, pad = dict(encode(tokenizer, GOLD)), dict(encode(tokenizer, CONTRAST)), None, 5
    got = contrastive_generate(model, tok, gold, contrast, **kwargs).tolist()

    enc, con = encode(tokenizer, GOLD), encode(tokenizer, CONTRAST)
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, alpha=0.3,
                                               stop_token_ids=kwargs.get("stop_token_ids"))
    with proc:
        out = model.generate(**enc, **proc.generate_kwargs(), max_new_tokens=MAX_NEW, do_sample=False,
                             pad_token_id=pad)
    assert got == out[:, enc.input_ids.shape[1]:].tolist()
    assert got[0][:3] == free[0][:3] and got[0][3:] == [pad] * (len(got[0]) - 3)  # row 0 ended where it wrote `end`
    assert got != free


def test_fused_output_stops_at_the_last_end_and_runs_one_forward_per_token(tokenizer):
    """The output is as wide as the step where the last row wrote its end token (every row holding one, pads after
    it), not the budget, and equals the processor inside ``generate``, which stops there too; the loop runs exactly
    one forward per new token (the prefill gives the first): none after the last token, whether the rows end or
    the budget does (found by mutation testing: a loop that ran on to the budget, an extra column of padding, and a
    wasted forward after the last token all passed)."""
    model = make_positional_gpt2(len(tokenizer))
    model.generation_config.eos_token_id = None
    kw = dict(alpha=0.3, max_new_tokens=MAX_NEW, do_sample=False, shared_prefix=None)
    calls, hook = count_forwards(model)
    free = contrastive_generate(model, tokenizer, GOLD, CONTRAST, **kw).tolist()
    hook.remove()
    assert len(free[0]) == MAX_NEW and len(calls) == MAX_NEW and calls[1:] == [1] * (MAX_NEW - 1)

    stop = sorted({row[2] for row in free})  # each row's third token: every row ends by its third step
    calls, hook = count_forwards(model)
    got = contrastive_generate(model, tokenizer, GOLD, CONTRAST, stop_token_ids=stop, **kw).tolist()
    hook.remove()
    ends = [next(i for i, token in enumerate(row) if token in stop) for row in got]  # by hand
    assert max(ends) < 3 and len(got[0]) == max(ends) + 1 and len(calls) == len(got[0])
    assert all(row[end + 1:] == [0] * (len(row) - end - 1) for row, end in zip(got, ends))
    enc, con = encode(tokenizer, GOLD), encode(tokenizer, CONTRAST)
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, alpha=0.3,
                                               stop_token_ids=stop)
    with proc:
        out = model.generate(**enc, **proc.generate_kwargs(), max_new_tokens=MAX_NEW, do_sample=False,
                             pad_token_id=0)
    assert got == out[:, enc.input_ids.shape[1]:].tolist()


def test_fused_plausibility_threshold_matches_the_processor_and_matters(tokenizer):
    """alpha >= 1 with a plausibility threshold: no warning, the processor's tokens, and other tokens than without
    the threshold (so a fused path that dropped it would be seen)."""
    import warnings

    model = make_positional_gpt2(len(tokenizer))
    gold, con = encode(tokenizer, GOLD), encode(tokenizer, CONTRAST)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused = contrastive_generate(model, tokenizer, GOLD, CONTRAST, alpha=1.5, plausibility_threshold=0.9,
                                     max_new_tokens=MAX_NEW)
        proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, alpha=1.5,
                                                   plausibility_threshold=0.9)
    out = model.generate(**gold, logits_processor=[proc], max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=0)
    assert trim(fused, {1}) == trim(out[:, gold.input_ids.shape[1]:], {1})
    with pytest.warns(UserWarning, match="alpha=1.5 >= 1 without `plausibility_threshold`"):
        without = contrastive_generate(model, tokenizer, GOLD, CONTRAST, alpha=1.5, max_new_tokens=MAX_NEW)
    assert trim(without, {1}) != trim(fused, {1})


def test_fused_input_errors_say_what_was_given(tokenizer):
    from scott_distill.teacher._branch import SharedPrefix

    model = make_positional_gpt2(len(tokenizer))
    with pytest.raises(ValueError, match=r"^`max_new_tokens` must be >= 1, got 0\.$"):
        contrastive_generate(model, tokenizer, GOLD, CONTRAST, max_new_tokens=0)
    expected = "`contrast_prompts` has 2 rows but `gold_prompts` has 3; give one contrast prompt per gold prompt."
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        contrastive_generate(model, tokenizer, GOLD, CONTRAST[:2])
    other = SharedPrefix.of(model, [tokenizer("Zebra zebra one")["input_ids"], tokenizer("Zebra zebra two")["input_ids"]])
    assert other is not None
    with pytest.raises(ValueError, match=rf"^`gold_prompts` rows \[0, 1, 2\] do not start with the shared prefix's "
                                         rf"{len(other)} tokens\.$"):
        contrastive_generate(model, tokenizer, GOLD, CONTRAST, shared_prefix=other)
