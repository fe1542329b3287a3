"""FastV inside a transformers language model: the in-model mechanics of ``methods/fastv.py``.

``fastv_pruning(model, prepared, ...)`` is a context manager. During the prefill it reads
layer K-1's attention probabilities (that one layer runs with eager attention and an
explicit causal mask, so weights exist whatever the model's attention implementation),
then forward pre-hooks on layers K .. T-1 cut the dropped visual tokens out of the hidden
states and out of every per-position input (rotary cos/sin, position ids, a 4-D attention
mask). Their KV cache therefore holds only the kept tokens; during decoding the same hooks
cut the dropped columns out of a 4-D mask. Positions of kept tokens stay what they were,
as in FastV. ``llava_scissor.apply(model, method="fastv", retention=...)`` enters it
around every call with video (the prefill-hook extension point, ``hooks.py``); one
sequence per call. The selection rule itself (``fastv_select``) is the method's.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from typing import Any, Iterator, Mapping

import torch

from ..._errors import ScissorError
from ...core.config import ScissorConfig, with_overrides
from ...methods._common import token_budget
from ...methods.fastv import FastVOptions, fastv_select
from .hooks import register_prefill_hook

__all__ = ["fastv_pruning", "decoder_layers"]


def decoder_layers(model: Any) -> Any:
    """The language model's decoder layers (a ``ModuleList``) of a transformers VLM."""
    candidates = [model, getattr(model, "model", None)]
    for owner in candidates:
        if owner is None:
            continue
        lm = getattr(owner, "language_model", None)
        for node in (lm, getattr(lm, "model", None), owner):
            layers = getattr(node, "layers", None)
            if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0:
                return layers
    raise ScissorError(f"cannot find the decoder layers of {type(model).__name__} (expected language_model.layers)")


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor | None:
    return kwargs.get("hidden_states", args[0] if args else None)


def _gather_seq(value: Any, dim: int, index: torch.Tensor, length: int) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() >= abs(dim) and value.shape[dim] == length:
        return value.index_select(dim, index.to(value.device))
    return value


