"""The merge step's assignment: every original token to its most similar kept token, exactly.

With float32 / bfloat16 products the argmax is exact: an original whose best targets
lie within the products' error bound of each other is decided by their canonical
similarities (``exact.py``), so both dtypes assign alike.
"""

from __future__ import annotations

import torch

from .exact import canonical_similarity, error_bound, product_units, unit_vectors
from .gram import unit_dtype
from .products import product_dtype
from .reads import DATA_SIZED, HostReads
from .sets import segment_sizes

__all__ = ["merge"]

_NEG_INF = float("-inf")
# Originals per product in the merge step (see _assign).
_MERGE_CHUNK = 256
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
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """The merge step for B videos: each original joins its most similar target.

    originals: B tensors [m_i, d]; targets: B tensors [k_i, d]. Cosine argmax, decided
    exactly; output j = (target j + sum of its originals) / (1 + count). Exact ties go to
    the original's ``home`` (optional B tensors [m_i]: the target of its own component)
    when it is among them, else to the smaller index (see ``_assign``).
    target_count: optional B 0-d tensors (only the first target_count[i]
    targets take part, the rest are padding); reads: sync-free, no host reads (fixed-size
    buffers; ``reads.py``). Returns (merged: B tensors [k_i, d] in ``acc``, assignment: B tensors
    [m_i] int64, [] bool: a sync-free call met more near-ties than its buffers hold).
    """
    merged, assignment = [], []
    unresolved = torch.zeros((), dtype=torch.bool, device=originals[0].device)
    for v, (o, t) in enumerate(zip(originals, targets)):
        count = None if target_count is None else target_count[v]
        a, over = _assign(o, t, sim_dtype, max_matrix_bytes, count, reads, None if home is None else home[v])
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """o: [m, d] originals, t: [k, d] targets -> ([m] int64 most similar target, [] bool unresolved).

    count: optional 0-d tensor, targets from it on are padding (never chosen).
    home: optional [m] int64, the target of the component each original is in. Among
    exactly equally similar targets an original joins its home, else the smallest index.
    Equal targets (copies of one token kept apart, zero tokens split by a budget) would
    otherwise all send their members to the first of them and leave the others empty.
    """
    sim_dtype = product_dtype(sim_dtype, o.device)  # bfloat16 only where it pays (same output)
    unit = unit_dtype(sim_dtype)
    t_units = unit_vectors(t, unit)  # [k, d]; near-ties get exact values from these
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
        c_units = unit_vectors(o[start : start + chunk], unit_buf.dtype, out=unit_buf)
        c, c_res = product_units(c_units, sim_dtype)
        sim = torch.mm(tn, c.mT, out=buf[: k * c.shape[0]].view(k, c.shape[0]))
        if padding is not None:
            sim.masked_fill_(padding, _NEG_INF)
        c_home = None if home is None else home[start : start + c.shape[0]]
        if exact and k > 1:
            # Two best per column: a column whose runner-up is more than two bounds
            # below its best is decided (its best is unique, so topk's pick is the argmax);
            # the canonical best is never more than two bounds below the column maximum.
            top_w, top = sim.topk(2, dim=0)  # [2, c]
            best_w, best = top_w[0], top[0]
            bound = error_bound(o.shape[1], sim_dtype, o.device, torch.maximum(t_res, c_res))
            floor = best_w.float() - (2 * bound.at(best_w.abs().max())).float()
            if reads.read(True, _has_runner_up, top_w[1], floor):
                room = reads.capacity(_merge_room, c.shape[0])
                best, over = _exact_argmax(sim, floor, best, t_units, c_units, room, c_home)
                unresolved = unresolved | over
        else:
            best = sim.argmax(dim=0)  # ties go to the smaller index ...
            if c_home is not None:  # ... or to the original's own component
                at_home = sim.gather(0, c_home[None])[0]
                best = torch.where(at_home >= sim.gather(0, best[None])[0], c_home, best)
        a[start : start + c.shape[0]] = best
    return a, unresolved


def _has_runner_up(second: torch.Tensor, floor: torch.Tensor) -> bool:
    """second: [c] runner-up products, floor: [c] -> whether some column has two candidates (a host read)."""
    return bool((second.float() >= floor).any())


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
    top = torch.full((c,), _NEG_INF, device=sim.device).scatter_reduce_(0, col, vals, "amax")
    winner = torch.where(vals == top[col], ti, k)
    if used is not None:
        winner = torch.where(used, winner, k)
    first = torch.full((c,), k, dtype=torch.int64, device=sim.device)
    first.scatter_reduce_(0, col, winner, "amin")
    if home is not None:
        # winner is k except at the tied best targets, and home < k: a match is a tie won by home
        at_home = (winner == home[col]).to(torch.int64)
        home_won = torch.zeros(c, dtype=torch.int64, device=sim.device).scatter_reduce_(0, col, at_home, "amax")
        first = torch.where(home_won > 0, home, first)
    unresolved = torch.zeros((), dtype=torch.bool, device=sim.device) if used is None else found > capacity
    return torch.where(first < k, first, best), unresolved
