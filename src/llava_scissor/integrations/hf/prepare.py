"""``prepare``: compress the video tokens of processor outputs before the model sees them.

transformers inserts video features by scattering them into the placeholder positions
of ``input_ids`` (one placeholder per feature row, counts checked). Compression changes
the count, so the placeholder runs must shrink before ``generate`` / ``forward`` run:

1. encode each video once with the model's own ``get_video_features``;
2. compress each video's ``[F, N, dim]`` tokens on its own;
3. rebuild ``input_ids`` / ``attention_mask`` / per-token tensors with each run cut to
   its new length, re-padding the batch; a video written as several frame segments
   (Qwen3-VL, GLM-4V) gets each output token in its representative's segment, and its
   text and markers stay (``VideoFeatures``);
4. hand the compressed features over as ``mm_encoder_outputs["video"]``, which the
   models' ``forward`` and ``generate`` accept instead of pixels, with side features that
   share the video's rows (deepstack) reduced by the same weights (``core.reduce``);
5. for 3-D rotary models (Qwen, GLM-4V), pass positions computed on the uncompressed sequence and
   gathered at each output token's representative, and set ``rope_deltas`` so that
   decoding continues after the largest position.
"""

from __future__ import annotations

import inspect
import itertools
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from ..._errors import ScissorError
from ..._timing import synchronize as _sync
from ...api import resolve_method
from ...core.config import ScissorConfig
from ...core.reduce import reduce_rows
from ...core.result import CompressionResult
from ...methods import Method, check_settings, resolve_arguments
from .families import Family, VideoFeatures, get_family
from .families._base import base_model
from .hooks import prefill_hook_for

__all__ = ["prepare", "PreparedInputs", "VideoStats", "supports_precomputed_features", "append_text_tokens"]

#: [B, L] tensors that follow the token axis, with their padding value
_PER_TOKEN = {
    "input_ids": None,
    "attention_mask": 0,
    "mm_token_type_ids": 0,
    "token_type_ids": 0,
    "labels": -100,
    "position_ids": 0,
}

#: value of an appended text token in each [B, L] tensor but input_ids (position_ids have none:
#: a constant cannot continue them)
_TEXT_TOKEN = {"attention_mask": 1, "mm_token_type_ids": 0, "token_type_ids": 0, "labels": -100}


def append_text_tokens(inputs: Mapping[str, Any], ids: torch.Tensor) -> dict[str, Any]:
    """``inputs`` with the text tokens ``ids`` [B, n] appended to ``input_ids`` [B, L] and to
    every per-token tensor ([B, L], ``_PER_TOKEN``): attended, text type, no label.

    Raises ScissorError for a batch size other than ``input_ids``'s, or for per-token
    tensors that cannot be extended (``position_ids``).
    """
    old = inputs["input_ids"]
    b, length = old.shape
    if ids.dim() != 2 or ids.shape[0] != b:
        raise ScissorError(f"tokens to append must be [{b}, n] like input_ids [{b}, {length}], got {list(ids.shape)}")
    out = dict(inputs)
    for key, value in inputs.items():
        if key not in _PER_TOKEN or not isinstance(value, torch.Tensor) or tuple(value.shape) != (b, length):
            continue
        if key == "input_ids":
            out[key] = torch.cat([value, ids.to(value.device, value.dtype)], dim=1)
        elif key in _TEXT_TOKEN:
            pad = torch.full((b, ids.shape[1]), _TEXT_TOKEN[key], dtype=value.dtype, device=value.device)
            out[key] = torch.cat([value, pad], dim=1)
        else:
            raise ScissorError(f"cannot append tokens to {key!r}: no value continues it; leave it out of the inputs")
    return out


@dataclass(frozen=True)
class VideoStats:
    """What compression did to one video.

    Attributes:
        index: position of the video in the processor's video list.
        row: batch row (prompt) holding the video.
        start: index of the video's first token in the prepared sequence of that row.
        positions: [tokens_after] index in the prepared row of each of the video's tokens,
            in packed order (a segmented video's tokens are not contiguous: text and
            markers sit between its frame segments).
        order: [K] index into ``result.tokens`` of each packed token (the output grouped
            by frame segment, stable; the identity for one segment).
        segment_tokens: tokens placed in each frame segment (a 0: the segment is empty,
            its text and markers kept).
        frames, tokens_per_frame: F and N of the compressed token grid (for Qwen, F is
            the number of temporal steps of two frames).
        tokens_before: placeholder tokens of the video before (F * N, plus the newline).
        tokens_after: placeholder tokens after (K, plus the newline when kept).
        seconds: wall time of the compression itself (synchronised on CUDA).
        result: the full ``CompressionResult`` (labels, representatives, sizes, ...).
    """

    index: int
    row: int
    start: int
    frames: int
    tokens_per_frame: int
    tokens_before: int
    tokens_after: int
    seconds: float
    result: CompressionResult
    positions: torch.Tensor | None = None
    order: torch.Tensor | None = None
    segment_tokens: tuple[int, ...] = ()

    @property
    def retention(self) -> float:
        """tokens_after / tokens_before."""
        return self.tokens_after / self.tokens_before


