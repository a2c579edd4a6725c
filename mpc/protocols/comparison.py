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

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache
from itertools import combinations

import numpy as np

from mpc.algebra import RING64
from mpc.bitpack import WORD_BITS, pack_planes, words_for
from mpc.errors import UnsupportedOperationError
from mpc.protocols.base import ComparisonMask, Need, Protocol, Shape
from mpc.protocols.gmw import ALL_ONES, and_products, open_with_dabit, xor_public

_LOW = WORD_BITS - 1  # positions 0..62 form c' and r'


@dataclass(frozen=True)
class Tree:
    """The shape of the carry tree: the fan-in of each level, from the leaves up (product 64).

    A group of F children (F-1 most significant) has the variables eq_{F-1}..eq_0 and
    lt_{F-2}..lt_0 (lt_{F-1} enters linearly) and the products eq_{F-1}..eq_{j+1} lt_j (j < F-1)
    and eq_{F-1}..eq_0; the dealer deals the masks' products of every subset of two or more
    variables some product multiplies (`monomials`). Each level is one round.
    """

    fan_ins: tuple[int, ...]

    @property
    def groups(self) -> tuple[int, ...]:
        """Groups per level, from the leaves up (64 leaves -> ... -> 1)."""
        out, width = [], WORD_BITS
        for fan_in in self.fan_ins:
            width //= fan_in
            out.append(width)
        return tuple(out)

    @property
    def variables(self) -> int:
        return 2 * self.fan_ins[0] - 1

    @cached_property
    def products(self) -> tuple[tuple[int, ...], ...]:
        """The products of one group (every level has the same fan-in F): variable v < F
        is eq of child F-1-v, variable v >= F is lt of child 2F-2-v."""
        f = self.fan_ins[0]
        eq = list(range(f))  # eq of children F-1, ..., 0
        lt = {f - 2 - i: f + i for i in range(f - 1)}  # child -> variable, lt_{F-2} first
        out = [tuple(sorted([*eq[: f - 1 - child], lt[child]])) for child in range(f - 2, -1, -1)]
        out.append(tuple(eq))
        return tuple(out)

    @cached_property
    def monomials(self) -> tuple[tuple[int, ...], ...]:
        subsets = {
            s for p in self.products for k in range(2, len(p) + 1) for s in combinations(p, k)
        }
        return tuple(sorted(subsets, key=lambda s: (len(s), s)))

    @property
    def mask_rows(self) -> int:
        return self.variables * sum(self.groups)

    @property
    def monomial_rows(self) -> int:
        return len(self.monomials) * sum(self.groups)

    @cached_property
    def leaf_ranks(self) -> tuple[int, ...]:
        """Significance rank of each leaf row (63: bit 62, ..., 1: bit 0, 0: the neutral pad).

        Child k of group g at a level of G groups is row k * G + g, so every level's children
        are contiguous blocks; the rank is the row's mixed-radix digits, leaves' digit lowest.
        """
        ranks = []
        for row in range(WORD_BITS):
            rank, weight, rest = 0, 1, row
            # row = k_1 * G_1 + g_1, and g_1 = k_2 * G_2 + g_2, ... (k_l the child at level l)
            digits = []
            for groups in self.groups:
                digits.append(rest // groups)
                rest %= groups
            for fan_in, digit in zip(self.fan_ins, digits, strict=True):
                rank += digit * weight
                weight *= fan_in
            ranks.append(rank)
        return tuple(ranks)

    def __post_init__(self) -> None:
        if math.prod(self.fan_ins) != WORD_BITS or len(set(self.fan_ins)) != 1:
            raise ValueError(f"a tree needs equal fan-ins whose product is 64, got {self.fan_ins}")


#: Three levels of fan-in 4 (five rounds a comparison, 462 mask products per 64 elements).
TREE = Tree((4, 4, 4))
#: Two levels of fan-in 8: one round fewer (four), for about ten times the dealer's mask
#: products (4446 rows per 64 elements) and the local work on them: for short vectors in a
#: loop where rounds cost more than bytes (over a WAN: the piecewise sigmoid of `mpc.ml`).
WIDE_TREE = Tree((8, 8))
TREES = {"compare": TREE, "compare_wide": WIDE_TREE}


def mask_shapes(count: int, bits: int = WORD_BITS, tree: Tree = TREE) -> dict[str, Shape]:
    """Shapes of the `ComparisonMask` fields for `count` elements."""
    if bits != WORD_BITS:
        raise ValueError(f"comparisons run on {WORD_BITS}-bit words, got {bits}")
    words = words_for(count)
    return {
        "mask": (count,),
        "mask_bits": (WORD_BITS, words),
        "and_masks": (tree.mask_rows, words),
        "and_monomials": (tree.monomial_rows, words),
        "dabit_bits": (words,),
        "dabit": (count,),
    }


@lru_cache(maxsize=4)
def _monomial_index(tree: Tree) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per monomial size k: (rows of and_monomials, (rows, k) rows of and_masks to AND)."""
    by_size: dict[int, tuple[list[int], list[list[int]]]] = {}
    mask_base = monomial_base = 0
    for groups in tree.groups:
        for m, monomial in enumerate(tree.monomials):
            rows, sources = by_size.setdefault(len(monomial), ([], []))
            for g in range(groups):
                rows.append(monomial_base + m * groups + g)
                sources.append([mask_base + v * groups + g for v in monomial])
        mask_base += tree.variables * groups
        monomial_base += len(tree.monomials) * groups
    return [(np.array(rows), np.array(sources)) for rows, sources in by_size.values()]


def mask_monomials(and_masks: np.ndarray, tree: Tree = TREE) -> np.ndarray:
    """Dealer side: the products (AND) of the tree masks that `less_than_zero` consumes."""
    out = np.zeros((tree.monomial_rows, and_masks.shape[1]), dtype=np.uint64)
    for rows, sources in _monomial_index(tree):
        out[rows] = np.bitwise_and.reduce(and_masks[sources], axis=1)
    return out


def less_than_zero(protocol: Protocol, x: np.ndarray, wide: bool = False) -> np.ndarray:
    """Shares of [x < 0] (x read as a signed 64-bit integer), as 0/1 ring elements.
    `wide`: the two-level tree (`WIDE_TREE`), one round fewer for more dealer bytes."""
    bit, _ = _sign_bit(protocol, x, None, WIDE_TREE if wide else TREE)
    return bit


def less_than_zero_times(
    protocol: Protocol, x: np.ndarray, y: np.ndarray, wide: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Shares of b = [x < 0] and of b * y (y shared, x's shape) in the rounds of b alone.

    With the daBit s of step 5, b * y = v y + (1 - 2v) (s y) for the public v = b ^ s; the
    Beaver product s y is opened together with c in round 1, so the product costs no round.
    """
    if y.shape != x.shape:
        raise ValueError(f"x of shape {x.shape} with a multiplicand of shape {y.shape}")
    bit, product = _sign_bit(protocol, x, y, WIDE_TREE if wide else TREE)
    assert product is not None
    return bit, product


def _sign_bit(
    protocol: Protocol, x: np.ndarray, times: np.ndarray | None, tree: Tree
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
    dealer = protocol._need(Need.COMPARISON_MASKS)
    if tree is TREE:
        mask: ComparisonMask = dealer.comparison_mask((size,), WORD_BITS)
    else:
        mask = dealer.comparison_mask((size,), WORD_BITS, wide=True)
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
    ranks = tree.leaf_ranks
    pad = ranks.index(0)
    positions = [s - 1 for s in ranks if s > 0]
    lt = np.zeros((WORD_BITS, words), dtype=np.uint64)
    eq = np.zeros((WORD_BITS, words), dtype=np.uint64)
    real = [r for r in range(WORD_BITS) if r != pad]
    not_c = ~c_planes[positions]
    r_bits = mask.mask_bits[positions]
    lt[real] = r_bits & not_c
    eq[real] = xor_public(protocol, r_bits, not_c)
    eq[pad] = xor_public(protocol, eq[pad], ALL_ONES)

    fan_in, variables, monomial_sets = tree.fan_ins[0], tree.variables, tree.monomials
    mask_base = monomial_base = 0
    for groups in tree.groups:
        n_masks, n_monomials = variables * groups, len(monomial_sets) * groups
        masks = mask.and_masks[mask_base : mask_base + n_masks].reshape(variables, groups, words)
        monomials = mask.and_monomials[monomial_base : monomial_base + n_monomials].reshape(
            len(monomial_sets), groups, words
        )
        mask_base += n_masks
        monomial_base += n_monomials
        e = eq.reshape(fan_in, groups, words)
        t = lt.reshape(fan_in, groups, words)
        # eq of children F-1..0, then lt of children F-2..0 (`Tree.products`)
        inputs = np.concatenate([e[::-1], t[fan_in - 2 :: -1]])
        products = and_products(protocol, inputs, masks, monomials, monomial_sets, tree.products)
        lt = np.bitwise_xor.reduce(products[:-1], axis=0) ^ t[fan_in - 1]
        eq = products[-1]
    msb = xor_public(protocol, lt[0] ^ mask.mask_bits[_LOW], c_planes[_LOW])
    v = open_with_dabit(protocol, msb, mask.dabit_bits, size)
    flip = alg.sub(np.ones((), dtype=np.uint64), alg.add(v, v))  # 1 - 2v
    bit = protocol.add_public(protocol.mul_public(mask.dabit, flip), v)
    if times is None:
        return bit.reshape(shape), None
    product = alg.add(protocol.mul_public(y, v), protocol.mul_public(s_times_y, flip))
    return bit.reshape(shape), product.reshape(shape)
