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

Host reads. Sizes and thresholds are read back to the host in one transfer at the end
(``_read_back``). A sync-free call (``ScissorConfig.sync_free``, the default on CUDA)
reads nothing else: one read per call. A budget (not sampled) knows every size in
advance. In threshold mode the spatial step's S tokens of a video go into its F * N
rows, those from S on empty and masked out of the temporal step (``_Plan.bounded``;
a sampled draw is ranked on the device among the real rows); the merge step runs on
the temporal step's rows with those past K masked, and S and K come with the final
read. Two reads where an F * N x F * N matrix would exceed ``max_matrix_bytes``: it
would go strip by strip (not sync-free), so S is read first and sizes the temporal step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from .._errors import ScissorError
from .config import ScissorConfig, similarity_dtype, with_overrides
from .result import CompressionResult
from ._products import product_dtype
from .exact import canonical_similarity, error_bound, product_units
from .scc import (
    check_tokens,
    components_of_sets,
    normalize,
    normalize_into,
    segment_mean,
    segment_sizes,
    to_device,
    unit_dtype,
)

__all__ = ["compress", "merge_into", "budget_sizes"]

_NEG_INF = float("-inf")
# Originals per product in the merge step (see merge_into).
_MERGE_CHUNK = 256
# Sync-free merge: room for this many near-tied candidate targets per original, on
# average over a chunk (columns with a near-tie are a few per cent, with two or three).
_MERGE_CANDIDATES = 4


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
    videos = check_videos(features, finite=False)
    if not _sync_free(cfg, videos[0].device):
        check_videos(features)  # NaN / Inf now, before any work
    try:
        results = _compress_videos(videos, cfg)
    except _NonFinite:
        check_videos(features)  # raises, naming the video and the count
        raise
    return results[0] if single else results


class _NonFinite(Exception):
    """A sync-free call found NaN / Inf in its input (known only at its one read)."""


def _sync_free(cfg: ScissorConfig, device: torch.device) -> bool:
    return device.type == "cuda" if cfg.sync_free is None else cfg.sync_free


def _fits_in_memory(cfg: ScissorConfig, rows: int) -> bool:
    """Whether a rows x rows similarity matrix stays under ``max_matrix_bytes`` (no strips).

    A sync-free call that does not know S in advance (threshold mode, sampling) sizes its
    temporal step by F * N rows instead of reading S where that matrix fits (strips are
    not sync-free). It is larger than S x S, by little at the usual tau (S is most of F * N).
    """
    itemsize = 8 if similarity_dtype(cfg) == torch.float64 else 4
    return rows * rows * itemsize <= cfg.max_matrix_bytes


def check_videos(features: object, finite: bool = True) -> list[torch.Tensor]:
    """Validate one video tensor or a list of them; return the list.

    finite: also check for NaN / Inf (one host read per video).
    """
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
        check_tokens(v, name, 3, "[frames, tokens_per_frame, dim]", finite=finite)
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


def check_matrix_memory(sizes: list[tuple[int | None, int | None]], cfg: ScissorConfig) -> None:
    """Refuse a sampled budget whose temporal step needs an S x S matrix above ``cfg.max_matrix_bytes``.

    sizes: (S, K) per video (``budget_sizes``). Threshold mode and exact budgets go strip
    by strip above the cap; a sampled budget's cut needs the whole matrix. Failing here,
    before any work, beats an out-of-memory kill halfway through.
    """
    if not (cfg.budgeted and cfg.temporal and cfg.approximate):
        return
    itemsize = 8 if cfg.similarity_dtype == "float64" else 4
    s = max(s for s, _ in sizes if s is not None)
    need = s * s * itemsize
    if need > cfg.max_matrix_bytes:
        raise ScissorError(
            f"this sampled budget's temporal step compares S = {s:,} spatial tokens, a {need / 2**20:,.0f} MiB "
            f"similarity matrix held in memory, above max_matrix_bytes = {cfg.max_matrix_bytes / 2**20:,.0f} MiB. "
            "Raise max_matrix_bytes if the memory is there, lower S (spatial_retention / spatial_max_tokens), "
            "or use approximate=False or threshold mode (tau), which go strip by strip at any length"
        )