class PreparedInputs(dict):
    """Keyword arguments for ``model.generate(**p)`` / ``model(**p)``, plus statistics.

    Attributes:
        stats: one ``VideoStats`` per video, in processor order.
        encode_seconds: wall time of the vision encoder for all videos.
        method: the ``Method`` when it acts inside the language model (its prefill hook
            receives these inputs through ``apply``), else None.
        config / options: that method's resolved ``ScissorConfig`` (its budget) and
            options, for its prefill hook; None otherwise.
    """

    stats: list[VideoStats]
    encode_seconds: float
    method: Method | None
    config: ScissorConfig | None
    options: Any

    def __init__(
        self,
        kwargs: Mapping[str, Any],
        stats: list[VideoStats] | None = None,
        encode_seconds: float = 0.0,
        method: Method | None = None,
        config: ScissorConfig | None = None,
        options: Any = None,
    ) -> None:
        super().__init__(kwargs)
        self.stats = list(stats or [])
        self.encode_seconds = encode_seconds
        self.method = method
        self.config = config
        self.options = options


def supports_precomputed_features(model: Any) -> bool:
    """True when ``model.forward`` accepts ``mm_encoder_outputs`` (transformers >= the
    release that added precomputed multimodal encoder outputs: 5.18.0; absent in 5.17)."""
    return "mm_encoder_outputs" in inspect.signature(model.forward).parameters


def _identity_result(features: torch.Tensor, method: str) -> CompressionResult:
    """Every token kept as itself, in the original order (compression switched off)."""
    f, n, d = features.shape
    idx = torch.arange(f * n, device=features.device)
    return CompressionResult(
        tokens=features.reshape(f * n, d),
        assignment=idx,
        representatives=idx.clone(),
        sizes=torch.ones(f * n, dtype=torch.int64, device=features.device),
        frames=f,
        tokens_per_frame=n,
        method=method,
    )


def check_options(config: ScissorConfig | None, method: str | None, overrides: Mapping[str, Any]) -> None:
    """Raise ScissorError for the settings ``prepare`` would refuse: an unknown method, an
    unknown or bad setting, a baseline without a budget (``apply`` checks at its call)."""
    check_settings(resolve_method(method).name, config, **overrides)