class _Pruner:
    """State of one FastV call (which visual positions exist, which survive layer K) and its hooks."""

    def __init__(self, spans: list[tuple[int, int, int]], layer: int) -> None:
        self.spans = spans  # (start, length, budget) per video, positions in the sequence
        self.layer = layer
        self.full_length: int | None = None
        self.keep: torch.Tensor | None = None  # [L'] positions kept after layer K
        self.scores: torch.Tensor | None = None  # [V] score of each visual position
        self.seen_lengths: list[tuple[int, int]] = []  # (layer index, hidden length) per call

    def select(self, probs: torch.Tensor) -> None:
        """probs: [B=1, H, L, L] attention of layer K-1 -> the kept positions."""
        length = int(probs.shape[-1])
        received = probs[0].float().mean(dim=0).mean(dim=0)  # [L]
        drop = torch.zeros(length, dtype=torch.bool, device=probs.device)
        scores = []
        for start, count, budget in self.spans:
            positions = torch.arange(start, start + count, device=probs.device)
            score = received[positions]
            scores.append(score)
            kept = fastv_select(score, budget)
            drop[positions] = True
            drop[positions[kept]] = False
        self.scores = torch.cat(scores) if scores else None
        self.full_length = length
        self.keep = torch.nonzero(~drop).flatten()

    def before_scoring(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
        """Pre-hook of layer K-1's attention: eager attention, with an explicit causal mask, for this call."""
        hidden = _hidden(args, kwargs)
        if self.keep is not None or hidden is None or int(hidden.shape[1]) <= 1 or not self.spans:
            return None
        module.__dict__["_fastv_config"] = module.config
        eager = copy.copy(module.config)
        eager._attn_implementation = "eager"
        module.config = eager
        mask = kwargs.get("attention_mask")
        if mask is None:
            length = int(hidden.shape[1])
            causal = torch.full(
                (length, length), torch.finfo(hidden.dtype).min, dtype=hidden.dtype, device=hidden.device
            ).triu(1)
            kwargs = dict(kwargs, attention_mask=causal[None, None])
        elif mask.dtype == torch.bool:
            additive = torch.zeros(mask.shape, dtype=hidden.dtype, device=mask.device)
            kwargs = dict(kwargs, attention_mask=additive.masked_fill(~mask, torch.finfo(hidden.dtype).min))
        return args, kwargs

    def after_scoring(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        """Hook of layer K-1's attention: restore its config, rank the visual tokens by its weights."""
        saved = module.__dict__.pop("_fastv_config", None)
        if saved is None:
            return
        module.config = saved
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise ScissorError(f"{type(module).__name__} returned no attention weights in eager mode")
        self.select(weights.detach())

    def recorder(self, index: int) -> Any:
        """Pre-hook of a layer before K: records the length it sees."""

        def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = _hidden(args, kwargs)
            if hidden is not None:
                self.seen_lengths.append((index, int(hidden.shape[1])))

        return hook

    def pruner(self, index: int) -> Any:
        """Pre-hook of a layer from K on: cuts the dropped visual tokens out of its inputs."""

        def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
            hidden = _hidden(args, kwargs)
            if hidden is None:
                return None
            if self.keep is None:
                self.seen_lengths.append((index, int(hidden.shape[1])))
                return None
            full, keep = int(self.full_length or 0), self.keep
            if int(hidden.shape[1]) == full:  # prefill: cut the dropped visual tokens out
                hidden = hidden.index_select(1, keep.to(hidden.device))
                _cut_positions(kwargs, keep, full)
            else:  # decoding: the KV cache of this layer lacks the dropped positions
                _cut_mask_columns(kwargs, keep, full)
            self.seen_lengths.append((index, int(hidden.shape[1])))
            args_list = list(args)
            if "hidden_states" in kwargs:
                kwargs["hidden_states"] = hidden
            else:
                args_list[0] = hidden
            return tuple(args_list), kwargs

        return hook


def _cut_positions(kwargs: dict, keep: torch.Tensor, full: int) -> None:
    """Keep only the positions ``keep`` of every per-position input of a layer (in place)."""
    pe = kwargs.get("position_embeddings")
    if isinstance(pe, tuple):
        kwargs["position_embeddings"] = tuple(_gather_seq(t, -2, keep, full) for t in pe)
    kwargs["position_ids"] = _gather_seq(kwargs.get("position_ids"), -1, keep, full)
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 4:
        mask = _gather_seq(mask, -2, keep, full)
        kwargs["attention_mask"] = _gather_seq(mask, -1, keep, full)


def _cut_mask_columns(kwargs: dict, keep: torch.Tensor, full: int) -> None:
    """During decoding: drop the pruned prompt columns of a 4-D mask (in place)."""
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 4 and int(mask.shape[-1]) > full:
        extra = torch.arange(full, int(mask.shape[-1]), device=mask.device)
        cols = torch.cat([keep.to(mask.device), extra])
        kwargs["attention_mask"] = mask.index_select(-1, cols)


@contextlib.contextmanager
def fastv_pruning(
    model: Any,
    prepared: Mapping[str, Any],
    config: ScissorConfig | None = None,
    *,
    options: FastVOptions | None = None,
    **overrides: Any,
) -> Iterator[_Pruner]:
    """Prune visual tokens inside the language model during calls made in this block.

    model: a supported transformers VLM; prepared: ``llava_scissor.prepare(model, inputs,
    method="fastv")`` (one sequence; its ``stats`` locate the videos). ``config`` /
    ``overrides``: the budget (``retention`` / ``max_tokens``) and ``layer``. Yields the
    pruner state (``keep``: positions kept after layer K; ``seen_lengths``: the hidden
    length each decoder layer saw, for inspection).
    """
    layer_value = overrides.pop("layer", None)
    options = options or FastVOptions()
    if layer_value is not None:
        options = dataclasses.replace(options, layer=layer_value)
    cfg = with_overrides(config, **overrides)
    ids = prepared.get("input_ids")
    if ids is not None and int(ids.shape[0]) != 1:
        raise ScissorError(f"FastV in-model pruning runs one sequence per call, got a batch of {int(ids.shape[0])}")
    spans = [
        (int(s.start), int(s.frames * s.tokens_per_frame), token_budget(cfg, s.frames, s.tokens_per_frame, "fastv"))
        for s in getattr(prepared, "stats", []) or []
    ]
    layers = decoder_layers(model)
    if options.layer >= len(layers):
        raise ScissorError(f"FastV layer {options.layer} must be smaller than the number of layers ({len(layers)})")
    state = _Pruner(spans, options.layer)
    scorer = layers[options.layer - 1].self_attn
    handles = []
    try:
        handles.append(scorer.register_forward_pre_hook(state.before_scoring, with_kwargs=True))
        handles.append(scorer.register_forward_hook(state.after_scoring, with_kwargs=True))
        for index, decoder_layer in enumerate(layers):
            hook = state.pruner(index) if index >= options.layer else state.recorder(index)
            handles.append(decoder_layer.register_forward_pre_hook(hook, with_kwargs=True))
        yield state
    finally:
        for h in handles:
            h.remove()
        saved = scorer.__dict__.pop("_fastv_config", None)
        if saved is not None:
            scorer.config = saved


def _prefill_hook(model: Any, prepared: Any) -> Any:
    """FastV around one ``apply``-wrapped call: the budget and options ``prepare`` resolved."""
    return fastv_pruning(model, prepared, prepared.config, options=prepared.options)


register_prefill_hook("fastv", _prefill_hook)
