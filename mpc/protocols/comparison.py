"""Exact comparison with zero for additive sharing over Z_2^64: the sign bit of a shared value.

Responsibility: `less_than_zero(protocol, x)` and `less_than_zero_times(protocol, x, y)`
(the bit and its product with a shared y, in the same rounds) from the protocol's share API,
a dealer's `ComparisonMask` (and one Beaver triple for the product), plus what a dealer needs
to make that mask (`mask_shapes`, `mask_monomials`).

Protocol (bit decomposition of a dealer mask: Damgård, Fitzi, Kiltz, Nielsen & Toft, TCC 2006,
with the carry formulation of Nishide & Ohta, PKC 2007; the boolean part on XOR shares as in
ABY, Demmler, Schneider & Zohner, NDSS 2015, and ABY3, Mohassel & Rindal, CCS 2018):
  1. the dealer gives ring shares of a uniform r and XOR shares of its 64 bits r_i;
  2. open c = x + r (uniform, so it reveals nothing about x);                          1 round
  3. x = c - r mod 2^64, so msb(x) = c_63 ^ r_63 ^ [c' < r'], c' and r' the low 63 bits;
  4. [c' < r'] from the bitwise pairs lt_i = ~c_i & r_i, eq_i = ~c_i ^ r_i (local, c is public),
     combined in a tree of fan-in 4 (Garay, Schoenmakers & Villegas, PKC 2007, with fan-in 2):
     for children 3 (most significant) to 0,
       lt = lt3 ^ eq3 lt2 ^ eq3 eq2 lt1 ^ eq3 eq2 eq1 lt0,   eq = eq3 eq2 eq1 eq0
     (the terms are exclusive, so XOR is OR); each level's products of up to four bits take
     one round (`mpc.protocols.gmw.and_products`), 64 leaves -> 16 -> 4 -> 1;      3 rounds
  5. the XOR with c_63 ^ r_63 is local; the bit goes to the ring with a daBit.          1 round
Five rounds in all (six when c is large enough for a split opening, `Protocol._open_split`:
2^17 elements or more with 3 or more parties). The bits are packed 64 elements per word: a
party sends about 8 + 18 bytes per element to each peer (c, then the 147 masked tree inputs of
64 elements), and the dealer
sends about 9 words per element (ring shares of r and of the daBit, and its shares of the 462
rows of mask products of the tree, per 64 elements).
The result is exact for every x (no failure probability, unlike truncation).
Security model: semi-honest, as the additive protocol; the dealer knows r, the tree masks and
the daBits. Every opened value (c, the tree inputs, v) is masked by fresh uniform dealer
randomness, so a party's view is independent of x.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations

import numpy as np

from mpc.algebra import RING64
from mpc.bitpack import WORD_BITS, pack_planes, words_for
from mpc.errors import UnsupportedOperationError
from mpc.protocols.base import ComparisonMask, Need, Protocol, Shape
from mpc.protocols.gmw import ALL_ONES, and_products, open_with_dabit, xor_public

_LOW = WORD_BITS - 1  # positions 0..62 form c' and r'
_FAN_IN = 4
#: Groups of 4 children per tree level: 64 leaves (63 positions and a neutral pad) -> 16 -> 4 -> 1.
_GROUPS = (16, 4, 1)
# The variables of a group: eq of children 3..0 and lt of children 2..0 (lt3 enters linearly).
_E3, _E2, _E1, _E0, _L2, _L1, _L0 = range(7)
_VARIABLES = 7
_PRODUCTS = tuple(
    tuple(sorted(p))
    for p in [(_E3, _L2), (_E3, _E2, _L1), (_E3, _E2, _E1, _L0), (_E3, _E2, _E1, _E0)]
)
#: Every set of two or more variables some product multiplies (sorted tuples): the dealer
#: deals their masks' products.
_MONOMIALS = tuple(
    sorted(
        {s for p in _PRODUCTS for k in range(2, len(p) + 1) for s in combinations(p, k)},
        key=lambda s: (len(s), s),
    )
)
MASK_ROWS = _VARIABLES * sum(_GROUPS)
MONOMIAL_ROWS = len(_MONOMIALS) * sum(_GROUPS)


def _digits_reversed(k: int) -> int:
    d0, d1, d2 = k % 4, k // 4 % 4, k // 16
    return d0 * 16 + d1 * 4 + d2


# Leaf row r holds significance rank s = r with its base-4 digits reversed (s = 63 is bit 62,
# s = 0 the neutral pad). With this order the children of every tree level are contiguous
# blocks: child k of group g is row k * G + g, and child 3 covers the most significant range.
_LEAF_RANKS = [_digits_reversed(r) for r in range(WORD_BITS)]
_LEAF_POSITIONS = [s - 1 for s in _LEAF_RANKS if s > 0]
_PAD_ROW = _LEAF_RANKS.index(0)


def mask_shapes(count: int, bits: int = WORD_BITS) -> dict[str, Shape]:
    """Shapes of the `ComparisonMask` fields for `count` elements."""
    if bits != WORD_BITS:
        raise ValueError(f"comparisons run on {WORD_BITS}-bit words, got {bits}")
    words = words_for(count)
    return {
        "mask": (count,),
        "mask_bits": (WORD_BITS, words),
        "and_masks": (MASK_ROWS, words),
        "and_monomials": (MONOMIAL_ROWS, words),
        "dabit_bits": (words,),
        "dabit": (count,),
    }


@lru_cache(maxsize=1)
def _monomial_index() -> list[tuple[np.ndarray, np.ndarray]]:
    """Per monomial size k: (rows of and_monomials, (rows, k) rows of and_masks to AND)."""
    by_size: dict[int, tuple[list[int], list[list[int]]]] = {}
    mask_base = monomial_base = 0
    for groups in _GROUPS:
        for m, monomial in enumerate(_MONOMIALS):
            rows, sources = by_size.setdefault(len(monomial), ([], []))
            for g in range(groups):
                rows.append(monomial_base + m * groups + g)
                sources.append([mask_base + v * groups + g for v in monomial])
        mask_base += _VARIABLES * groups
        monomial_base += len(_MONOMIALS) * groups
    return [(np.array(rows), np.array(sources)) for rows, sources in by_size.values()]


def mask_monomials(and_masks: np.ndarray) -> np.ndarray:
    """Dealer side: the products (AND) of the tree masks that `less_than_zero` consumes."""
    out = np.zeros((MONOMIAL_ROWS, and_masks.shape[1]), dtype=np.uint64)
    for rows, sources in _monomial_index():
        out[rows] = np.bitwise_and.reduce(and_masks[sources], axis=1)
    return out


def less_than_zero(protocol: Protocol, x: np.ndarray) -> np.ndarray:
    """Shares of [x < 0] (x read as a signed 64-bit integer), as 0/1 ring elements."""
    bit, _ = _sign_bit(protocol, x, None)
    return bit


def less_than_zero_times(
    protocol: Protocol, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Shares of b = [x < 0] and of b * y (y shared, x's shape) in the rounds of b alone.

    With the daBit s of step 5, b * y = v y + (1 - 2v) (s y) for the public v = b ^ s; the
    Beaver product s y is opened together with c in round 1, so the product costs no round.
    """
    if y.shape != x.shape:
        raise ValueError(f"x of shape {x.shape} with a multiplicand of shape {y.shape}")
    bit, product = _sign_bit(protocol, x, y)
    assert product is not None
    return bit, product


