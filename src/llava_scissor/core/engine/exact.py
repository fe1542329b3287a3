"""Exact decisions from inexact similarity products.

A similarity product (float32, or bfloat16 for speed) is off from the true cosine by a
rounding error that depends on the kernel: the summation order of a matrix multiply is
the library's choice, so two products of the same vectors, or the same product in two
dtypes, need not agree in the last bits. Every decision SCC takes compares a similarity
with a level (``cos > tau``, a budget's cut, the merge step's argmax), and a pair whose
computed similarity lies near that level can fall on either side.

Here such pairs are settled by a *canonical* similarity, a fixed function of the two
tokens that does not depend on the product dtype, the batch or the kernels' summation
order: the products of the two float32 unit vectors (``unit_vectors``) are exact in
float64 and are summed by a fixed pairwise tree (zero padded to a power of two), and
the sum is rounded once to float32. Outside a band around the level the product's
error bound (``ErrorBound``) guarantees the product is on the same side as the
canonical value; inside it the canonical value replaces it. So a float32 product and a
bfloat16 product lead to the same decisions, the canonical ones, bit for bit.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from .gram import gram_strips

__all__ = [
    "ErrorBound",
    "canonical_similarity",
    "float32_similarity",
    "unit_vectors",
    "zero_tokens",
    "token_norms",
    "product_units",
    "error_bound",
    "band_limits",
    "band_capacity",
    "apriori_halfwidth",
    "resolve_band_",
    "resolve_pairs_",
    "SAMPLED_COST",
]

_U32 = 2.0**-24  # unit roundoff of float32
_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
_TF32 = 2.0**-11
# Pairs per canonical evaluation: [chunk, 2^ceil(log2 d)] float64 work buffers.
_CANON_CHUNK = 256
# Float64 rows per chunk of the certified canonical values (bytes). Small enough that
# every buffer stays below the C library's largest threshold for reusing freed memory
# (32 MB): larger ones are mapped, and page-faulted, anew on every call.
_CANON_BYTES = 24 << 20
_NORM_EPS = 1e-12  # torch.nn.functional.normalize's default


def _gamma(n: int, u: float) -> float:
    """Higham's gamma_n = n u / (1 - n u): the error factor of n rounded operations."""
    return n * u / (1.0 - n * u)


def _tree_sum_(p: torch.Tensor) -> torch.Tensor:
    """p: [P, D] with D a power of two -> [P], summed by a fixed pairwise tree (p is overwritten).

    Elementwise additions in a fixed pattern: the result depends on the values only, not
    on P, the device or any kernel's blocking.
    """
    width = p.shape[1]
    while width > 1:
        width //= 2
        p[:, :width] += p[:, width : 2 * width]
    return p[:, 0]


def _pow2(d: int) -> int:
    return 1 << max(0, (d - 1).bit_length())


def token_norms(x: torch.Tensor) -> torch.Tensor:
    """x: [..., d] -> [...] the tokens' norms as ``zero_tokens`` measures them (float32, or
    float64 for float64 tokens). A NaN or Inf value makes its token's norm non-finite."""
    wide = torch.float64 if x.dtype == torch.float64 else torch.float32  # half types: in float32
    return torch.linalg.vector_norm(x, dim=-1, dtype=wide)


