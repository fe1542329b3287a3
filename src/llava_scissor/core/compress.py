"""The paper's two algorithms (LLaVA-Scissor, arXiv 2506.21862, Sec. 3).

``scc`` (Sec. 3.1): Semantic Connected Components of one token set. Tokens are
vertices, two tokens are adjacent when their cosine similarity is strictly above
``tau``; every connected component becomes one token, the unweighted mean of its
members; components are ordered by the index of their highest-degree member.

``compress`` (Sec. 3.2), two-step compression of a video's tokens:

1. Spatial: SCC on every frame; the frames' component tokens, in frame order -> S tokens.
2. Temporal: one SCC over the S tokens -> K tokens.
3. Merge: every original token joins its most similar of the K tokens (cosine argmax);
   output token j = (temporal token j + sum of its originals) / (1 + count).

All frames of all videos of a call go through the spatial step as one batch; the
temporal step batches the videos with padding; the merge step goes video by video,
in chunks of originals. With ``retention`` / ``max_tokens`` the sizes S and K come from
``budget.py`` (where the split of the budget between the steps is argued). The spatial
budget is global over the video's frames: their spanning-tree edges are ranked
together, exactly as one tau would cut them. ``reference.py`` is the same algorithm
written plainly (threshold mode), the tests' oracle; the work itself is done by the
engine (``engine/``), which decides every comparison exactly.

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

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from .._errors import ScissorError
from .budget import budget_sizes, check_matrix_memory, final_budget, fits_in_memory
from .config import ScissorConfig, similarity_dtype, threshold, with_overrides
from .engine.exact import token_norms, zero_tokens
from .engine.gram import to_device
from .engine.merge import merge
from .engine.reads import HostReads
from .engine.sets import components_of_sets, segment_mean, segment_sizes
from .result import CompressionResult, SCCResult

__all__ = ["scc", "compress", "merge_into", "zero_axis", "check_tokens", "check_videos"]

_SIM_DTYPES = (torch.float32, torch.bfloat16, torch.float64)


def scc(
    tokens: torch.Tensor,
    tau: float | None = None,
    *,
    retention: float | None = None,
    max_tokens: int | None = None,
    approximate: bool = False,
    epsilon: float = 0.05,
    seed: int = 0,
    similarity_dtype: torch.dtype = torch.float32,
) -> SCCResult:
    """Semantic connected components of one token set.

    tokens: [n, dim] float (any token set: an image, a frame, a whole video flattened).
    tau: adjacency is ``cos > tau`` (strict), in [-1, 1]; 0.9 when not given. With
    ``retention`` or ``max_tokens`` the output has exactly ``round(retention * n)`` /
    ``min(max_tokens, n)`` components instead (single-linkage cut; giving tau as well
    raises ScissorError). Zero tokens: see ``zero_axis``.

    Returns an ``SCCResult``: labels [n], tokens [c, dim] (component means, input dtype),
    representatives [c], degree [n], threshold. Not differentiable (runs under
    ``torch.no_grad()``; inputs that require grad are read, the outputs carry no gradient).
    """
    tau = threshold(ScissorConfig(tau=tau, epsilon=epsilon, seed=seed, retention=retention, max_tokens=max_tokens))
    check_tokens(tokens, "tokens", 2, "[n, dim]")
    n = tokens.shape[0]
    acc = torch.float64 if tokens.dtype == torch.float64 else torch.float32
    if similarity_dtype not in _SIM_DTYPES:
        raise ScissorError(
            f"similarity_dtype must be torch.float32, torch.bfloat16 or torch.float64, got {similarity_dtype}"
        )
    valid = torch.tensor([n])  # host tensors: components_of_sets copies what it needs
    budget = final_budget(n, retention, max_tokens)
    keep = None if budget is None else torch.tensor([budget])
    with torch.no_grad():  # not differentiable, as ``compress``
        units = zero_axis(tokens) if bool(zero_tokens(tokens).any()) else tokens
        sc = components_of_sets(
            units[None],
            valid,
            tau=tau,
            keep=keep,
            approximate=approximate,
            epsilon=epsilon,
            seed=seed,
            sim_dtype=similarity_dtype,
        )
    count = int(sc.count[0])
    labels = sc.labels[0]
    means = segment_mean(tokens.detach(), labels, count, acc).to(tokens.dtype)
    return SCCResult(
        labels=labels,
        tokens=means,
        representatives=sc.representatives[0, :count],
        degree=sc.degree[0],
        threshold=float(sc.cut_threshold[0]),
    )


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

    Zero tokens (norm below 1e-12) are equal to each other and orthogonal to every other
    token (``zero_axis``). Not differentiable: the components are discrete choices, so
    the call runs under ``torch.no_grad()`` and its tensors carry no gradient, also for
    inputs that require grad (they are read, never changed).
    """
    cfg = with_overrides(config, **overrides)
    single = isinstance(features, torch.Tensor)
    videos = check_videos(features, finite=False)
    zero, norms = None, None
    if not _host_reads(cfg, videos[0].device).sync_free:
        # NaN / Inf now, before any work. One pass over each video serves both checks: a
        # NaN / Inf value makes its token's norm non-finite (so may a finite token too
        # large to square: the value-by-value check then decides), and a zero token's
        # norm is below 1e-12.
        norms = [token_norms(v) for v in videos]
        finite = torch.stack([torch.isfinite(n).all() for n in norms]).all()
        some_zero = torch.stack([zero_tokens(v, n).any() for v, n in zip(videos, norms)]).any()
        finite_read, zero = torch.stack([finite, some_zero]).tolist()  # one host read
        if not finite_read:
            check_videos(features)
    try:
        with torch.no_grad():  # in-place products into reused buffers refuse autograd inputs
            results = _compress_videos(videos, cfg, zero, norms)
    except _NonFinite:
        check_videos(features)  # raises, naming the video and the count
        raise
    return results[0] if single else results