def prepare(
    model: Any,
    inputs: Mapping[str, Any],
    config: ScissorConfig | None = None,
    *,
    method: str | None = None,
    keep_newline: bool = True,
    enabled: bool = True,
    padding_side: str | None = None,
    **overrides: Any,
) -> PreparedInputs:
    """Compress the videos of processor outputs; return inputs for ``generate`` / ``forward``.

    inputs: what the processor returned: ``input_ids`` [B, L], ``attention_mask`` [B, L]
    (optional), ``pixel_values_videos`` (LLaVA: [V, F, C, H, W] or a list of [F, C, H, W]
    with frames differing per video; Qwen: [patches, C*2*14*14] with ``video_grid_thw``
    [V, 3]), and anything else the model takes (images are left to the model).

    Returns a ``PreparedInputs`` (a dict): ``input_ids`` / ``attention_mask`` and other
    per-token tensors [B, L'] with each video's placeholder run cut to its compressed
    length (padding on the side the inputs used, left when there was none),
    ``mm_encoder_outputs={"video": ...}`` holding the compressed features instead of the
    video pixels, and for Qwen ``position_ids`` [4, B, L'] (text channel + t, h, w).
    Inputs without video come back unchanged. ``model.generate(**prepared)`` returns the
    prepared prompt [B, L'] followed by the new tokens, so the answer is
    ``out[:, prepared["input_ids"].shape[1]:]`` (under ``apply``, ``generate`` returns the
    caller's own prompt instead).

    Options: ``config`` / ``overrides`` are ``ScissorConfig`` fields (``tau=``,
    ``retention=``, ...); ``method`` selects a registered baseline (default "scissor");
    ``keep_newline=False`` drops LLaVA-OneVision's video newline (the paper's flat layout);
    ``enabled=False`` runs the same path with every token kept unchanged and in order.

    Side effect, as transformers' own position code has: for Qwen the model's
    ``rope_deltas`` is set for the prepared batch, so that a later ``forward`` with
    ``past_key_values`` and no ``position_ids`` continues from the right position.
    """
    family = get_family(model)
    if not isinstance(inputs, Mapping):
        raise ScissorError(f"inputs must be a mapping (the processor's output), got {type(inputs).__name__}")
    if padding_side not in (None, "left", "right"):
        raise ScissorError(f"padding_side must be 'left', 'right' or None, got {padding_side!r}")
    check_options(config, method, overrides)  # also for inputs without video
    if inputs.get("pixel_values_videos") is None:
        return PreparedInputs(inputs)
    method_obj = _checked_method(model, inputs, method, enabled)
    cfg, options, given_side = resolve_arguments(method_obj, config, overrides)

    videos, results, seconds, encode_seconds = _encode_and_compress(
        model,
        family,
        inputs,
        method_obj,
        enabled,
        lambda video, extra: method_obj.compress(video.features, cfg, options=options, **given_side, **extra),
    )
    if method_obj.in_model and enabled and any(len(v.segment_frames) > 1 for v in videos):
        raise ScissorError(
            f"method {method_obj.name!r} prunes inside the language model over one run of video tokens per video; "
            f"{model.config.model_type!r} writes each frame as its own segment between timestamps, which it "
            "does not handle; use a method that compresses the features (e.g. scissor, vidcom2, dycoke)"
        )

    keep_tail = keep_newline or not getattr(family, "has_newline", False)
    out, source, placed = _rebuild(model, family, inputs, videos, results, keep_tail, padding_side)
    packed_rows = _hand_over_features(model, family, inputs, out, videos, results, placed, keep_tail)
    if family.needs_positions:
        _set_positions(model, family, inputs, out, source)

    stats = _video_stats(videos, results, packed_rows, seconds, placed)
    if not method_obj.in_model:
        return PreparedInputs(out, stats, encode_seconds)
    return PreparedInputs(out, stats, encode_seconds, method_obj, cfg, options)


def _video_stats(
    videos: list[VideoFeatures],
    results: list[CompressionResult],
    packed_rows: list[torch.Tensor],
    seconds: list[float],
    placed: list[_Placement],
) -> list[VideoStats]:
    """One ``VideoStats`` per video, in the processor's order."""
    return [
        VideoStats(
            index=i,
            row=place.row,
            start=place.start,
            frames=int(video.features.shape[0]),
            tokens_per_frame=int(video.features.shape[1]),
            tokens_before=video.num_placeholders,
            tokens_after=int(packed.shape[0]),
            seconds=sec,
            result=result,
            positions=place.positions,
            order=place.order,
            segment_tokens=place.counts,
        )
        for i, (video, result, packed, sec, place) in enumerate(zip(videos, results, packed_rows, seconds, placed))
    ]


def _checked_method(model: Any, inputs: Mapping[str, Any], method: str | None, enabled: bool) -> Method:
    """The method ``prepare`` runs, once the inputs and the model can take it."""
    if inputs.get("input_ids") is None:
        raise ScissorError("inputs need input_ids (inputs_embeds alone cannot show where the video tokens are)")
    if not supports_precomputed_features(model):
        raise ScissorError(
            f"{type(model).__name__}.forward does not accept mm_encoder_outputs; llava-scissor needs a "
            "transformers release with precomputed multimodal encoder outputs (5.18 or later; tested 5.18.0 and 5.23.0)"
        )
    method_obj = resolve_method(method)
    if method_obj.in_model and enabled and prefill_hook_for(method_obj) is None:
        raise ScissorError(
            f"method {method_obj.name!r} acts inside the language model and has no prefill hook; register one "
            "with llava_scissor.integrations.hf.register_prefill_hook (see integrations/hf/hooks.py)"
        )
    return method_obj


