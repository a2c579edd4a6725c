"""Exact comparison with zero for additive sharing over Z_2^64: the sign bit of a shared value.

Responsibility: `less_than_zero(protocol, x)`, built only from the protocol's share API (open,
local linear operations and Beaver products of shared bits).

Protocol (bit decomposition of a dealer mask; Damgård, Fitzi, Kiltz, Nielsen & Toft, TCC 2006,
and the carry formulation of Nishide & Ohta, PKC 2007; dealer bits as in SecureNN / ABY3):
  1. the dealer gives shares of 64 uniformly random bits r_0..r_63; r = sum r_i 2^i (local);
  2. open c = x + r (uniform, so it reveals nothing about x);
  3. x = c - r mod 2^64, so msb(x) = c_63 xor r_63 xor [c' < r'], with c', r' the low 63 bits;
  4. [c' < r'] = sum_i (1 - c_i) r_i prod_{j > i} [c_j = r_j], where [c_j = r_j] is linear in
     r_j because c is public; the suffix products take 6 rounds (Hillis-Steele doubling over 62
     positions), the weighted sum 1 round, the final xor 1 round.
Nine rounds in all, 64 dealer bits and about 7 * 63 integer Beaver products per element.
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
    # e_j = [c_j == r_j] = (2 c_j - 1) r_j + (1 - c_j): linear in the shared bit r_j.
    one = np.ones((), dtype=np.uint64)
    equal = protocol.add_public(
        protocol.mul_public(rb, alg.sub(alg.add(cb, cb), one)), alg.sub(one, cb)
    )
    # suffix[:, i] = prod_{j >= i+1} e_j for i = 0..61 (Hillis-Steele doubling).
    suffix = np.ascontiguousarray(equal[:, 1:])
    width = suffix.shape[1]
    step = 1
    while step < width:
        head = protocol.mul(
            np.ascontiguousarray(suffix[:, : width - step]), np.ascontiguousarray(suffix[:, step:])
        )
        suffix = np.concatenate([head, suffix[:, width - step :]], axis=1)
        step *= 2
    # [c' < r'] = sum_i (1 - c_i) r_i suffix_i, with suffix_62 = 1.
    first = protocol.mul_public(rb, alg.sub(one, cb))
    weighted = protocol.mul(np.ascontiguousarray(first[:, : low - 1]), suffix)
    below = alg.add(alg.sum(weighted, axis=1), first[:, low - 1])
    # msb = c_63 xor r_63 xor below; a xor b = a + b - 2ab for shared bits a, b.
    r_top = np.ascontiguousarray(bits[:, low])
    both = protocol.mul(r_top, below)
    t = alg.sub(alg.add(r_top, below), alg.add(both, both))
    c_top = c_bits[:, low]
    msb = protocol.add_public(protocol.mul_public(t, alg.sub(one, alg.add(c_top, c_top))), c_top)
    return msb.reshape(shape)
