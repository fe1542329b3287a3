"""``fastv``: drop the visual tokens that receive the least attention inside the language model.

Chen, Zhao, Liu, Bai, Lin, Zhou, Chang, "An Image is Worth 1/2 Tokens After Layer 2:
Plug-and-Play Inference Acceleration for Large Vision-Language Models", ECCV 2024,
arXiv 2403.06764. The first ``K`` decoder layers (0 .. K-1) see every visual token; each
visual token is scored by the attention it receives in layer K-1 (averaged over heads and
over all query positions), and layers K .. T-1 see only the best-scored visual tokens.
FastV's paper default is K = 2, R = 50 %; LLaVA-Scissor compares with K = 3 at equal
retention, which is the default here. The budget has the same meaning as for every other
method: exactly ``round(retention * F * N)`` (or ``max_tokens``) visual tokens remain
after layer K.

This module has two parts:

* ``fastv_compress`` (registry entry): the selection itself, given ``llm_attention:
  [F, N]`` (the score of each visual token at layer K). Kept tokens go through unchanged,
  the rest are discarded (``assignment = -1``).
* ``fastv_pruning(model, prepared, ...)``: the in-model mechanics as a context manager.
  During the prefill it reads layer K-1's attention probabilities (that one layer runs
  with eager attention and an explicit causal mask, so weights exist whatever the model's
  attention implementation), then forward pre-hooks on layers K .. T-1 cut the dropped
  visual tokens out of the hidden states and out of every per-position input (rotary
  cos/sin, position ids, a 4-D attention mask). Their KV cache therefore holds only the
  kept tokens; during decoding the same hooks cut the dropped columns out of a 4-D mask.
  Positions of kept tokens stay what they were, as in FastV. ``llava_scissor.apply(model,
  method="fastv", retention=...)`` enters it around every call with video (the HF
  integration's ``prefill_hook`` extension point); one sequence per call.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch

from .._errors import ScissorError
from ..core.config import ScissorConfig
from ..core.result import CompressionResult
from . import Method, register_method
from ._common import check_features, check_side_input, token_budget

__all__ = ["FastVOptions", "fastv_compress", "fastv_select", "attention_received", "fastv_pruning", "decoder_layers"]


@dataclass(frozen=True)
class FastVOptions:
    """FastV hyperparameters.

    Attributes:
        layer: K: layers 0..K-1 see all tokens (layer K-1's attention ranks the visual
            tokens), layers K.. only the kept ones (LLaVA-Scissor's comparison: 3;
            FastV's paper default: 2).
    """

    layer: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 1:
            raise ScissorError(f"FastV layer must be an int >= 1, got {self.layer!r}")


def attention_received(attn: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
    """Score of each visual token: attention it receives, averaged over heads and queries.

    attn: [heads, L, L] (or [batch=1, heads, L, L]) attention probabilities of one sequence;
    visual: [V] int64 positions of the visual tokens in the sequence -> [V] float32.
    """
    if attn.dim() == 4:
        attn = attn[0]
    return attn.float().mean(dim=0).mean(dim=0)[visual]


def fastv_select(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """scores: [V] -> the ``keep`` best-scored positions, ascending (ties: smaller position)."""
    order = torch.sort(-scores.float(), stable=True).indices
    return torch.sort(order[:keep]).values


_HINT = (
    "FastV prunes inside the language model: use llava_scissor.prepare/apply(model, method='fastv', "
    "retention=...), or pass llm_attention=<[frames, tokens_per_frame] attention each visual token "
    "receives at layer K>"
)


def fastv_compress(
    features: torch.Tensor,
    config: ScissorConfig,
    *,
    options: FastVOptions | None = None,
    llm_attention: torch.Tensor | None = None,
) -> CompressionResult:
    """features: [F, N, d], llm_attention: [F, N] -> the K visual tokens with most attention."""
    frames, n, _ = check_features(features, "fastv")
    scores = check_side_input(llm_attention, "llm_attention", "fastv", (frames, n), _HINT)
    k = token_budget(config, frames, n, "fastv")
    device = features.device
    kept = fastv_select(scores.reshape(-1).to(device), k)
    flat = features.reshape(frames * n, -1)
    assignment = torch.full((frames * n,), -1, dtype=torch.long, device=device)
    assignment[kept] = torch.arange(k, device=device)
    return CompressionResult(
        tokens=flat[kept],
        assignment=assignment,
        representatives=kept,
        sizes=torch.ones(k, dtype=torch.long, device=device),
        frames=frames,
        tokens_per_frame=n,
        method="fastv",
    )


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


class _Pruner:
    """State of one FastV call: which visual positions exist, which survive layer K."""

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


def _gather_seq(value: Any, dim: int, index: torch.Tensor, length: int) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() >= abs(dim) and value.shape[dim] == length:
        return value.index_select(dim, index.to(value.device))
    return value


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
    from ..core.config import with_overrides

    layer_value = overrides.pop("layer", None)
    options = options or FastVOptions()
    if layer_value is not None:
        options = dataclasses.replace(options, layer=layer_value)
    cfg = with_overrides(config, **overrides)
    stats = list(getattr(prepared, "stats", []) or [])
    ids = prepared.get("input_ids")
    if ids is not None and int(ids.shape[0]) != 1:
        raise ScissorError(f"FastV in-model pruning runs one sequence per call, got a batch of {int(ids.shape[0])}")
    spans = []
    for s in stats:
        budget = token_budget(cfg, s.frames, s.tokens_per_frame, "fastv")
        spans.append((int(s.start), int(s.frames * s.tokens_per_frame), budget))
    layers = decoder_layers(model)
    if options.layer >= len(layers):
        raise ScissorError(f"FastV layer {options.layer} must be smaller than the number of layers ({len(layers)})")
    state = _Pruner(spans, options.layer)
    handles = []
    scorer = layers[options.layer - 1].self_attn

    def before_scoring(module: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if state.keep is not None or hidden is None or int(hidden.shape[1]) <= 1 or not spans:
            return None
        # Eager attention for this one call, with an explicit causal mask, to get weights.
        module.__dict__["_fastv_config"] = module.config
        eager = copy.copy(module.config)
        eager._attn_implementation = "eager"
        module.config = eager
        mask = kwargs.get("attention_mask")
        if mask is None:
            length = int(hidden.shape[1])
            causal = torch.full((length, length), torch.finfo(hidden.dtype).min, dtype=hidden.dtype,
                                device=hidden.device).triu(1)
            kwargs = dict(kwargs, attention_mask=causal[None, None])
        elif mask.dtype == torch.bool:
            additive = torch.zeros(mask.shape, dtype=hidden.dtype, device=mask.device)
            kwargs = dict(kwargs, attention_mask=additive.masked_fill(~mask, torch.finfo(hidden.dtype).min))
        return args, kwargs

    def after_scoring(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        saved = module.__dict__.pop("_fastv_config", None)
        if saved is None:
            return
        module.config = saved
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise ScissorError(f"{type(module).__name__} returned no attention weights in eager mode")
        state.select(weights.detach())

    def before_layer(index: int):  # noqa: ANN202
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            if hidden is None:
                return None
            if state.keep is None:
                state.seen_lengths.append((index, int(hidden.shape[1])))
                return None
            full, keep = int(state.full_length or 0), state.keep
            args = list(args)
            if int(hidden.shape[1]) == full:  # prefill: cut the dropped visual tokens out
                hidden = hidden.index_select(1, keep.to(hidden.device))
                for key in ("position_embeddings",):
                    pe = kwargs.get(key)
                    if isinstance(pe, tuple):
                        kwargs[key] = tuple(_gather_seq(t, -2, keep, full) for t in pe)
                kwargs["position_ids"] = _gather_seq(kwargs.get("position_ids"), -1, keep, full)
                mask = kwargs.get("attention_mask")
                if isinstance(mask, torch.Tensor) and mask.dim() == 4:
                    mask = _gather_seq(mask, -2, keep, full)
                    kwargs["attention_mask"] = _gather_seq(mask, -1, keep, full)
            else:  # decoding: the KV cache of this layer lacks the dropped positions
                mask = kwargs.get("attention_mask")
                if isinstance(mask, torch.Tensor) and mask.dim() == 4 and int(mask.shape[-1]) > full:
                    extra = torch.arange(full, int(mask.shape[-1]), device=mask.device)
                    cols = torch.cat([keep.to(mask.device), extra])
                    kwargs["attention_mask"] = mask.index_select(-1, cols)
            state.seen_lengths.append((index, int(hidden.shape[1])))
            if "hidden_states" in kwargs:
                kwargs["hidden_states"] = hidden
            else:
                args[0] = hidden
            return tuple(args), kwargs

        return hook

    try:
        handles.append(scorer.register_forward_pre_hook(before_scoring, with_kwargs=True))
        handles.append(scorer.register_forward_hook(after_scoring, with_kwargs=True))
        for index, decoder_layer in enumerate(layers):
            if index >= options.layer:
                handles.append(decoder_layer.register_forward_pre_hook(before_layer(index), with_kwargs=True))
            else:
                handles.append(decoder_layer.register_forward_pre_hook(_recorder(state, index), with_kwargs=True))
        yield state
    finally:
        for h in handles:
            h.remove()
        saved = scorer.__dict__.pop("_fastv_config", None)
        if saved is not None:
            scorer.config = saved


def _recorder(state: _Pruner, index: int):  # noqa: ANN202
    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if hidden is not None:
            state.seen_lengths.append((index, int(hidden.shape[1])))

    return hook


def _prefill_hook(model: Any, prepared: Any) -> Any:
    """The HF integration's extension point: FastV around one ``apply``-wrapped call."""
    from ..integrations.hf import get_handle

    handle = get_handle(model)
    options = dict(handle.options) if handle is not None else {}
    config = options.pop("config", None)
    for key in ("method", "keep_newline", "enabled"):
        options.pop(key, None)
    return fastv_pruning(model, prepared, config, **options)


register_method(
    Method(
        "fastv",
        fastv_compress,
        side_inputs=("llm_attention",),
        in_model=True,
        description="FastV: drop the least-attended visual tokens after LLM layer K=3",
        options=FastVOptions,
        paper="Chen et al., ECCV 2024, FastV, arXiv 2403.06764",
        prefill_hook=_prefill_hook,
    )
)
