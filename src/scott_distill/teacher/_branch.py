"""One model decoding a batch of prompts with its own KV cache: the forward calls of contrastive decoding.

The processor runs the contrast branch with it (one prefill, then the tokens ``generate`` appended); the
fused path runs both branches as one batch of ``2 x batch`` rows. Encoder-decoder and decoder-only models
differ here and only here.

``SharedPrefix`` holds the KV cache of a token prefix that every prompt of a run starts with (the few-shot
block), computed once; a batch then prefills only its rows' suffixes, laid out ``[prefix][left padding][suffix]``
with positions counted over real tokens, so each row sees exactly the positions of its unpadded prompt.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .scoring import decoder_position_ids, generation_config_value, left_padded

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["DecodingBranch", "SharedPrefix", "forward_parameters", "input_device", "last_logits_only"]


def forward_parameters(model: PreTrainedModel) -> Mapping[str, inspect.Parameter]:
    """Parameters of the *base* model's ``forward``.

    A PEFT wrapper's ``forward`` takes ``**kwargs`` and passes them on, so its own signature hides
    ``position_ids`` / ``logits_to_keep``; deciding from it would silently drop the position ids.
    """
    get_base = getattr(model, "get_base_model", None)
    base = get_base() if callable(get_base) else model
    return inspect.signature(base.forward).parameters


def last_logits_only(model: PreTrainedModel) -> dict[str, int]:
    """``{"logits_to_keep": 1}`` where ``model`` takes it, else nothing: a pass whose keys and values are what is
    wanted (a prefill) then skips the vocabulary-sized logits of every other position."""
    return {"logits_to_keep": 1} if "logits_to_keep" in forward_parameters(model) else {}


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


def common_prefix_length(token_lists: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix of every list, leaving at least one token of each list after it
    (the logits of the next token come from a row's own last token)."""
    if not token_lists:
        return 0
    shortest = min(len(t) for t in token_lists)
    first = token_lists[0]
    length = 0
    while length < shortest - 1 and all(t[length] == first[length] for t in token_lists):
        length += 1
    return length


@functools.lru_cache(maxsize=1)
def _prefix_cache_class() -> type:
    """A ``DynamicCache`` that names ``expand`` when it is fed more rows than it was copied for."""
    from transformers import DynamicCache

    class SharedPrefixCache(DynamicCache):
        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            keys = getattr(self.layers[layer_idx], "keys", None) if layer_idx < len(self.layers) else None
            if isinstance(keys, torch.Tensor) and keys.dim() == 4 and keys.shape[0] != key_states.shape[0]:
                # generate expands its ids to num_beams / num_return_sequences rows, never a cache it is given
                raise ValueError(
                    f"The model runs {key_states.shape[0]} rows but the shared prefix's cache was copied for "
                    f"{keys.shape[0]} rows: pass `expand=` to `SharedPrefix.generate_inputs` (num_beams for beam "
                    "search, else num_return_sequences).")
            return super().update(key_states, value_states, layer_idx, *args, **kwargs)

    return SharedPrefixCache