class _NonFinite(Exception):
    """A sync-free call found NaN / Inf in its input (known only at its one read)."""


def _host_reads(cfg: ScissorConfig, device: torch.device) -> HostReads:
    """The call's host-read policy: ``cfg.sync_free`` if set, else sync-free on CUDA (``engine/reads.py``)."""
    return HostReads.for_device(cfg.sync_free, device)


def check_videos(features: object, finite: bool = True) -> list[torch.Tensor]:
    """Validate one video tensor or a list of them; return the list.

    finite: also check for NaN / Inf (one host read per video).
    """
    if isinstance(features, torch.Tensor):
        videos = [features]
    elif isinstance(features, (list, tuple)):
        if len(features) == 0:
            raise ScissorError(
                "features is an empty list; expected at least one [frames, tokens_per_frame, dim] tensor"
            )
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


def check_tokens(x: object, name: str, rank: int, shape_doc: str, finite: bool = True) -> torch.Tensor:
    """Validate a floating, non-empty tensor of the given rank, finite unless told not to check; return it."""
    if not isinstance(x, torch.Tensor):
        raise ScissorError(f"{name} must be a torch.Tensor {shape_doc}, got {type(x).__name__}")
    if x.dim() != rank:
        raise ScissorError(f"{name} must be {shape_doc} (rank {rank}), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ScissorError(f"{name} must have a floating dtype (float32, float16, bfloat16, float64), got {x.dtype}")
    if x.numel() == 0:
        raise ScissorError(f"{name} is empty: shape {tuple(x.shape)}; expected {shape_doc} with every size >= 1")
    if not finite:
        return x
    lo, hi = torch.aminmax(x)  # one pass; NaN propagates, so finite bounds mean finite values
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
        bad = int((~torch.isfinite(x)).sum())
        raise ScissorError(f"{name} contains {bad} NaN or Inf value(s); expected finite values")
    return x


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
    canonical similarities (``engine/exact.py``), so both dtypes assign alike.
    Returns (merged tokens: B tensors [k_i, d] in ``acc``, assignment: B tensors [m_i]).
    """
    merged, assignment, _ = merge(originals, targets, acc, sim_dtype, max_matrix_bytes)
    return merged, assignment


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
    reads: HostReads  # sync-free or data-sized (``engine/reads.py``)
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


def _spatial_step(plan: _Plan, x_all: torch.Tensor, frames: list[int], norms: torch.Tensor | None) -> _StepOut:
    """SCC of every frame of every video in one batch. x_all: [sum F, N, d]; norms: its
    [sum F, N] ``token_norms`` or None.

    Labels and representatives are in frame-major original-token indices of each video.
    """
    cfg, device = plan.cfg, x_all.device
    V, N = len(frames), x_all.shape[1]
    # Small index tensors are built on the host and copied over: no read-back needed.
    group = torch.repeat_interleave(torch.arange(V), torch.tensor(frames))  # [sum F], CPU
    sc = components_of_sets(
        x_all,
        torch.full((x_all.shape[0],), N),
        tau=threshold(cfg),
        keep=torch.tensor([s for s, _ in plan.sizes]) if cfg.budgeted else None,
        group=group,
        approximate=cfg.approximate,
        epsilon=cfg.epsilon,
        seed=cfg.seed,
        sim_dtype=plan.sim_dtype,
        reads=plan.reads,
        norms=norms,
        exact_degrees=False,  # only the labels and representatives are taken
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
        sizes = (
            [s for s, _ in plan.sizes if s is not None]
            if plan.sizes_known
            else _ints(_read_back(sizes=per_video)["sizes"])
        )
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
        tau=threshold(cfg),
        keep=torch.tensor([k for _, k in plan.sizes]) if cfg.budgeted else None,
        approximate=cfg.approximate,
        epsilon=cfg.epsilon,
        seed=cfg.seed + 1,  # an independent stream from the spatial step's
        max_matrix_bytes=cfg.max_matrix_bytes,
        sim_dtype=plan.sim_dtype,
        reads=plan.reads,
        exact_degrees=False,  # only the labels and representatives are taken
    )
    s_sizes = s_len.tolist()  # a host tensor: no device read
    sizes: list[int] | None
    if plan.sizes_known:
        sizes = [k for _, k in plan.sizes if k is not None]
    else:
        sizes = plan.reads.read(None, lambda: _ints(_read_back(sizes=tc.count)["sizes"]))
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


def zero_axis(x: torch.Tensor) -> torch.Tensor:
    """x: [..., d] -> [..., d + 1]: x with one more coordinate, 1 on zero tokens, 0 elsewhere.

    The definition of a zero token's similarity (``engine.exact.zero_tokens``: norm below
    1e-12, no direction): a zero token is equal to every other zero token (cosine 1) and
    orthogonal to every other token (cosine 0, to within its norm). So the zero tokens of
    a frame form one component (tau < 1), those of all frames one output token, and no
    output token is a lone zero vector that no original joins. The other tokens' unit
    vectors are unchanged (their extra coordinate is 0), and every product and exact
    value is taken as for any input. The caller drops the extra coordinate from the means.
    """
    return torch.cat([x, zero_tokens(x).to(x.dtype)[..., None]], dim=-1)


def _zero_flag(videos: list[torch.Tensor]) -> torch.Tensor:
    """[] bool on the device: some video has a zero token."""
    return torch.stack([zero_tokens(v).any() for v in videos]).any()


def _with_zero_axis(videos: list[torch.Tensor], cfg: ScissorConfig) -> list[CompressionResult]:
    """The compression of videos that hold zero tokens: similarities of ``zero_axis``,
    means of the tokens themselves (the extra coordinate is dropped again)."""
    d = videos[0].shape[-1]
    results = _compress_videos([zero_axis(v) for v in videos], cfg)  # has no zero token: no loop
    return [
        dataclasses.replace(
            r,
            tokens=r.tokens[:, :d].contiguous(),
            spatial_tokens=None if r.spatial_tokens is None else r.spatial_tokens[:, :d].contiguous(),
        )
        for r in results
    ]


def _make_plan(cfg: ScissorConfig, frames: list[int], N: int, dtype: torch.dtype, reads: HostReads) -> _Plan:
    """What a call on videos of ``frames`` x N tokens in ``dtype`` knows before any work."""
    sizes_known = cfg.budgeted and not cfg.approximate
    plan = _Plan(
        cfg=cfg,
        sizes=[budget_sizes(f, N, cfg) for f in frames],
        sizes_known=sizes_known,
        reads=reads,
        sim_dtype=similarity_dtype(cfg),
        acc=torch.float64 if dtype == torch.float64 else torch.float32,
        bounded=reads.sync_free and cfg.spatial and not sizes_known and fits_in_memory(cfg, max(frames) * N),
    )
    check_matrix_memory(plan.sizes, cfg)
    return plan


def _run_steps(
    plan: _Plan,
    x_all: torch.Tensor,
    originals: list[torch.Tensor],
    frames: list[int],
    flags: dict[str, torch.Tensor],
    norms: torch.Tensor | None = None,
) -> tuple[_StepOut, _StepOut, list[torch.Tensor], list[torch.Tensor]]:
    """1. Spatial step, 2. temporal step, 3. merge step over x_all [sum F, N, d] (originals: its videos' rows;
    norms: x_all's [sum F, N] ``token_norms`` or None).

    Returns (spatial, temporal, merged tokens per video, assignment per video); each
    step's overflow flag goes into ``flags``.
    """
    cfg, V = plan.cfg, len(frames)
    spatial = _spatial_step(plan, x_all, frames, norms) if cfg.spatial else _identity_step(originals, plan.acc)
    s_counts = None if spatial.sizes is not None else spatial.count
    if cfg.temporal:
        temporal = _temporal_step(plan, spatial.tokens, s_counts)
    else:
        temporal = _identity_step(spatial.tokens, plan.acc, s_counts)
    flags.update(spatial=spatial.unresolved, temporal=temporal.unresolved)
    if cfg.merge:
        # Padded rows (K only on the device) are masked out of the argmax.
        count = temporal.count if temporal.sizes is None else None
        home = [temporal.labels[v][spatial.labels[v]] for v in range(V)]  # each original's component
        rows = None if norms is None else _split(norms.reshape(-1), [f * x_all.shape[1] for f in frames])
        tokens, assignment, flags["merge"] = merge(
            originals, temporal.tokens, plan.acc, plan.sim_dtype, cfg.max_matrix_bytes, count, plan.reads, home, rows
        )
    else:
        tokens = temporal.tokens
        assignment = [temporal.labels[v][spatial.labels[v]] for v in range(V)]
    return spatial, temporal, tokens, assignment


def _compress_videos(
    videos: list[torch.Tensor], cfg: ScissorConfig, zero: bool | None = None, norms: list[torch.Tensor] | None = None
) -> list[CompressionResult]:
    """The compression of validated videos; zero: whether some video has a zero token,
    when the caller knows (data-sized calls only); norms: the videos' ``token_norms``
    ([F, N] each) when the caller has them."""
    V = len(videos)
    device, dtype = videos[0].device, videos[0].dtype
    N, d = videos[0].shape[1], videos[0].shape[2]
    frames = [int(v.shape[0]) for v in videos]
    reads = _host_reads(cfg, device)
    if not reads.sync_free:  # a sync-free call learns it at its one read
        if zero is None:
            zero = bool(_zero_flag(videos))
        if zero:
            return _with_zero_axis(videos, cfg)
    plan = _make_plan(cfg, frames, N, dtype, reads)
    flags: dict[str, torch.Tensor] = {}
    if reads.sync_free:
        flags["finite"] = _finite(videos)
        flags["zero"] = _zero_flag(videos)
    x_all = videos[0] if V == 1 else torch.cat(videos, dim=0)  # [sum F, N, d]
    if reads.sync_free:
        # NaN / Inf are only known at the end; until then the call must not index out of
        # range on them (on a GPU a device-side assert ends the process), so zeros
        # stand in for them. The result is then discarded and the input rejected.
        x_all = torch.nan_to_num(x_all, 0.0, 0.0, 0.0)
    originals = _split(x_all.reshape(-1, d), [f * N for f in frames])
    norms_all = None if norms is None else (norms[0] if V == 1 else torch.cat(norms))  # [sum F, N]
    spatial, temporal, tokens, assignment = _run_steps(plan, x_all, originals, frames, flags, norms_all)

    # 4. The one read of everything else the results need.
    host = _read_back(
        **{f"flag_{name}": flag for name, flag in flags.items()},
        threshold_spatial=spatial.threshold,
        threshold_temporal=temporal.threshold,
        k=torch.stack(temporal.count),
        s=torch.stack(spatial.count),
    )
    if reads.sync_free:
        if not host["flag_finite"][0]:
            raise _NonFinite
        if host["flag_zero"][0]:
            return _with_zero_axis(videos, cfg)  # the rare input with zero tokens runs again
        if any(host[f"flag_{name}"][0] for name in flags if name not in ("finite", "zero")):
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