def _encode_and_compress(
    model: Any,
    family: Family,
    inputs: Mapping[str, Any],
    method: Method,
    enabled: bool,
    compress: Callable[[VideoFeatures, dict[str, Any]], CompressionResult],
) -> tuple[list[VideoFeatures], list[CompressionResult], list[float], float]:
    """Encode the videos, then compress each (``compress(video, side inputs)``) unless the
    method acts inside the model or ``enabled`` is False (every token kept, in order).

    Returns (videos, results, seconds of each compression, seconds of the encoding), the
    times synchronised on CUDA.
    """
    device = inputs["input_ids"].device
    with torch.no_grad():
        _sync(device)
        t0 = time.perf_counter()
        videos = family.extract(model, inputs)
        _sync(device)
        encode_seconds = time.perf_counter() - t0
        compress_now = enabled and not method.in_model
        side = _side_inputs(model, family, inputs, method, len(videos)) if compress_now else [{}] * len(videos)
        results: list[CompressionResult] = []
        seconds: list[float] = []
        for video, extra in zip(videos, side):
            _sync(device)
            t0 = time.perf_counter()
            if compress_now:
                result = compress(video, extra)
            else:
                result = _identity_result(video.features, "none" if not enabled else method.name)
            _sync(device)
            seconds.append(time.perf_counter() - t0)
            results.append(result)
    return videos, results, seconds, encode_seconds


def _hand_over_features(
    model: Any,
    family: Family,
    inputs: Mapping[str, Any],
    out: dict[str, Any],
    videos: list[VideoFeatures],
    results: list[CompressionResult],
    placed: list[_Placement],
    keep_tail: bool,
) -> list[torch.Tensor]:
    """Set ``out["mm_encoder_outputs"]``: the compressed videos (and the images, encoded here).

    Returns each video's packed rows [tokens_after, dim], in the order of its placed tokens.
    """
    packed_rows: list[torch.Tensor] = []
    packed_side: list[list[torch.Tensor]] = []
    for video, result, place in zip(videos, results, placed):
        tokens = result.tokens.to(video.features.dtype)[place.order]
        if keep_tail and video.tail is not None:
            tokens = torch.cat([tokens, video.tail.to(tokens.dtype)], dim=0)
        packed_rows.append(tokens)
        with torch.no_grad():
            # side features (deepstack) get the weights the features got, in the same order
            packed_side.append([reduce_rows(result, rows, video.features)[place.order] for rows in video.side])
    encoder_outputs = dict(inputs.get("mm_encoder_outputs") or {})
    encoder_outputs["video"] = family.pack(model, packed_rows, packed_side if any(packed_side) else None)
    if out.get("pixel_values") is not None and encoder_outputs.get("image") is None:
        # forward refuses pixels next to precomputed outputs, so images are encoded here
        # too, by the model's own get_image_features, exactly as generate would.
        encoder_outputs["image"] = _encode_images(model, out)
        del out["pixel_values"]
    out["mm_encoder_outputs"] = encoder_outputs
    return packed_rows


def _side_inputs(
    model: Any, family: Family, inputs: Mapping[str, Any], method: Method, count: int
) -> list[dict[str, Any]]:
    """The side inputs ``method`` needs, per video, from the model (only ``vision_attention`` can be had)."""
    unknown = sorted(set(method.side_inputs) - {"vision_attention"})
    if unknown:
        raise ScissorError(
            f"method {method.name!r} needs side inputs {unknown}; the HF integration supplies only vision_attention"
        )
    if "vision_attention" not in method.side_inputs:
        return [{} for _ in range(count)]
    return [{"vision_attention": att} for att in family.vision_attention(model, inputs)]


def _encode_images(model: Any, inputs: Mapping[str, Any]) -> Any:
    """The model's own image features for ``inputs`` (unchanged by compression)."""
    fn = base_model(model).get_image_features
    names = [n for n in inspect.signature(fn).parameters if n != "kwargs"]
    kwargs = {n: inputs[n] for n in names if inputs.get(n) is not None}
    with torch.no_grad():
        return fn(return_dict=True, **kwargs)