def _pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """list of [m_i, d] -> ([B, max m, d] zero padded, [B] lengths on the CPU)."""
    lengths = torch.tensor([r.shape[0] for r in rows])
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
    merged, assignment, _ = _merge(originals, targets, acc, sim_dtype, max_matrix_bytes)
    return merged, assignment


def _merge(
    originals: list[torch.Tensor],
    targets: list[torch.Tensor],
    acc: torch.dtype,
    sim_dtype: torch.dtype,
    max_matrix_bytes: int,
    target_count: list[torch.Tensor] | None = None,
    sync_free: bool = False,
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """``merge_into``, plus: target_count, optional B 0-d tensors (only the first
    target_count[i] targets take part, the rest are padding); sync_free, no host reads
    (fixed-size buffers). The third output: [] bool, a sync-free call met more
    near-ties than its buffers hold."""
    merged, assignment = [], []
    unresolved = torch.zeros((), dtype=torch.bool, device=originals[0].device)
    for v, (o, t) in enumerate(zip(originals, targets)):
        a, over = _assign(o, t, sim_dtype, max_matrix_bytes, None if target_count is None else target_count[v], sync_free)
        unresolved = unresolved | over
        sums = torch.zeros(t.shape[0], o.shape[-1], dtype=acc, device=o.device).index_add_(0, a, o.to(acc))
        counts = segment_sizes(a, t.shape[0]).to(acc)
        merged.append((t.to(acc) + sums) / (1.0 + counts)[:, None])
        assignment.append(a)
    return merged, assignment, unresolved


def _assign(
    o: torch.Tensor,
    t: torch.Tensor,
    sim_dtype: torch.dtype,
    max_matrix_bytes: int,
    count: torch.Tensor | None = None,
    sync_free: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """o: [m, d] originals, t: [k, d] targets -> ([m] int64 most similar target, [] bool unresolved).

    count: optional 0-d tensor, targets from it on are padding (never chosen).
    """
    sim_dtype = product_dtype(sim_dtype, o.device)  # bfloat16 only where it pays (same output)
    unit = unit_dtype(sim_dtype)
    t_units = normalize(t, unit)  # [k, d]; near-ties get exact values from these
    tn, t_res = product_units(t_units, sim_dtype)
    k, m = tn.shape[0], o.shape[0]
    exact = sim_dtype != torch.float64
    padding = None if count is None else (torch.arange(k, device=o.device) >= count)[:, None]
    # Chunks of originals: (k x chunk) products are tall and narrow, the shape CPU
    # kernels run fastest, and memory stays bounded for long videos. The chunk's unit
    # vectors and its product go to buffers reused for every chunk: fresh chunk-sized
    # temporaries interleaved with the small results fragment the heap (resident
    # memory then grows like the full k x m), and fresh pages cost page faults.
    chunk = max(1, min(_MERGE_CHUNK, m, max_matrix_bytes // (4 * k)))
    buf = torch.empty(k * chunk, dtype=sim_dtype, device=o.device)
    unit_buf = torch.empty(chunk, tn.shape[1], dtype=unit, device=o.device)
    a = torch.empty(m, dtype=torch.int64, device=o.device)
    unresolved = torch.zeros((), dtype=torch.bool, device=o.device)
    for start in range(0, m, chunk):
        c_units = normalize_into(o[start : start + chunk], unit_buf)
        c, c_res = product_units(c_units, sim_dtype)
        sim = torch.mm(tn, c.mT, out=buf[: k * c.shape[0]].view(k, c.shape[0]))
        if padding is not None:
            sim.masked_fill_(padding, _NEG_INF)
        if exact and k > 1:
            # Two best per column: a column whose runner-up is more than two bounds
            # below its best is decided (its best is unique, so topk's pick is the argmax);
            # the canonical best is never more than two bounds below the column maximum.
            top_w, top = sim.topk(2, dim=0)  # [2, c]
            best_w, best = top_w[0], top[0]
            bound = error_bound(o.shape[1], sim_dtype, o.device, torch.maximum(t_res, c_res))
            floor = best_w.float() - (2 * bound.at(best_w.abs().max())).float()
            if sync_free:
                room = _MERGE_CANDIDATES * c.shape[0]
                best, over = _exact_argmax(sim, floor, best, t_units, c_units, room)
                unresolved = unresolved | over
            elif bool((top_w[1].float() >= floor).any()):
                best, _ = _exact_argmax(sim, floor, best, t_units, c_units)
        else:
            best = sim.argmax(dim=0)  # ties go to the smaller index
        a[start : start + c.shape[0]] = best
    return a, unresolved


def _exact_argmax(
    sim: torch.Tensor,
    floor: torch.Tensor,
    best: torch.Tensor,
    t: torch.Tensor,
    o: torch.Tensor,
    capacity: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """sim: [k, c] products, floor: [c] column max - 2 bounds, best: [c] argmax -> ([c] canonical argmax, [] bool).

    t: [k, d], o: [c, d] the float32 unit vectors of the targets and of the originals.

    Targets at or above the floor are the only candidates for the canonical best;
    columns with one candidate are decided. Canonical ties go to the smaller index.
    capacity: None sizes the work from the data (host reads); an int fixes it (no host
    reads), and the flag returned says whether the candidates did not fit.
    """
    k, c = sim.shape
    cand = sim >= floor[None, :]  # [k, c]
    cand &= (cand.sum(dim=0) > 1)[None, :]  # only columns with a choice to make
    if capacity is None:
        ti, col = cand.nonzero().unbind(1)  # candidate target, column
        used = None
    else:
        found = cand.sum()
        ti, col = torch.nonzero_static(cand, size=capacity, fill_value=0).unbind(1)
        used = torch.arange(capacity, device=sim.device) < found
    vals = canonical_similarity(t, ti, o, col, dedupe=capacity is None, unit=True)
    if used is not None:
        vals = torch.where(used, vals, _NEG_INF)
    top = torch.full((c,), _NEG_INF, device=sim.device).scatter_reduce_(0, col, vals, "amax")
    winner = torch.where(vals == top[col], ti, k)
    if used is not None:
        winner = torch.where(used, winner, k)
    first = torch.full((c,), k, dtype=torch.int64, device=sim.device)
    first.scatter_reduce_(0, col, winner, "amin")
    unresolved = torch.zeros((), dtype=torch.bool, device=sim.device) if used is None else found > capacity
    return torch.where(first < k, first, best), unresolved


def _split(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    return list(torch.split(x, sizes))


def _read_back(**parts: torch.Tensor) -> dict[str, list[float]]:
    """Named device tensors -> their values as host lists, in one transfer.

    Everything the host needs from a step (sizes, thresholds, flags) goes through here,
    packed into one float64 vector (exact for integers below 2^53 and for float32).
    """
    flat = torch.cat([p.reshape(-1).to(torch.float64) for p in parts.values()])
    values = flat.tolist()
    out, i = {}, 0
    for name, p in parts.items():
        out[name] = values[i : i + p.numel()]
        i += p.numel()
    return out


def _ints(values: list[float]) -> list[int]:
    return [int(v) for v in values]


def _finite(videos: list[torch.Tensor]) -> torch.Tensor:
    """[] bool on the device: every value of every video is finite (one pass each)."""
    flags = [torch.isfinite(torch.stack(torch.aminmax(v))).all() for v in videos]
    return torch.stack(flags).all()


@dataclass(frozen=True)
class _Plan:
    """What a call knows before any work."""

    cfg: ScissorConfig
    sizes: list[tuple[int | None, int | None]]  # (S, K) per video, budget mode
    sizes_known: bool  # a budget is met exactly unless sampling removed the edges it needs
    # Sync-free with sizes unknown (tau, sampling): the spatial step's tokens live in
    # F * N rows per video, those from S on empty, so nothing waits for S.
    bounded: bool
    sync_free: bool
    sim_dtype: torch.dtype
    acc: torch.dtype  # accumulation dtype of the means


@dataclass(frozen=True)
class _StepOut:
    """One SCC step over every video of a call."""

    labels: list[torch.Tensor]  # per video: [inputs] index of the step's token
    tokens: list[torch.Tensor]  # per video: [rows, d] component means in ``acc``
    reps: list[torch.Tensor]  # per video: [rows] representative (step input index)
    sizes: list[int] | None  # tokens per video; None: only on the device (``count``)
    count: list[torch.Tensor]  # per video: [] tokens, on the device
    unresolved: torch.Tensor  # [] bool (SetComponents.unresolved)
    threshold: torch.Tensor  # [V] the step's threshold


def _spatial_step(plan: _Plan, x_all: torch.Tensor, frames: list[int]) -> _StepOut:
    """SCC of every frame of every video in one batch. x_all: [sum F, N, d].

    Labels and representatives are in frame-major original-token indices of each video.
    """
    cfg, device = plan.cfg, x_all.device
    V, N = len(frames), x_all.shape[1]
    # Small index tensors are built on the host and copied over: no read-back needed.
    group = torch.repeat_interleave(torch.arange(V), torch.tensor(frames))  # [sum F], CPU
    sc = components_of_sets(
        x_all,
        torch.full((x_all.shape[0],), N),
        tau=cfg.tau,
        keep=torch.tensor([s for s, _ in plan.sizes]) if cfg.budgeted else None,
        group=group,
        approximate=cfg.approximate,
        epsilon=cfg.epsilon,
        seed=cfg.seed,
        sim_dtype=plan.sim_dtype,
        sync_free=plan.sync_free,
    )
    per_frame = sc.count  # [sum F]
    offsets = per_frame.cumsum(0) - per_frame
    per_video = torch.zeros(V, dtype=torch.int64, device=device).index_add_(0, to_device(group, device), per_frame)
    sizes: list[int] | None
    frame_start = [sum(frames[:v]) for v in range(V)]
    if plan.bounded:
        # Video v's tokens start at row frame_start[v] * N, its largest possible start.
        sizes, rows = None, [f * N for f in frames]
        # offsets count the tokens of earlier frames of all videos; keep the video's own.
        group_dev = to_device(group, device)
        first = to_device(torch.tensor(frame_start), device)
        offsets = offsets - offsets.index_select(0, first)[group_dev] + first[group_dev] * N
        base = [s * N for s in frame_start]
    else:
        sizes = [s for s, _ in plan.sizes] if plan.sizes_known else _ints(_read_back(sizes=per_video)["sizes"])
        rows = sizes
        base = [sum(sizes[:v]) for v in range(V)]
    total = sum(rows)
    labels = (sc.labels + offsets[:, None]).reshape(-1)  # [sum F * N] into all spatial tokens
    tokens = segment_mean(x_all.reshape(-1, x_all.shape[2]), labels, total, plan.acc)
    # Frame f's component c is spatial token offsets[f] + c; padding goes to a spare slot.
    reps = sc.representatives  # [sum F, Cmax], -1 padded
    slot = torch.where(reps >= 0, offsets[:, None] + torch.arange(reps.shape[1], device=device), total)
    frame_base = torch.arange(x_all.shape[0], device=device)[:, None] * N
    reps_all = torch.zeros(total + 1, dtype=torch.int64, device=device)
    reps_all = reps_all.scatter_(0, slot.reshape(-1), (reps + frame_base).reshape(-1))[:total]
    totals = [f * N for f in frames]
    return _StepOut(
        labels=[lab - base[v] for v, lab in enumerate(_split(labels, totals))],
        tokens=_split(tokens, rows),
        reps=[r - frame_start[v] * N for v, r in enumerate(_split(reps_all, rows))],
        sizes=sizes,
        count=list(per_video),
        unresolved=sc.unresolved,
        threshold=sc.cut_threshold.index_select(0, to_device(torch.tensor(frame_start), device)),
    )


def _temporal_step(plan: _Plan, spatial: list[torch.Tensor], counts: list[torch.Tensor] | None = None) -> _StepOut:
    """One SCC per video over its spatial tokens (B tensors [S_v, d]), videos batched with padding.

    Sync-free with sizes unknown: each video's tokens have S_v rows, those from K on
    empty (K stays on the device until the call's last read). counts: the videos' real
    spatial tokens when only the device knows them (``_Plan.bounded``); the rows past
    them are empty.
    """
    cfg = plan.cfg
    xs, s_len = _pad(spatial)
    tc = components_of_sets(
        xs,
        s_len if counts is None else torch.stack(counts),
        tau=cfg.tau,
        keep=torch.tensor([k for _, k in plan.sizes]) if cfg.budgeted else None,
        approximate=cfg.approximate,
        epsilon=cfg.epsilon,
        seed=cfg.seed + 1,  # an independent stream from the spatial step's
        max_matrix_bytes=cfg.max_matrix_bytes,
        sim_dtype=plan.sim_dtype,
        sync_free=plan.sync_free,
    )
    s_sizes = s_len.tolist()  # a host tensor: no device read
    sizes: list[int] | None
    if plan.sizes_known:
        sizes = [k for _, k in plan.sizes]
    elif plan.sync_free:
        sizes = None
    else:
        sizes = _ints(_read_back(sizes=tc.count)["sizes"])
    rows = s_sizes if sizes is None else sizes
    labels = [tc.labels[v, :s] for v, s in enumerate(s_sizes)]
    means = labels
    if counts is not None:
        # Empty rows (labelled 0 like any padding) go to a spare segment, dropped below.
        means = [
            torch.where(torch.arange(s, device=xs.device) < counts[v], labels[v], rows[v])
            for v, s in enumerate(s_sizes)
        ]
    return _StepOut(
        labels=labels,
        tokens=[segment_mean(spatial[v], means[v], r + 1, plan.acc)[:r] for v, r in enumerate(rows)],
        reps=[tc.representatives[v, :r] for v, r in enumerate(rows)],
        sizes=sizes,
        count=list(tc.count),
        unresolved=tc.unresolved,
        threshold=tc.cut_threshold,
    )


def _identity_step(flat: list[torch.Tensor], acc: torch.dtype, counts: list[torch.Tensor] | None = None) -> _StepOut:
    """A step switched off: every input is its own token.

    counts: the real inputs per video when only the device knows them (the rows past
    them are empty); sizes are then unknown to the host.
    """
    device = flat[0].device
    rows = [x.shape[0] for x in flat]
    ident = [torch.arange(m, device=device) for m in rows]
    return _StepOut(
        labels=ident,
        tokens=[x.to(acc) for x in flat],
        reps=ident,
        sizes=rows if counts is None else None,
        count=[torch.full((), m, dtype=torch.int64, device=device) for m in rows] if counts is None else counts,
        unresolved=torch.zeros((), dtype=torch.bool, device=device),
        threshold=torch.zeros(len(flat), device=device),
    )


def _compress_videos(videos: list[torch.Tensor], cfg: ScissorConfig) -> list[CompressionResult]:
    V = len(videos)
    device, dtype = videos[0].device, videos[0].dtype
    N, d = videos[0].shape[1], videos[0].shape[2]
    frames = [int(v.shape[0]) for v in videos]
    sync_free = _sync_free(cfg, device)
    sizes_known = cfg.budgeted and not cfg.approximate
    plan = _Plan(
        cfg=cfg,
        sizes=[budget_sizes(f, N, cfg) for f in frames],
        sizes_known=sizes_known,
        sync_free=sync_free,
        sim_dtype=similarity_dtype(cfg),
        acc=torch.float64 if dtype == torch.float64 else torch.float32,
        bounded=sync_free and cfg.spatial and not sizes_known and _fits_in_memory(cfg, max(frames) * N),
    )
    check_matrix_memory(plan.sizes, cfg)
    flags: dict[str, torch.Tensor] = {}
    if plan.sync_free:
        flags["finite"] = _finite(videos)
    x_all = videos[0] if V == 1 else torch.cat(videos, dim=0)  # [sum F, N, d]
    if plan.sync_free:
        # NaN / Inf are only known at the end; until then the call must not index out of
        # range on them (on a GPU a device-side assert ends the process), so zeros
        # stand in for them. The result is then discarded and the input rejected.
        x_all = torch.nan_to_num(x_all, 0.0, 0.0, 0.0)
    originals = _split(x_all.reshape(-1, d), [f * N for f in frames])

    # 1. Spatial step, 2. temporal step, 3. merge step.
    spatial = _spatial_step(plan, x_all, frames) if cfg.spatial else _identity_step(originals, plan.acc)
    s_counts = None if spatial.sizes is not None else spatial.count
    if cfg.temporal:
        temporal = _temporal_step(plan, spatial.tokens, s_counts)
    else:
        temporal = _identity_step(spatial.tokens, plan.acc, s_counts)
    flags.update(spatial=spatial.unresolved, temporal=temporal.unresolved)
    if cfg.merge:
        # Padded rows (K only on the device) are masked out of the argmax.
        count = temporal.count if temporal.sizes is None else None
        tokens, assignment, flags["merge"] = _merge(
            originals, temporal.tokens, plan.acc, plan.sim_dtype, cfg.max_matrix_bytes, count, plan.sync_free
        )
    else:
        tokens = temporal.tokens
        assignment = [temporal.labels[v][spatial.labels[v]] for v in range(V)]

    # 4. The one read of everything else the results need.
    host = _read_back(
        **{f"flag_{name}": flag for name, flag in flags.items()},
        threshold_spatial=spatial.threshold,
        threshold_temporal=temporal.threshold,
        k=torch.stack(temporal.count),
        s=torch.stack(spatial.count),
    )
    if plan.sync_free:
        if not host["flag_finite"][0]:
            raise _NonFinite
        if any(host[f"flag_{name}"][0] for name in flags if name != "finite"):
            # More near-ties than the fixed buffers hold: the data-sized path decides them.
            return _compress_videos(videos, cfg.replace(sync_free=False))
    k_sizes = _ints(host["k"]) if temporal.sizes is None else temporal.sizes
    s_sizes = _ints(host["s"]) if spatial.sizes is None else spatial.sizes
    s_thr = host["threshold_spatial"] if cfg.spatial else [None] * V
    t_thr = host["threshold_temporal"] if cfg.temporal else [None] * V

    results = []
    for v in range(V):
        k = k_sizes[v]
        results.append(
            CompressionResult(
                tokens=tokens[v][:k].to(dtype),
                assignment=assignment[v],
                representatives=spatial.reps[v][temporal.reps[v][:k]],
                sizes=segment_sizes(assignment[v], k),
                frames=frames[v],
                tokens_per_frame=N,
                spatial_tokens=spatial.tokens[v][: s_sizes[v]].to(dtype),
                spatial_labels=spatial.labels[v],
                temporal_labels=temporal.labels[v][: s_sizes[v]],
                spatial_representatives=spatial.reps[v][: s_sizes[v]],
                spatial_threshold=s_thr[v],
                temporal_threshold=t_thr[v],
                method="scissor",
            )
        )
    return results
