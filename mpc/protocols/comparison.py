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
_POW2_SHIFTS = np.arange(WORD_BITS, dtype=np.uint64)
_POW2 = np.left_shift(np.uint64(1), _POW2_SHIFTS)


def less_than_zero(protocol: Protocol, x: np.ndarray) -> np.ndarray:
    """Shares of [x < 0] (x read as a signed 64-bit integer), as 0/1 ring elements."""
    alg = protocol.algebra
    shape = tuple(x.shape)
    flat = x.reshape(-1)
    bits = protocol._need(Need.RANDOM_BITS).random_bits((flat.size,), WORD_BITS)
    r = np.asarray(np.sum(np.multiply(bits, _POW2), axis=1, dtype=np.uint64))
    c = protocol.open_all(alg.add(flat, r))
    c_bits = np.bitwise_and(np.right_shift(c[:, None], _POW2_SHIFTS), np.uint64(1))

    low = WORD_BITS - 1  # positions 0..62 form c' and r'
    cb, rb = c_bits[:, :low], bits[:, :low]
    one = np.ones((), dtype=np.uint64)
    # Leaves, most significant first: lt_i = [c_i < r_i] = (1 - c_i) r_i and
    # eq_i = [c_i == r_i] = (2 c_i - 1) r_i + (1 - c_i): both linear in the shared bit r_i.
    lt = protocol.mul_public(rb, alg.sub(one, cb))[:, ::-1]
    eq = protocol.add_public(
        protocol.mul_public(rb, alg.sub(alg.add(cb, cb), one)), alg.sub(one, cb)
    )[:, ::-1]
    # Pad to 64 leaves with (lt, eq) = (0, 1), the neutral pair, below position 0.
    zeros = np.zeros((flat.size, 1), dtype=np.uint64)
    lt = np.concatenate([lt, zeros], axis=1)
    eq = np.concatenate([eq, protocol.add_public(zeros, one)], axis=1)
    # Binary tree: (lt, eq) of a high half and a low half combine to
    # (lt_hi + eq_hi * lt_lo, eq_hi * eq_lo); one round per level, six levels.
    while lt.shape[1] > 1:
        lt_hi, lt_lo = lt[:, 0::2], lt[:, 1::2]
        eq_hi, eq_lo = eq[:, 0::2], eq[:, 1::2]
        if lt.shape[1] == 2:  # last level: only lt is needed
            lt = alg.add(
                lt_hi, protocol.mul(np.ascontiguousarray(eq_hi), np.ascontiguousarray(lt_lo))
            )
            break
        half = lt_hi.shape[1]
        both = protocol.mul(
            np.ascontiguousarray(np.concatenate([eq_hi, eq_hi], axis=1)),
            np.ascontiguousarray(np.concatenate([lt_lo, eq_lo], axis=1)),
        )
        lt = alg.add(lt_hi, both[:, :half])
        eq = both[:, half:]
    below = np.ascontiguousarray(lt[:, 0])
    # msb = c_63 xor r_63 xor below; a xor b = a + b - 2ab for shared bits a, b.
    r_top = np.ascontiguousarray(bits[:, low])
    both = protocol.mul(r_top, below)
    t = alg.sub(alg.add(r_top, below), alg.add(both, both))
    c_top = c_bits[:, low]
    msb = protocol.add_public(protocol.mul_public(t, alg.sub(one, alg.add(c_top, c_top))), c_top)
    return msb.reshape(shape)