class SharedPrefix:
    """The KV cache of a token prefix shared by every prompt of a run, computed once (decoder-only teachers).

    Rows are laid out ``[prefix][left padding][suffix]``: the prefix cache is copied to the batch, the attention
    mask is zero on the padding and position ids are counted over real tokens, so each row gets exactly the
    positions of its unpadded prompt (absolute-position and RoPE models alike). Encoder-decoder teachers cannot
    use it: their encoder is bidirectional, so a prefix's encoding depends on the tokens after it.

    Build it with [`SharedPrefix.of`] (longest common *token* prefix of the tokenized prompts: ids are compared,
    strings are never split) or directly from the prefix ids.

    Args:
        model (`PreTrainedModel`): the decoder-only teacher whose cache is computed.
        token_ids (`Sequence[int]`): the prefix's token ids.

    Examples:

    ```python
    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from scott_distill import SharedPrefix, contrastive_generate
    >>> _ = torch.manual_seed(0)
    >>> teacher = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=64, n_embd=16, n_layer=1, n_head=2)).eval()
    >>> gold = {"input_ids": torch.tensor([[5, 6, 7, 8, 9], [0, 5, 6, 7, 10]]),  # left-padded: few-shot 5 6 7
    ...         "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])}
    >>> contrast = {"input_ids": torch.tensor([[5, 6, 7, 11], [5, 6, 7, 12]])}
    >>> prefix = SharedPrefix.of(teacher, [[5, 6, 7, 8, 9], [5, 6, 7, 10], [5, 6, 7, 11], [5, 6, 7, 12]])
    >>> prefix.ids.tolist()
    [[5, 6, 7]]
    >>> kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    >>> torch.equal(contrastive_generate(teacher, None, gold, contrast, shared_prefix=prefix, **kw),
    ...             contrastive_generate(teacher, None, gold, contrast, shared_prefix=None, **kw))
    True

    ```
    """

    def __init__(self, model: PreTrainedModel, token_ids: Sequence[int]) -> None:
        reason = self.unsupported(model)
        if reason:
            raise ValueError(f"`model` cannot reuse a shared prefix: {reason}.")
        if len(token_ids) == 0:
            raise ValueError("`token_ids` of a shared prefix must not be empty.")
        self.ids = torch.tensor([list(token_ids)], dtype=torch.long, device=input_device(model))
        last_only = last_logits_only(model)
        with torch.no_grad():
            out = model(input_ids=self.ids, attention_mask=torch.ones_like(self.ids), use_cache=True,
                        return_dict=True, position_ids=torch.arange(self.ids.shape[1], device=self.ids.device)[None],
                        **last_only)
        self._cache = out.cache
        if type(self._cache).__name__ == "DynamicCache":
            self._cache.__class__ = _prefix_cache_class()  # same data; only `update` checks the row count

    @staticmethod
    def unsupported(model: PreTrainedModel) -> str:
        """Why ``model`` cannot reuse a prefix ('' if it can)."""
        if getattr(model.config, "is_encoder_decoder", False):
            return "an encoder-decoder model's encoder is bidirectional (the prefix's encoding depends on the suffix)"
        if "position_ids" not in forward_parameters(model):
            return "its forward takes no `position_ids` (padded rows after the prefix would get wrong positions)"
        implementation = generation_config_value(model, "cache_implementation")
        if implementation not in (None, "dynamic"):
            # generate refuses a given cache beside it; a quantized one would also give other tokens than ours
            return (f"its generation_config.cache_implementation={implementation!r} asks generate for another cache "
                    "than the prefix's DynamicCache")
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        try:
            layers = DynamicCache(config=model.config).layers
        except Exception as err:  # a config the cache classes do not understand
            return f"its cache layout is unknown ({err})"
        if any(type(layer) is not DynamicLayer for layer in layers):
            return "its cache has sliding-window or other non-growing layers (the window would count the padding)"
        return ""

    @classmethod
    def of(cls, model: PreTrainedModel, token_lists: Sequence[Sequence[int]]) -> SharedPrefix | None:
        """The shared prefix of ``token_lists`` (``None`` if they share no token or ``model`` cannot reuse one)."""
        length = common_prefix_length(token_lists)
        if length == 0 or cls.unsupported(model):
            return None
        return cls(model, token_lists[0][:length])

    def __len__(self) -> int:
        return self.ids.shape[1]

    def cache_for(self, rows: int) -> Any:
        """A fresh copy of the prefix cache for ``rows`` rows (decoding appends to it in place)."""
        cache = copy.deepcopy(self._cache)
        cache.batch_repeat_interleave(rows)
        return cache

    def split(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              name: str = "input_ids") -> tuple[torch.Tensor, torch.Tensor]:
        """Full prompts ``[pad][prefix][suffix]`` -> their suffixes ``[pad][suffix]`` (ids, mask).

        Right padding (GPT-2 / Llama tokenizers' default) is moved to the left first, as the processor and the fused
        path do. Raises a ``ValueError`` naming the rows that do not start with the prefix's tokens or have no token
        after it.
        """
        length = len(self)
        input_ids, mask = left_padded(input_ids, attention_mask, name)
        in_prefix = (mask == 1) & (mask.cumsum(-1) <= length)
        short = (mask.sum(-1) <= length).nonzero().flatten().tolist()
        if short:
            raise ValueError(f"`{name}` rows {short[:10]} have no token after the {length}-token shared prefix.")
        rows, width = input_ids.shape
        head = input_ids[in_prefix].view(rows, length)
        differ = (head != self.ids.to(head.device)).any(-1).nonzero().flatten().tolist()
        if differ:
            raise ValueError(f"`{name}` rows {differ[:10]} do not start with the shared prefix's {length} tokens.")
        keep = ~in_prefix
        return input_ids[keep].view(rows, width - length), mask[keep].view(rows, width - length)

    def join(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded suffixes -> ``[prefix][pad][suffix]`` ids and mask (what a prefilled cache continues)."""
        rows = input_ids.shape[0]
        prefix = self.ids.to(input_ids.device).expand(rows, -1)
        return (torch.cat([prefix, input_ids], dim=1),
                torch.cat([torch.ones_like(prefix), attention_mask.long()], dim=1))

    def generate_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        expand: int = 1) -> dict[str, Any]:
        """``generate`` keyword arguments for left-padded full prompts: the ``[prefix][pad][suffix]`` layout and
        a copy of the prefix cache (``generate`` then prefills only the suffixes; positions come from the mask).

        ``generate`` expands the ids to several rows per prompt but not a given cache: pass its expansion as
        ``expand`` (``num_beams`` for beam search, else ``num_return_sequences``; every row of the prefix cache is
        the same, so only the row count matters).

        ``use_cache=True`` is part of them: a teacher whose ``generation_config.use_cache`` is False would otherwise
        make ``generate`` feed every step the whole sequence on top of the prefix's cache.
        """
        if not isinstance(expand, int) or expand < 1:
            raise ValueError(f"`expand` must be an int >= 1 (generate's rows per prompt), got {expand!r}.")
        ids, mask = self.join(*self.split(input_ids, attention_mask))
        return {"input_ids": ids, "attention_mask": mask, "cache": self.cache_for(ids.shape[0] * expand),
                "use_cache": True}


class DecodingBranch:
    """Prefill a batch of prompts once, then feed one token per row per step, keeping the KV cache.

    * Encoder-decoder models: the prompts are encoded once; decoding starts from ``decoder_input_ids``.
    * Decoder-only models: the prompts are left-padded; position ids count real tokens only (the rule
      ``generate`` uses), so a padded row sees the positions of its unpadded prompt. With a ``SharedPrefix``
      the prompts are the rows' suffixes after it; the branch starts from a copy of the prefix cache.

    Only the last position's logits are computed where the model allows it (``logits_to_keep``): otherwise
    the prefill materialises batch x length x vocab logits (hundreds of MB for a GPT-2-sized teacher).
    """

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self.is_encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        params = forward_parameters(model)
        self._accepts_position_ids = "position_ids" in params
        self._last_logits_only = last_logits_only(model)
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
                decoder_input_ids: torch.Tensor | None = None, prefix: SharedPrefix | None = None) -> torch.Tensor:
        """Logits of the next token after each prompt (encoder-decoder: after ``decoder_input_ids``).

        With ``prefix`` (decoder-only), ``input_ids`` / ``attention_mask`` are the left-padded suffixes that
        follow it in every row.
        """
        if prefix is not None:
            if self.is_encoder_decoder:
                raise ValueError("An encoder-decoder branch cannot start from a shared prefix (bidirectional encoder).")
            cache = prefix.cache_for(input_ids.shape[0])
            self.attention_mask = torch.cat([torch.ones_like(attention_mask[:, :1]).expand(-1, len(prefix)),
                                             attention_mask], dim=-1)
            positions = self._positions(self.attention_mask, last_only=False)
            out = self.model(input_ids=input_ids, attention_mask=self.attention_mask, cache=cache, use_cache=True,
                             return_dict=True, **{k: v[:, len(prefix):] for k, v in positions.items()},
                             **self._last_logits_only)
        elif self.is_encoder_decoder:
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
