"""The merge step's assignment: every original token to its most similar kept token, exactly.

With float32 / bfloat16 products the argmax is exact: an original whose best targets
lie within the products' error bound of each other is decided by their canonical
similarities (``exact.py``), so both dtypes assign alike.
"""

from __future__ import annotations

import torch

from .exact import SAMPLED_COST, canonical_similarity, error_bound, float32_similarity, product_units, unit_vectors
from .gram import padded_columns, unit_dtype, wide_product_into, zero_padded
from .products import product_dtype
from .reads import DATA_SIZED, HostReads
from .sets import segment_sizes

__all__ = ["merge"]

_NEG_INF = float("-inf")
# Originals per product in the merge step (see _assign).
_MERGE_CHUNK = 1024
# Fewer targets than this take float32 products (the same assignment): bfloat16 ones
# would save less than the rounding of every original costs.
_BF16_MIN_TARGETS = 256
# Data-sized merge with low-precision products: once narrowing the near-tied originals
# so far has cost more than this share of the float32 products of all the originals so
# far (in entries of a float32 product: a row narrowed densely costs one row, a sampled
# candidate pair ``SAMPLED_COST`` entries), the rest take float32 products (the same
# assignment; where candidates are that many, float32 products cost less than narrowing).
_NARROWED_SHARE = 0.5
# ... and with low-precision products the first chunk is this many originals: where most
# rows need narrowing (near-duplicate frames) the switch comes after a small chunk, not
# after a whole one done twice.
_PROBE_CHUNK = 128
# Sync-free merge: room for this many near-tied candidate targets per original, on
# average over a chunk (columns with a near-tie are a few per cent, with two or three).
_MERGE_CANDIDATES = 4