def _sign_bit(
    protocol: Protocol, x: np.ndarray, times: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    alg = protocol.algebra
    if alg is not RING64:
        raise UnsupportedOperationError("this comparison needs sharing over the ring Z_2^64")
    shape = tuple(x.shape)
    flat = x.reshape(-1)
    size = flat.size
    if size == 0:
        empty = np.zeros(shape, dtype=np.uint64)
        return empty, None if times is None else empty
    mask: ComparisonMask = protocol._need(Need.COMPARISON_MASKS).comparison_mask((size,), WORD_BITS)
    if times is None:
        c = protocol.open_all(alg.add(flat, mask.mask))
    else:  # Beaver: s * y from a triple (a, b, t), e = s - a and d = y - b opened with c
        y = times.reshape(-1)
        a, b, t = protocol._need(Need.TRIPLES).triple((size,))
        c, e, d = protocol.open_many(
            [alg.add(flat, mask.mask), alg.sub(mask.dabit, a), alg.sub(y, b)]
        )
        s_times_y = alg.add(t, alg.add(alg.mul(e, b), alg.mul(d, a)))
        s_times_y = protocol.add_public(s_times_y, alg.mul(e, d))
    c_planes = pack_planes(c)  # (64, W)
    words = c_planes.shape[1]

    # Leaves: lt_i = [c_i < r_i] = ~c_i & r_i and eq_i = [c_i == r_i] = ~c_i ^ r_i, local because
    # c is public; the pad row is (lt, eq) = (0, 1), neutral on either side of a combination.
    lt = np.zeros((WORD_BITS, words), dtype=np.uint64)
    eq = np.zeros((WORD_BITS, words), dtype=np.uint64)
    real = [r for r in range(WORD_BITS) if r != _PAD_ROW]
    not_c = ~c_planes[_LEAF_POSITIONS]
    r_bits = mask.mask_bits[_LEAF_POSITIONS]
    lt[real] = r_bits & not_c
    eq[real] = xor_public(protocol, r_bits, not_c)
    eq[_PAD_ROW] = xor_public(protocol, eq[_PAD_ROW], ALL_ONES)

    mask_base = monomial_base = 0
    for groups in _GROUPS:
        n_masks, n_monomials = _VARIABLES * groups, len(_MONOMIALS) * groups
        masks = mask.and_masks[mask_base : mask_base + n_masks].reshape(_VARIABLES, groups, words)
        monomials = mask.and_monomials[monomial_base : monomial_base + n_monomials].reshape(
            len(_MONOMIALS), groups, words
        )
        mask_base += n_masks
        monomial_base += n_monomials
        e = eq.reshape(_FAN_IN, groups, words)
        t = lt.reshape(_FAN_IN, groups, words)
        variables = np.stack([e[3], e[2], e[1], e[0], t[2], t[1], t[0]])
        p1, p2, p3, p4 = and_products(protocol, variables, masks, monomials, _MONOMIALS, _PRODUCTS)
        lt = t[3] ^ p1 ^ p2 ^ p3
        eq = p4
    msb = xor_public(protocol, lt[0] ^ mask.mask_bits[_LOW], c_planes[_LOW])
    v = open_with_dabit(protocol, msb, mask.dabit_bits, size)
    flip = alg.sub(np.ones((), dtype=np.uint64), alg.add(v, v))  # 1 - 2v
    bit = protocol.add_public(protocol.mul_public(mask.dabit, flip), v)
    if times is None:
        return bit.reshape(shape), None
    product = alg.add(protocol.mul_public(y, v), protocol.mul_public(s_times_y, flip))
    return bit.reshape(shape), product.reshape(shape)
