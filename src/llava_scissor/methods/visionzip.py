"""``visionzip``: dominant tokens by vision-tower attention plus merged contextual tokens.

Yang, Chen, Tian, Wang, Chen, Yu, Jia, "VisionZip: Longer is Better but Not Necessary in
Vision Language Models", CVPR 2025, arXiv 2412.04467. Per image (here: per frame):

1. Dominant tokens: the tokens that receive the most attention inside the vision tower
   (from the [CLS] token; for SigLIP, which has none, the attention a token receives
   averaged over all queries and heads). They go to the LLM unchanged.
2. Contextual tokens: among the remaining tokens, ``c`` targets are taken at a regular
   stride; every other remaining token joins its most similar target and each target
   becomes the mean of its group. VisionZip measures the similarity on the attention
   keys; here it is the cosine of the features themselves (keys are not part of the
   compressed features).

Paper default: dominant : contextual = 54 : 10 = 5.4 (also 108 : 20, 162 : 30).

Side input ``vision_attention: [F, N]``: attention each (pooled) token receives in the
vision tower; the Hugging Face integration supplies it. The budget K is spread evenly
over the frames; a frame with ``k`` tokens keeps ``round(k * 5.4 / 6.4)`` dominant and the
rest contextual (at least one contextual token when ``k >= 2``, so that no frame drops its
context entirely). Frames with no token at all (K < F) are discarded (``assignment = -1``).
Output order: frame-major, representatives ascending (a contextual token is represented by
its target).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._errors import ScissorError
from ..core.config import ScissorConfig
from ..core.result import CompressionResult
from . import Method, register_method
from ._common import (
    assign_to_nearest,
    check_features,
    check_side_input,
    even_split,
    result_from_assignment,
    token_budget,
)

__all__ = ["VisionZipOptions", "visionzip_compress", "split_budget"]


@dataclass(frozen=True)
class VisionZipOptions:
    """VisionZip hyperparameters (paper defaults).

    Attributes:
        dominant_ratio: dominant : contextual tokens per frame (5.4 = 54 : 10).
    """

    dominant_ratio: float = 5.4

    def __post_init__(self) -> None:
        if isinstance(self.dominant_ratio, bool) or not isinstance(self.dominant_ratio, (int, float)):
            raise ScissorError(f"dominant_ratio must be a number > 0, got {self.dominant_ratio!r}")
        if not self.dominant_ratio > 0:
            raise ScissorError(f"dominant_ratio must be > 0, got {self.dominant_ratio}")


def split_budget(tokens: int, dominant_ratio: float, available: int) -> tuple[int, int]:
    """(dominant, contextual) for a frame of ``available`` tokens keeping ``tokens``."""
    dominant = min(tokens, int(tokens * dominant_ratio / (dominant_ratio + 1) + 0.5))
    if tokens >= 2 and dominant == tokens and tokens < available:
        dominant -= 1
    return dominant, tokens - dominant


_HINT = (
    "pass vision_attention=<[frames, tokens_per_frame] attention each token receives in the "
    "vision tower>, or run it through llava_scissor.prepare/apply, which extracts it"
)


def visionzip_compress(
    features: torch.Tensor,
    config: ScissorConfig,
    *,
    options: VisionZipOptions | None = None,
    vision_attention: torch.Tensor | None = None,
) -> CompressionResult:
    """features: [F, N, d], vision_attention: [F, N] -> K tokens (dominant + contextual per frame)."""
    frames, n, _ = check_features(features, "visionzip")
    attention = check_side_input(vision_attention, "vision_attention", "visionzip", (frames, n), _HINT)
    options = options or VisionZipOptions()
    k = token_budget(config, frames, n, "visionzip")
    device = features.device
    attention = attention.to(device)
    flat = features.reshape(frames * n, -1)

    assignment = torch.full((frames * n,), -1, dtype=torch.long, device=device)
    reps: list[torch.Tensor] = []
    tokens: list[torch.Tensor] = []
    out = 0
    for f, k_f in enumerate(even_split(k, frames, n)):
        if k_f == 0:
            continue
        base = f * n
        dominant, contextual = split_budget(k_f, options.dominant_ratio, n)
        # Highest attention first; ties go to the smaller position.
        order = torch.sort(-attention[f].float(), stable=True).indices
        dom = torch.sort(order[:dominant]).values
        rest = torch.sort(order[dominant:]).values  # remaining positions, ascending
        frame_reps = [dom]
        frame_tokens = [features[f, dom]]
        labels = torch.full((n,), -1, dtype=torch.long, device=device)
        if contextual > 0 and rest.numel() > 0:
            stride = max(1, rest.numel() // contextual)
            targets = rest[::stride][:contextual]
            group = assign_to_nearest(features[f, rest], features[f, targets])  # [len(rest)]
            is_target = torch.zeros(n, dtype=torch.bool, device=device)
            is_target[targets] = True
            target_slot = torch.full((n,), -1, dtype=torch.long, device=device)
            target_slot[targets] = torch.arange(targets.numel(), device=device)
            # A target always belongs to its own group.
            group = torch.where(is_target[rest], target_slot[rest], group)
            sums = torch.zeros(targets.numel(), flat.shape[1], dtype=torch.float32, device=device)
            sums.index_add_(0, group, features[f, rest].float())
            counts = torch.bincount(group, minlength=targets.numel())
            frame_reps.append(targets)
            frame_tokens.append((sums / counts.unsqueeze(1)).to(features.dtype))
            labels[rest] = dominant + group
        labels[dom] = torch.arange(dom.numel(), device=device)
        positions = torch.cat(frame_reps)  # [k_f] positions: dominant, then targets
        order_out = torch.sort(positions).indices  # frame order: ascending positions
        rank = torch.empty_like(order_out)
        rank[order_out] = torch.arange(order_out.numel(), device=device)
        valid = labels >= 0
        assignment[base : base + n] = torch.where(valid, rank[labels.clamp(min=0)] + out, labels)
        reps.append(positions[order_out] + base)
        tokens.append(torch.cat(frame_tokens)[order_out])
        out += positions.numel()

    # Representatives ascend already (frame by frame), so no reordering happens.
    return result_from_assignment(features, assignment, torch.cat(reps), "visionzip", tokens=torch.cat(tokens))


register_method(
    Method(
        "visionzip",
        visionzip_compress,
        side_inputs=("vision_attention",),
        options=VisionZipOptions,
    )
)
