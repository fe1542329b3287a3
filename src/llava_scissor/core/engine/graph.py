"""Connected components and single-linkage cuts of dense similarity graphs.

Everything here works on a batch of B dense graphs at once, given as a similarity
matrix ``W: [B, n, n]`` in which ``-inf`` marks "no edge" (the diagonal, padding,
pairs excluded by sampling). Vertex ``i`` of graph ``b`` is real when
``i < valid[b]``; the others are padding and end up in no component.

The workhorse is Borůvka's algorithm with contraction: every round each component
hooks onto its most similar neighbouring component, the hooks are resolved by
pointer doubling, and the matrix is contracted to the max-linkage between the new
components, so each round works on a matrix at most half the size of the previous
one. With ties broken by the smaller index on a symmetric matrix the hooks form a
forest (apart from mutual pairs, which are resolved explicitly), so the result is
exact and deterministic. Running it with a threshold gives the components of the
graph ``W > threshold``; running it without one gives the weights of a maximum
spanning tree, i.e. the single-linkage hierarchy, from which a budget of exactly K
components is cut.

Sync-free mode (``reads=SYNC_FREE``, for GPUs; ``reads.py``): the loop above reads one number per
round back to the host (whether anything happened, and the new size). Without those
reads the loop runs a fixed ``rounds(n)`` times: every round at least halves the
components inside each cluster of edges above the threshold, so ceil(log2 n) rounds
join everything and one more closes the components that are left; extra rounds
change nothing. The matrix size follows a fixed schedule instead of the data: every
component that stays open has joined at least one other (its best neighbour has the
same edge, so it is open too), so a round leaves at most half as many open components
as it had rows, and the matrix halves each round (rows past the open components are
-inf). Only where components may stay open without joining (``keep_ties``, a
``merge_limit``) does it keep its n + 1 rows. The partitions are the same as with the
host reads.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from .gram import transposed
from .reads import DATA_SIZED, SYNC_FREE, HostReads

__all__ = [
    "Components",
    "threshold_components",
    "budget_components",
    "budget_levels",
    "order_components",
    "member_rank",
    "rounds",
]

_NEG_INF = float("-inf")


@dataclass(frozen=True)
class Components:
    """Result of a component search on B graphs.

    labels: [B, n] int64, component of each real vertex in [0, count[b]) (0 for padding).
    count: [B] int64, number of components of each graph.
    keep_threshold: [B] float, edges strictly above it were joined (tau, or implied).
    cut_threshold: [B] float, the largest similarity of a spanning-tree edge that was
        not joined (-inf when none was cut); ``> cut_threshold`` gives the same partition
        and is the adjacency used for degrees.
    """

    labels: torch.Tensor
    count: torch.Tensor
    keep_threshold: torch.Tensor
    cut_threshold: torch.Tensor


def rounds(n: int) -> int:
    """Borůvka rounds that settle any graph of n vertices (see the module docstring)."""
    return max(1, (n - 1).bit_length()) + 1


def _pointer_double(parent: torch.Tensor) -> torch.Tensor:
    """parent: [B, C] forest of parent pointers -> [B, C] root of every vertex."""
    for _ in range(max(1, int(parent.shape[1]).bit_length())):
        parent = parent.gather(1, parent)
    return parent


def _contract(M: torch.Tensor, comp: torch.Tensor, c_new: int) -> torch.Tensor:
    """M: [B, C, C] symmetric, comp: [B, C] new component of each old one -> [B, c_new + 1, c_new + 1].

    Entry (a, b) of the result is the max-linkage max{M[i, j] : comp[i] = a, comp[j] = b}.
    ``comp == c_new`` sends a row to a spare component whose row and column come out
    all -inf (finished components and padding); rows without any source are -inf too.
    Rows are reduced with one 1-D index per row (index_reduce), several times faster
    than scatter_reduce with a full-size index; the columns are reduced the same way on
    the transpose, which by symmetry is the same matrix.
    """
    B, C, _ = M.shape
    c1 = c_new + 1
    index = (comp + torch.arange(B, device=comp.device)[:, None] * c1).reshape(-1)  # [B*C]
    rows = _rows_amax(M.reshape(B * C, C), index, B * c1).view(B, c1, C)
    rows[:, c_new] = _NEG_INF
    cols = transposed(rows).view(B * C, c1)
    out = _rows_amax(cols, index, B * c1).view(B, c1, c1)
    out[:, c_new] = _NEG_INF
    out.diagonal(dim1=1, dim2=2).fill_(_NEG_INF)
    return out


def _rows_amax(src: torch.Tensor, index: torch.Tensor, rows: int) -> torch.Tensor:
    """src: [m, k], index: [m] in [0, rows) -> [rows, k] row-wise max per index, -inf where none."""
    out = src.new_full((rows, src.shape[1]), _NEG_INF)
    with warnings.catch_warnings():
        # index_reduce is marked beta in torch 2.x but is stable in behaviour; keep it quiet.
        warnings.simplefilter("ignore", UserWarning)
        out.index_reduce_(0, index, src, "amax", include_self=True)
    return out


def _boruvka(
    W: torch.Tensor,
    threshold: torch.Tensor,
    valid: torch.Tensor,
    *,
    record: bool = False,
    keep_ties: bool = False,
    merge_limit: torch.Tensor | None = None,
    group: torch.Tensor | None = None,
    first_best: tuple[torch.Tensor, torch.Tensor] | None = None,
    reads: HostReads = DATA_SIZED,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Components of ``W > threshold`` by Borůvka's algorithm with contraction.

    W: [B, n, n] symmetric similarity, -inf for non-edges and on the diagonal.
    threshold: [B]; two components join through an edge only if its weight > threshold.
    valid: [B] int64 number of real vertices of each graph.
    record: also return the weights of the joining edges (a maximum spanning forest):
        [B, E] with -inf padding.
    keep_ties: keep components whose strongest edge equals the threshold in the final
        matrix (for the tie step of a budget cut); by default they are dropped.
    merge_limit, group: optional; at most ``merge_limit[g]`` joins in total over the graphs
        ``b`` with ``group[b] == g`` (in graph-then-component order). Used to split ties.
    first_best: ``W.max(dim=-1)`` if the caller has it (a budget cut makes two passes
        over the same W, and the row maxima of the full matrix are the costliest step).
    reads: sync-free, a fixed number of rounds and matrix sizes, no host reads (module docstring).

    A component with no edge above the threshold can never join again (by symmetry no
    other component can hook onto it either), so it is finished and dropped from the
    matrix: every round the matrix loses at least half of its rows, whatever the
    threshold, instead of carrying isolated vertices round after round.

    Returns (labels [B, n], count [B], final max-linkage matrix [B, C, C] between the
    components still open, open [B], weights or None). The ``open[b]`` components still
    in the matrix are labelled 0..open-1 (their row); finished ones open..count-1.

    One function of about 100 lines: a round's dozen tensors of state (labels, the
    contracted matrix, finished counts, budgets left) are shared by every step of it,
    and each mode changes a line or two of the round, not its structure.
    """
    B, n, _ = W.shape
    device = W.device
    vlab = torch.arange(n, device=device).expand(B, n).clone()  # vertex -> matrix row, -1 once finished
    final = torch.full((B, n), -1, dtype=torch.int64, device=device)  # vertex -> finished id
    finished = torch.zeros(B, dtype=torch.int64, device=device)
    count = valid.to(torch.int64).clone()  # rows of M in use per graph
    remaining = None if merge_limit is None else merge_limit.clone()
    M = W
    recorded: list[torch.Tensor] = []
    # Sync-free: rows that may be in use (module docstring), halved each round when
    # every open component must join.
    rows_bound, halving = n, not keep_ties and merge_limit is None
    for _ in range(reads.iterations(rounds(n), n + 1)):
        C = M.shape[1]
        pos = torch.arange(C, device=device)
        if M is W and first_best is not None:
            best_w, best_j = first_best
        else:
            best_w, best_j = M.max(dim=-1)  # [B, C]; ties go to the smaller index
        real = pos < count[:, None]
        thr = threshold[:, None]
        above = best_w > thr
        live = real & ((best_w >= thr) if keep_ties else above)
        # Two components that chose each other: the smaller one stays the root.
        mutual = (best_j.gather(1, best_j) == pos) & (pos < best_j)
        hook = real & above & ~mutual
        if remaining is not None:
            hook = _limit_hooks(hook, remaining, group)
        done = real & ~live
        parent = torch.where(hook, best_j, pos)
        root = _pointer_double(parent)
        is_root = (root == pos) & live
        new_count = is_root.sum(-1)
        rows_bound = max(1, rows_bound // 2) if halving else n
        # The one host read of a round: whether anything happened, and the new size.
        any_hook, any_done, c_new = reads.read([True, True, rows_bound], _round_news, hook, done, new_count)
        if not any_hook and not any_done:
            break
        row = vlab.clamp(min=0)
        if any_done:
            done_id = finished[:, None] + done.cumsum(-1) - 1
            final = torch.where((vlab >= 0) & done.gather(1, row), done_id.gather(1, row), final)
            finished = finished + done.sum(-1)
        if remaining is not None:
            remaining = remaining - torch.zeros_like(remaining).index_add_(0, group, hook.sum(-1))
        if record:
            recorded.append(torch.where(hook, best_w, _NEG_INF))
        new_id = is_root.cumsum(-1) - 1
        count = new_count
        # Finished and padding rows go to the spare row c_new, which stays padding.
        comp = torch.where(live, new_id.gather(1, root), c_new)
        vlab = torch.where((vlab >= 0) & live.gather(1, row), comp.gather(1, row), -1)
        M = _contract(M, comp, c_new)
        if c_new == 0 or not any_hook:
            # Nothing joined: the open components stay as they are (only finished ones left).
            break
    # Padding vertices (never real) keep label 0.
    labels = torch.where(vlab >= 0, vlab, torch.where(final >= 0, count[:, None] + final, 0))
    weights = torch.cat(recorded, dim=1) if recorded else None
    if record and weights is None:
        weights = W.new_full((B, 0), _NEG_INF)
    return labels, count + finished, M, count, weights


def _round_news(hook: torch.Tensor, done: torch.Tensor, new_count: torch.Tensor) -> list[int]:
    """[whether any component hooked, whether any finished, the largest new count]: one host read."""
    return torch.stack([hook.any(), done.any(), new_count.max()]).tolist()


def _limit_hooks(hook: torch.Tensor, remaining: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Keep only the first ``remaining[g]`` hooks of each group (graph-major order).

    hook: [B, C] bool; remaining: [G] int64; group: [B] int64, contiguous runs.
    """
    per_row = hook.sum(-1)  # [B]
    row_start = per_row.cumsum(0) - per_row  # hooks in earlier rows, all groups
    group_start = torch.full_like(remaining, torch.iinfo(torch.int64).max)
    group_start.scatter_reduce_(0, group, row_start, "amin")
    rank = (row_start - group_start[group])[:, None] + hook.cumsum(-1) - 1
    return hook & (rank < remaining[group][:, None])


def threshold_components(
    W: torch.Tensor,
    tau: torch.Tensor,
    valid: torch.Tensor,
    reads: HostReads = DATA_SIZED,
    first_best: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Components:
    """Connected components of ``W > tau``.

    W: [B, n, n] symmetric, -inf on the diagonal and for non-edges; tau: [B]; valid: [B].
    reads: sync-free, no host reads (module docstring); the same partition.
    first_best: ``W.max(dim=-1)`` if the caller has it.
    """
    labels, count, _, _, _ = _boruvka(W, tau, valid, first_best=first_best, reads=reads)
    return Components(labels, count, tau, tau)


def _cut_levels(
    W: torch.Tensor,
    valid: torch.Tensor,
    keep: torch.Tensor,
    group: torch.Tensor,
    first_best: tuple[torch.Tensor, torch.Tensor],
    reads: HostReads = DATA_SIZED,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The levels of a single-linkage cut to ``keep[g]`` components per group.

    Returns (keep_t [G]: weakest kept spanning-forest edge, +inf if none;
    cut_t [G]: strongest cut one, -inf if none; ties [G]: edges equal to keep_t to join).
    """
    B = W.shape[0]
    device = W.device
    G = keep.shape[0]
    # The spanning-forest weights of every graph, then per group sorted descending.
    _, _, _, _, weights = _boruvka(
        W, W.new_full((B,), _NEG_INF), valid, record=True, first_best=first_best, reads=reads
    )
    assert weights is not None
    per_graph = weights.sort(dim=1, descending=True).values  # [B, E]
    rows_per_group = torch.zeros(G, dtype=torch.int64, device=device).index_add_(0, group, torch.ones_like(group))
    # Sync-free: room for every graph in every group rather than reading the largest group.
    gmax = reads.read(B, lambda: int(rows_per_group.max()))
    E = per_graph.shape[1]
    slot = torch.arange(B, device=device) - (rows_per_group.cumsum(0) - rows_per_group)[group]
    grouped = W.new_full((G, gmax, E), _NEG_INF)
    grouped[group, slot] = per_graph
    ranked = grouped.reshape(G, gmax * E).sort(dim=1, descending=True).values  # [G, gmax*E]
    total_valid = torch.zeros(G, dtype=torch.int64, device=device).index_add_(0, group, valid.to(torch.int64))
    edges = (ranked > _NEG_INF).sum(-1)  # joins available per group
    joins = (total_valid - keep).clamp(min=0).minimum(edges)  # joins to make
    pad = W.new_full((G, 1), _NEG_INF)
    ranked_ext = torch.cat([W.new_full((G, 1), float("inf")), ranked, pad], dim=1)
    keep_t = ranked_ext.gather(1, joins[:, None]).squeeze(1)  # weakest kept edge (+inf if none)
    cut_t = ranked_ext.gather(1, (joins + 1)[:, None]).squeeze(1)  # strongest cut edge (-inf if none)
    strictly_above = (ranked > keep_t[:, None]).sum(-1)
    return keep_t, cut_t, joins - strictly_above


def budget_levels(
    W: torch.Tensor,
    valid: torch.Tensor,
    keep: torch.Tensor,
    group: torch.Tensor | None = None,
    reads: HostReads = DATA_SIZED,
    first_best: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two levels of ``budget_components(W, valid, keep, group)``, per graph.

    Returns (keep_threshold [B], cut_threshold [B]), without the components themselves.
    first_best: ``W.max(dim=-1)`` if the caller has it.
    """
    if group is None:
        group = torch.arange(W.shape[0], device=W.device)
    first_best = W.max(dim=-1) if first_best is None else first_best
    keep_t, cut_t, _ = _cut_levels(W, valid, keep, group, first_best, reads)
    return keep_t[group], cut_t[group]


def _canonical_open_order(
    labels: torch.Tensor, M: torch.Tensor, open_rows: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Number the open components (``open_rows`` of M) first, by their smallest vertex.

    Borůvka numbers components by how they were contracted, which depends on the
    similarities far above a cut; the tie step must not: its order is then a function
    of the partition alone, so any similarities that agree at the cut split ties alike.
    labels: [B, n] (labels from M.shape[1] on are components outside M); M: [B, C, C];
    open_rows: [B, C] bool. The other rows of M follow in their order.
    Returns (labels, M) renumbered.
    """
    B, n = labels.shape
    C = M.shape[1]
    idx = torch.arange(n, device=labels.device).expand(B, n)
    in_m = (labels < C) & (idx < valid[:, None])
    row = labels.clamp(max=C - 1)
    is_open = in_m & open_rows.gather(1, row)
    first = torch.full((B, C + 1), n, dtype=torch.int64, device=labels.device)
    first.scatter_reduce_(1, torch.where(is_open, labels, C), idx, "amin")
    order = first[:, :C].argsort(dim=1, stable=True)  # new row -> old row (open rows first)
    rank = order.argsort(dim=1)  # old row -> new row
    M = M.gather(1, order[:, :, None].expand(B, C, C)).gather(2, order[:, None, :].expand(B, C, C))
    labels = torch.where(in_m, rank.gather(1, row), labels)
    return labels, M


def _components_at_cut(
    W: torch.Tensor, thr: torch.Tensor, valid: torch.Tensor, first_best: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sync-free step 2 of a cut: the components of ``W > thr`` and the max-linkage between them.

    Like ``_boruvka(..., keep_ties=True)``, but the search drops components that can
    only tie (so its matrix can halve every round) and one contraction of W afterwards
    gives the matrix between all components. Returns (labels [B, n], count [B],
    M [B, n + 1, n + 1], open_rows [B, n + 1]: rows whose strongest edge equals thr).
    """
    B, n, _ = W.shape
    labels, count, _, _, _ = _boruvka(W, thr, valid, first_best=first_best, reads=SYNC_FREE)
    real = torch.arange(n, device=W.device) < valid[:, None]
    M = _contract(W, torch.where(real, labels, n), n)
    pos = torch.arange(n + 1, device=W.device)
    open_rows = (M.max(dim=-1).values == thr[:, None]) & (pos < count[:, None])
    return labels, count, M, open_rows


def budget_components(
    W: torch.Tensor,
    valid: torch.Tensor,
    keep: torch.Tensor,
    group: torch.Tensor | None = None,
    reads: HostReads = DATA_SIZED,
) -> Components:
    """Exactly ``keep[g]`` components per group of graphs by a single-linkage cut.

    W: [B, n, n] symmetric, -inf on the diagonal and for non-edges; valid: [B] real vertices.
    keep: [G] int64 components wanted per group; group: [B] int64 group of each graph
    (contiguous runs; default: each graph is its own group). The cut is global over a
    group: the spanning-forest edges of all its graphs are ranked together, so a group of
    frames is cut at one implied threshold, like a single tau would.

    The cut keeps the ``sum(valid) - keep`` strongest spanning-forest edges of the group.
    Ties at the boundary are split deterministically: components are taken in graph
    order, then in order of their smallest vertex. If the graphs cannot be joined that
    far (non-edges), the group keeps more components.
    reads: sync-free, no host reads (module docstring); the same partition.
    """
    B = W.shape[0]
    if group is None:
        group = torch.arange(B, device=W.device)
    # 1. The levels of the cut (the row maxima of W serve both passes).
    first_best = W.max(dim=-1)
    keep_t, cut_t, ties = _cut_levels(W, valid, keep, group, first_best, reads)
    # 2. Components strictly above the weakest kept weight. The one place a sync-free
    #    call runs other code, not other sizes: keep_ties keeps components that can only
    #    tie in the matrix, so its size cannot halve on a fixed schedule; the sync-free
    #    search drops them and recovers their matrix by one contraction of W.
    if reads.sync_free:
        labels, count, M, open_rows = _components_at_cut(W, keep_t[group], valid, first_best)
        n_open = open_rows.sum(-1)
    else:
        labels, count, M, n_open, _ = _boruvka(W, keep_t[group], valid, keep_ties=True, first_best=first_best)
        open_rows = torch.arange(M.shape[1], device=W.device) < n_open[:, None]
    # 3. Split ties: join exactly `ties` more components through edges equal to keep_t.
    #    Only components still open (strongest edge == keep_t) can take part. (Without
    #    ties the step changes only the numbering, which order_components replaces.)
    if reads.read(True, lambda: bool((ties > 0).any())):
        labels, M = _canonical_open_order(labels, M, open_rows, valid)
        tie_graph = torch.where(M == keep_t[group][:, None, None], 1.0, _NEG_INF).to(M.dtype)
        tie_labels, tie_count, _, _, _ = _boruvka(
            tie_graph, W.new_zeros(B), n_open, merge_limit=ties, group=group, reads=reads
        )
        is_open = labels < n_open[:, None]
        labels = torch.where(
            is_open,
            tie_labels.gather(1, labels.clamp(max=M.shape[1] - 1)),
            labels - n_open[:, None] + tie_count[:, None],
        )
        count = count - n_open + tie_count
    return Components(labels, count, keep_t[group], cut_t[group])


def member_rank(degree: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """degree: [B, n] int, valid: [B] -> [B, n] int64: how a component's members rank for
    its representative (higher first): by degree, then by smaller index; -1 for padding.
    Distinct within a graph, so each component's highest is one member."""
    n = degree.shape[1]
    idx = torch.arange(n, device=degree.device)
    real = idx < valid[:, None]
    return torch.where(real, degree.to(torch.int64) * n + (n - 1 - idx), -1)


def order_components(
    comps: Components, degree: torch.Tensor, valid: torch.Tensor, reads: HostReads = DATA_SIZED
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relabel components by the index of their highest-degree member.

    degree: [B, n] int64 row count of the adjacency (self included); valid: [B].
    Each component's representative is its member of highest degree (ties: smaller
    index); components are numbered in increasing order of their representative.

    Returns (labels [B, n] int64, representatives [B, Cmax] int64 padded with -1);
    Cmax is the largest count, or n when sync-free (no host read).
    """
    labels, count = comps.labels, comps.count
    B, n = labels.shape
    device = labels.device
    c_max = reads.read(n, lambda: int(count.max()) if B else 0)
    idx = torch.arange(n, device=device)
    real = idx < valid[:, None]
    score = member_rank(degree, valid)
    slot = torch.where(real, labels, c_max)  # padding goes to a spare slot
    best = torch.full((B, c_max + 1), -1, dtype=torch.int64, device=device)
    best.scatter_reduce_(1, slot, score, "amax")
    best = best[:, :c_max]
    has = best >= 0
    rep = torch.where(has, (n - 1) - best.remainder(n), 0)
    is_rep = torch.zeros(B, n + 1, dtype=torch.bool, device=device)
    is_rep.scatter_(1, torch.where(has, rep, n), True)  # empty slots write to the spare column
    rank = is_rep[:, :n].cumsum(-1) - 1  # position of each representative in index order
    new_of_old = torch.where(has, rank.gather(1, rep), c_max)
    new_labels = torch.where(real, new_of_old.gather(1, labels.clamp(max=max(c_max - 1, 0))), 0)
    reps = torch.full((B, c_max + 1), -1, dtype=torch.int64, device=device)
    reps.scatter_(1, new_of_old, torch.where(has, rep, -1))
    return new_labels, reps[:, :c_max]
