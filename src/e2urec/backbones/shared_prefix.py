"""Reading one prompt prefix once for many continuations.

Ranking and ``recommend`` ask one user's prompt about many movies: the
prompts share everything up to the title (about 85% of their tokens). The
prefix runs once (batch 1) and every layer's keys and values are kept; the
continuations then run as one batch that attends to those keys and values,
with positions that continue after the prefix. A model reads the same tokens
in the same order as in one pass, so the scores agree to float rounding.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# Every layer's prefix keys and values, ``[1, kv_heads, P, head_dim]`` each.
PrefixState = list[tuple[torch.Tensor, torch.Tensor]]


class _SharedPrefixLayer(DynamicLayer):
    """A cache layer holding one prefix for every row of a batch.

    A plain cache built from the prefix would copy it into every row once when
    made and again when the batch's keys are appended; this layer expands the
    one copy (a view) and appends to it, so the prefix is copied once per row.
    Nothing is stored: the cache serves one forward pass.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.keys, self.values = keys, values
        self.device = keys.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = key_states.shape[0]
        return (torch.cat([self.keys.expand(rows, -1, -1, -1), key_states], dim=-2),
                torch.cat([self.values.expand(rows, -1, -1, -1), value_states], dim=-2))


def read_prefix(model: torch.nn.Module, prefix_ids: torch.Tensor) -> PrefixState:
    """Every layer's keys and values over ``prefix_ids`` (``[1, P]``), computed once."""
    if prefix_ids.shape[1] == 0:
        return []
    out = model(input_ids=prefix_ids, use_cache=True, logits_to_keep=1)
    cache = out["cache"] if "cache" in out else out["past_key_values"]
    return [(layer.keys, layer.values) for layer in cache.layers]


def tail_answer_logits(model: torch.nn.Module, prefix: PrefixState,
                       batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[B, V]`` answer-position logits of prompts that continue one read prefix.

    ``batch`` holds the continuations, left-padded by ``Encoder.collate``; their
    positions continue after the prefix.
    """
    rows = batch["input_ids"].shape[0]
    width = prefix[0][0].shape[-2] if prefix else 0
    cache = None
    if prefix:
        cache = DynamicCache()
        cache.layers = [_SharedPrefixLayer(keys, values) for keys, values in prefix]
    mask = batch["attention_mask"]
    mask = torch.cat([mask.new_ones(rows, width), mask], dim=1)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": mask,
              "position_ids": batch["position_ids"] + width, _cache_argument(model): cache}
    return model(**inputs, use_cache=cache is not None, logits_to_keep=1).logits[:, -1]


def _cache_argument(model: torch.nn.Module) -> str:
    # transformers renamed ``past_key_values`` to ``cache`` within 5.x; the base model's
    # signature says which this version reads (an adapter wrapper forwards **kwargs).
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters \
        else "past_key_values"
