"""``vidcom2``: Video Compression Commander, frame-adaptive pruning by uniqueness.

Liu, Wang, Ma, Zhang, "Video Compression Commander: Plug-and-Play Inference Acceleration
for Video Large Language Models", arXiv 2505.14454 (2025). Two stages, no attention needed:

1. Frame compression adjustment: a frame that differs more from the whole video (lower
   similarity of its tokens to the video's mean token) is more unique and keeps more
   tokens. Frame weights are ``1 + p_f - mean(p)`` with ``p = softmax(u / temperature)``
   over the frames' uniqueness ``u``; the budget is shared in proportion to them.
2. Adaptive token compression: inside a frame, the tokens least similar to both the
   video's mean token and the frame's mean token are kept; the rest are pruned.

Similarity is a multi-scale Gaussian kernel ``sum_a exp(-|x - c|^2 / (2 a))`` on
L2-normalised tokens, computed on the half of the channels with the lowest variance over
the video (as in the authors' public release). Defaults: temperature 0.01, bandwidths
a = 2^-3 ... 2^1, channel ratio 0.5. The paper's default budget is 25 % retention; here
the budget is exact (K tokens) like every method.

Pruned tokens are discarded (``assignment = -1``); kept tokens go through unchanged.
Output order: frame-major (representatives ascending).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._errors import ScissorError
from ..core.config import ScissorConfig
from ..core.result import CompressionResult
from . import Method, register_method
from ._common import allocate, check_features, token_budget

__all__ = ["VidCom2Options", "vidcom2_compress", "uniqueness_scores"]


@dataclass(frozen=True)
class VidCom2Options:
    """VidCom2 hyperparameters (defaults of the paper / the authors' release).

    Attributes:
        temperature: softmax temperature of the frame-uniqueness weights (0.01).
        bandwidths: the ``a`` of the multi-scale Gaussian similarity (2^-3 ... 2^1).
        channel_ratio: share of channels (lowest variance over the video) used for the
            similarities, in (0, 1] (0.5).
    """

    temperature: float = 0.01
    bandwidths: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0)
    channel_ratio: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.temperature, (int, float)) or not self.temperature > 0:
            raise ScissorError(f"temperature must be > 0, got {self.temperature!r}")
        if not self.bandwidths or any(not isinstance(a, (int, float)) or a <= 0 for a in self.bandwidths):
            raise ScissorError(f"bandwidths must be a non-empty tuple of numbers > 0, got {self.bandwidths!r}")
        if not isinstance(self.channel_ratio, (int, float)) or not 0 < self.channel_ratio <= 1:
            raise ScissorError(f"channel_ratio must be in (0, 1], got {self.channel_ratio!r}")


def _gaussian(x: torch.Tensor, centre: torch.Tensor, bandwidths: tuple[float, ...]) -> torch.Tensor:
    dist = ((x - centre) ** 2).sum(-1)
    return sum(torch.exp(-dist / (2.0 * a)) for a in bandwidths)


def uniqueness_scores(features: torch.Tensor, options: VidCom2Options) -> tuple[torch.Tensor, torch.Tensor]:
    """features: [F, N, d] -> (video similarity [F, N], frame similarity [F, N]); low = unique."""
    frames, n, dim = features.shape
    x = features.float()
    keep = max(1, int(dim * options.channel_ratio))
    if keep < dim:
        variance = x.reshape(frames * n, dim).var(dim=0, unbiased=False)  # [d]
        channels = torch.sort(variance, stable=True).indices[:keep]
        x = x[..., channels]
    x = torch.nn.functional.normalize(x, dim=-1)  # [F, N, d']
    video_centre = x.mean(dim=(0, 1), keepdim=True)  # [1, 1, d']
    frame_centre = x.mean(dim=1, keepdim=True)  # [F, 1, d']
    return _gaussian(x, video_centre, options.bandwidths), _gaussian(x, frame_centre, options.bandwidths)


def vidcom2_compress(
    features: torch.Tensor, config: ScissorConfig, *, options: VidCom2Options | None = None
) -> CompressionResult:
    """features: [F, N, d] -> exactly K kept tokens, more of them in more unique frames."""
    frames, n, _ = check_features(features, "vidcom2")
    options = options or VidCom2Options()
    k = token_budget(config, frames, n, "vidcom2")
    device = features.device
    video_sim, frame_sim = uniqueness_scores(features, options)
    uniqueness = -video_sim.mean(dim=1)  # [F]
    p = torch.softmax((uniqueness - uniqueness.max()) / options.temperature, dim=0)
    weights = 1.0 + p - p.mean()  # [F], mean 1
    per_frame = allocate(weights, k, n)
    score = video_sim + frame_sim  # [F, N]; keep the lowest
    kept = []
    for f, k_f in enumerate(per_frame):
        if k_f:
            order = torch.sort(score[f], stable=True).indices[:k_f]
            kept.append(torch.sort(order).values + f * n)
    kept_idx = torch.cat(kept).to(device)
    flat = features.reshape(frames * n, -1)
    assignment = torch.full((frames * n,), -1, dtype=torch.long, device=device)
    assignment[kept_idx] = torch.arange(kept_idx.numel(), device=device)
    return CompressionResult(
        tokens=flat[kept_idx],
        assignment=assignment,
        representatives=kept_idx,
        sizes=torch.ones(kept_idx.numel(), dtype=torch.long, device=device),
        frames=frames,
        tokens_per_frame=n,
        method="vidcom2",
    )


register_method(
    Method(
        "vidcom2",
        vidcom2_compress,
        options=VidCom2Options,
    )
)
