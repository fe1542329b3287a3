"""Unit vectors and their gram matrices: the one product every similarity comes from.

Each set's gram matrix is built from column strips of its upper triangle
(``gram_strips``), in memory (``sets.similarity_graph``) and strip by strip
(``tiled.py``) alike, so both paths see bitwise-identical similarities.
"""

from __future__ import annotations

import torch

__all__ = [
    "to_device",
    "unit_dtype",
    "matrix_bytes",
    "product_into",
    "wide_product_into",
    "padded_columns",
    "zero_padded",
    "gram_strips",
    "symmetric_gram",
    "transposed",
]

# Above this many vertices a gram matrix is built from column strips of its upper
# triangle this wide: half the multiply-adds, and exactly symmetric by construction.
_TILE = 256

# A set of at most _TILE vertices (a frame) is built from strips this narrow: at 196
# tokens that is two thirds of the full product's multiply-adds, and on one CPU thread
# the strips and their mirror took 18 % less time than the full product at dim 896
# (29 % at dim 3584). Sets of at most this many take the full product.
_SMALL_TILE = 64

# A CPU kernel writing a wide product (a chunk of originals by thousands of targets) runs
# 10-20 % below its rate on square ones; in column blocks of this many targets it does
# not, with the same values. Products up to _WIDE_COLUMNS columns run whole.
_WIDE_BLOCK = 1024
_WIDE_COLUMNS = 4 * _WIDE_BLOCK

# ... and a product whose column count is not a multiple of this runs up to a fifth
# slower than one a column wider (dim 896, one thread: 1983 rows by 127 columns 6.3 ms,
# by 128 5.0 ms; 191 / 192 columns 8.6 / 7.2 ms; 6272 by 2509 / 2512 321 / 291 ms).
# Where padding would add more than 1/_PAD_SHARE of the columns it is not done (100
# columns as 112 took longer).
_COLUMN_MULTIPLE = 16
_PAD_SHARE = 16


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on ``device``, without making the host wait.

    A plain host-to-GPU copy from pageable memory synchronizes the stream (the host
    waits for all queued work); from pinned memory, non-blocking, it is queued like a
    kernel. The caching host allocator keeps the pinned buffer alive until the copy ran.
    """
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def unit_dtype(sim_dtype: torch.dtype) -> torch.dtype:
    """The dtype of the unit vectors and of the similarity matrix for a product dtype.

    A bfloat16 product takes float32 unit vectors rounded to bfloat16 and its results
    go into a float32 matrix, where exact values can replace the ones near a threshold.
    """
    return torch.float64 if sim_dtype == torch.float64 else torch.float32


def matrix_bytes(n: int, sim_dtype: torch.dtype) -> int:
    """Bytes of one n x n similarity matrix for products in ``sim_dtype`` (stored in ``unit_dtype``)."""
    return n * n * unit_dtype(sim_dtype).itemsize


def product_into(a: torch.Tensor, b_t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out[...] = a @ b_t, written in place; a low-precision product is widened into out."""
    if a.dtype == out.dtype:
        return torch.matmul(a, b_t, out=out)
    return out.copy_(a @ b_t)


