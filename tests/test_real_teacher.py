"""Teacher side on the real SmolLM2-135M-Instruct (``real_model`` tier), through the public API only.

The reference is SCOTT's decoding rule computed with no cache, one unpadded row at a time:
``argmax_t log p(t | gold prompt, prefix) - alpha * log p(t | contrast prompt, prefix)``, or the plain
teacher's top token when that is an end token. It is evaluated by teacher forcing: one no-cache forward of
``prompt + y`` per branch gives, at every position i, exactly the logits that a step-by-step no-cache loop
computes for the prefix ``y[:i]`` (a causal model's logits at i depend on tokens <= i only). So "the product
picks y[i] at every step" is the same statement as "the reference loop writes y", for two forwards per row
instead of two per token (the prompts are ~400 tokens: a literal loop would take minutes here).

Near-ties are handled explicitly, never by loosening equality: at a step where the reference's best and
runner-up scores are within ``TIE`` (float noise between a cached, left-padded, batched forward and this
unpadded one is ~1e-5), either token is accepted, the step is counted, and the check continues along the
product's token (both branches then condition on the same prefix, so later steps are again exact checks).
Any other difference fails with the step, both tokens and their scores. Tie counts are printed (-s).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from conftest import shared_data_or_skip
from transformers import LogitsProcessorList

from scott_distill import ContrastiveRationaleLogitsProcessor, contrastive_generate, generate_rationales
from scott_distill.tasks import load_task
from scott_distill.teacher.prompts import load_prompt
from scott_distill.teacher.scoring import stop_token_ids_for

pytestmark = pytest.mark.real_model

ALPHA = 0.5
MAX_NEW = 40
TIE = 1e-4
ROWS = 5  # five questions of different prompt lengths: a left-padded batch


@pytest.fixture(scope="module")
def cose():
    return load_task("cose", str(shared_data_or_skip("cose_v1", "dev.csv"))).select(range(ROWS))


def wrong_answer(row) -> str:
    return next(c for c in row["choices"] if c != row["answer"])


def prompts(rows, tokenizer, contrast: str, chat: bool = False) -> tuple[list[str], list[str]]:
    prompt = load_prompt("cose")
    gold = [prompt.render(r["question"], r["choices"], r["answer"], tokenizer, chat) for r in rows]
    other = [wrong_answer(r) if contrast == "wrong" else None for r in rows]
    con = [prompt.render(r["question"], r["choices"], a, tokenizer, chat) for r, a in zip(rows, other)]
    return gold, con


@dataclass
class Agreement:
    steps: int = 0
    near_ties: int = 0  # steps whose best two reference scores are within TIE
    tie_flips: int = 0  # ... where the product took the runner-up
    notes: list[str] = field(default_factory=list)


def end_ids(model, stop_ids: list[int]) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(stop_ids) | ({eos} if isinstance(eos, int) else set(eos or []))


def trim(row: list[int], ends: set[int]) -> list[int]:
    for k, t in enumerate(row):
        if t in ends:
            return row[: k + 1]
    return row


@torch.no_grad()
def check_against_reference(model, tokenizer, gold: list[str], contrast: list[str], generated: torch.Tensor,
                            ends: set[int], stats: Agreement) -> list[list[int]]:
    """Assert that every product row is the reference's decoding (ties as in the module docstring)."""
    rows = []
    for r, (g_text, c_text) in enumerate(zip(gold, contrast)):
        y = trim(generated[r].tolist(), ends)
        assert y, f"row {r}: nothing generated"
        g, c = tokenizer(g_text)["input_ids"], tokenizer(c_text)["input_ids"]
        # no padding, no cache, positions 0..n-1: the plain forward a reader can check by eye
        g_logp = torch.log_softmax(model(input_ids=torch.tensor([g + y])).logits[0, len(g) - 1 :].float(), -1)
        c_logp = torch.log_softmax(model(input_ids=torch.tensor([c + y])).logits[0, len(c) - 1 :].float(), -1)
        for i, tok in enumerate(y):
            stats.steps += 1
            gl, cl = g_logp[i], c_logp[i]
            raw = gl.topk(2)
            combined = gl - ALPHA * cl
            best = combined.topk(2)
            stop_now = int(raw.indices[0]) in ends
            ref = int(raw.indices[0]) if stop_now else int(best.indices[0])
            # the stop decision itself is a near-tie when the plain teacher's top two straddle an end token
            stop_tie = (raw.values[0] - raw.values[1]) < TIE and (int(raw.indices[1]) in ends) != stop_now
            score_tie = (best.values[0] - best.values[1]) < TIE
            accepted = {ref}
            if stop_tie:
                accepted |= {int(raw.indices[1]) if int(raw.indices[1]) in ends else int(best.indices[0])}
            if score_tie and not stop_now:
                accepted.add(int(best.indices[1]))
            if stop_tie or (score_tie and not stop_now):
                stats.near_ties += 1
            assert tok in accepted, (
                f"row {r} step {i}: product wrote {tok} ({tokenizer.decode([tok])!r}), reference {ref} "
                f"({tokenizer.decode([ref])!r}); combined scores {float(combined[tok]):.6f} vs "
                f"{float(combined[ref]):.6f}; raw top {raw.indices.tolist()} {raw.values.tolist()}; "
                f"so far {tokenizer.decode(y[:i])!r}"
            )
            if tok != ref:
                stats.tie_flips += 1
                stats.notes.append(f"row {r} step {i}: {tokenizer.decode([tok])!r} vs {tokenizer.decode([ref])!r}")
        if len(y) < MAX_NEW:
            assert y[-1] in ends, f"row {r} ended early without an end token"
        rows.append(y)
    return rows


