"""``dycoke``: DyCoke's temporal token merging (TTM), the pre-LLM stage, to an exact budget.

Tao, Qin, You, Sui, Wang, "DyCoke: Dynamic Compression of Tokens for Fast Video Large
Language Models", CVPR 2025, arXiv 2411.15024. DyCoke works in windows of four frames.
Inside a window (f0, f1, f2, f3) the first frame is kept whole and the other three are
compared position by position with a reference frame: f1 and f2 with f0, f3 with f2
(cosine similarity of the tokens at the same grid position). In each compared frame the
tokens most similar to their reference are merged away (the reference token stands for
them) and the least similar ones are kept. DyCoke's own setting prunes a fixed share of
every compared frame (K = 0.7); its second stage prunes the KV cache during decoding and
is not part of this pre-LLM method.

Budget: the kept count is shared evenly over the compared frames so that exactly K
tokens remain (first frames of windows kept whole). When K is smaller than the first
frames alone, the same rule goes one level up (our extension, needed below ~25 %
retention): each window's first frame is compared with the previous window's first frame
and the whole video's first frame is kept; below N tokens even that frame keeps only K
evenly spaced tokens, and its other tokens go to their most similar kept token.

Merging semantics as in DyCoke: kept tokens go through unchanged; a merged token's
``assignment`` is the kept token at the same position in its reference chain.
Output order: frame-major (representatives ascending).
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.config import ScissorConfig
from ..core.result import CompressionResult
from . import Method, register_method
from ._common import (
    assign_to_nearest,
    check_features,
    even_split,
    evenly_spaced,
    result_from_assignment,
    token_budget,
)

__all__ = ["dycoke_compress", "reference_frames", "WINDOW"]

WINDOW = 4


def reference_frames(frames: int) -> list[int]:
    """Reference frame of each frame (-1 for frame 0): f1, f2 -> f0 and f3 -> f2 in each
    window of four; each window's first frame -> the previous window's first frame."""
    refs = []
    for f in range(frames):
        pos = f % WINDOW
        if pos == 0:
            refs.append(f - WINDOW if f >= WINDOW else -1)
        elif pos == 3:
            refs.append(f - 1)
        else:
            refs.append(f - pos)
    return refs


def dycoke_compress(features: torch.Tensor, config: ScissorConfig, *, options: Any = None) -> CompressionResult:
    """features: [F, N, d] -> exactly K tokens after DyCoke's temporal merging.

    Kept tokens are unchanged originals; ``assignment`` of a merged token is the kept
    token standing for it; ``sizes`` counts them.
    """
    frames, n, _ = check_features(features, "dycoke")
    k = token_budget(config, frames, n, "dycoke")
    device = features.device
    refs = reference_frames(frames)
    normed = torch.nn.functional.normalize(features.float(), dim=-1)  # [F, N, d]

    # Similarity of every token with the token at the same position in its reference frame.
    ref_idx = torch.tensor([max(r, 0) for r in refs], device=device)
    sim = (normed * normed[ref_idx]).sum(-1)  # [F, N]

    compared = [f for f in range(frames) if f % WINDOW != 0]  # level 0 (DyCoke's TTM)
    anchors = [f for f in range(1, frames) if f % WINDOW == 0]  # level 1 (extension)
    keep = [0] * frames
    budget = k
    # Fill from the top of the hierarchy down: frame 0, the windows' first frames, the rest.
    keep[0] = min(n, budget)
    budget -= keep[0]
    for level in (anchors, compared):
        shares = even_split(budget, len(level), n) if level else []
        for f, s in zip(level, shares):
            keep[f] = s
        budget -= sum(shares)

    kept_mask = torch.zeros(frames, n, dtype=torch.bool, device=device)
    kept_mask[0, evenly_spaced(keep[0], n, device=device)] = True
    for f in range(1, frames):
        if keep[f] == 0:
            continue
        if keep[f] >= n:
            kept_mask[f] = True
            continue
        # Keep the least similar tokens (stable: ties go to the smaller position).
        order = torch.sort(sim[f], stable=True).indices
        kept_mask[f, order[: keep[f]]] = True

    flat = features.reshape(frames * n, -1)
    kept = torch.nonzero(kept_mask.flatten()).flatten()  # ascending, [K]
    out_index = torch.full((frames * n,), -1, dtype=torch.long, device=device)
    out_index[kept] = torch.arange(kept.numel(), device=device)
    assignment = out_index.view(frames, n).clone()
    # Frame 0's merged tokens (only below N kept tokens) go to their most similar kept token.
    lost = ~kept_mask[0]
    if bool(lost.any()):
        assignment[0, lost] = assign_to_nearest(flat[:n][lost], flat[kept])
    # Every other merged token follows its reference chain (references come earlier).
    for f in range(1, frames):
        row = assignment[f]
        assignment[f] = torch.where(kept_mask[f], row, assignment[refs[f]])
    return result_from_assignment(features, assignment.flatten(), kept, "dycoke", tokens=flat[kept])


register_method(
    Method(
        "dycoke",
        dycoke_compress,
    )
)
