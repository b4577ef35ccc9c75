"""Fused contrastive decoding: both branches in one forward pass of ``2 x batch`` rows per step."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from ..padding import padding_side
from ._branch import DecodingBranch, SharedPrefix, input_device
from .scoring import (
    check_alpha,
    check_plausibility_threshold,
    contrastive_scores,
    described,
    end_token_ids,
    generation_config_value,
    left_padded,
)

__all__ = ["contrastive_generate"]

Prompts = Sequence[str] | Mapping[str, torch.Tensor]


def _pad_to(ids: torch.Tensor, mask: torch.Tensor, length: int, pad_id: int, left: bool) -> tuple[
        torch.Tensor, torch.Tensor]:
    """Pad ``ids`` / ``mask`` to ``length`` columns, on the left (decoder-only) or the right (encoders)."""
    extra = length - ids.shape[1]
    if extra == 0:
        return ids, mask
    pad_ids = ids.new_full((ids.shape[0], extra), pad_id)
    pad_mask = mask.new_zeros((mask.shape[0], extra))
    if left:
        return torch.cat([pad_ids, ids], dim=1), torch.cat([pad_mask, mask], dim=1)
    return torch.cat([ids, pad_ids], dim=1), torch.cat([mask, pad_mask], dim=1)


def _encode(prompts: Prompts, tokenizer: PreTrainedTokenizerBase | None, name: str, left: bool) -> tuple:
    if isinstance(prompts, Mapping):
        if "input_ids" not in prompts:
            raise ValueError(f"`{name}` given as a mapping must contain `input_ids`.")
        ids = prompts["input_ids"]
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.is_floating_point() or ids.is_complex() or (
            ids.dtype == torch.bool
        ):
            dtype = f", dtype {ids.dtype}" if isinstance(ids, torch.Tensor) else ""
            raise ValueError(f"`{name}['input_ids']` must be a 2-D tensor of integer token ids, got "
                             f"{described(ids)}{dtype}.")
        mask = prompts.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask
        if not isinstance(mask, torch.Tensor) or mask.shape != ids.shape:
            raise ValueError(f"`{name}['attention_mask']` must have the shape of its `input_ids` {tuple(ids.shape)}.")
        ids, mask = ids.long(), mask.long()
        # decoder-only rows continue from the last column: right padding (the default of GPT-2 / Llama
        # tokenizers) is moved to the left instead of giving wrong rows
        return left_padded(ids, mask, f"{name}['input_ids']") if left else (ids, mask)
    if tokenizer is None:
        raise ValueError(f"`{name}` are strings, so `tokenizer` is required.")
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"`{name}` must be a list of strings or a mapping with `input_ids`.")
    with padding_side(tokenizer, "left" if left else "right"):
        enc = tokenizer(list(prompts), return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def _generation_setting(model: PreTrainedModel, name: str, value: Any) -> Any:
    """``value`` unless ``None``, then the model's ``generation_config``, then transformers' global default:
    the priority ``generate`` itself applies (``GenerationConfig()`` leaves e.g. ``top_k`` unset; ``generate``
    then uses 50)."""
    if value is None:
        value = generation_config_value(model, name)
    if value is None:
        value = GenerationConfig._get_default_generation_params().get(name)
    return value


def _sampling_warpers(model: PreTrainedModel, temperature: float | None, top_k: int | None,
                      top_p: float | None) -> LogitsProcessorList:
    """Temperature, top-k and top-p built as ``generate`` builds them, in its order."""
    temperature = _generation_setting(model, "temperature", temperature)
    top_k = _generation_setting(model, "top_k", top_k)
    top_p = _generation_setting(model, "top_p", top_p)
    warpers = LogitsProcessorList()
    if temperature is not None and temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k is not None and top_k != 0:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    return warpers


def _pad_token_id(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, pad_token_id: int | None) -> int:
    """The given pad id, else the tokenizer's, else the generation config's."""
    if pad_token_id is None and tokenizer is not None:
        pad_token_id = tokenizer.pad_token_id
    if pad_token_id is None:
        pad_token_id = generation_config_value(model, "pad_token_id")
    if pad_token_id is None:
        raise ValueError("No pad token: pass `pad_token_id` or a tokenizer with `pad_token` set.")
    return int(pad_token_id)


def _both_branches(model: PreTrainedModel, gold: tuple[torch.Tensor, torch.Tensor],
                   contrast: tuple[torch.Tensor, torch.Tensor], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` of ``2 x batch`` rows: the gold prompts, then the contrast prompts, padded to one width
    (left for decoder-only models; right for an encoder, whose relative positions make it order-free)."""
    left = not model.config.is_encoder_decoder
    length = max(gold[0].shape[1], contrast[0].shape[1])
    g, gm = _pad_to(*gold, length, pad_token_id, left)
    c, cm = _pad_to(*contrast, length, pad_token_id, left)
    device = input_device(model)  # not model.device: `meta` under accelerate's offload
    return torch.cat([g, c]).to(device), torch.cat([gm, cm]).long().to(device)