def wide_product_into(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """a: [c, d], b: [k, d] -> out [c, k] = a @ b^T, written in place (a, b, out of one dtype).

    On a CPU a product of more than ``_WIDE_COLUMNS`` columns goes in column blocks of
    ``_WIDE_BLOCK``, each written straight into its columns of out; elsewhere one product.
    """
    k = b.shape[0]
    if a.device.type != "cpu" or k <= _WIDE_COLUMNS:
        return torch.mm(a, b.mT, out=out)
    for s in range(0, k, _WIDE_BLOCK):
        torch.mm(a, b[s : s + _WIDE_BLOCK].mT, out=out[:, s : s + _WIDE_BLOCK])
    return out


def padded_columns(k: int, device: torch.device) -> int:
    """The columns a product of k columns is computed with: on a CPU k rounded up to a
    multiple of ``_COLUMN_MULTIPLE`` where that adds at most k / ``_PAD_SHARE`` columns,
    else k. The caller pads the right-hand side with zero rows and drops or masks the
    extra columns."""
    padded = -(-k // _COLUMN_MULTIPLE) * _COLUMN_MULTIPLE
    if device.type != "cpu" or (padded - k) * _PAD_SHARE > k:
        return k
    return padded


def zero_padded(t: torch.Tensor, rows: int) -> torch.Tensor:
    """t: [k, d] -> [rows, d]: t and zero rows below it (t itself when rows == k)."""
    if rows == t.shape[0]:
        return t
    return torch.cat([t, t.new_zeros(rows - t.shape[0], t.shape[1])])


def gram_strips(xn: torch.Tensor, tile: int = _TILE, out: torch.Tensor | None = None):
    """xn: [B, n, d] -> yields (i, strip [B, i + t, t]) = columns i..i+t of xn @ xn^T, rows 0..i+t.

    The upper triangle (diagonal blocks included) in column strips: half the multiply-adds
    of the full product, and tall, narrow products, which CPU matrix-multiply kernels run
    faster than wide ones. The diagonal block of each strip (its last t rows) is made
    exactly symmetric (kernels need not give bitwise-equal (i, j) and (j, i), and the
    component search relies on symmetry). The in-memory and the tiled paths both build
    on these strips, so they see bitwise-identical similarities.
    out: optional [B, n, n]; the strips are then views of it, written in place. Without
    it every strip is written into one buffer, so a strip is valid until the next one is
    yielded (a fresh strip of tens of MB would be fresh pages each time). Strips are in
    ``unit_dtype(xn.dtype)`` (bfloat16 products are widened to float32).
    """
    B, n = xn.shape[:2]
    if out is None:
        buf = torch.empty(B * n * min(tile, n), dtype=unit_dtype(xn.dtype), device=xn.device)
    for i in range(0, n, tile):
        cols = xn[:, i : i + tile]
        rows = xn[:, : i + cols.shape[1]]
        R, t = rows.shape[1], cols.shape[1]
        strip = buf[: B * R * t].view(B, R, t) if out is None else out[:, :R, i : i + t]
        wide = padded_columns(t, xn.device)
        if wide > t:  # a last strip of an odd width: zero columns added, then dropped
            scratch = torch.empty(R, wide, dtype=strip.dtype, device=xn.device)
            for b in range(B):
                product_into(rows[b], zero_padded(cols[b], wide).mT, scratch)
                strip[b].copy_(scratch[:, :t])
        else:
            for b in range(B):  # 2-D products write straight into the (strided) view
                product_into(rows[b], cols[b].mT, strip[b])
        diag = strip[:, i:]
        diag.copy_(torch.maximum(diag, diag.mT))
        yield i, strip


def copy_transposed_(out: torch.Tensor, x: torch.Tensor, tile: int = _TILE) -> torch.Tensor:
    """out[...] = x^T: x [B, r, c] into out [B, c, r] (any strides), tile by tile; returns out.

    A tile's transpose stays in cache; one transposed copy of a large matrix reads rows
    that lie c floats apart (several times slower once c is in the thousands).
    """
    r, c = x.shape[1:]
    for i in range(0, r, tile):
        for j in range(0, c, tile):
            out[:, j : j + tile, i : i + tile] = x[:, i : i + tile, j : j + tile].mT
    return out


def transposed(x: torch.Tensor, tile: int = _TILE) -> torch.Tensor:
    """x: [B, r, c] -> [B, c, r] contiguous (``copy_transposed_`` for large ones)."""
    B, r, c = x.shape
    if r * c <= tile * tile:
        return x.mT.contiguous()
    return copy_transposed_(torch.empty(B, c, r, dtype=x.dtype, device=x.device), x, tile)


def symmetric_gram(xn: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """xn: [B, n, d] -> [B, n, n] = xn @ xn^T in ``unit_dtype(xn.dtype)``, exactly symmetric.

    out: optional [B, n, n] buffer in that dtype, written in place and returned.
    """
    B, n, _ = xn.shape
    g = torch.empty(B, n, n, dtype=unit_dtype(xn.dtype), device=xn.device) if out is None else out
    if n <= _SMALL_TILE:
        product_into(xn, xn.mT, g)
        return g.copy_(torch.maximum(g, g.mT))
    for i, strip in gram_strips(xn, tile=_TILE if n > _TILE else _SMALL_TILE, out=g):
        t = strip.shape[2]
        copy_transposed_(g[:, i : i + t, :i], strip[:, :i])  # the lower triangle
    return g
