"""Two-step compression of a video's tokens (LLaVA-Scissor, arXiv 2506.21862, Sec. 3.2).

1. Spatial: SCC on every frame; the frames' component tokens, in frame order -> S tokens.
2. Temporal: one SCC over the S tokens -> K tokens.
3. Merge: every original token joins its most similar of the K tokens (cosine argmax);
   output token j = (temporal token j + sum of its originals) / (1 + count).

All frames of all videos of a call go through the spatial step as one batch; the
temporal step batches the videos with padding; the merge step goes video by video,
in chunks of originals.

Budget split. With ``retention`` / ``max_tokens`` only the final K is given. The
spatial step then keeps S = round(sqrt(K * F * N)) tokens (clipped to [max(K, F), F*N]),
the geometric mean of the input and output sizes, so that both steps reduce the count
by the same factor. Why: the temporal step can only merge what the spatial step left
apart, and the merge step re-attaches every original token anyway, so neither step
should do all the work; an even split in log scale is the neutral choice and keeps the
temporal similarity matrix (S x S) at sqrt of the naive size. ``spatial_retention`` /
``spatial_max_tokens`` set S explicitly. The spatial budget is global over the video's
frames: their spanning-tree edges are ranked together, exactly as one tau would cut them.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from .._errors import ScissorError
from .config import ScissorConfig, similarity_dtype, with_overrides
from .result import CompressionResult
from .exact import canonical_similarity, error_bound, product_units
from .scc import check_tokens, components_of_sets, normalize, normalize_into, segment_mean, unit_dtype

__all__ = ["compress", "merge_into", "budget_sizes"]

_NEG_INF = float("-inf")
# Originals per product in the merge step (see merge_into).
_MERGE_CHUNK = 256


def compress(
    features: torch.Tensor | Sequence[torch.Tensor],
    config: ScissorConfig | None = None,
    **overrides: Any,
) -> CompressionResult | list[CompressionResult]:
    """Compress one video's tokens, or several videos' at once, with SCC.

    features: [frames, tokens_per_frame, dim] float tensor, or a non-empty list of such
    tensors (frames may differ; tokens_per_frame, dim, dtype and device must agree).
    config / overrides: ``ScissorConfig`` fields (``tau``, ``retention``, ``max_tokens``, ...).

    Returns a ``CompressionResult`` (a list of them for a list input); ``tokens`` is
    [K, dim] in the input's dtype and device, in the order the LLM receives them.
    """
    cfg = with_overrides(config, **overrides)
    single = isinstance(features, torch.Tensor)
    videos = check_videos(features)
    results = _compress_videos(videos, cfg)
    return results[0] if single else results


def check_videos(features: object) -> list[torch.Tensor]:
    """Validate one video tensor or a list of them; return the list."""
    if isinstance(features, torch.Tensor):
        videos = [features]
    elif isinstance(features, (list, tuple)):
        if len(features) == 0:
            raise ScissorError("features is an empty list; expected at least one [frames, tokens_per_frame, dim] tensor")
        videos = list(features)
    else:
        raise ScissorError(
            f"features must be a tensor [frames, tokens_per_frame, dim] or a list of them, got {type(features).__name__}"
        )
    for i, v in enumerate(videos):
        name = "features" if isinstance(features, torch.Tensor) else f"features[{i}]"
        check_tokens(v, name, 3, "[frames, tokens_per_frame, dim]")
    first = videos[0]
    for i, v in enumerate(videos[1:], start=1):
        if v.shape[1:] != first.shape[1:]:
            raise ScissorError(
                f"features[{i}] has tokens_per_frame x dim = {tuple(v.shape[1:])}, but features[0] has "
                f"{tuple(first.shape[1:])}; videos of one call must agree on both"
            )
        if v.dtype != first.dtype or v.device != first.device:
            raise ScissorError(
                f"features[{i}] is {v.dtype} on {v.device}, but features[0] is {first.dtype} on {first.device}; "
                "videos of one call must share dtype and device"
            )
    return videos


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def budget_sizes(frames: int, tokens_per_frame: int, cfg: ScissorConfig) -> tuple[int | None, int | None]:
    """(S, K) of one video in budget mode, (None, None) in threshold mode.

    K = round(retention * F * N) (half up, at least 1) or min(max_tokens, F * N).
    S: see the module docstring. Raises ScissorError when the steps that are switched on
    cannot reach K exactly.
    """
    total = frames * tokens_per_frame
    if not cfg.budgeted:
        return None, None
    if cfg.max_tokens is not None:
        k = min(cfg.max_tokens, total)
    else:
        assert cfg.retention is not None
        k = max(1, min(total, _round_half_up(cfg.retention * total)))
    if not cfg.spatial and not cfg.temporal:
        if k != total:
            raise ScissorError(
                f"a budget of {k} < {total} tokens needs the spatial or the temporal step; both are switched off"
            )
        return total, k
    if not cfg.spatial:
        return total, k
    if cfg.spatial_max_tokens is not None:
        s = min(cfg.spatial_max_tokens, total)
    elif cfg.spatial_retention is not None:
        s = max(1, min(total, _round_half_up(cfg.spatial_retention * total)))
    elif cfg.temporal:
        s = _round_half_up(math.sqrt(k * total))
    else:
        s = k
    s = min(max(s, frames), total)  # every frame keeps at least one token
    if not cfg.temporal and s != k:
        raise ScissorError(
            f"with the temporal step off, the budget ({k} tokens) must be at least the number of frames ({frames})"
        )
    if s < k:
        raise ScissorError(f"the spatial budget ({s} tokens) must be at least the final budget ({k} tokens)")
    return s, k


def _pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """list of [m_i, d] -> ([B, max m, d] zero padded, [B] lengths)."""
    lengths = torch.tensor([r.shape[0] for r in rows], device=rows[0].device)
    if len(rows) == 1:
        return rows[0][None], lengths  # nothing to pad: no copy
    return pad_sequence(rows, batch_first=True), lengths


def merge_into(
    originals: list[torch.Tensor],
    targets: list[torch.Tensor],
    acc: torch.dtype,
    sim_dtype: torch.dtype,
    max_matrix_bytes: int = 1 << 30,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The merge step for B videos.

    originals: B tensors [m_i, d]; targets: B tensors [k_i, d] (the kept tokens).
    Each original joins its most similar target (cosine argmax, ties to the smaller
    index); output j = (target j + sum of its originals) / (1 + count).
    With float32 / bfloat16 products the argmax is exact: an original whose best
    targets lie within the products' error bound of each other is decided by their
    canonical similarities (``exact.py``), so both dtypes assign alike.
    Returns (merged tokens: B tensors [k_i, d] in ``acc``, assignment: B tensors [m_i]).
    """
    merged, assignment = [], []
    for o, t in zip(originals, targets):
        a = _assign(o, t, sim_dtype, max_matrix_bytes)
        k = t.shape[0]
        sums = torch.zeros(k, o.shape[-1], dtype=acc, device=o.device).index_add_(0, a, o.to(acc))
        counts = torch.bincount(a, minlength=k).to(acc)
        merged.append((t.to(acc) + sums) / (1.0 + counts)[:, None])
        assignment.append(a)
    return merged, assignment