def _common_prefix(model: PreTrainedModel, *batches: tuple[torch.Tensor, torch.Tensor]) -> SharedPrefix | None:
    """The shared prefix of every unpadded row of ``batches`` (``None`` if none or the model cannot reuse one)."""
    rows = [ids[mask.bool()].tolist() for ids_, mask_ in batches for ids, mask in zip(ids_, mask_)]
    return SharedPrefix.of(model, rows)


def _decoder_start(model: PreTrainedModel, rows: int, device: torch.device) -> torch.Tensor | None:
    """The decoder's first input for an encoder-decoder model (``None`` for a decoder-only one)."""
    if not model.config.is_encoder_decoder:
        return None
    start = generation_config_value(model, "decoder_start_token_id")
    if start is None:
        start = model.config.decoder_start_token_id
    return torch.full((rows, 1), start, dtype=torch.long, device=device)


def _decode(branch: DecodingBranch, logits: torch.Tensor, batch: int, alpha: float, max_new_tokens: int,
            end_ids: torch.Tensor, plausibility_threshold: float | None, warpers: LogitsProcessorList | None,
            generator: torch.Generator | None, pad_token_id: int) -> torch.Tensor:
    """The decoding loop: combine the two halves of each step's logits, pick, feed the token to both halves."""
    generated = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=logits.device)
    unfinished = torch.ones(batch, dtype=torch.bool, device=logits.device)
    steps = 0
    for step in range(max_new_tokens):
        scores = contrastive_scores(logits[:batch], logits[batch:], alpha, stop_token_ids=end_ids,
                                    plausibility_threshold=plausibility_threshold)
        if warpers is not None:  # sampling: generate's warpers act on the contrastive score
            probs = torch.softmax(warpers(cast(torch.LongTensor, generated[:, :step]), scores), dim=-1)
            next_tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            next_tokens = scores.argmax(dim=-1)
        next_tokens = torch.where(unfinished, next_tokens, torch.full_like(next_tokens, pad_token_id))
        generated[:, step] = next_tokens
        steps = step + 1
        unfinished &= ~torch.isin(next_tokens, end_ids)
        if not bool(unfinished.any()) or step == max_new_tokens - 1:
            break
        logits = branch.step(torch.cat([next_tokens, next_tokens]).unsqueeze(1))
    return generated[:, :steps]