def merge(
    originals: list[torch.Tensor],
    targets: list[torch.Tensor],
    acc: torch.dtype,
    sim_dtype: torch.dtype,
    max_matrix_bytes: int,
    target_count: list[torch.Tensor] | None = None,
    reads: HostReads = DATA_SIZED,
    home: list[torch.Tensor] | None = None,
    norms: list[torch.Tensor] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """The merge step for B videos: each original joins its most similar target.

    originals: B tensors [m_i, d]; targets: B tensors [k_i, d]. Cosine argmax, decided
    exactly; output j = (target j + sum of its originals) / (1 + count). Exact ties go to
    the original's ``home`` (optional B tensors [m_i]: the target of its own component)
    when it is among them, else to the smaller index (see ``_assign``).
    target_count: optional B 0-d tensors (only the first target_count[i]
    targets take part, the rest are padding); reads: sync-free, no host reads (fixed-size
    buffers; ``reads.py``); norms: optional B tensors [m_i], the originals' ``token_norms``.
    Returns (merged: B tensors [k_i, d] in ``acc``, assignment: B tensors
    [m_i] int64, [] bool: a sync-free call met more near-ties than its buffers hold).
    """
    merged, assignment = [], []
    unresolved = torch.zeros((), dtype=torch.bool, device=originals[0].device)
    for v, (o, t) in enumerate(zip(originals, targets)):
        count = None if target_count is None else target_count[v]
        a, over = _assign(
            o,
            t,
            sim_dtype,
            max_matrix_bytes,
            count,
            reads,
            None if home is None else home[v],
            None if norms is None else norms[v],
        )
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
    reads: HostReads = DATA_SIZED,
    home: torch.Tensor | None = None,
    norms: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """o: [m, d] originals, t: [k, d] targets -> ([m] int64 most similar target, [] bool unresolved).

    count: optional 0-d tensor, targets from it on are padding (never chosen).
    home: optional [m] int64, the target of the component each original is in. Among
    exactly equally similar targets an original joins its home, else the smallest index.
    Equal targets (copies of one token kept apart, zero tokens split by a budget) would
    otherwise all send their members to the first of them and leave the others empty.
    norms: optional [m], the originals' ``token_norms`` (their unit vectors take them).
    """
    sim_dtype = product_dtype(sim_dtype, o.device)  # bfloat16 only where it pays (same output)
    if sim_dtype == torch.bfloat16 and t.shape[0] < _BF16_MIN_TARGETS:
        sim_dtype = torch.float32  # few targets: rounding every original costs more than they save
    unit = unit_dtype(sim_dtype)
    t_units = unit_vectors(t, unit)  # [k, d]; near-ties get exact values from these
    tn, t_res = product_units(t_units, sim_dtype)
    k, m = tn.shape[0], o.shape[0]
    # The product runs over kp targets, the last kp - k zero rows; their columns get -inf
    # after it, so no original ever chooses them.
    kp = padded_columns(k, o.device)
    tn = zero_padded(tn, kp)
    exact = sim_dtype != torch.float64
    padding = None if count is None else (torch.arange(kp, device=o.device) >= count)[None, :]
    # Chunks of originals, one row of similarities each: memory stays bounded for long
    # videos, and every reduction runs along a contiguous row (on a CPU a max down the
    # columns of a k x chunk block is ten times slower than along its rows). The chunk's unit
    # vectors and its product go to buffers reused for every chunk: fresh chunk-sized
    # temporaries interleaved with the small results fragment the heap (resident
    # memory then grows like the full k x m), and fresh pages cost page faults.
    chunk = max(1, min(_MERGE_CHUNK, m, max_matrix_bytes // (4 * kp)))
    buf = torch.empty(kp * chunk, dtype=sim_dtype, device=o.device)
    unit_buf = torch.empty(chunk, tn.shape[1], dtype=unit, device=o.device)
    a = torch.empty(m, dtype=torch.int64, device=o.device)
    unresolved = torch.zeros((), dtype=torch.bool, device=o.device)
    near: list[tuple[torch.Tensor, torch.Tensor]] = []  # data-sized: (candidate target, original) pairs
    narrowing_cost = 0  # of the low-precision products so far, in entries of a float32 product
    fine_bound = error_bound(o.shape[1], unit, o.device, 0.0).base.float()  # of float32 products
    first = min(chunk, _PROBE_CHUNK) if sim_dtype != unit and not reads.sync_free else chunk
    starts = [0, *range(first, m, chunk)] if m else []
    for start, end in zip(starts, [*starts[1:], m]):
        if sim_dtype != unit and narrowing_cost > _NARROWED_SHARE * start * k:
            # Originals have many near-tied targets at low precision (targets closer to
            # each other than the rounding): float32 products for the rest cost less.
            sim_dtype, tn, t_res = unit, zero_padded(t_units, kp), t_res.new_zeros(())
            buf = torch.empty(kp * chunk, dtype=unit, device=o.device)
        c_norms = None if norms is None else norms[start:end]
        c_units = unit_vectors(o[start:end], unit_buf.dtype, out=unit_buf, norms=c_norms)
        c, c_res = product_units(c_units, sim_dtype)
        sim = wide_product_into(c, tn, buf[: kp * c.shape[0]].view(c.shape[0], kp))  # [c, kp]
        if padding is not None:
            sim.masked_fill_(padding, _NEG_INF)
        elif kp > k:
            sim[:, k:] = _NEG_INF
        c_home = None if home is None else home[start:end]
        if exact and k > 1:
            # A row with one target at or above its floor (its maximum less two bounds: the
            # canonical best is never below it) is decided: that target is the unique
            # maximum, argmax's pick. Rows with more go to their canonical values.
            best_w, best = sim.max(dim=1)
            bound = error_bound(o.shape[1], sim_dtype, o.device, torch.maximum(t_res, c_res))
            floor = best_w.float() - (2 * bound.at(best_w.abs().max())).float()
            room = reads.capacity(_merge_room, c.shape[0])
            if room is not None:  # sync-free: fixed-size buffers, every chunk
                best, over = _exact_argmax(sim.T, floor, best, t_units, c_units, room, c_home)
                unresolved = unresolved | over
            else:
                # Low-precision products: their near rows are narrowed by float32 values first.
                fine = (c_units, t_units, fine_bound) if sim.dtype != unit else None
                ti, rows, decided, cost = _candidates(sim, best_w, best, floor, fine)
                narrowing_cost += cost
                best[rows[decided[0]]] = decided[1]
                near.append((ti, rows[decided[2]] + start))
        else:
            best = sim.argmax(dim=1)  # ties go to the smaller index ...
            if c_home is not None:  # ... or to the original's own component
                at_home = sim.gather(1, c_home[:, None])[:, 0]
                best = torch.where(at_home >= sim.gather(1, best[:, None])[:, 0], c_home, best)
        a[start:end] = best
    if near:
        _decide_near_ties_(a, near, t_units, o, home)
    return a, unresolved


def _candidates(
    sim: torch.Tensor,
    best_w: torch.Tensor,
    best: torch.Tensor,
    floor: torch.Tensor,
    fine: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor], int]:
    """The rows of sim [c, k] (row maxima best_w at best: [c]) with more than one target at
    or above their floor [c] -> (ti, rows, (decided, winner, q), cost): those rows, the
    candidate pairs (target ti[p], row rows[q[p]]), the rows[decided] that float32 values
    decided (their best target: winner) and what narrowing cost (entries of a float32
    product; 0 without ``fine``). Host reads.

    A row has more than one candidate where its runner-up (the maximum with the best
    masked out, two row passes: several times faster than a top-2 or a count) reaches
    the floor; only those rows, a few per cent, are compared again. fine: for
    low-precision products, (float32 unit vectors of the rows [c, d] and of the targets
    [k, d], the float32 bound): the candidates' float32 values narrow them to those
    within two float32 bounds of the row's largest one (the canonical best is a
    candidate, and its float32 value is at least any other candidate's less two bounds,
    as is that of every target tied with it); a row left with one is decided. A padded
    target is never a candidate: its product is -inf, below any finite floor.
    """
    # Flat index writes: ``scatter_`` copies a whole bfloat16 matrix (not a float32 one).
    flat, at = sim.view(-1), torch.arange(sim.shape[0], device=sim.device) * sim.shape[1] + best
    flat.index_fill_(0, at, _NEG_INF)
    second = sim.amax(dim=1)  # no indices: several times faster than max
    flat.index_copy_(0, at, best_w)
    rows = (second.float() >= floor).nonzero().squeeze(1)
    q, ti = (sim[rows] >= floor[rows][:, None]).nonzero().unbind(1)
    if fine is None:
        none = rows[:0]
        return ti, rows, (none, none, q), 0
    units, targets, bound = fine
    R, k = rows.shape[0], sim.shape[1]
    if R * k <= SAMPLED_COST * ti.shape[0]:
        # Candidates crowd the rows: their float32 values from a dense product of the rows.
        values, cost = (units[rows] @ targets.T)[q, ti], R * k
    else:
        values, cost = float32_similarity(units, rows[q], targets, ti, unit=True), SAMPLED_COST * ti.shape[0]
    top = torch.full((R,), _NEG_INF, device=values.device).scatter_reduce_(0, q, values, "amax")
    near = values >= (top - 2 * bound)[q]
    left = torch.zeros(R, dtype=torch.int64, device=values.device).index_add_(0, q, near.to(torch.int64))
    alone = near & (left == 1)[q]  # the one candidate left in its row
    still = near & ~alone
    return ti[still], rows, (q[alone], ti[alone], q[still]), cost


def _decide_near_ties_(
    a: torch.Tensor,
    near: list[tuple[torch.Tensor, torch.Tensor]],
    t: torch.Tensor,
    o: torch.Tensor,
    home: torch.Tensor | None,
) -> None:
    """Assign, in a [m], the originals with near-tied targets by canonical similarity (data-sized).

    near: per chunk (candidate target, original) pairs; t: [k, d] the targets' float32
    unit vectors; o: [m, d] the raw originals. All chunks' pairs get their canonical
    values in one call.
    """
    ti = torch.cat([p[0] for p in near])
    if ti.shape[0] == 0:
        return
    oi = torch.cat([p[1] for p in near])
    rows, col = torch.unique(oi, return_inverse=True)
    ou = unit_vectors(o.index_select(0, rows), torch.float32)
    vals = canonical_similarity(t, ti, ou, col, unit=True)
    a[rows] = _canonical_choice(ti, col, vals, t.shape[0], rows.shape[0], None if home is None else home[rows])


def _canonical_choice(
    ti: torch.Tensor, col: torch.Tensor, vals: torch.Tensor, k: int, c: int, home: torch.Tensor | None
) -> torch.Tensor:
    """Candidate pairs (target ti, column col) with canonical values vals: [P] -> [c] each column's
    best target (k where a column has no candidate). Ties go to ``home`` ([c]) when it is
    among them, else to the smaller index."""
    top = torch.full((c,), _NEG_INF, device=vals.device).scatter_reduce_(0, col, vals, "amax")
    winner = torch.where(vals == top[col], ti, k)
    first = torch.full((c,), k, dtype=torch.int64, device=vals.device)
    first.scatter_reduce_(0, col, winner, "amin")
    if home is not None:
        # winner is k except at the tied best targets, and home < k: a match is a tie won by home
        at_home = (winner == home[col]).to(torch.int64)
        home_won = torch.zeros(c, dtype=torch.int64, device=vals.device).scatter_reduce_(0, col, at_home, "amax")
        first = torch.where(home_won > 0, home, first)
    return first


def _merge_room(columns: int) -> int:
    """The fixed candidate capacity of a sync-free exact argmax over ``columns`` originals."""
    return _MERGE_CANDIDATES * columns


def _exact_argmax(
    sim: torch.Tensor,
    floor: torch.Tensor,
    best: torch.Tensor,
    t: torch.Tensor,
    o: torch.Tensor,
    capacity: int | None = None,
    home: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """sim: [k, c] products, floor: [c] column max - 2 bounds, best: [c] argmax -> ([c] canonical argmax, [] bool).

    t: [k, d], o: [c, d] the float32 unit vectors of the targets and of the originals.

    Targets at or above the floor are the only candidates for the canonical best;
    columns with one candidate are decided. Canonical ties go to ``home`` ([c], the
    original's own component) when it is among them, else to the smaller index.
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
        ti = torch.where(used, ti, k)  # an unused slot never wins
    first = _canonical_choice(ti, col, vals, k, c, home)
    unresolved = torch.zeros((), dtype=torch.bool, device=sim.device) if used is None else found > capacity
    return torch.where(first < k, first, best), unresolved