def zero_tokens(x: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
    """x: [..., d] -> [...] bool: the zero tokens, whose norm is below 1e-12.

    Below that norm a token has no direction that unit vectors can represent: it is
    where ``unit_vectors`` (and ``F.normalize``) stop scaling. norms: ``token_norms(x)``
    when the caller has them.
    """
    return (token_norms(x) if norms is None else norms) < _NORM_EPS


def unit_vectors(
    x: torch.Tensor, dtype: torch.dtype, out: torch.Tensor | None = None, norms: torch.Tensor | None = None
) -> torch.Tensor:
    """x: [..., d] -> [..., d] x / max(|x|, eps) in ``dtype`` (``F.normalize``); zero vectors stay zero.

    The canonical similarities are computed from these same vectors, recomputed for the
    rows they need, so a float32 product of them is off from the canonical value by its
    accumulation error only. That relies on a row's unit vector not depending on the
    other rows of the call: torch's norm reduces each contiguous row on its own
    (``tests/test_core_exact.py`` checks it). out: optional buffer (leading rows used).
    norms: optional [...] ``token_norms(x)``, taken when x and they are in ``dtype`` (they
    are then bitwise the norms computed here, the same reduction of each row).
    """
    if norms is not None and x.dtype == dtype == norms.dtype:
        norm = norms[..., None].clamp_min(_NORM_EPS)
    else:
        x = x.to(dtype)
        norm = x.norm(2, -1, keepdim=True).clamp_min(_NORM_EPS)
    if out is None:
        return x / norm
    r = x.reshape(-1, x.shape[-1]).shape[0]
    return torch.div(x, norm, out=out.reshape(-1, x.shape[-1])[:r].view(x.shape))


def _units_of_rows(
    x: torch.Tensor, rows: torch.Tensor, unit: bool = False, out: torch.Tensor | None = None
) -> torch.Tensor:
    """x: [m, d], rows: [R] -> [R, d] float32 ``unit_vectors`` of those rows (gathered in blocks).

    unit: x already holds float32 unit vectors (the rows are only gathered). out: an
    optional buffer of at least R rows (its leading rows are returned).
    """
    R = rows.shape[0]
    out = torch.empty(R, x.shape[1], dtype=torch.float32, device=x.device) if out is None else out[:R]
    if unit:
        return torch.index_select(x, 0, rows, out=out)
    if x.dtype == torch.float32:  # gathered straight into out, normalized in place
        return unit_vectors(torch.index_select(x, 0, rows, out=out), torch.float32, out=out)
    block = torch.empty(min(R, _CANON_CHUNK), x.shape[1], dtype=x.dtype, device=x.device)
    for s in range(0, R, block.shape[0]):
        e = min(R, s + block.shape[0])
        # index_select into a reused buffer: several times faster than fancy indexing.
        unit_vectors(torch.index_select(x, 0, rows[s:e], out=block[: e - s]), torch.float32, out=out[s:e])
    return out


def canonical_similarity(
    a: torch.Tensor,
    i: torch.Tensor,
    b: torch.Tensor,
    j: torch.Tensor,
    dedupe: bool = True,
    unit: bool = False,
) -> torch.Tensor:
    """a: [m, d], i: [P]; b: [m2, d], j: [P] -> [P] float32 canonical cosine of (a[i], b[j]).

    The float32 ``unit_vectors`` of the rows, their products exact in float64, summed by
    a fixed tree, rounded once to float32. unit: a and b already hold those unit vectors
    (as ``unit_vectors(x, torch.float32)`` gives them), so rows are not normalized again.
    With ``dedupe`` most values come from a certified float64 product instead of the
    tree, each chunk's distinct rows normalized once (``_certified_canonical``; host
    reads); without, the tree runs on every pair, with no host reads. The values are
    the same.
    """
    if i.shape[0] == 0:
        return torch.empty(0, dtype=torch.float32, device=a.device)
    if dedupe:
        return _certified_canonical(a, i, b, j, unit)
    return _tree_canonical(_units_of_rows(a, i, unit), _units_of_rows(b, j, unit))


def _tree_canonical(ua: torch.Tensor, ub: torch.Tensor) -> torch.Tensor:
    """ua, ub: [P, d] float32 unit vectors -> [P] float32 canonical ua[k] . ub[k], by the definition."""
    P, d = ua.shape
    out = torch.empty(P, dtype=torch.float32, device=ua.device)
    # A GPU runs a few large chunks better than many small ones.
    C = min(P, _CANON_CHUNK if ua.device.type == "cpu" else 16 * _CANON_CHUNK)
    prod = torch.zeros(C, _pow2(d), dtype=torch.float64, device=ua.device)
    wide = torch.empty(C, d, dtype=torch.float64, device=ua.device)
    for s in range(0, P, C):
        e = min(P, s + C)
        p = prod[: e - s]
        p[:, :d].copy_(ua[s:e])
        p[:, :d].mul_(wide[: e - s].copy_(ub[s:e]))  # exact in float64
        # The tree only writes columns below D/2 < d: the zero padding survives.
        out[s:e] = _tree_sum_(p)
    return out


def _certified_canonical(
    a: torch.Tensor, i: torch.Tensor, b: torch.Tensor, j: torch.Tensor, unit: bool
) -> torch.Tensor:
    """``canonical_similarity`` (see there) of the pairs (a[i], b[j]) -> [P] float32, mostly without the tree.

    The products of two float32 numbers are exact in float64, so a float64 dot product
    summed in any order (here a sampled product, ``_sampled_dots``) and the canonical
    tree sum are both within (gamma_d + gamma_log2(D)) * 2^-53 * |u| |v| of the exact
    sum. Where rounding every value in that interval to float32 gives one number, that
    number is the canonical value; the few pairs whose interval straddles a rounding
    boundary of float32 go through the tree. Reads a count back to the host.
    """
    P, d = i.shape[0], a.shape[1]
    h = 1.0 + _gamma(d + 2, _U32)  # |u| of a float32 unit vector, as in error_bound
    # Twice the bound: v +- delta is itself rounded in float64.
    delta = 2.0 * (_gamma(d, 2.0**-53) + _gamma(_pow2(d).bit_length(), 2.0**-53)) * h * h
    order = torch.argsort(i * b.shape[0] + j)  # a row's pairs together: fewer rows per chunk
    i, j = i[order], j[order]
    # Chunks of pairs, their rows in buffers reused for every chunk (fresh pages of
    # that size would cost more than the copies), about _CANON_BYTES in all.
    C = min(P, max(1, _CANON_BYTES // (24 * d)))
    narrow = torch.empty(2 * C, d, dtype=torch.float32, device=a.device)
    wide = torch.empty(2 * C, d, dtype=torch.float64, device=a.device)

    def rows64(x: torch.Tensor, rows: torch.Tensor, at: int) -> torch.Tensor:
        r = rows.shape[0]
        if unit or x.dtype != torch.float32:
            return wide[at : at + r].copy_(_units_of_rows(x, rows, unit, out=narrow[at:]))
        # Raw float32 rows are divided straight into the float64 buffer: the quotient is
        # taken in float32 (the inputs' dtype), as unit_vectors takes it, and widened exactly.
        return unit_vectors(torch.index_select(x, 0, rows, out=narrow[at : at + r]), torch.float32, out=wide[at:])

    v = torch.empty(P, dtype=torch.float64, device=a.device)
    for s in range(0, P, C):
        rows_i, ci, rows_j, cj = _distinct_rows(a, i[s : s + C], b, j[s : s + C])
        ua = rows64(a, rows_i, 0)
        ub = ua if rows_j is rows_i else rows64(b, rows_j, ua.shape[0])
        v[s : s + C] = _sampled_dots(ua, ci, ub, cj)
    lo, hi = (v - delta).float(), (v + delta).float()
    undecided = (lo != hi).nonzero().flatten()
    if undecided.shape[0]:
        iu, ju = i[undecided], j[undecided]
        lo[undecided] = _tree_canonical(_units_of_rows(a, iu, unit), _units_of_rows(b, ju, unit))
    return torch.empty_like(lo).index_copy_(0, order, lo)


def float32_similarity(
    a: torch.Tensor, i: torch.Tensor, b: torch.Tensor, j: torch.Tensor, unit: bool = False
) -> torch.Tensor:
    """a: [m, d], i: [P]; b: [m2, d], j: [P] -> [P] float32 dot products of the rows' float32 unit vectors.

    Summed in any order, so off from ``canonical_similarity`` by at most the float32
    ``error_bound`` (with no input rounding); an order of magnitude cheaper per pair.
    Used to narrow a wide band of low-precision products before the canonical values.
    unit: a and b already hold the unit vectors.
    """
    if i.shape[0] == 0:
        return torch.empty(0, dtype=torch.float32, device=a.device)
    if unit:
        return _sampled_dots(a, i, b, j)
    rows_i, i, rows_j, j = _distinct_rows(a, i, b, j)
    ua = _units_of_rows(a, rows_i)
    return _sampled_dots(ua, i, ua if rows_j is rows_i else _units_of_rows(b, rows_j), j)


def _distinct_rows(
    a: torch.Tensor, i: torch.Tensor, b: torch.Tensor, j: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The distinct rows a pair list needs -> (rows of a, i into them, rows of b, j into them).

    When a is b (pairs within one token set) both ends share one row set, returned as
    the same tensor twice, so that each row is prepared once.
    """
    if a is b:
        rows, inverse = torch.unique(torch.cat([i, j]), return_inverse=True)
        return rows, inverse[: i.shape[0]], rows, inverse[i.shape[0] :]
    rows_i, i = torch.unique(i, return_inverse=True)
    rows_j, j = torch.unique(j, return_inverse=True)
    return rows_i, i, rows_j, j


def _sampled_dots(ua: torch.Tensor, i: torch.Tensor, ub: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """ua: [ra, d], i: [P]; ub: [rb, d], j: [P] -> [P] ua[i] . ub[j] in ua's dtype.

    A sampled dense-dense product (``torch.sparse.sampled_addmm``) at the pairs: each
    pair's two rows are read in place, with none of the per-pair gathered copies that a
    batched dot needs (on a CPU, about ten times faster per pair).
    """
    order = torch.argsort(i * ub.shape[0] + j)  # a CSR pattern lists its entries row by row
    rows, cols = i[order], j[order]
    crow = torch.searchsorted(rows, torch.arange(ua.shape[0] + 1, device=ua.device))
    with warnings.catch_warnings():
        # Sparse CSR tensors warn, once per process, that their support is in beta;
        # this one is internal and never reaches the caller.
        warnings.simplefilter("ignore", UserWarning)
        pattern = torch.sparse_csr_tensor(
            crow, cols, torch.zeros_like(rows, dtype=ua.dtype), (ua.shape[0], ub.shape[0]), check_invariants=False
        )
    vals = torch.sparse.sampled_addmm(pattern, ua, ub.mT, beta=0.0).values()
    return torch.empty_like(vals).index_copy_(0, order, vals)


def _input_roundoff(dtype: torch.dtype, device: torch.device) -> float:
    """Relative rounding of the product's inputs when float32 unit vectors go in as ``dtype``."""
    if dtype in _ROUNDOFF:
        return _ROUNDOFF[dtype]
    if dtype == torch.float32:
        # Float32 products may run on reduced-precision inputs when the user allowed it.
        if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
            return _TF32
        precision = torch.get_float32_matmul_precision()
        if precision == "medium":
            return _ROUNDOFF[torch.bfloat16]
        if precision == "high":
            return _TF32
    return 0.0


def product_units(u: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """u: [..., d] float32 unit vectors -> (u in ``dtype``, [] largest norm of the rounding residual).

    The residual u - round(u) is exact in float32; its measured norm (not the a-priori
    unit-roundoff bound, which is about twice as large) enters the error bound.
    """
    if dtype == u.dtype:
        return u, u.new_zeros(())
    low = u.to(dtype)
    rows, d = low.reshape(-1, low.shape[-1]).shape
    flat_u, flat_low = u.reshape(rows, d), low.reshape(rows, d)
    # Row blocks through one small buffer (about 1 MB: it stays in cache between the
    # three passes): whole-size temporaries would cost more in fresh pages than the
    # subtraction itself. The rounded rows are widened into it first: a subtraction of
    # mixed dtypes runs about half as fast.
    block = max(1, min(rows, _CANON_CHUNK, (1 << 20) // (d * u.element_size())))
    buf = torch.empty(block, d, dtype=u.dtype, device=u.device)
    norms = torch.empty(rows, dtype=u.dtype, device=u.device)
    for s in range(0, rows, buf.shape[0]):
        e = min(rows, s + buf.shape[0])
        r = buf[: e - s].copy_(flat_low[s:e])
        torch.sub(flat_u[s:e], r, out=r)  # exact: low is u rounded
        torch.linalg.vector_norm(r, dim=-1, out=norms[s:e])
    return low, norms.amax() if rows else u.new_zeros(())


@dataclass(frozen=True)
class ErrorBound:
    """Bound on |product similarity - canonical similarity|.

    ``at(levels)`` is the bound for products whose value lies within a few bounds of
    each level: the output rounding of a low-precision product grows with the magnitude.
    ``base`` is a 0-d float64 tensor on the products' device, so that a bound built from
    a measured residual never has to be read back to the host.
    """

    base: torch.Tensor  # input rounding + accumulation + normalization + canonical rounding
    output_roundoff: float  # unit roundoff of the product's output (0 for float32 out)

    def at(self, levels: torch.Tensor) -> torch.Tensor:
        """levels: [...] float -> [...] bound (float64) valid for values near each level."""
        levels = levels.to(torch.float64)
        if self.output_roundoff == 0.0:
            return torch.zeros_like(levels) + self.base
        # Every value within a few bounds of the level (bands reach two bounds out).
        m = levels.abs().nan_to_num(0.0, 0.0, 0.0) + 3 * (self.base + 2 * self.output_roundoff)
        # Rounding to p bits moves a value of magnitude < 2^(e+1) by at most 2^e * u.
        half_ulp = torch.exp2(torch.floor(torch.log2(m))) * self.output_roundoff
        return self.base + half_ulp


def error_bound(d: int, dtype: torch.dtype, device: torch.device, residual: torch.Tensor | float) -> ErrorBound:
    """The error bound of a product of ``unit_vectors`` of dim d computed in ``dtype``.

    residual: the largest rounding residual norm of the inputs (``product_units``, a
    tensor on the device or a float); an a-priori one is used where it is 0 (the
    product rounds its inputs itself, as TF32 does, or does not round them).

    Terms, for unit vectors u, v (norm at most h) and their rounded copies u', v':
    * input rounding: |u.v - u'.v'| <= |r_u| |v| + |u'| |r_v| (Cauchy-Schwarz);
    * accumulation: gamma_d(u32) |u'| |v'| (float32 accumulation in any order);
    * the canonical value: exact products, a float64 tree sum, rounded once to float32;
    * output rounding of a bfloat16 / float16 product: see ``ErrorBound.at``.
    """
    if dtype == torch.float64:
        return ErrorBound(base=torch.zeros((), dtype=torch.float64, device=device), output_roundoff=0.0)
    h = 1.0 + _gamma(d + 2, _U32)  # a normalized float32 vector's norm is 1 within its roundings
    r = torch.as_tensor(residual, dtype=torch.float64, device=device)
    r = torch.where(r == 0, _input_roundoff(dtype, device) * h, r)
    hl = h + r
    e_in = r * (h + hl)
    e_acc = _gamma(d, _U32) * hl * hl
    e_canon = _U32 * 1.001 + _gamma(_pow2(d).bit_length(), 2.0**-53)
    # The band test is done in float32; and a unit vector recomputed for the canonical
    # value may differ from the product's in its last bit if a kernel ever reduced rows
    # differently (2^-22 covers a one-ulp difference of every coordinate).
    margin = 2e-7 + 2.0**-22
    out = 0.0 if dtype == torch.float32 else _ROUNDOFF[dtype]
    return ErrorBound(base=e_in + e_acc + e_canon + margin, output_roundoff=out)


def band_limits(levels: torch.Tensor, halfwidth: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """levels, halfwidth: [B, L] -> (lo [B], hi [B]) in ``dtype``: one interval spanning every band.

    Non-finite levels (no cut, no join) are ignored; a graph without a finite level gets
    an empty interval (lo = +inf > hi = -inf).
    """
    levels = levels.to(torch.float64)
    finite = torch.isfinite(levels)
    lo = torch.where(finite, levels - halfwidth, float("inf")).amin(dim=1)
    hi = torch.where(finite, levels + halfwidth, float("-inf")).amax(dim=1)
    return lo.to(dtype), hi.to(dtype)


def band_capacity(pairs: int, halfwidth: float) -> int:
    """How many band pairs a sync-free pass makes room for, out of ``pairs`` candidates.

    halfwidth: the band's half-width (an a-priori one: the host cannot wait for the
    measured one). On synthetic videos the band held up to 16 x halfwidth of the pairs
    (similarities crowd near a budget's cut); this leaves room for twice that. A pass
    that finds more reports it (``resolve_band_``) and the caller starts over on the
    path that sizes its buffers from the data.
    """
    return min(pairs, 1024 + math.ceil(32 * halfwidth * pairs))


def apriori_halfwidth(d: int, dtype: torch.dtype) -> float:
    """The largest ``error_bound`` of a product of dim d in ``dtype``, without measuring (a host float)."""
    cpu = torch.device("cpu")
    return float(error_bound(d, dtype, cpu, 0.0).at(torch.ones((), dtype=torch.float64)))


def resolve_band_(
    W: torch.Tensor,
    x: torch.Tensor,
    levels: torch.Tensor,
    halfwidth: torch.Tensor,
    rows: int = 1024,
    capacity: int | None = None,
    refine: tuple[torch.Tensor, Callable[[], torch.Tensor] | None] | None = None,
    units: torch.Tensor | None = None,
    pairs: list[torch.Tensor] | None = None,
    above: torch.Tensor | None = None,
    find_only: bool = False,
    high: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Replace, in place, the entries of W near the levels by their canonical values.

    W: [B, n, n] symmetric similarities (-inf for non-edges); x: [B, n, d] the raw tokens
    the similarities are of; levels: [B, L] float (non-finite levels are ignored);
    halfwidth: [B, L]. Every entry within ``halfwidth`` of a level is replaced; so may
    be entries between two levels (one interval per graph spans all its bands: one
    pass over W, and an exact value is never wrong). Each pair is computed once (i < j)
    and written to both halves.

    capacity: None sizes the work from the data (host reads). An int makes it
    sync-free: at most ``capacity`` pairs are replaced, in buffers of that fixed size.
    Returns the number of pairs in the band, a 0-d int64 tensor on W's device; with a
    capacity, a count above it means that the band was not fully resolved.

    refine: for low-precision products, whose band is wide, (fine halfwidth [], relevel).
    The band's pairs first get ``float32_similarity`` values, written to W; only those
    within the fine halfwidth (the float32 bound) of the levels then get canonical
    values. relevel() gives those levels ([B, L]) from W as it is then, or None keeps
    ``levels``; a caller whose levels come from W (a budget's cut) widens ``halfwidth``
    by two fine bounds, so that the float32 levels lie within one fine bound of the
    canonical ones. (Data-sized path only; ignored with a capacity.)

    units: optional [B, n, d] float32 ``unit_vectors`` of x, when the caller has them:
    the exact values are then computed from them, with no normalization.
    pairs: optional list (data-sized path) that receives the band's pairs, [P, 3] int64
    rows (b, i, j) with i < j: every pair within the interval, whatever value it got.
    above: optional [B, n] int32 (data-sized path) that receives each row's count of
    entries above the interval (which the call leaves as they are), taken in the same
    pass over W.
    find_only: the band's pairs are found (and listed in ``pairs``) but keep their
    products' values; the caller resolves those it needs (``resolve_pairs_``).
    high: optional list (data-sized path) that receives the pairs above the interval,
    [Q, 3] (b, i, j) with i < j, found in the same pass, unless there are more than
    ``_HIGH_PER_ROW`` per row (then it stays empty).
    """
    B, n, _ = W.shape
    lo, hi = band_limits(levels, halfwidth, W.dtype)
    lo, hi = lo[:, None, None], hi[:, None, None]
    unit = units is not None
    flat = (units if unit else x).reshape(B * n, x.shape[-1])
    if capacity is not None:
        return _resolve_band_static_(W, flat, unit, lo, hi, capacity)
    idx = _band_pairs(W, lo, hi, rows, above, high)
    if pairs is not None:
        pairs.append(idx)
    if not find_only and idx.shape[0]:
        b, i, j = idx.unbind(1)
        if refine is not None:
            fine, relevel = refine
            approx = _float32_band_values(flat, n, b, i, j, unit).to(W.dtype)
            W[b, i, j] = approx
            W[b, j, i] = approx
            near = levels if relevel is None else relevel()
            lo2, hi2 = band_limits(near, fine.expand_as(near), W.dtype)
            keep = (approx >= lo2[b]) & (approx <= hi2[b])
            b, i, j = b[keep], i[keep], j[keep]
        resolve_pairs_(W, flat, unit, torch.stack([b, i, j], dim=1))
    return torch.full((), idx.shape[0], dtype=torch.int64, device=W.device)


def resolve_pairs_(W: torch.Tensor, flat: torch.Tensor, unit: bool, pairs: torch.Tensor) -> None:
    """W: [B, n, n]; pairs: [P, 3] (b, i, j) -> both entries of each pair set to its canonical value, in place.

    flat: [B * n, d] the tokens W is of, or their float32 unit vectors (``unit``)."""
    if not pairs.shape[0]:
        return
    n = W.shape[1]
    b, i, j = pairs.unbind(1)
    vals = canonical_similarity(flat, b * n + i, flat, b * n + j, unit=unit).to(W.dtype)
    W[b, i, j] = vals
    W[b, j, i] = vals


# Entries of W per block of ``resolve_band_``'s scan (1 MB of float32: a block stays in cache).
_SCAN_ENTRIES = 1 << 18


# Pairs above the band that the scan lists (``resolve_band_``'s ``high``), per row of W.
_HIGH_PER_ROW = 64


def _upper_pairs(mask: torch.Tensor, r: int) -> torch.Tensor:
    """mask: [B, m, n - r] the rows r..r+m of a matrix from column r on -> [P, 3] (b, i, j), i < j, where True."""
    idx = mask.nonzero()
    idx[:, 1:] += r
    return idx[idx[:, 1] < idx[:, 2]]


def _split_at_level_(
    W: torch.Tensor, mask: torch.Tensor, r: int, hi: torch.Tensor, above: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """mask: [B, m, n - r] W >= lo on rows r..r+m from column r on (lo <= hi) -> (band pairs,
    pairs above hi): [P, 3] (b, i, j), i < j, each in nonzero order; adds to above [B, n]
    each row's entries above hi, those right of the diagonal block also to their column.

    ``_band_pairs``'s block step with one nonzero: the entries at or above lo are few
    next to the block, and their values split them.
    """
    B, n, _ = W.shape
    m = mask.shape[1]
    idx = mask.nonzero()  # [P, 3], j from column r
    b, i, j = idx.unbind(1)
    rows_at = b * n + i + r  # into [B * n]
    vals = W.view(-1).index_select(0, rows_at * n + j + r)
    over = vals > hi.view(-1).index_select(0, b)
    flat = above.view(-1)
    flat.index_add_(0, rows_at, over.to(above.dtype))  # entries above hi, in their row
    right = over & (j >= m)  # and right of the diagonal block: in their column too (symmetry)
    flat.index_add_(0, b * n + j + r, right.to(above.dtype))
    upper = i < j
    idx[:, 1:] += r  # (i and j are views of idx: nothing reads them after this)
    return idx[upper & ~over], idx[upper & over]


def _band_pairs(
    W: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    rows: int,
    above: torch.Tensor | None,
    high: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """W: [B, n, n] symmetric, lo, hi: [B, 1, 1] -> [P, 3] the pairs (b, i, j), i < j, with lo <= W <= hi.

    above: optional [B, n] int32 that receives each row's count of entries above hi.
    high: optional list that receives the pairs above hi (i < j), [Q, 3], unless there
    are more than ``_HIGH_PER_ROW`` per row of W.
    Only the upper triangle is compared (by symmetry an entry's count goes to its row and
    its column), in blocks of rows small enough to stay in cache while they are compared
    twice, the masks in buffers reused for every block (fresh pages cost more than the
    comparisons). Pairs come in (block, b, i, j) order.
    """
    B, n, _ = W.shape
    found = []
    rows = max(1, min(rows, _SCAN_ENTRIES // max(1, B * n)))
    inside = torch.empty(B * rows * n, dtype=torch.bool, device=W.device)
    over = torch.empty_like(inside)
    if above is not None:
        above.zero_()
        col_counts = torch.empty(B, n, dtype=torch.int32, device=W.device)
        row_counts = torch.empty(B, rows, dtype=torch.int32, device=W.device)
    strong: list[torch.Tensor] | None = None if high is None else []
    listed = 0
    # While the pairs above the band are listed, one comparison and one nonzero find the
    # band's entries and those above it together; their values then tell them apart.
    # (Not for an empty interval, lo > hi: every finite entry is above it.)
    together = above is not None and strong is not None and W.is_contiguous() and bool((lo <= hi).all())
    for r in range(0, n, rows):
        block = W[:, r : r + rows, r:]  # [B, m, n - r]: the diagonal block and the columns right of it
        m, width = block.shape[1], block.shape[2]
        size = B * m * width  # contiguous views of the buffers
        mask = torch.ge(block, lo, out=inside[:size].view(B, m, width))
        if together and strong is not None and above is not None:
            band, strong_pairs = _split_at_level_(W, mask, r, hi, above)
            found.append(band)
            strong.append(strong_pairs)
            listed += strong_pairs.shape[0]
            if listed > _HIGH_PER_ROW * B * n:
                strong = None
            continue
        strict = torch.gt(block, hi, out=over[:size].view(B, m, width))
        torch.gt(mask, strict, out=mask)  # on booleans: lo <= W and not W > hi
        if above is not None:
            # Rows: the diagonal block whole and the columns right of it; columns right of
            # the block: their entries in these rows, which by symmetry are in their row.
            above[:, r : r + m] += torch.sum(strict, dim=-1, dtype=torch.int32, out=row_counts[:, :m])
            if width > m:
                above[:, r + m :] += torch.sum(
                    strict[:, :, m:], dim=1, dtype=torch.int32, out=col_counts[:, : width - m]
                )
        found.append(_upper_pairs(mask, r))
        if strong is not None:
            strong.append(_upper_pairs(strict, r))
            listed += strong[-1].shape[0]
            if listed > _HIGH_PER_ROW * B * n:
                strong = None  # too many to list: the caller finds their components otherwise
    if high is not None and strong is not None:
        high.append(torch.cat(strong))
    return torch.cat(found)


# A sampled float32 dot product (``float32_similarity``) costs about as much as this many
# entries of a dense float32 product (measured on CPU at d = 896 and 3584). A band that
# holds more than that share of a graph's pairs (i < j, half the matrix) is narrowed from
# the dense product's upper triangle.
SAMPLED_COST = 16


def _float32_band_values(
    flat: torch.Tensor, n: int, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor, unit: bool
) -> torch.Tensor:
    """[P] float32 dot products of the float32 unit vectors of pairs (b, i, j), b the graph
    of n rows in flat [B * n, d], i < j: sampled, or for a dense band from the column
    strips of each graph's float32 product (its upper triangle). Either is within the
    float32 bound of the canonical value (any summation order), which is all
    ``resolve_band_``'s narrowing needs."""
    graphs, counts = torch.unique(b, return_counts=True)  # data-sized path: reads are fine
    dense = 2 * counts * SAMPLED_COST >= n * n
    if not bool(dense.any()):
        return float32_similarity(flat, b * n + i, flat, b * n + j, unit)
    out = torch.empty(b.shape[0], dtype=torch.float32, device=flat.device)
    for g, whole in zip(graphs.tolist(), dense.tolist(), strict=True):
        sel = (b == g).nonzero().squeeze(1)
        ii, jj = i[sel], j[sel]
        rows = flat[g * n : (g + 1) * n]
        if whole:
            u = rows if unit else unit_vectors(rows, torch.float32)
            for s, strip in gram_strips(u[None]):  # columns s..s+t, rows 0..s+t
                at = ((jj >= s) & (jj < s + strip.shape[2])).nonzero().squeeze(1)
                out[sel[at]] = strip[0, ii[at], jj[at] - s]
        else:
            out[sel] = float32_similarity(rows, ii, rows, jj, unit)
    return out


def _resolve_band_static_(
    W: torch.Tensor, flat: torch.Tensor, unit: bool, lo: torch.Tensor, hi: torch.Tensor, capacity: int
) -> torch.Tensor:
    """``resolve_band_`` with fixed-size buffers: no host reads (see there).

    flat: [B * n, d] the tokens, or their unit vectors (``unit``)."""
    B, n, _ = W.shape
    pos = torch.arange(n, device=W.device)
    band = (W >= lo) & (W <= hi) & (pos[:, None] < pos[None, :])
    count = band.sum()
    # Unused slots are filled with (0, 0, 0), a diagonal entry: it is written back unchanged.
    b, i, j = torch.nonzero_static(band, size=capacity, fill_value=0).unbind(1)
    vals = canonical_similarity(flat, b * n + i, flat, b * n + j, dedupe=False, unit=unit).to(W.dtype)
    vals = torch.where(i < j, vals, W[b, i, j])
    W[b, i, j] = vals
    W[b, j, i] = vals
    return count