def _pad_token_id(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> int:
    padded = ids[mask == 0]
    if padded.numel():
        return int(padded[0])
    for cfg in (getattr(model, "generation_config", None), model.config, getattr(model.config, "text_config", None)):
        value = getattr(cfg, "pad_token_id", None) if cfg is not None else None
        if isinstance(value, int):
            return value
    return 0


@dataclass(frozen=True)
class _Placement:
    """Where one video's packed tokens went (see ``VideoStats``)."""

    row: int
    start: int
    positions: torch.Tensor
    order: torch.Tensor
    counts: tuple[int, ...]


def _segment_slots(
    video: VideoFeatures, result: CompressionResult, run: torch.Tensor, keep_tail: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """The placement rule (``VideoFeatures``): each output token in its representative's
    frame segment.

    run: [F*N + t] the video's placeholder positions, frame-major. Returns (order [K]:
    output tokens grouped by segment, stable; slots [K'] placeholder positions kept, in
    packed order; origin [K'] the uncompressed position each slot stands for; tokens per
    segment). K' = K plus the tail when kept, which follows the last segment's tokens.
    """
    f, n, _ = video.features.shape
    frames = video.segment_frames
    if sum(frames) != f:
        raise ScissorError(f"a video's frame segments hold {sum(frames)} frames; its features have {f}")
    reps = result.representatives.to(run.device)
    first = [0, *itertools.accumulate(frames)]  # first frame of each segment (+ the end)
    ends = torch.tensor(first[1:], device=run.device)
    segment = torch.bucketize(reps // n, ends, right=True)  # [K] segment of each token
    order = torch.sort(segment, stable=True).indices
    counts = [int(c) for c in torch.bincount(segment, minlength=len(frames)).tolist()]  # the one host read
    slots = [run[first[s] * n : first[s] * n + c] for s, c in enumerate(counts)]
    origin = [run[reps[order]]]
    tail = run.numel() - f * n if keep_tail else 0
    if tail:
        base = first[-2] * n + counts[-1]
        slots.append(run[base : base + tail])
        origin.append(run[f * n : f * n + tail])
    return order, torch.cat(slots), torch.cat(origin), tuple(counts)


def _rebuild(
    model: Any,
    family: Family,
    inputs: Mapping[str, Any],
    videos: list[VideoFeatures],
    results: list[CompressionResult],
    keep_tail: bool,
    padding_side: str | None,
) -> tuple[dict[str, Any], torch.Tensor, list[_Placement]]:
    """Cut each video's placeholder segments to their new lengths and re-pad the batch.

    Returns (new inputs without the video-only keys, source index [B, L'], where each
    video's tokens went in the new sequence).
    """
    ids: torch.Tensor = inputs["input_ids"]
    if ids.dim() != 2:
        raise ScissorError(f"input_ids must be [batch, length], got shape {tuple(ids.shape)}")
    given_mask = inputs.get("attention_mask")
    mask = given_mask if given_mask is not None else torch.ones_like(ids)
    if mask.shape != ids.shape:
        raise ScissorError(f"attention_mask shape {tuple(mask.shape)} differs from input_ids {tuple(ids.shape)}")
    is_video = family.video_token_mask(model, inputs) & mask.bool()
    total = int(is_video.sum())
    expected = sum(v.num_placeholders for v in videos)
    if total != expected:
        raise ScissorError(
            f"input_ids hold {total} video placeholder tokens but the {len(videos)} video(s) give {expected} "
            "tokens; expected the processor's expansion for the same videos and settings"
        )

    keep, source, video_rows = _cut_runs(videos, results, is_video, mask, keep_tail)
    if padding_side is None:
        had_padding = bool((mask == 0).any())
        right = had_padding and bool((mask[:, 0] == 1).all()) and not bool((mask[:, -1] == 1).all())
        padding_side = "right" if right else "left"
    new_source, new_pos = _repad(keep, source, padding_side)
    out = _gather_per_token(model, family, inputs, new_source)
    # Video tokens take the placeholder id (gathering from a representative keeps it; the
    # newline slot is a placeholder too), so input_ids need no further fix-up.
    placed = []
    for r, slots, order, counts in video_rows:
        positions = new_pos[r, slots]
        start = int(positions[0]) if positions.numel() else -1
        placed.append(_Placement(r, start, positions, order, counts))
    return out, new_source, placed


def _cut_runs(
    videos: list[VideoFeatures],
    results: list[CompressionResult],
    is_video: torch.Tensor,
    mask: torch.Tensor,
    keep_tail: bool,
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, torch.Tensor, torch.Tensor, tuple[int, ...]]]]:
    """Each video's placeholder run cut to its compressed length.

    is_video, mask: [B, L]. Returns (keep [B, L]: the old positions that stay, source [B, L]:
    the old position each one's content comes from, per video (row, slots, order, counts)).
    """
    b, length = is_video.shape
    # Walk the videos in order over the rows (transformers fills placeholders row-major).
    row_positions = [is_video[r].nonzero().squeeze(1) for r in range(b)]
    row_used = [0] * b
    row = 0
    keep = mask.bool().clone()
    source = torch.arange(length, device=is_video.device).expand(b, length).clone()
    video_rows: list[tuple[int, torch.Tensor, torch.Tensor, tuple[int, ...]]] = []  # (row, slots, order, counts)
    for video, result in zip(videos, results):
        while row < b and row_used[row] >= row_positions[row].numel():
            row += 1
        need = video.num_placeholders
        if row >= b or row_positions[row].numel() - row_used[row] < need:
            raise ScissorError(
                "a video's placeholder run is split across prompts; expected each video inside one prompt"
            )
        run = row_positions[row][row_used[row] : row_used[row] + need]
        row_used[row] += need
        order, slots, origin, counts = _segment_slots(video, result, run, keep_tail)
        keep[row, run] = False
        keep[row, slots] = True
        source[row, slots] = origin
        video_rows.append((row, slots, order, counts))
    return keep, source, video_rows


def _repad(keep: torch.Tensor, source: torch.Tensor, padding_side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept positions packed into rows of the longest row's length, padded on ``padding_side``.

    keep, source: [B, L]. Returns (new source [B, L']: old position of each new one, -1 for
    padding; new position [B, L] of each kept old position, -1 for the others).
    """
    b, length = keep.shape
    new_len = int(keep.sum(1).max()) if b else 0
    new_source = torch.full((b, new_len), -1, dtype=torch.long, device=keep.device)
    # new position of each kept old position, to locate the videos afterwards
    new_pos = torch.full((b, length), -1, dtype=torch.long, device=keep.device)
    for r in range(b):
        kept = keep[r].nonzero().squeeze(1)
        offset = new_len - kept.numel() if padding_side == "left" else 0
        new_source[r, offset : offset + kept.numel()] = source[r, kept]
        new_pos[r, kept] = torch.arange(kept.numel(), device=keep.device) + offset
    return new_source, new_pos


def _gather_per_token(
    model: Any, family: Family, inputs: Mapping[str, Any], new_source: torch.Tensor
) -> dict[str, Any]:
    """``inputs`` with each per-token tensor [B, L] gathered at ``new_source`` [B, L'] (padding
    where it is -1), the video-only keys left out, and the attention mask of the new rows."""
    ids: torch.Tensor = inputs["input_ids"]
    b, length = ids.shape
    given_mask = inputs.get("attention_mask")
    mask = given_mask if given_mask is not None else torch.ones_like(ids)
    valid = new_source >= 0
    gather = new_source.clamp(min=0)
    out: dict[str, Any] = {}
    video_keys = set(family.video_input_keys)
    for key, value in inputs.items():
        if key in video_keys or key == "position_ids" and family.needs_positions:
            continue
        if key in _PER_TOKEN and isinstance(value, torch.Tensor) and tuple(value.shape) == (b, length):
            fill = _pad_token_id(model, ids, mask) if key == "input_ids" else _PER_TOKEN[key]
            out[key] = torch.where(valid, value.gather(1, gather), torch.full_like(gather, fill).to(value.dtype))
        else:
            out[key] = value
    if given_mask is None and not bool(valid.all()):
        out["attention_mask"] = valid.to(torch.long)
    elif given_mask is not None:
        out["attention_mask"] = valid.to(given_mask.dtype)
    return out


def _set_positions(
    model: Any, family: Family, inputs: Mapping[str, Any], out: dict[str, Any], source: torch.Tensor
) -> None:
    """Qwen: ``position_ids`` [4, B, L'] and ``rope_deltas`` [B, 1] for the prepared batch."""
    with torch.no_grad():
        full = family.original_positions(model, inputs)  # [3, B, L]
    valid = source >= 0
    gather = source.clamp(min=0)
    axes = torch.stack([full[a].gather(1, gather) for a in range(full.shape[0])])  # [3, B, L']
    axes = axes.masked_fill(~valid, 0)
    mask = out.get("attention_mask")
    mask = valid.long() if mask is None else mask.long()
    # The text channel is what generate builds for 4-channel positions: cumulative count
    # of real tokens (used by the text model to build the attention mask).
    text = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    out["position_ids"] = torch.cat([text[None], axes.to(text.dtype)], dim=0)
    deltas = axes.amax(dim=(0, 2)) + 1 - mask.sum(-1)  # [B]
    base_model(model).rope_deltas = deltas[:, None].to(full.device)
