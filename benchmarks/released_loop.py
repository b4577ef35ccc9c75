"""The baselines of the speed benchmarks: SCOTT's released decoding loop, and the no-cache correctness loop.

``released_loop_row`` has the *structure* of the released script (``contrastive_decoding_rationalization.py``
in wangpf3/consistent-CoT-distillation; written from its description, no code copied): one row at a time
(batch 1, no padding), one KV cache per branch (gold and contrast), the gold branch's prefill in the first
step and one token per step after, the full-vocabulary logits of every forward, and its stop rule: stop
when the unmodified teacher's top token is the stop token (before running the contrast branch at that step),
or when the contrastive choice is the stop token. This is what a user of the paper's code runs, so speed-ups
are reported against it.

``no_cache_row`` recomputes both prompts from scratch every token: far slower than anything a user would
run, kept only to check that the faster loops pick the same tokens.
"""

from __future__ import annotations

from collections.abc import Collection

import torch


@torch.no_grad()
def released_loop_row(model, gold_ids: list[int], contrast_ids: list[int], alpha: float, max_new_tokens: int,
                      stop_ids: Collection[int]) -> list[int]:
    """Greedy contrastive decoding of one row, two cached branches (the released script's structure).

    ``stop_ids``: the stop token(s); a real BPE vocabulary has several tokens holding a newline, and the
    library stops on any of them, so the baseline takes the same set (empty: never stop).
    """
    gold = torch.tensor([gold_ids], device=model.device)
    contrast = torch.tensor([contrast_ids], device=model.device)
    gold_cache = contrast_cache = None
    generated: list[int] = []
    for _ in range(max_new_tokens):
        out = model(input_ids=gold if gold_cache is None else gold[:, -1:], cache=gold_cache,
                    attention_mask=torch.ones_like(gold), use_cache=True)
        gold_cache = out.cache
        gold_logp = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
        if gold_logp.argmax(dim=-1).item() in stop_ids:
            break
        out = model(input_ids=contrast if contrast_cache is None else contrast[:, -1:], cache=contrast_cache,
                    attention_mask=torch.ones_like(contrast), use_cache=True)
        contrast_cache = out.cache
        contrast_logp = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
        next_token = (gold_logp - alpha * contrast_logp).argmax(dim=-1, keepdim=True)
        if next_token.item() in stop_ids:
            break
        gold = torch.cat([gold, next_token], dim=1)
        contrast = torch.cat([contrast, next_token], dim=1)
        generated.append(int(next_token.item()))
    return generated


@torch.no_grad()
def no_cache_row(model, gold_ids: list[int], contrast_ids: list[int], alpha: float, max_new_tokens: int,
                 stop_ids: Collection[int]) -> list[int]:
    """The same decisions, recomputing both full prompts every token (correctness reference only)."""
    generated: list[int] = []
    for _ in range(max_new_tokens):
        gold = torch.tensor([gold_ids + generated], device=model.device)
        gold_logp = torch.log_softmax(model(gold).logits[0, -1].float(), -1)
        if int(gold_logp.argmax()) in stop_ids:
            break
        contrast = torch.tensor([contrast_ids + generated], device=model.device)
        contrast_logp = torch.log_softmax(model(contrast).logits[0, -1].float(), -1)
        token = int((gold_logp - alpha * contrast_logp).argmax())
        if token in stop_ids:
            break
        generated.append(token)
    return generated
