"""Exact comparison with zero for additive sharing over Z_2^64: the sign bit of a shared value.

Responsibility: `less_than_zero(protocol, x)`, built only from the protocol's share API (open,
local linear operations and Beaver products of shared bits).

Protocol (bit decomposition of a dealer mask; Damgård, Fitzi, Kiltz, Nielsen & Toft, TCC 2006,
and the carry formulation of Nishide & Ohta, PKC 2007; dealer bits as in SecureNN / ABY3):
  1. the dealer gives shares of 64 uniformly random bits r_0..r_63; r = sum r_i 2^i (local);
  2. open c = x + r (uniform, so it reveals nothing about x);
  3. x = c - r mod 2^64, so msb(x) = c_63 xor r_63 xor [c' < r'], with c', r' the low 63 bits;
  4. [c' < r'] from the bitwise pairs ([c_i < r_i], [c_i = r_i]), both linear in r_i because c
     is public, combined in a binary tree (lt, eq) = (lt_hi + eq_hi lt_lo, eq_hi eq_lo) as in
     Garay, Schoenmakers & Villegas (PKC 2007): 6 rounds for 63 positions; the xor 1 round.
Eight rounds in all, 64 dealer bits and about 2 * 63 integer Beaver products per element.
The result is exact for every x (no failure probability, unlike truncation).
Security model: semi-honest, as the additive protocol; the dealer knows r.
"""

from __future__ import annotations

import numpy as np

from mpc.protocols.base import Need, Protocol

WORD_BITS = 64
_LOW = WORD_BITS - 1  # positions 0..62 form c' and r'
_SHIFTS = np.arange(WORD_BITS, dtype=np.uint64)[:, None]
_POW2 = np.left_shift(np.uint64(1), _SHIFTS)


def _bit_reversed(k: int, width: int = 6) -> int:
    return int(f"{k:0{width}b}"[::-1], 2)


# Leaf row k holds significance rank bitrev(k) (rank 0 = bit 62, rank 62 = bit 0, rank 63 = a
# neutral pad). With this order the two halves of every tree level are contiguous blocks of
# rows: row j pairs with row j + m/2, which holds the next less significant range.
_LEAF_POSITIONS = [_LOW - 1 - _bit_reversed(k) for k in range(WORD_BITS - 1)]


def less_than_zero(protocol: Protocol, x: np.ndarray) -> np.ndarray:
    """Shares of [x < 0] (x read as a signed 64-bit integer), as 0/1 ring elements."""
    alg = protocol.algebra
    shape = tuple(x.shape)
    flat = x.reshape(-1)
    size = flat.size
    bits = protocol._need(Need.RANDOM_BITS).random_bits((size,), WORD_BITS)  # (64, size)
    r = np.asarray(np.sum(np.multiply(bits, _POW2), axis=0, dtype=np.uint64))
    c = protocol.open_all(alg.add(flat, r))
    c_bits = np.bitwise_and(np.right_shift(c[None, :], _SHIFTS), np.uint64(1))  # (64, size)

    one = np.ones((), dtype=np.uint64)
    cb = c_bits[_LEAF_POSITIONS]
    rb = bits[_LEAF_POSITIONS]
    # Leaves: lt_i = [c_i < r_i] = (1 - c_i) r_i, eq_i = [c_i == r_i] = (2 c_i - 1) r_i + 1 - c_i,
    # both linear in the shared bit r_i because c is public; the pad row is (lt, eq) = (0, 1).
    pad = np.zeros((1, size), dtype=np.uint64)
    lt = np.concatenate([protocol.mul_public(rb, alg.sub(one, cb)), pad])
    eq = np.concatenate(
        [
            protocol.add_public(
                protocol.mul_public(rb, alg.sub(alg.add(cb, cb), one)), alg.sub(one, cb)
            ),
            protocol.add_public(pad, one),
        ]
    )
    # Binary tree: (lt_hi + eq_hi * lt_lo, eq_hi * eq_lo); one round per level, six levels.
    while lt.shape[0] > 1:
        half = lt.shape[0] // 2
        if half == 1:  # last level: only lt is needed
            lt = alg.add(lt[:1], protocol.mul(eq[:1], lt[1:]))
            break
        products = protocol.mul(
            np.concatenate([eq[:half], eq[:half]]), np.concatenate([lt[half:], eq[half:]])
        )
        lt = alg.add(lt[:half], products[:half])
        eq = products[half:]
    below = lt[0]
    # msb = c_63 xor r_63 xor below; a xor b = a + b - 2ab for shared bits a, b.
    r_top = bits[_LOW]
    both = protocol.mul(r_top, below)
    t = alg.sub(alg.add(r_top, below), alg.add(both, both))
    c_top = c_bits[_LOW]
    msb = protocol.add_public(protocol.mul_public(t, alg.sub(one, alg.add(c_top, c_top))), c_top)
    return msb.reshape(shape)
