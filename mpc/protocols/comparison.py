"""Exact comparison with zero for additive sharing over Z_2^64: the sign bit of a shared value.

Responsibility: `less_than_zero(protocol, x)` from the protocol's share API and a dealer's
`ComparisonMask`, plus the shapes of that mask (`mask_shapes`, used by dealers).

Protocol (bit decomposition of a dealer mask: Damgård, Fitzi, Kiltz, Nielsen & Toft, TCC 2006,
with the carry formulation of Nishide & Ohta, PKC 2007; the boolean part on XOR shares as in
ABY, Demmler, Schneider & Zohner, NDSS 2015, and ABY3, Mohassel & Rindal, CCS 2018):
  1. the dealer gives ring shares of a uniform r and XOR shares of its 64 bits r_i;
  2. open c = x + r (uniform, so it reveals nothing about x);                          1 round
  3. x = c - r mod 2^64, so msb(x) = c_63 ^ r_63 ^ [c' < r'], c' and r' the low 63 bits;
  4. [c' < r'] from the bitwise pairs lt_i = ~c_i & r_i, eq_i = ~c_i ^ r_i (local, c is public),
     combined in a binary tree (lt, eq) = (lt_hi ^ eq_hi & lt_lo, eq_hi & eq_lo) as in Garay,
     Schoenmakers & Villegas (PKC 2007), with GMW AND gates (`mpc.protocols.gmw`);    6 rounds
  5. the XOR with c_63 ^ r_63 is local; the bit goes to the ring with a daBit.          1 round
Eight rounds in all. The bits are packed 64 elements per word, so the 125 AND gates per element
cost 125 * 2 bits of traffic per peer (about 31 bytes) instead of 125 ring products (4 KB),
and the dealer sends about 4 words per element (ring shares of r and of the daBit, the AND
triples' c) instead of 64.
The result is exact for every x (no failure probability, unlike truncation).
Security model: semi-honest, as the additive protocol; the dealer knows r, the triples and
the daBits. Every opened value (c, the AND gates' e and d, v) is masked by fresh uniform dealer
randomness, so a party's view is independent of x.
"""

from __future__ import annotations

import numpy as np

from mpc.algebra import RING64
from mpc.bitpack import WORD_BITS, pack_planes, words_for
from mpc.errors import UnsupportedOperationError
from mpc.protocols.base import ComparisonMask, Need, Protocol, Shape
from mpc.protocols.gmw import ALL_ONES, AndTriples, and_gates, bits_to_ring, xor_public

_LOW = WORD_BITS - 1  # positions 0..62 form c' and r'
_LEAVES = WORD_BITS  # 63 positions and one neutral pad: a power of two
#: AND rows of the tree: 2 per pair on every level but the last, which needs only lt.
TREE_AND_ROWS = 2 * (_LEAVES // 2 + _LEAVES // 4 + _LEAVES // 8 + _LEAVES // 16 + 2) + 1


def _bit_reversed(k: int, width: int = 6) -> int:
    return int(f"{k:0{width}b}"[::-1], 2)


# Leaf row k holds significance rank bitrev(k) (rank 0 = bit 62, rank 62 = bit 0, rank 63 = the
# neutral pad). With this order the two halves of every tree level are contiguous blocks of
# rows: row j pairs with row j + m/2, which holds the next less significant range.
_LEAF_POSITIONS = [_LOW - 1 - _bit_reversed(k) for k in range(_LEAVES - 1)]


def mask_shapes(count: int, bits: int = WORD_BITS) -> dict[str, Shape]:
    """Shapes of the `ComparisonMask` fields for `count` elements."""
    if bits != WORD_BITS:
        raise ValueError(f"comparisons run on {WORD_BITS}-bit words, got {bits}")
    words = words_for(count)
    return {
        "mask": (count,),
        "mask_bits": (WORD_BITS, words),
        "and_a": (TREE_AND_ROWS, words),
        "and_b": (TREE_AND_ROWS, words),
        "and_c": (TREE_AND_ROWS, words),
        "dabit_bits": (words,),
        "dabit": (count,),
    }


def less_than_zero(protocol: Protocol, x: np.ndarray) -> np.ndarray:
    """Shares of [x < 0] (x read as a signed 64-bit integer), as 0/1 ring elements."""
    alg = protocol.algebra
    if alg is not RING64:
        raise UnsupportedOperationError("this comparison needs sharing over the ring Z_2^64")
    shape = tuple(x.shape)
    flat = x.reshape(-1)
    size = flat.size
    if size == 0:
        return np.zeros(shape, dtype=np.uint64)
    mask: ComparisonMask = protocol._need(Need.COMPARISON_MASKS).comparison_mask((size,), WORD_BITS)
    c = protocol.open_all(alg.add(flat, mask.mask))
    c_planes = pack_planes(c)  # (64, W)
    words = c_planes.shape[1]

    not_c = ~c_planes[_LEAF_POSITIONS]
    r = mask.mask_bits[_LEAF_POSITIONS]
    # Leaves: lt_i = [c_i < r_i] = ~c_i & r_i and eq_i = [c_i == r_i] = ~c_i ^ r_i, local because
    # c is public; the pad row is (lt, eq) = (0, 1).
    pad = np.zeros((1, words), dtype=np.uint64)
    lt = np.concatenate([r & not_c, pad])
    eq = np.concatenate([xor_public(protocol, r, not_c), xor_public(protocol, pad, ALL_ONES)])
    triples = AndTriples(mask.and_a, mask.and_b, mask.and_c)
    while len(lt) > 1:
        half = len(lt) // 2
        if half == 1:  # last level: only lt is needed
            lt = lt[:1] ^ and_gates(protocol, eq[:1], lt[1:], triples.take(1))
            break
        products = and_gates(
            protocol,
            np.concatenate([eq[:half], eq[:half]]),
            np.concatenate([lt[half:], eq[half:]]),
            triples.take(2 * half),
        )
        lt = lt[:half] ^ products[:half]
        eq = products[half:]
    msb = xor_public(protocol, lt[0] ^ mask.mask_bits[_LOW], c_planes[_LOW])
    return bits_to_ring(protocol, msb, mask.dabit_bits, mask.dabit, size).reshape(shape)
