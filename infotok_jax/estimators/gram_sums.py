"""The sums every HSIC variant is made of: dense, or streamed over tiles in O(n (d + block)) memory.

Both estimators are functions of a few sums over shifted Gram matrices K' and L':
  s      = sum_ij K'_ij L'_ij          r_K = K' 1, r_L = L' 1 (row sums)        t_K = 1^T K' 1
  biased    tr(K H L H) / (n-1)^2            = (s - (2/n) r_K.r_L + t_K t_L / n^2) / (n-1)^2
  unbiased  (Song et al. 2012, K', L' with zero diagonal)
            = (s + t_K t_L / ((n-1)(n-2)) - (2/(n-2)) r_K.r_L) / (n (n-3))
Both are exactly invariant to the symmetric additive shift K'_ij = K_ij - u_i - u_j + c (for the unbiased
estimator on the off-diagonal entries), because H 1 = 0 and U-centring removes additive terms. In float32
the raw sums cancel catastrophically (errors up to 2.5e-4 measured), so the shift is chosen to centre K:
  dense    exact centring: H K H (biased) or U-centring (unbiased); the correction terms are then ~0;
  blocked  u = column means over a strided subsample of STATS_ROWS rows, c = their mean, so each
           streamed tile is already nearly centred.
The shift statistics are under stop_gradient: the value does not depend on them, so neither does its
gradient, and the backward pass skips them.

The blocked path exploits symmetry: only the upper-triangular tiles (block i <= block j) are computed,
off-diagonal tiles count twice, so a sweep costs half the matmul and exp work of the full matrices.
Tiles run in a `lax.scan` whose carry holds the O(n) row sums; each tile is under `jax.checkpoint`, so
the gradient recomputes it instead of storing n x n residuals. Rows are padded to a whole number of
blocks and padded rows and columns are masked.

Feature arrays carry a leading "set" axis S (several feature sets against one target, sharing the
target's Gram blocks); a single HSIC is S = 1.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from infotok_jax.estimators import kernels

Array = jax.Array

STATS_ROWS = 128  # rows whose Gram row means estimate the centring shift of the blocked path


class Side(NamedTuple):
    """One side of the dependence: centred features, their squared norms, kernel name and bandwidth."""

    x_SxNxD: Array
    sqn_SxN: Array
    bandwidth_S: Array  # (S,) or (S, scales) for "multiscale"
    kernel: str


class Sums(NamedTuple):
    """The sums for K (per set), L, and optionally K with itself and L with itself."""

    s_kl_S: Array
    r_k_SxN: Array
    r_l_N: Array
    s_kk_S: Array | None
    s_ll: Array | None


def make_side(x_SxNxD: Array, bandwidth_S: Array, kernel: str) -> Side:
    """Centres each feature set and precomputes squared row norms."""
    x_SxNxD = jax.vmap(kernels.center_features)(x_SxNxD)
    return Side(x_SxNxD, jnp.sum(x_SxNxD * x_SxNxD, axis=-1), bandwidth_S, kernel)


def _gram(
    side: Side,
    a_SxBxD: Array,
    b_SxCxD: Array,
    sqn_a_SxB: Array,
    sqn_b_SxC: Array,
    precision: str,
    same_point_BxC: Array | None = None,
) -> Array:
    """Kernel block k(a_i, b_j) per set, shape (S, B, C); `same_point_BxC` marks identical rows."""
    fn = lambda a, b, sa, sb, bw: kernels.kernel_block(
        side.kernel, a, b, sa, sb, bw, precision, same_point_BxC
    )
    return jax.vmap(fn)(a_SxBxD, b_SxCxD, sqn_a_SxB, sqn_b_SxC, side.bandwidth_S)


def _shift(k_SxBxC: Array, u_SxB: Array, v_SxC: Array, c_S: Array) -> Array:
    return k_SxBxC - u_SxB[:, :, None] - v_SxC[:, None, :] + c_S[:, None, None]


def _exact_shift_stats(k_SxNxN: Array, unbiased: bool) -> tuple[Array, Array, Array]:
    """(u, v, c) that exactly double-centre (biased) or U-centre (unbiased, zero diagonal) K."""
    n = k_SxNxN.shape[-1]
    if unbiased:
        k_SxNxN = k_SxNxN * (1.0 - jnp.eye(n, dtype=k_SxNxN.dtype))[None]
        row, col, total = k_SxNxN.sum(2), k_SxNxN.sum(1), k_SxNxN.sum((1, 2))
        return row / (n - 2.0), col / (n - 2.0), total / ((n - 1.0) * (n - 2.0))
    return k_SxNxN.mean(2), k_SxNxN.mean(1), k_SxNxN.mean((1, 2))


def center_gram(k_NxN: Array, unbiased: bool) -> Array:
    """H K H (biased) or the U-centred K with zero diagonal (unbiased), so that
    sum(Kc * Lc) / (n-1)^2, resp. / (n (n-3)), is the estimator."""
    k_1xNxN = k_NxN[None]
    kc = _shift(k_1xNxN, *_exact_shift_stats(k_1xNxN, unbiased))[0]
    return kc * (1.0 - jnp.eye(k_NxN.shape[0], dtype=kc.dtype)) if unbiased else kc


def _approx_shift_stats(side: Side, precision: str) -> tuple[Array, Array]:
    """(mu, c): column means over a strided subsample of STATS_ROWS rows, and their mean (u = v = mu)."""
    n = side.x_SxNxD.shape[1]
    m = min(n, STATS_ROWS)
    rows = np.arange(m) * (n // m)
    k_SxMxN = _gram(side, side.x_SxNxD[:, rows], side.x_SxNxD, side.sqn_SxN[:, rows], side.sqn_SxN, precision)
    mu_SxN = k_SxMxN.mean(1)
    return mu_SxN, mu_SxN.mean(1)


def _pair_sums(kp: Array, lp: Array, need_self: bool) -> tuple[Array, ...]:
    """sum(K' L') per set, plus sum(K'^2) and sum(L'^2) when needed; kp (S, B, C), lp (B, C)."""
    out = (jnp.einsum("sbc,bc->s", kp, lp, precision=lax.Precision.HIGHEST),)
    if need_self:
        out += (jnp.sum(kp * kp, axis=(1, 2)), jnp.sum(lp * lp))
    return out


def centred_gram(side: Side, *, unbiased: bool, precision: str) -> Array:
    """The full Gram matrix of each set, exactly centred: H K H (biased) or U-centred with a zero
    diagonal (unbiased); shape (S, n, n). The centring statistics are under stop_gradient."""
    n = side.x_SxNxD.shape[1]
    eye = jnp.eye(n, dtype=bool)
    k = _gram(side, side.x_SxNxD, side.x_SxNxD, side.sqn_SxN, side.sqn_SxN, precision, eye)
    kp = _shift(k, *lax.stop_gradient(_exact_shift_stats(k, unbiased)))
    if unbiased:
        kp = kp * (1.0 - jnp.eye(n, dtype=kp.dtype))[None]
    return kp


def sums_from_grams(kp_SxNxN: Array, lp_NxN: Array, *, need_self: bool) -> Sums:
    """The sums of S centred Gram matrices against one centred Gram matrix, as one batched reduction.

    The S matrices may come from feature sets of different widths and kernels (`hsic_one_to_many`
    stacks them); only their common n matters here.
    """
    pair = _pair_sums(kp_SxNxN, lp_NxN, need_self)
    return Sums(pair[0], kp_SxNxN.sum(2), lp_NxN.sum(1), *(pair[1:] if need_self else (None, None)))


def dense_sums(xs: Side, y: Side, *, unbiased: bool, precision: str, need_self: bool) -> Sums:
    """All sums from the full n x n Gram matrices, exactly centred (O(S n^2) memory)."""
    kp = centred_gram(xs, unbiased=unbiased, precision=precision)
    lp = centred_gram(y, unbiased=unbiased, precision=precision)[0]
    return sums_from_grams(kp, lp, need_self=need_self)


def blocked_sums(
    xs: Side, y: Side, *, unbiased: bool, precision: str, need_self: bool, block_size: int
) -> Sums:
    """All sums streamed over the upper-triangular (block i <= block j) tiles of size block x block.

    The Gram matrices are symmetric, so each off-diagonal tile is computed once and counted twice
    (half the matmul and exp work of a full sweep). Row sums accumulate in an O(n) scan carry; each tile
    is under `jax.checkpoint`, so the backward pass stores only the tile indices per step.
    """
    s, n, _ = xs.x_SxNxD.shape
    block = min(block_size, n)
    num_blocks = -(-n // block)
    pad = num_blocks * block - n
    k_mu, k_c = lax.stop_gradient(_approx_shift_stats(xs, precision))
    l_mu, l_c = lax.stop_gradient(_approx_shift_stats(y, precision))

    def blocks(a: Array) -> Array:
        """(S, n, ...) -> (num_blocks, S, block, ...) with zero-padded rows."""
        padded = jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
        return jnp.swapaxes(padded.reshape((a.shape[0], num_blocks, block) + a.shape[2:]), 0, 1)

    xb, xsqn, kmu = blocks(xs.x_SxNxD), blocks(xs.sqn_SxN), blocks(k_mu)
    yb, ysqn, lmu = blocks(y.x_SxNxD), blocks(y.sqn_SxN), blocks(l_mu)
    tile_i, tile_j = (jnp.asarray(t, jnp.int32) for t in np.triu_indices(num_blocks))
    local = jnp.arange(block)

    @jax.checkpoint
    def tile(bi: Array, bj: Array) -> tuple[Array, ...]:
        same = (bi == bj) & (local[:, None] == local[None, :])
        kp = _shift(_gram(xs, xb[bi], xb[bj], xsqn[bi], xsqn[bj], precision, same), kmu[bi], kmu[bj], k_c)
        lp = _shift(_gram(y, yb[bi], yb[bj], ysqn[bi], ysqn[bj], precision, same), lmu[bi], lmu[bj], l_c)[0]
        if pad or unbiased:
            keep = ((bi * block + local) < n)[:, None] & ((bj * block + local) < n)[None, :]
            if unbiased:
                keep = keep & ((bi != bj) | (local[:, None] != local[None, :]))
            kp, lp = jnp.where(keep[None], kp, 0.0), jnp.where(keep, lp, 0.0)
        off = (bi != bj).astype(kp.dtype)
        pair = tuple((1.0 + off) * p for p in _pair_sums(kp, lp, need_self))
        return pair + (kp.sum(2), off * kp.sum(1), lp.sum(1), off * lp.sum(0))

    def step(carry: tuple[Array, ...], ij: tuple[Array, Array]) -> tuple[tuple[Array, ...], None]:
        bi, bj = ij
        out = tile(bi, bj)
        npair = len(out) - 4
        sums = tuple(c + o for c, o in zip(carry[:npair], out[:npair], strict=True))
        rk, rl = carry[npair:]
        rk = rk.at[bi].add(out[npair]).at[bj].add(out[npair + 1])
        rl = rl.at[bi].add(out[npair + 2]).at[bj].add(out[npair + 3])
        return sums + (rk, rl), None

    dtype = xb.dtype
    init = (jnp.zeros((s,), dtype),)
    if need_self:
        init += (jnp.zeros((s,), dtype), jnp.zeros((), dtype))
    init += (jnp.zeros((num_blocks, s, block), dtype), jnp.zeros((num_blocks, block), dtype))
    carry, _ = lax.scan(step, init, (tile_i, tile_j))
    r_k = jnp.swapaxes(carry[-2], 0, 1).reshape(s, num_blocks * block)[:, :n]
    r_l = carry[-1].reshape(num_blocks * block)[:n]
    return Sums(carry[0], r_k, r_l, *(carry[1:3] if need_self else (None, None)))


def combine(s: Array, r_a: Array, r_b: Array, n: int, unbiased: bool) -> Array:
    """HSIC from the sums of one pair of (shifted) kernels; r_a, r_b are (..., n) row sums."""
    nf = float(n)  # Python float: n**2 must never become an int32 inside jit
    rr = jnp.sum(r_a * r_b, axis=-1)
    t_ab = jnp.sum(r_a, axis=-1) * jnp.sum(r_b, axis=-1)
    if unbiased:
        return (s + t_ab / ((nf - 1.0) * (nf - 2.0)) - rr * (2.0 / (nf - 2.0))) / (nf * (nf - 3.0))
    return (s - rr * (2.0 / nf) + t_ab / (nf * nf)) / ((nf - 1.0) * (nf - 1.0))