def generate_with_processor(model, tokenizer, gold, contrast, stop_ids) -> torch.Tensor:
    enc = tokenizer(gold, return_tensors="pt", padding=True)
    con = tokenizer(contrast, return_tensors="pt", padding=True)
    proc = ContrastiveRationaleLogitsProcessor(model, con["input_ids"], con["attention_mask"], alpha=ALPHA,
                                               stop_token_ids=stop_ids)
    out = model.generate(**enc, logits_processor=LogitsProcessorList([proc]), max_new_tokens=MAX_NEW,
                         do_sample=False, eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id)
    return out[:, enc["input_ids"].shape[1]:]


@pytest.fixture(scope="module")
def wrong_run(smollm2, cose):
    """One processor run and one fused run on the same left-padded batch (wrong-answer contrast)."""
    model, tok = smollm2
    gold, con = prompts(cose, tok, "wrong")
    stop_ids = stop_token_ids_for(tok)
    lengths = tok(gold, return_tensors="pt", padding=True)["attention_mask"].sum(-1)
    assert tok.padding_side == "left" and len(set(lengths.tolist())) > 1, "the batch must be left-padded"
    processor = generate_with_processor(model, tok, gold, con, stop_ids)
    fused = contrastive_generate(model, tok, gold, con, alpha=ALPHA, max_new_tokens=MAX_NEW,
                                 stop_token_ids=stop_ids)
    return gold, con, stop_ids, processor, fused


def test_processor_in_generate_equals_no_cache_reference(smollm2, wrong_run):
    model, tok = smollm2
    gold, con, stop_ids, processor, _ = wrong_run
    stats = Agreement()
    rows = check_against_reference(model, tok, gold, con, processor, end_ids(model, stop_ids), stats)
    print(f"\nprocessor vs reference: {stats.steps} tokens, {stats.near_ties} near-ties, "
          f"{stats.tie_flips} took the runner-up {stats.notes}")
    assert sum(len(r) for r in rows) >= 5 * 8  # real rationales, not one-token stubs


def test_fused_equals_processor_and_reference(smollm2, wrong_run):
    model, tok = smollm2
    gold, con, stop_ids, processor, fused = wrong_run
    ends = end_ids(model, stop_ids)
    stats = Agreement()
    check_against_reference(model, tok, gold, con, fused, ends, stats)
    print(f"\nfused vs reference: {stats.steps} tokens, {stats.near_ties} near-ties, {stats.tie_flips} flips")
    same = [trim(a, ends) == trim(b, ends) for a, b in zip(fused.tolist(), processor.tolist())]
    # a row may only differ from the processor's where the reference itself has a near-tie (checked above)
    assert all(same) or stats.tie_flips > 0, same


def test_empty_contrast_fused_equals_reference(smollm2, cose):
    model, tok = smollm2
    gold, con = prompts(cose.select(range(4)), tok, "empty")
    stop_ids = stop_token_ids_for(tok)
    fused = contrastive_generate(model, tok, gold, con, alpha=ALPHA, max_new_tokens=MAX_NEW,
                                 stop_token_ids=stop_ids)
    stats = Agreement()
    check_against_reference(model, tok, gold, con, fused, end_ids(model, stop_ids), stats)
    print(f"\nempty contrast, fused vs reference: {stats.steps} tokens, {stats.near_ties} near-ties, "
          f"{stats.tie_flips} flips")


def test_chat_template_rationales_stop_at_the_end_token_and_never_echo(smollm2, cose):
    model, tok = smollm2
    rows = cose.select(range(4))
    out = generate_rationales(rows, model, tok, task="cose", perturbation="wrong", alpha=ALPHA,
                              counterfactual=False, batch_size=4, max_new_tokens=MAX_NEW,
                              use_chat_template=True, show_progress=False)
    # The raw continuation of the same prompts (the pipeline's fused path), before `clean` cuts anything:
    gold = [load_prompt("cose").render(r["question"], r["choices"], r["answer"], tok, True) for r in rows]
    con = [load_prompt("cose").render(r["question"], r["choices"], a, tok, True)
           for r, a in zip(rows, out["contrast_answer"])]
    assert all(g.startswith("<|im_start|>") and "<|im_start|>assistant\nThe answer is" in g for g in gold)
    stop_ids = stop_token_ids_for(tok)
    raw = contrastive_generate(model, tok, gold, con, alpha=ALPHA, max_new_tokens=MAX_NEW, stop_token_ids=stop_ids)
    ends = end_ids(model, stop_ids)
    stopped = 0
    for r, (ids, rationale) in enumerate(zip(raw.tolist(), out["rationale"])):
        y = trim(ids, ends)
        if y[-1] in ends:
            stopped += 1
        else:  # the token budget ran out first (a long rationale, not a run-on: the echo checks below)
            assert len(y) == MAX_NEW
        text = tok.decode(y[:-1] if y[-1] in ends else y)
        for echo in ("Q:", "Answer Choices:", "<|im_start|>", "<|im_end|>", "user\n", "assistant\n"):
            assert echo not in text, f"row {r} echoes {echo!r}: {text!r}"
        assert rationale == load_prompt("cose").clean(tok.decode(y, skip_special_tokens=True))
        assert len(rationale.split()) >= 4, rationale
    # SmolLM2 ends these rationales within 40 tokens for 3 of the 4 questions (the 4th needs 40+, measured)
    assert stopped >= len(rows) - 1, f"only {stopped} of {len(rows)} rows stopped at an end token"