def _assign(o: torch.Tensor, t: torch.Tensor, sim_dtype: torch.dtype, max_matrix_bytes: int) -> torch.Tensor:
    """o: [m, d] originals, t: [k, d] targets -> [m] int64 index of each original's most similar target."""
    unit = unit_dtype(sim_dtype)
    tn, t_res = product_units(normalize(t, unit), sim_dtype)  # [k, d]
    k, m = tn.shape[0], o.shape[0]
    exact = sim_dtype != torch.float64
    # Chunks of originals: (k x chunk) products are tall and narrow, the shape CPU
    # kernels run fastest, and memory stays bounded for long videos. The chunk's unit
    # vectors and its product go to buffers reused for every chunk: fresh chunk-sized
    # temporaries interleaved with the small results fragment the heap (resident
    # memory then grows like the full k x m), and fresh pages cost page faults.
    chunk = max(1, min(_MERGE_CHUNK, m, max_matrix_bytes // (4 * k)))
    buf = torch.empty(k * chunk, dtype=sim_dtype, device=o.device)
    unit_buf = torch.empty(chunk, tn.shape[1], dtype=unit, device=o.device)
    a = torch.empty(m, dtype=torch.int64, device=o.device)
    for start in range(0, m, chunk):
        c, c_res = product_units(normalize_into(o[start : start + chunk], unit_buf), sim_dtype)
        sim = torch.mm(tn, c.mT, out=buf[: k * c.shape[0]].view(k, c.shape[0]))
        if exact and k > 1:
            # Two best per column: a column whose runner-up is more than two bounds
            # below its best is decided (its best is unique, so topk's pick is the argmax);
            # the canonical best is never more than two bounds below the column maximum.
            top_w, top = sim.topk(2, dim=0)  # [2, c]
            best_w, best = top_w[0], top[0]
            bound = error_bound(o.shape[1], sim_dtype, o.device, float(torch.maximum(t_res, c_res)))
            floor = best_w.float() - 2 * float(bound.at(best_w.abs().max()))
            if bool((top_w[1].float() >= floor).any()):
                best = _exact_argmax(sim, floor, best, t, o[start : start + c.shape[0]])
        else:
            best = sim.argmax(dim=0)  # ties go to the smaller index
        a[start : start + c.shape[0]] = best
    return a


def _exact_argmax(
    sim: torch.Tensor, floor: torch.Tensor, best: torch.Tensor, t: torch.Tensor, o: torch.Tensor
) -> torch.Tensor:
    """sim: [k, c] products, floor: [c] column max - 2 bounds, best: [c] argmax -> [c] canonical argmax.

    Targets at or above the floor are the only candidates for the canonical best;
    columns with one candidate are decided. Canonical ties go to the smaller index.
    """
    cand = sim >= floor[None, :]  # [k, c]
    open_cols = (cand.sum(dim=0) > 1).nonzero().squeeze(1)
    ti, ci = cand[:, open_cols].nonzero().unbind(1)  # candidate target, open column
    col = open_cols[ci]
    vals = canonical_similarity(t, ti, o, col)
    top = torch.full((sim.shape[1],), float("-inf"), device=sim.device).scatter_reduce_(0, col, vals, "amax")
    winner = torch.where(vals == top[col], ti, sim.shape[0])
    first = torch.full((sim.shape[1],), sim.shape[0], dtype=torch.int64, device=sim.device)
    first.scatter_reduce_(0, col, winner, "amin")
    return torch.where(first < sim.shape[0], first, best)


def _split(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    return list(torch.split(x, sizes))


def _compress_videos(videos: list[torch.Tensor], cfg: ScissorConfig) -> list[CompressionResult]:
    V = len(videos)
    device, dtype = videos[0].device, videos[0].dtype
    N, d = videos[0].shape[1], videos[0].shape[2]
    frames = [int(v.shape[0]) for v in videos]
    totals = [f * N for f in frames]
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    sim_dt = similarity_dtype(cfg)
    sizes = [budget_sizes(f, N, cfg) for f in frames]
    budgeted = cfg.budgeted

    x_all = videos[0] if V == 1 else torch.cat(videos, dim=0)  # [sum F, N, d]
    flat_all = x_all.reshape(-1, d)
    group = torch.repeat_interleave(torch.arange(V, device=device), torch.tensor(frames, device=device))

    # 1. Spatial step: every frame of every video in one batch.
    if cfg.spatial:
        keep = torch.tensor([s for s, _ in sizes], device=device) if budgeted else None
        sc = components_of_sets(
            x_all,
            torch.full((x_all.shape[0],), N, device=device),
            tau=cfg.tau,
            keep=keep,
            group=group,
            approximate=cfg.approximate,
            epsilon=cfg.epsilon,
            seed=cfg.seed,
            sim_dtype=sim_dt,
        )
        per_frame = sc.count  # [sum F]
        offsets = per_frame.cumsum(0) - per_frame
        labels_all = (sc.labels + offsets[:, None]).reshape(-1)  # [sum F * N] into all spatial tokens
        s_total = int(per_frame.sum())
        spatial_all = segment_mean(flat_all, labels_all, s_total, acc)
        reps_valid = sc.representatives >= 0
        frame_base = torch.arange(x_all.shape[0], device=device)[:, None] * N
        reps_all = (sc.representatives + frame_base)[reps_valid]  # [s_total], global original index
        s_sizes = torch.zeros(V, dtype=torch.int64, device=device).index_add_(0, group, per_frame).tolist()
        first_frame = [sum(frames[:v]) for v in range(V)]
        s_thr = [float(sc.cut_threshold[i]) for i in first_frame]
    else:
        labels_all = torch.arange(flat_all.shape[0], device=device)
        spatial_all = flat_all.to(acc)
        reps_all = labels_all
        s_sizes = totals
        s_thr = [None] * V
    spatial_tokens = _split(spatial_all, s_sizes)
    video_start = [sum(totals[:v]) for v in range(V)]
    spatial_reps = [r - video_start[v] for v, r in enumerate(_split(reps_all, s_sizes))]
    spatial_base = [sum(s_sizes[:v]) for v in range(V)]
    spatial_labels = [lab - spatial_base[v] for v, lab in enumerate(_split(labels_all, totals))]

    # 2. Temporal step: one SCC per video, videos batched with padding.
    if cfg.temporal:
        xs, s_len = _pad(spatial_tokens)
        keep = torch.tensor([k for _, k in sizes], device=device) if budgeted else None
        tc = components_of_sets(
            xs,
            s_len,
            tau=cfg.tau,
            keep=keep,
            approximate=cfg.approximate,
            epsilon=cfg.epsilon,
            seed=cfg.seed + 1,  # an independent stream from the spatial step's
            max_matrix_bytes=cfg.max_matrix_bytes,
            sim_dtype=sim_dt,
        )
        k_sizes = tc.count.tolist()
        temporal_labels = [tc.labels[v, : s_sizes[v]] for v in range(V)]
        temporal_reps = [tc.representatives[v, : k_sizes[v]] for v in range(V)]
        temporal_tokens = [segment_mean(spatial_tokens[v], temporal_labels[v], k_sizes[v], acc) for v in range(V)]
        t_thr = [float(t) for t in tc.cut_threshold.tolist()]
    else:
        k_sizes = s_sizes
        temporal_labels = [torch.arange(s, device=device) for s in s_sizes]
        temporal_reps = temporal_labels
        temporal_tokens = spatial_tokens
        t_thr = [None] * V

    # 3. Merge step.
    originals = _split(flat_all, totals)
    if cfg.merge:
        tokens, assignment = merge_into(originals, temporal_tokens, acc, sim_dt, cfg.max_matrix_bytes)
    else:
        tokens = temporal_tokens
        assignment = [temporal_labels[v][spatial_labels[v]] for v in range(V)]

    results = []
    for v in range(V):
        results.append(
            CompressionResult(
                tokens=tokens[v].to(dtype),
                assignment=assignment[v],
                representatives=spatial_reps[v][temporal_reps[v]],
                sizes=torch.bincount(assignment[v], minlength=k_sizes[v]),
                frames=frames[v],
                tokens_per_frame=N,
                spatial_tokens=spatial_tokens[v].to(dtype),
                spatial_labels=spatial_labels[v],
                temporal_labels=temporal_labels[v],
                spatial_representatives=spatial_reps[v],
                spatial_threshold=s_thr[v],
                temporal_threshold=t_thr[v],
                method="scissor",
            )
        )
    return results
