"""SCOTT's teacher-side contrastive decoding as a ``transformers`` logits processor."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, PreTrainedModel

logger = logging.getLogger(__name__)

__all__ = ["ContrastiveRationaleLogitsProcessor", "contrastive_scores", "decoder_position_ids", "end_token_ids"]


def end_token_ids(model: PreTrainedModel, stop_token_ids: Iterable[int] | None = None) -> torch.LongTensor:
    """The model's ``generation_config.eos_token_id`` (int or list) plus ``stop_token_ids``, sorted."""
    ids: set[int] = set(stop_token_ids or [])
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is not None:
        ids.update([eos] if isinstance(eos, int) else list(eos))
    return torch.tensor(sorted(ids), dtype=torch.long)


def decoder_position_ids(attention_mask: torch.Tensor) -> torch.LongTensor:
    """Position ids for a left-padded decoder-only batch (the rule ``generate`` itself uses)."""
    position_ids = attention_mask.long().cumsum(-1) - 1
    return position_ids.masked_fill(attention_mask == 0, 0)


def contrastive_scores(
    scores: torch.Tensor,
    contrast_logits: torch.Tensor,
    alpha: float,
    stop_token_ids: torch.Tensor | None = None,
    plausibility_threshold: float | None = None,
) -> torch.Tensor:
    """Combine the two branches: ``log_softmax(scores) - alpha * log_softmax(contrast_logits)``.

    Shared by the processor and the fused loop so that both pick exactly the same tokens.
    ``scores`` may carry ``-inf`` from earlier processors; such tokens stay ``-inf`` and never turn
    into ``NaN`` or ``+inf``. Rows whose scores are all ``-inf`` are returned unchanged.
    """
    scores = scores.float()
    gold_logp = torch.log_softmax(scores, dim=-1)
    if alpha == 0:
        return gold_logp.nan_to_num(nan=float("-inf"))
    contrast_logp = torch.log_softmax(contrast_logits.float(), dim=-1)
    # A token the contrast branch rules out (-inf) must not become +inf: clamp to a finite floor.
    contrast_logp = contrast_logp.clamp(min=torch.finfo(torch.float32).min / 4)
    out = gold_logp - alpha * contrast_logp
    excluded = torch.isneginf(scores) | torch.isnan(gold_logp)
    if plausibility_threshold is not None and plausibility_threshold > 0:
        cutoff = gold_logp.max(dim=-1, keepdim=True).values + torch.log(
            torch.tensor(plausibility_threshold, dtype=gold_logp.dtype, device=gold_logp.device)
        )
        excluded = excluded | (gold_logp < cutoff)
    out = out.masked_fill(excluded, float("-inf"))
    if stop_token_ids is not None and stop_token_ids.numel() > 0:
        # The reference stops when the *unmodified* teacher would stop: the contrast would otherwise
        # push the end token down (it is likely whatever the answer) and rationales would never end.
        top = scores.argmax(dim=-1)
        stops = torch.isin(top, stop_token_ids.to(top.device)) & ~torch.isneginf(scores.max(dim=-1).values)
        if stops.any():
            forced = torch.full_like(out[stops], float("-inf"))
            forced.scatter_(1, top[stops].unsqueeze(1), 0.0)
            out[stops] = forced
    return out


@dataclass
class _ContrastState:
    """Per-``generate`` state of the contrast branch."""

    prompt_len: int  # length of ``input_ids`` at the first call (decoder-only prompt length)
    prev_input_ids: torch.LongTensor
    cache: object
    attention_mask: torch.LongTensor | None  # decoder-only: contrast prompt mask + generated ones
    encoder_outputs: object | None
    encoder_attention_mask: torch.LongTensor | None
    group_size: int