# No `@torch.no_grad()`: every forward runs in `DecodingBranch` / `SharedPrefix`, which turn gradients off
# themselves (and mutmut does not mutate decorated functions).
def contrastive_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    gold_prompts: Prompts,
    contrast_prompts: Prompts,
    *,
    alpha: float = 0.5,
    max_new_tokens: int = 128,
    do_sample: bool | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_token_ids: Iterable[int] | None = None,
    plausibility_threshold: float | None = None,
    generator: torch.Generator | None = None,
    pad_token_id: int | None = None,
    shared_prefix: SharedPrefix | str | None = "auto",
) -> torch.Tensor:
    """Contrastive decoding with both branches fused into one forward of ``2 x batch`` rows per step.

    Picks the same tokens as [`ContrastiveRationaleLogitsProcessor`] in greedy mode, but pays one
    forward per step instead of two (on a GPU the second branch is then nearly free).

    Args:
        model: the teacher (decoder-only or encoder-decoder).
        tokenizer: used to tokenize string prompts (left padding for decoder-only models); may be
            ``None`` when both prompt sets are given as ``{"input_ids", "attention_mask"}`` tensors.
        gold_prompts: prompts carrying the gold answer.
        contrast_prompts: prompts carrying the perturbed answer, one per gold prompt.
        alpha: weight of the perturbed branch.
        max_new_tokens: generation budget.
        do_sample: sample instead of greedy. Sampling (this and the next three) is applied after the
            contrastive combination as ``generate``'s warpers are; unset values come from
            ``model.generation_config`` as in ``generate`` (``do_sample=False``, ``temperature=1``,
            ``top_k=50``, ``top_p=1`` by default), so for one seed both paths draw the same tokens.
        temperature: sampling temperature.
        top_k: top-k filtering when sampling.
        top_p: nucleus filtering when sampling.
        stop_token_ids: extra end tokens besides ``model.generation_config.eos_token_id``.
        plausibility_threshold: optional adaptive plausibility constraint (see the processor).
        generator: random generator for sampling; ``None`` uses torch's global one, as ``generate`` does.
        pad_token_id: pad id; defaults to the tokenizer's, then the generation config's.
        shared_prefix: a [`SharedPrefix`] that every gold and contrast prompt starts with (decoder-only): both
            branches start from copies of its cache and prefill only the rows' suffixes; same tokens as without.
            ``"auto"`` (default) computes the longest common token prefix of this call's prompts (the few-shot
            block): one batch-1 prefill instead of one per row and branch. ``None``: every row prefills its whole
            prompt (always so for encoder-decoder models, whose encoder is bidirectional).

    Returns:
        ``LongTensor`` of shape ``(batch, <= max_new_tokens)``: the generated tokens only, rows that
        ended early padded with ``pad_token_id`` after their end token.
    """
    plausibility_threshold = check_plausibility_threshold(plausibility_threshold)
    alpha = check_alpha(alpha, plausibility_threshold)
    do_sample = bool(_generation_setting(model, "do_sample", do_sample))
    if max_new_tokens < 1:
        raise ValueError(f"`max_new_tokens` must be >= 1, got {max_new_tokens!r}.")
    left = not model.config.is_encoder_decoder
    gold = _encode(gold_prompts, tokenizer, "gold_prompts", left=left)
    contrast = _encode(contrast_prompts, tokenizer, "contrast_prompts", left=left)
    if gold[0].shape[0] != contrast[0].shape[0]:
        raise ValueError(
            f"`contrast_prompts` has {contrast[0].shape[0]} rows but `gold_prompts` has {gold[0].shape[0]}; "
            "give one contrast prompt per gold prompt."
        )
    pad_token_id = _pad_token_id(model, tokenizer, pad_token_id)
    if isinstance(shared_prefix, str):
        if shared_prefix != "auto":
            raise ValueError(f"`shared_prefix` must be a SharedPrefix, 'auto' or None, got {shared_prefix!r}.")
        shared_prefix = _common_prefix(model, gold, contrast) if left else None
    if shared_prefix is not None:
        gold = shared_prefix.split(gold[0], gold[1], "gold_prompts")
        contrast = shared_prefix.split(contrast[0], contrast[1], "contrast_prompts")
    ids, mask = _both_branches(model, gold, contrast, pad_token_id)
    branch = DecodingBranch(model)
    logits = branch.prefill(ids, mask, decoder_input_ids=_decoder_start(model, ids.shape[0], ids.device),
                            prefix=shared_prefix)
    warpers = _sampling_warpers(model, temperature, top_k, top_p) if do_sample else None
    return _decode(branch, logits, ids.shape[0] // 2, alpha, max_new_tokens,
                   end_token_ids(model, stop_token_ids).to(ids.device), plausibility_threshold, warpers, generator,
                   pad_token_id)
