"""One model decoding a batch of prompts with its own KV cache: the forward calls of contrastive decoding.

The processor runs the contrast branch with it (one prefill, then the tokens ``generate`` appended); the
fused path runs both branches as one batch of ``2 x batch`` rows. Encoder-decoder and decoder-only models
differ here and only here.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from .scoring import decoder_position_ids

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["DecodingBranch", "forward_parameters", "input_device"]


def forward_parameters(model: PreTrainedModel) -> Mapping[str, inspect.Parameter]:
    """Parameters of the *base* model's ``forward``.

    A PEFT wrapper's ``forward`` takes ``**kwargs`` and passes them on, so its own signature hides
    ``position_ids`` / ``logits_to_keep``; deciding from it would silently drop the position ids.
    """
    get_base = getattr(model, "get_base_model", None)
    base = get_base() if callable(get_base) else model
    return inspect.signature(base.forward).parameters


def input_device(model: PreTrainedModel) -> torch.device:
    """The device that ``model``'s inputs belong on.

    ``model.device`` is the first parameter's device, which is ``meta`` for a teacher that accelerate
    offloads (``device_map="auto"`` with disk / CPU offload); the input embedding's hook knows where the
    forward really runs.
    """
    embeddings = model.get_input_embeddings()
    execution_device = getattr(getattr(embeddings, "_hf_hook", None), "execution_device", None)
    if execution_device is not None:
        return torch.device(execution_device)
    weight = embeddings.weight
    assert isinstance(weight, torch.Tensor)
    return weight.device


class DecodingBranch:
    """Prefill a batch of prompts once, then feed one token per row per step, keeping the KV cache.

    * Encoder-decoder models: the prompts are encoded once; decoding starts from ``decoder_input_ids``.
    * Decoder-only models: the prompts are left-padded; position ids count real tokens only (the rule
      ``generate`` uses), so a padded row sees the positions of its unpadded prompt.

    Only the last position's logits are computed where the model allows it (``logits_to_keep``): otherwise
    the prefill materialises batch x length x vocab logits (hundreds of MB for a GPT-2-sized teacher).
    """

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self.is_encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        params = forward_parameters(model)
        self._accepts_position_ids = "position_ids" in params
        self._last_logits_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self.cache: Any = None
        self.attention_mask: torch.Tensor | None = None  # decoder-only: prompt mask + one column per step
        self.encoder_outputs: Any = None
        self.encoder_attention_mask: torch.Tensor | None = None

    def _positions(self, attention_mask: torch.Tensor, last_only: bool) -> dict[str, torch.Tensor]:
        if not self._accepts_position_ids:
            return {}
        positions = decoder_position_ids(attention_mask)
        return {"position_ids": positions[:, -1:] if last_only else positions}

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                decoder_input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the next token after each prompt (encoder-decoder: after ``decoder_input_ids``)."""
        if self.is_encoder_decoder:
            if decoder_input_ids is None:
                raise ValueError("An encoder-decoder branch needs `decoder_input_ids` to start decoding from.")
            self.encoder_outputs = self.model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask,
                                                            return_dict=True)
            self.encoder_attention_mask = attention_mask
            out = self.model(encoder_outputs=self.encoder_outputs, attention_mask=attention_mask,
                             decoder_input_ids=decoder_input_ids, use_cache=True, return_dict=True,
                             **self._last_logits_only)
        else:
            self.attention_mask = attention_mask
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True, return_dict=True,
                             **self._positions(attention_mask, last_only=False), **self._last_logits_only)
        self.cache = out.cache
        return out.logits[:, -1, :]

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens`` (shape ``(batch, 1)``) to every row; logits of the token after them."""
        if self.is_encoder_decoder:
            out = self.model(encoder_outputs=self.encoder_outputs, attention_mask=self.encoder_attention_mask,
                             decoder_input_ids=tokens, cache=self.cache, use_cache=True, return_dict=True)
        else:
            assert self.attention_mask is not None, "step() before prefill()"
            self.attention_mask = torch.cat([self.attention_mask, torch.ones_like(tokens)], dim=-1)
            out = self.model(input_ids=tokens, attention_mask=self.attention_mask, cache=self.cache, use_cache=True,
                             return_dict=True, **self._positions(self.attention_mask, last_only=True))
        self.cache = out.cache
        return out.logits[:, -1, :]

    def reorder(self, rows: torch.Tensor) -> None:
        """Row ``i`` continues from previous row ``rows[i]`` (beam search moves rows between steps)."""
        self.cache.reorder_cache(rows)