class ContrastiveRationaleLogitsProcessor(LogitsProcessor):
    r"""
    [`LogitsProcessor`] implementing SCOTT's contrastive decoding for rationale generation (Wang et al., ACL 2023).

    The teacher writes a rationale for a question *with the gold answer in its prompt*; every next token
    is scored against the same model prompted with a *perturbed* answer (a wrong one, or none):

    ``log p(t | gold prompt, prefix) - alpha * log p(t | perturbed prompt, prefix)``

    so tokens that are likely whatever the answer (vacuous rationales) are pushed down. The perturbed
    branch is run by this processor on the generating model with its own KV cache: one prefill, then
    one token per step (the tokens ``generate`` actually appended). Works with greedy search, sampling
    (put temperature/top-k/top-p after it, as ``generate`` does), ``num_return_sequences > 1`` and beam
    search (the beam reordering is rebuilt from ``input_ids``), for decoder-only and encoder-decoder
    models.

    Args:
        model (`PreTrainedModel`):
            The model that ``generate`` runs (frozen teacher). The contrast branch uses the same weights.
        contrast_input_ids (`torch.LongTensor` of shape `(batch_size, contrast_length)`):
            Prompts with the perturbed answer, one row per input row of ``generate`` (before beam /
            return-sequence expansion). Decoder-only models need them left-padded.
        contrast_attention_mask (`torch.LongTensor`, *optional*):
            Attention mask of ``contrast_input_ids``; all ones when omitted.
        alpha (`float`, *optional*, defaults to 0.5):
            Weight of the perturbed branch (SCOTT's reference code uses 0.5). ``alpha=0`` is plain decoding.
        stop_token_ids (`Iterable[int]`, *optional*):
            Extra end tokens (e.g. the id of a newline that ends a rationale) besides the model's
            ``generation_config.eos_token_id``. When the unmodified teacher's most likely token is an end
            token, that token is chosen (the reference's stop rule).
        plausibility_threshold (`float`, *optional*):
            ``beta`` of Li et al.'s adaptive plausibility constraint: tokens with
            ``p(t | gold prompt) < beta * max_t p(t | gold prompt)`` are excluded. Off by default.

    Examples:

    ```python
    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessorList
    >>> from scott_distill import ContrastiveRationaleLogitsProcessor
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> config = GPT2Config(vocab_size=32, n_positions=64, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=1)
    >>> teacher = GPT2LMHeadModel(config).eval()
    >>> gold = torch.tensor([[5, 6, 7, 8]])  # "... The answer is A. Because"
    >>> contrast = torch.tensor([[5, 6, 9, 8]])  # "... The answer is B. Because"
    >>> proc = ContrastiveRationaleLogitsProcessor(teacher, contrast_input_ids=contrast, alpha=0.5)
    >>> out = teacher.generate(
    ...     gold, logits_processor=LogitsProcessorList([proc]), max_new_tokens=5, do_sample=False, pad_token_id=0
    ... )
    >>> out.shape[0], out.shape[1] <= 9
    (1, True)

    ```
    """

    def __init__(
        self,
        model: PreTrainedModel,
        contrast_input_ids: torch.LongTensor,
        contrast_attention_mask: torch.LongTensor | None = None,
        alpha: float = 0.5,
        stop_token_ids: Iterable[int] | None = None,
        plausibility_threshold: float | None = None,
    ) -> None:
        if not isinstance(alpha, (int, float)) or alpha < 0:
            raise ValueError(f"`alpha` must be a float >= 0, got {alpha!r}.")
        if plausibility_threshold is not None and not 0 <= plausibility_threshold <= 1:
            raise ValueError(f"`plausibility_threshold` must be in [0, 1], got {plausibility_threshold!r}.")
        if not isinstance(contrast_input_ids, torch.Tensor) or contrast_input_ids.dim() != 2:
            raise ValueError(
                "`contrast_input_ids` must be a 2-D LongTensor of shape (batch_size, length), "
                f"got {type(contrast_input_ids).__name__} {getattr(contrast_input_ids, 'shape', '')}."
            )
        if contrast_attention_mask is None:
            contrast_attention_mask = torch.ones_like(contrast_input_ids)
        elif contrast_attention_mask.shape != contrast_input_ids.shape:
            raise ValueError(
                "`contrast_attention_mask` must have the shape of `contrast_input_ids` "
                f"{tuple(contrast_input_ids.shape)}, got {tuple(contrast_attention_mask.shape)}."
            )
        self.model = model
        self.alpha = float(alpha)
        self.plausibility_threshold = plausibility_threshold
        self.contrast_input_ids = contrast_input_ids
        self.contrast_attention_mask = contrast_attention_mask.long()
        self.is_encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        self.stop_token_ids = end_token_ids(model, stop_token_ids)
        params = inspect.signature(model.forward).parameters
        self._accepts_position_ids = "position_ids" in params
        # Only the last position's logits are needed; without this the prefill materialises
        # batch x length x vocab logits (hundreds of MB for a GPT-2-sized teacher).
        self._last_logits_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self._state: _ContrastState | None = None

    def reset(self) -> None:
        """Forget the contrast cache (done automatically when a new ``generate`` call is detected)."""
        self._state = None

    # -- contrast branch -------------------------------------------------------------------------

    @torch.no_grad()
    def _start(self, input_ids: torch.LongTensor) -> torch.Tensor:
        rows = input_ids.shape[0]
        n = self.contrast_input_ids.shape[0]
        if rows % n != 0:
            raise ValueError(
                f"`contrast_input_ids` has {n} rows but generate() runs {rows} rows; it must have one row per "
                "input row (generate expands them by num_beams / num_return_sequences itself)."
            )
        group = rows // n
        device = input_ids.device
        ids = self.contrast_input_ids.to(device).repeat_interleave(group, dim=0)
        mask = self.contrast_attention_mask.to(device).repeat_interleave(group, dim=0)
        if self.is_encoder_decoder:
            encoder = self.model.get_encoder()
            encoder_outputs = encoder(input_ids=ids, attention_mask=mask, return_dict=True)
            out = self.model(
                encoder_outputs=encoder_outputs,
                attention_mask=mask,
                decoder_input_ids=input_ids,
                use_cache=True,
                return_dict=True,
                **self._last_logits_only,
            )
            self._state = _ContrastState(input_ids.shape[1], input_ids, out.cache, None, encoder_outputs, mask, group)
        else:
            kwargs = {"position_ids": decoder_position_ids(mask)} if self._accepts_position_ids else {}
            out = self.model(
                input_ids=ids, attention_mask=mask, use_cache=True, return_dict=True, **kwargs, **self._last_logits_only
            )
            self._state = _ContrastState(input_ids.shape[1], input_ids, out.cache, mask, None, None, group)
        return out.logits[:, -1, :]

    @torch.no_grad()
    def _step(self, input_ids: torch.LongTensor) -> torch.Tensor:
        state = self._state
        assert state is not None
        new_tokens = input_ids[:, -1:]
        if self.is_encoder_decoder:
            out = self.model(
                encoder_outputs=state.encoder_outputs,
                attention_mask=state.encoder_attention_mask,
                decoder_input_ids=new_tokens,
                cache=state.cache,
                use_cache=True,
                return_dict=True,
            )
        else:
            state.attention_mask = torch.cat([state.attention_mask, torch.ones_like(new_tokens)], dim=-1)
            kwargs = {}
            if self._accepts_position_ids:
                kwargs["position_ids"] = state.attention_mask.sum(-1, keepdim=True) - 1
            out = self.model(
                input_ids=new_tokens,
                attention_mask=state.attention_mask,
                cache=state.cache,
                use_cache=True,
                return_dict=True,
                **kwargs,
            )
        state.cache = out.cache
        state.prev_input_ids = input_ids
        return out.logits[:, -1, :]

    def _parent_rows(self, input_ids: torch.LongTensor) -> torch.LongTensor | None:
        """Which previous row each current row extends, or ``None`` if some row extends none.

        Beam search reorders rows every step without telling processors; the parent of a row is the
        previous row equal to its prefix. Matching is restricted to the row's own group (same input
        example, hence same contrast prompt), so a duplicate prefix may map to any equal row.
        """
        state = self._state
        assert state is not None
        prev = state.prev_input_ids
        if prev.shape[0] != input_ids.shape[0] or prev.shape[1] + 1 != input_ids.shape[1]:
            return None
        prefix = input_ids[:, :-1]
        if torch.equal(prefix, prev):
            return torch.arange(prev.shape[0], device=prev.device)
        g = state.group_size
        cur = prefix.view(-1, g, 1, prefix.shape[1])
        old = prev.view(-1, 1, g, prev.shape[1])
        match = (cur == old).all(dim=-1)  # (groups, g_cur, g_prev)
        if not bool(match.any(dim=-1).all()):
            return None
        parent_in_group = match.float().argmax(dim=-1)
        offsets = torch.arange(match.shape[0], device=prev.device).unsqueeze(1) * g
        return (parent_in_group + offsets).reshape(-1)

    def _contrast_logits(self, input_ids: torch.LongTensor) -> torch.Tensor:
        if self._state is not None:
            parents = self._parent_rows(input_ids)
            if parents is not None:
                if not torch.equal(parents, torch.arange(parents.numel(), device=parents.device)):
                    self._state.cache.reorder_cache(parents)
                return self._step(input_ids)
            state = self._state
            prev, cur_len = state.prev_input_ids, input_ids.shape[1]
            # Assisted / speculative decoding rolls the sequence back to a prefix of what was seen (and
            # re-scores it); a fresh generate() call starts from a prompt that is not such a prefix.
            rolled_back = (
                prev.shape[0] == input_ids.shape[0]
                and state.prompt_len < cur_len <= prev.shape[1]
                and torch.equal(input_ids[:, :-1], prev[:, : cur_len - 1])
            )
            if rolled_back:
                raise ValueError(
                    "ContrastiveRationaleLogitsProcessor saw the sequence move back to an earlier prefix; "
                    "assisted / speculative generation (assistant_model, prompt_lookup_num_tokens) is not supported."
                )
            logger.debug("New generate() call detected: resetting the contrast cache.")
            self._state = None
        return self._start(input_ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.alpha == 0:
            return contrastive_scores(scores, scores, 0.0)
        contrast_logits = self._contrast_logits(input_ids)
        if contrast_logits.shape[-1] != scores.shape[-1]:
            raise ValueError(
                f"The contrast model's vocabulary ({contrast_logits.shape[-1]}) differs from the scores of "
                f"generate() ({scores.shape[-1]}): `model` must be the model that is generating."
            )
        return contrastive_scores(
            scores,
            contrast_logits,
            self.alpha,
            stop_token_ids=self.stop_token_ids,
            plausibility_threshold=self.plausibility_threshold,
        ).to(scores.dtype)
