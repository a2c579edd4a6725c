"""Exact arithmetic on numpy ``uint64`` arrays for the two share algebras of mpc.

Responsibility
--------------
Provide one interface, :class:`Algebra`, over

* :class:`Ring64` -- the ring Z_2^64 (additive secret sharing, natural uint64
  wrap-around), and
* :class:`MersenneField61` -- the prime field GF(p), p = 2^61 - 1 (Shamir
  sharing, anything that needs inverses),

with elementwise add/sub/neg/mul, public-constant ops, sums, exact matrix
products, signed lifts and uniform sampling.  Elements are always numpy arrays
of dtype ``uint64`` holding canonical representatives (``[0, 2^64)`` for the
ring, ``[0, p)`` for the field); results are never Python-int object arrays
and 0-d inputs give 0-d arrays (never numpy scalars, whose arithmetic warns
on overflow in numpy 2).

Security model
--------------
This is a pure-math layer: it computes on whatever it is given and holds no
secrets or state.  It never generates randomness itself -- :meth:`Algebra.random`
delegates to :class:`mpc.rng.Prg` (a cryptographic PRG) -- and never uses
the Python or NumPy random generators.  Correctness is exact (no floating-point
rounding reaches results; the float64 BLAS paths are only used inside bounds
where every intermediate is an integer below 2^53).  Running time depends on
shapes but not on values except for tiny data-dependent branches in numpy
itself; side channels are out of scope (semi-honest model).  Inputs are trusted
to be canonical: field ops do not re-check that elements are ``< p`` (cost);
dtypes *are* checked, since mixing in signed/float arrays would silently
produce wrong (float) results.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from mpc.rng import Prg, Shape, Tag

__all__ = [
    "FIELD61",
    "RING64",
    "Algebra",
    "MersenneField61",
    "Ring64",
    "U64Array",
    "algebra_by_name",
]

U64Array = npt.NDArray[np.uint64]
I64Array = npt.NDArray[np.int64]
_F64Array = npt.NDArray[np.float64]

_U64 = np.dtype(np.uint64)
_MASK64 = (1 << 64) - 1


def _u64(a: Any) -> U64Array:
    """Return ``a`` as a uint64 ndarray (no copy) or raise TypeError."""
    if type(a) is np.ndarray and a.dtype == _U64:
        return a
    arr = np.asarray(a)
    if arr.dtype != _U64:
        raise TypeError(
            f"algebra elements must be uint64 arrays, got dtype {arr.dtype}; "
            "convert integers with from_signed()"
        )
    return arr


def _arr(r: Any) -> U64Array:
    """Turn a numpy scalar result of a ufunc on 0-d inputs back into a 0-d array."""
    return r if type(r) is np.ndarray else np.asarray(r)


def _int_input(x: Any) -> npt.NDArray[Any]:
    """Validate ``from_signed`` input: an integer/bool array or Python ints."""
    try:
        arr = np.asarray(x)
    except OverflowError:  # Python ints outside the int64/uint64 range
        arr = np.asarray(x, dtype=object)
    if arr.dtype.kind in "iub":
        return arr
    if arr.dtype.kind != "O" and not isinstance(x, np.ndarray):
        # e.g. [2**63, -1] becomes float64 under numpy's promotion: keep exact ints.
        arr = np.asarray(x, dtype=object)
    if arr.dtype.kind == "O":
        for v in arr.flat:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"from_signed expects integers, got {type(v).__name__}")
        return arr
    raise TypeError(
        f"from_signed expects integers, got dtype {arr.dtype}; "
        "encode reals first (mpc.encoding.FixedPoint.encode)"
    )


def _promote_matmul(
    a: U64Array, b: U64Array
) -> tuple[U64Array, U64Array, Callable[[U64Array], U64Array]]:
    """numpy matmul shape rules: promote 1-D operands, return an un-promote fn."""
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul: operands must be at least 1-D (use mul for scalars)")
    a_vec, b_vec = a.ndim == 1, b.ndim == 1
    a2 = a[np.newaxis, :] if a_vec else a
    b2 = b[:, np.newaxis] if b_vec else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(
            f"matmul: inner dimensions differ: {a.shape} @ {b.shape} "
            f"({a2.shape[-1]} != {b2.shape[-2]})"
        )
    # Equal ndim, so that limb stacks on a new leading axis broadcast correctly.
    if a2.ndim < b2.ndim:
        a2 = a2.reshape((1,) * (b2.ndim - a2.ndim) + a2.shape)
    elif b2.ndim < a2.ndim:
        b2 = b2.reshape((1,) * (a2.ndim - b2.ndim) + b2.shape)

    def finish(r: U64Array) -> U64Array:
        if a_vec:
            r = r[..., 0, :]
        if b_vec:
            r = r[..., 0]
        return _arr(r)

    return a2, b2, finish


def _split_limbs(x: U64Array, width: int, count: int) -> _F64Array:
    """Stack of ``count`` limbs of ``width`` bits, as float64, on a new axis 0.

    Written limb by limb through one reused uint64 temporary: building the
    stack with one broadcast op needs an extra stack-sized temporary, and on
    the dev box that extra allocation cost ~9x the arithmetic in page faults.
    """
    out = np.empty((count, *x.shape), dtype=np.float64)
    tmp = np.empty_like(x)
    mask = np.uint64((1 << width) - 1)
    for i in range(count):
        src = np.right_shift(x, np.uint64(width * i), out=tmp) if i else x
        np.bitwise_and(src, mask, out=tmp)
        np.copyto(out[i], tmp, casting="unsafe")
    return out


class Algebra(ABC):
    """Arithmetic over uint64 arrays in Z_2^64 or GF(2^61 - 1).

    All array methods accept/return ``np.ndarray`` of dtype ``uint64`` (0-d
    arrays allowed), broadcast like numpy and return new arrays (inputs are
    never modified; the one exception is ``Ring64.to_signed``, a no-copy
    int64 view).
    """

    name: ClassVar[str]
    modulus: ClassVar[int]
    bits: ClassVar[int]
    is_field: ClassVar[bool]

    # Identity is by type: instances are stateless.  Pickling returns the
    # module-level singleton so ``is`` comparisons keep working across
    # processes (e.g. Ray actors).
    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self).__qualname__)

    def __reduce__(self) -> tuple[Callable[[str], Algebra], tuple[str]]:
        return (algebra_by_name, (self.name,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def reduce_int(self, k: int) -> int:
        """Canonical representative of the Python int ``k`` (any sign/size)."""
        return int(k) % self.modulus

    @abstractmethod
    def add(self, a: U64Array, b: U64Array) -> U64Array: ...

    @abstractmethod
    def sub(self, a: U64Array, b: U64Array) -> U64Array: ...

    @abstractmethod
    def neg(self, a: U64Array) -> U64Array: ...

    @abstractmethod
    def mul(self, a: U64Array, b: U64Array) -> U64Array: ...

    @abstractmethod
    def mul_public(self, a: U64Array, k: int) -> U64Array:
        """``a * k`` for a public Python int ``k`` (reduced into the algebra first)."""

    @abstractmethod
    def add_public(self, a: U64Array, k: int) -> U64Array:
        """``a + k`` for a public Python int ``k`` (reduced into the algebra first)."""

    @abstractmethod
    def matmul(self, a: U64Array, b: U64Array) -> U64Array:
        """Exact ``a @ b`` in the algebra (numpy matmul shape rules)."""

    @abstractmethod
    def sum(self, a: U64Array, axis: int | tuple[int, ...] | None = None) -> U64Array: ...

    @abstractmethod
    def from_signed(self, x: Any) -> U64Array:
        """Embed integers (int64 array, Python ints, lists): ``-v -> modulus - v``."""

    @abstractmethod
    def to_signed(self, a: U64Array) -> I64Array:
        """Centered lift to int64 (inverse of :meth:`from_signed` on its range)."""

    @abstractmethod
    def random(self, prg: Prg, shape: Shape, tag: Tag | None = None) -> U64Array:
        """Uniform elements from ``prg`` (deterministic in prg seed and tag)."""


# ---------------------------------------------------------------------------
# Z_2^64
# ---------------------------------------------------------------------------

# Ring matmul: float64 BLAS on limbs vs numpy's (non-BLAS) uint64 ``@``.
# Measured on the dev box (2 vCPU VM, OpenBLAS 0.3.31, numpy 2.4; best of 5,
# in us; ranges span repeated runs -- timings there swing up to 2x with
# glibc page-fault behaviour):
#
#     shape (m x k @ k x n)    uint64 @     limb path     chosen
#     100x100 @ 100x100        600-950      350-700       limbs (22-bit, 6 GEMMs)
#     569x30  @ 30x1                12       76-113       uint64 @
#     1000x50 @ 50x1                33      180-800       uint64 @
#     48x48   @ 48x48               68       85-130       uint64 @
#     64x64   @ 64x64              170      130-135       limbs
#     200x50  @ 50x200            1200      720-1200      limbs
#     300x300 @ 300x300          18000     7500-11000     limbs
#     100x1000 @ 1000x100   8100-10600     4000-6600      limbs (16-bit, 10 GEMMs)
#
# The limb path pays elementwise passes over both operands (splitting) and
# the output (recombining); that only amortises when both output dimensions
# are sizeable.  Rule: limbs iff min(m, n) >= _RING_LIMB_MIN_MN (and
# k <= 2^21), otherwise (matrix-vector products, thin outputs) uint64 ``@``.
_RING_LIMB_MIN_MN = 64
# 22-bit limbs (3 limbs, 6 products with i+j <= 2) exact while k*(2^22-1)^2 < 2^53.
_RING22_MAX_K = 1 << 9
# 16-bit limbs (4 limbs, 10 products with i+j <= 3) exact while k*(2^16-1)^2 < 2^53.
_RING16_MAX_K = 1 << 21
# Target size of the per-row-block float64 temporaries of the limb paths.
_BLOCK_BYTES = 1 << 20


def _row_blocks(
    a: U64Array,
    b: U64Array,
    bytes_per_row: int,
    block: Callable[[U64Array, U64Array], None],
) -> U64Array:
    """Allocate the (broadcast) output of ``a @ b`` and fill it in row blocks.

    ``block(a_rows, out_rows)`` computes ``a_rows @ b`` into ``out_rows``.
    Blocking keeps the float64 limb temporaries around ``_BLOCK_BYTES``: on
    the dev box, multi-MiB temporaries cost more in page faults (glibc gives
    the memory back to the OS after every call) than the BLAS work itself.
    """
    m = a.shape[-2]
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    out = np.empty((*batch, m, b.shape[-1]), dtype=np.uint64)
    batch_size = int(np.prod(batch)) if batch else 1
    rows = max(1, _BLOCK_BYTES // max(1, bytes_per_row * batch_size))
    for r0 in range(0, m, rows):
        block(a[..., r0 : r0 + rows, :], out[..., r0 : r0 + rows, :])
    return out


def _ring_matmul_limbs(a: U64Array, b: U64Array, width: int) -> U64Array:
    """Exact a @ b mod 2^64 for equal-ndim >= 2-D operands via float64 BLAS.

    Only limb pairs with ``width * (i + j) < 64`` contribute mod 2^64.  Each
    limb product is an integer < k * 2^(2 width) <= 2^53, hence exact in float64.
    """
    count = -(-64 // width)
    bl = _split_limbs(b, width, count)
    k, n = b.shape[-2], b.shape[-1]

    def block(a_rows: U64Array, out: U64Array) -> None:
        al = _split_limbs(a_rows, width, count)
        for i in range(count):
            nj = sum(1 for j in range(count) if width * (i + j) < 64)
            # (nj, ..., rows, n): limb i of a times limbs 0..nj-1 of b.
            prods = np.matmul(al[i], bl[:nj])
            pu = np.empty(prods.shape, dtype=np.uint64)
            np.copyto(pu, prods, casting="unsafe")
            for j in range(nj):
                if i + j:
                    np.left_shift(pu[j], np.uint64(width * (i + j)), out=pu[j])
                if i == 0 and j == 0:
                    np.copyto(out, pu[0])
                else:
                    np.add(out, pu[j], out=out)

    return _row_blocks(a, b, 8 * (count * k + k + 3 * count * n), block)


class Ring64(Algebra):
    """The ring Z_2^64 on uint64 arrays (arithmetic is numpy's wrap-around)."""

    name = "ring64"
    modulus = 1 << 64
    bits = 64
    is_field = False

    def add(self, a: U64Array, b: U64Array) -> U64Array:
        return _arr(np.add(_u64(a), _u64(b)))

    def sub(self, a: U64Array, b: U64Array) -> U64Array:
        return _arr(np.subtract(_u64(a), _u64(b)))

    def neg(self, a: U64Array) -> U64Array:
        return _arr(np.negative(_u64(a)))

    def mul(self, a: U64Array, b: U64Array) -> U64Array:
        return _arr(np.multiply(_u64(a), _u64(b)))

    def mul_public(self, a: U64Array, k: int) -> U64Array:
        return _arr(np.multiply(_u64(a), np.uint64(int(k) & _MASK64)))

    def add_public(self, a: U64Array, k: int) -> U64Array:
        return _arr(np.add(_u64(a), np.uint64(int(k) & _MASK64)))

    def sum(self, a: U64Array, axis: int | tuple[int, ...] | None = None) -> U64Array:
        return _arr(np.sum(_u64(a), axis=axis, dtype=np.uint64))

    def matmul(self, a: U64Array, b: U64Array) -> U64Array:
        a2, b2, finish = _promote_matmul(_u64(a), _u64(b))
        m, k, n = a2.shape[-2], a2.shape[-1], b2.shape[-1]
        if min(m, n) < _RING_LIMB_MIN_MN or k > _RING16_MAX_K or k == 0:
            return finish(np.matmul(a2, b2))
        width = 22 if k <= _RING22_MAX_K else 16
        return finish(_ring_matmul_limbs(a2, b2, width))

    def from_signed(self, x: Any) -> U64Array:
        arr = _int_input(x)
        if arr.dtype.kind == "O":
            flat = [int(v) & _MASK64 for v in arr.flat]
            return np.array(flat, dtype=np.uint64).reshape(arr.shape)
        if arr.dtype.kind == "u":
            return arr.astype(np.uint64)
        if arr.dtype != np.int64:
            arr = arr.astype(np.int64)
        return arr.astype(np.uint64)  # two's complement = 2^64 - |v| (one copy)

    def to_signed(self, a: U64Array) -> I64Array:
        """Two's-complement lift; returns an int64 *view* of ``a`` (no copy)."""
        return _u64(a).view(np.int64)

    def random(self, prg: Prg, shape: Shape, tag: Tag | None = None) -> U64Array:
        return prg.ring(shape, tag)


# ---------------------------------------------------------------------------
# GF(2^61 - 1)
# ---------------------------------------------------------------------------

_P_INT = (1 << 61) - 1
_P = np.uint64(_P_INT)
_HALF_INT = _P_INT // 2
_S29 = np.uint64(29)
_S32 = np.uint64(32)
_S61 = np.uint64(61)
_M29 = np.uint64((1 << 29) - 1)
_M32 = np.uint64((1 << 32) - 1)
_THREE = np.uint64(3)
# Field matmul: 21-bit limbs (3 limbs, all 9 products), exact while
# k*(2^21-1)^2 < 2^53, i.e. k <= 2^11; longer inner dimensions are chunked.
_FIELD_LIMB_BITS = 21
# Elementwise field mul works on chunks of this many elements (512 KiB per
# temporary).  Dev box, 10^6 elements: ~6 ms chunked vs 20-30 ms unchunked
# (page faults on ~8 MiB temporaries); smaller chunks pay per-ufunc overhead.
_MUL_CHUNK = 1 << 16
_FIELD_MAX_K = 1 << 11


def _reduce_small(x: U64Array | np.uint64) -> U64Array:
    """x < 2^64 -> x mod p, via 2^61 = 1: (x & p) + (x >> 61), then one subtract."""
    y = np.add(np.bitwise_and(x, _P), np.right_shift(x, _S61))
    # y < 2^61 + 8: if y >= p then y - p < y, else y - p wraps to a huge value.
    return np.minimum(y, np.subtract(y, _P))


def _rot_mul_pow2(x: U64Array, e: int) -> U64Array:
    """x * 2^e mod p for canonical x (< p), 0 <= e < 61: a 61-bit rotation."""
    if e == 0:
        return x
    lo = np.bitwise_and(np.left_shift(x, np.uint64(e)), _P)
    return np.bitwise_or(lo, np.right_shift(x, np.uint64(61 - e)))


def _field_mul(a: U64Array, b: U64Array | np.uint64, out: U64Array | None = None) -> U64Array:
    """Elementwise a*b mod p for canonical inputs; inputs must not both be 0-d.

    Works in place on the full-shape product buffers to keep temporaries
    (and page faults on large arrays) down; ``out`` (full result shape) is
    used as scratch and receives the result.
    """
    a1 = np.right_shift(a, _S32)  # < 2^29
    a0 = np.bitwise_and(a, _M32)  # < 2^32
    b1 = np.right_shift(b, _S32)
    b0 = np.bitwise_and(b, _M32)
    # a*b = a1b1*2^64 + (a1b0 + a0b1)*2^32 + a0b0, and 2^64 = 2^3 (mod p).
    ll = np.multiply(a0, b0)  # < 2^64
    mid = np.multiply(a1, b0)
    x = np.multiply(a0, b1)
    mid += x  # < 2^62
    np.multiply(a1, b1, out=x)  # hh < 2^58
    tmp = out if out is not None else a1 if a1.shape == x.shape else np.empty_like(x)
    np.left_shift(x, _THREE, out=x)  # 8*hh < 2^61
    # ll = l1*2^61 + l0 = l1 + l0
    np.right_shift(ll, _S61, out=tmp)
    x += tmp
    np.bitwise_and(ll, _P, out=ll)
    x += ll
    # mid*2^32 = m1*2^61 + m0*2^32 = m1 + m0*2^32 with mid = m1*2^29 + m0.
    np.right_shift(mid, _S29, out=tmp)  # m1 < 2^33
    x += tmp
    np.bitwise_and(mid, _M29, out=mid)
    np.left_shift(mid, _S32, out=mid)
    x += mid  # total < 3*2^61 + 2^34 < 2^63
    np.bitwise_and(x, _P, out=tmp)
    np.right_shift(x, _S61, out=x)
    tmp += x  # < 2^61 + 4
    np.subtract(tmp, _P, out=x)  # wraps to a huge value iff tmp < p
    np.minimum(tmp, x, out=tmp)
    return tmp


def _field_mul_chunked(a: U64Array, b: U64Array | np.uint64) -> U64Array:
    """_field_mul in cache-sized chunks when b is a scalar or has a's shape.

    About 20 passes over the data: chunking keeps them in cache and keeps the
    temporaries small (no multi-MiB allocations, hence no page-fault storms).
    """
    if a.size <= _MUL_CHUNK or (b.ndim and b.shape != a.shape):
        return _field_mul(a, b)
    out = np.empty(a.shape, dtype=np.uint64)
    fa, fo = a.reshape(-1), out.reshape(-1)
    fb = b.reshape(-1) if isinstance(b, np.ndarray) and b.ndim else None
    for i in range(0, a.size, _MUL_CHUNK):
        j = i + _MUL_CHUNK
        _field_mul(fa[i:j], b if fb is None else fb[i:j], out=fo[i:j])
    return out


def _field_matmul_rows(a: U64Array, bl: _F64Array) -> U64Array:
    """Exact (a @ b) mod p given b's 21-bit limbs ``bl``; inner dim <= _FIELD_MAX_K."""
    w = _FIELD_LIMB_BITS
    al = _split_limbs(a, w, 3)  # (3, ..., rows, k)
    # All 9 limb products in one batched call: (3, 3, ..., rows, n), each < 2^53.
    prods = np.matmul(al[:, np.newaxis], bl[np.newaxis, :])
    pu = np.empty(prods.shape, dtype=np.uint64)
    np.copyto(pu, prods, casting="unsafe")
    del prods
    acc: U64Array | None = None
    for s in range(5):
        c: U64Array | None = None
        for i in range(max(0, s - 2), min(2, s) + 1):
            c = pu[i, s - i] if c is None else np.add(c, pu[i, s - i])
        assert c is not None
        # c < 3*2^53; weight 2^(21 s) = 2^(21 s mod 61) (mod p).
        term = _rot_mul_pow2(_reduce_small(c), (w * s) % 61)
        acc = term if acc is None else np.add(acc, term, out=acc)  # < 5p < 2^64
    assert acc is not None
    return _reduce_small(acc)


def _field_matmul(a: U64Array, b: U64Array) -> U64Array:
    """Exact (a @ b) mod p for equal-ndim >= 2-D operands, any inner dimension."""
    k, n = b.shape[-2], b.shape[-1]
    result: U64Array | None = None
    for k0 in range(0, max(k, 1), _FIELD_MAX_K):
        a_k = a[..., k0 : k0 + _FIELD_MAX_K]
        b_k = b[..., k0 : k0 + _FIELD_MAX_K, :]
        bl = _split_limbs(b_k, _FIELD_LIMB_BITS, 3)
        kk = b_k.shape[-2]

        def block(a_rows: U64Array, out: U64Array, bl: _F64Array = bl) -> None:
            np.copyto(out, _field_matmul_rows(a_rows, bl))

        part = _row_blocks(a_k, b_k, 8 * (4 * kk + 22 * n), block)
        result = part if result is None else FIELD61.add(result, part)
    assert result is not None
    return result


class MersenneField61(Algebra):
    """The prime field GF(p), p = 2^61 - 1, on canonical uint64 arrays."""

    name = "field61"
    modulus = _P_INT
    bits = 61
    is_field = True

    def add(self, a: U64Array, b: U64Array) -> U64Array:
        s = _arr(np.add(_u64(a), _u64(b)))  # < 2^62
        return np.minimum(s, np.subtract(s, _P), out=s)

    def sub(self, a: U64Array, b: U64Array) -> U64Array:
        d = _arr(np.subtract(_u64(a), _u64(b)))  # wraps iff a < b; then d + p wraps back
        return np.minimum(d, np.add(d, _P), out=d)

    def neg(self, a: U64Array) -> U64Array:
        d = _arr(np.subtract(_P, _u64(a)))  # in (0, p]; p must become 0
        return np.minimum(d, np.subtract(d, _P), out=d)

    def mul(self, a: U64Array, b: U64Array) -> U64Array:
        a, b = _u64(a), _u64(b)
        if a.ndim == 0 and b.ndim == 0:
            return _field_mul(a.reshape(1), b.reshape(1)).reshape(())
        return _field_mul_chunked(a, b)

    def mul_public(self, a: U64Array, k: int) -> U64Array:
        a = _u64(a)
        kk = np.uint64(int(k) % _P_INT)
        if a.ndim == 0:
            return _field_mul(a.reshape(1), kk).reshape(())
        return _field_mul_chunked(a, kk)

    def add_public(self, a: U64Array, k: int) -> U64Array:
        s = _arr(np.add(_u64(a), np.uint64(int(k) % _P_INT)))
        return np.minimum(s, np.subtract(s, _P), out=s)

    def sum(self, a: U64Array, axis: int | tuple[int, ...] | None = None) -> U64Array:
        a = _u64(a)
        # a = hi*2^32 + lo with hi < 2^29, lo < 2^32: each partial sum is exact
        # in uint64 for fewer than 2^32 summands (32 GiB of input).
        lo = np.sum(np.bitwise_and(a, _M32), axis=axis, dtype=np.uint64)
        hi = np.sum(np.right_shift(a, _S32), axis=axis, dtype=np.uint64)
        r = np.add(_rot_mul_pow2(_reduce_small(hi), 32), _reduce_small(lo))
        return _arr(np.minimum(r, np.subtract(r, _P)))

    def matmul(self, a: U64Array, b: U64Array) -> U64Array:
        a2, b2, finish = _promote_matmul(_u64(a), _u64(b))
        return finish(_field_matmul(a2, b2))

    def from_signed(self, x: Any) -> U64Array:
        arr = _int_input(x)
        if arr.dtype.kind == "O":
            vals = [int(v) for v in arr.flat]
            bad = [v for v in vals if abs(v) >= _HALF_INT]
            if bad:
                raise ValueError(self._range_msg(max(abs(v) for v in bad)))
            flat = [v % _P_INT for v in vals]
            return np.array(flat, dtype=np.uint64).reshape(arr.shape)
        if arr.dtype.kind == "u":
            if arr.size and int(arr.max()) >= _HALF_INT:
                raise ValueError(self._range_msg(int(arr.max())))
            return arr.astype(np.uint64)
        v = arr.astype(np.int64, copy=False)
        if v.size:
            lo, hi = int(v.min()), int(v.max())
            if hi >= _HALF_INT or lo <= -_HALF_INT:
                raise ValueError(self._range_msg(max(hi, -lo)))
        u = v.astype(np.uint64)  # negatives become 2^64 - |v|; adding p wraps to p - |v|
        return _arr(np.where(v < 0, np.add(u, _P), u))

    @staticmethod
    def _range_msg(worst: int) -> str:
        return (
            f"value {worst} is out of the signed range of GF(2^61-1): |x| must be "
            f"< {_HALF_INT} (= (p-1)/2) so that to_signed() can recover the sign; "
            "rescale the data (fewer fixed-point bits) or reduce explicitly with reduce_int()"
        )

    def to_signed(self, a: U64Array) -> I64Array:
        a = _u64(a)
        v = a.astype(np.int64)  # canonical values < 2^61 fit
        return np.where(a > np.uint64(_HALF_INT), np.subtract(v, np.int64(_P_INT)), v)

    def random(self, prg: Prg, shape: Shape, tag: Tag | None = None) -> U64Array:
        return prg.field(shape, _P_INT, tag)


RING64 = Ring64()
FIELD61 = MersenneField61()

_BY_NAME: dict[str, Algebra] = {RING64.name: RING64, FIELD61.name: FIELD61}


def algebra_by_name(name: str) -> Algebra:
    """Return the singleton algebra called ``name`` (``"ring64"`` or ``"field61"``)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown algebra {name!r}; expected one of {sorted(_BY_NAME)}") from None
