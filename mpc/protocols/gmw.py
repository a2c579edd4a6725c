"""XOR-shared bit vectors: opening, multi-input AND gates from dealer mask products, daBits.

Responsibility: the boolean sub-protocol that comparisons run on. A shared bit vector is held
as bit planes packed 64 elements per uint64 word (`mpc.bitpack`): x = x_0 ^ ... ^ x_{n-1}. XOR
and NOT are local (a public constant is XORed in by rank 0 only); an AND gate takes one round.
Packing makes a gate on 64 elements one word operation and one bit of traffic per input.

Protocols:
  - AND gates: the GMW protocol (Goldreich, Micali & Wigderson, STOC 1987) with Beaver triples
    over GF(2) (Beaver, CRYPTO 1991), generalised to products of several inputs in one round
    (`and_products`): open e_v = x_v ^ a_v for every input once, then combine the public e_v
    with the dealer's shares of the products of the masks a_v (ABY2.0's multi-input gates).
  - Boolean to arithmetic: with a dealer "daBit" s, XOR-shared and shared in the ring (Rotaru &
    Wood, "MArBled circuits", INDOCRYPT 2019), open v = x ^ s (uniform, one round), then
    [x] = v + [s] - 2 v [s], linear in [s] because v is public.
Security model: semi-honest, n-1 of n corrupt, as the additive protocol; the dealer knows every
mask, mask product and daBit and must not reuse them. Every opened value is masked by a fresh
uniform dealer bit, so it is independent of the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

import numpy as np

from mpc.bitpack import unpack_plane
from mpc.errors import IntegrityError
from mpc.protocols.base import Protocol

ALL_ONES = np.array(0xFFFF_FFFF_FFFF_FFFF, dtype=np.uint64)
ALL_ONES.flags.writeable = False


def open_xor(protocol: Protocol, share: np.ndarray) -> np.ndarray:
    """Reveal an XOR-shared word array to every party. One round."""
    channel = protocol.channel
    others = [j for j in range(channel.n) if j != channel.rank]
    received = channel.exchange(dict.fromkeys(others, share), others)
    out = np.array(share, dtype=np.uint64, copy=True)
    for j in others:
        got = received[j]
        if got.shape != out.shape:
            raise IntegrityError(
                f"party rank {j} sent bit words of shape {got.shape}, expected {out.shape}"
            )
        np.bitwise_xor(out, got, out=out)
    return out


def xor_public(protocol: Protocol, share: np.ndarray, constant: np.ndarray) -> np.ndarray:
    """The share of (x ^ constant): rank 0 XORs the public constant in."""
    return np.bitwise_xor(share, constant) if protocol.rank == 0 else share


Monomial = tuple[int, ...]  # sorted variable indexes


@dataclass(frozen=True)
class _Plan:
    """How `and_products` evaluates: every term is PUBLIC[t] & SHARED[s], XORed per product.

    PUBLIC rows: the opened e_v (v < V), then ANDs of them built by size (row = prefix & last),
    then a row of ones. SHARED rows: the masks a_v, the dealer's mask products, then the empty
    product (ones at rank 0, zeros elsewhere), so the public term of each product is added once.
    """

    public_products: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]  # (rows, prefix, last)
    public_rows: int
    term_public: np.ndarray
    term_shared: np.ndarray
    segments: np.ndarray  # start of each product's terms


@lru_cache(maxsize=16)
def _plan(variables: int, monomials: tuple[Monomial, ...], products: tuple[Monomial, ...]) -> _Plan:
    shared_index: dict[Monomial, int] = {(v,): v for v in range(variables)}
    shared_index.update({m: variables + i for i, m in enumerate(monomials)})
    empty_share = variables + len(monomials)
    needed: set[Monomial] = set()
    for product in products:
        for size in range(len(product)):
            for subset in combinations(product, size):
                rest = tuple(v for v in product if v not in subset)
                needed.update(rest[:k] for k in range(2, len(rest) + 1))  # with prefixes
    multi = sorted(needed, key=lambda t: (len(t), t))
    public_index: dict[Monomial, int] = {(v,): v for v in range(variables)}
    public_index.update({t: variables + i for i, t in enumerate(multi)})
    ones = variables + len(multi)
    by_size: dict[int, tuple[list[int], list[int], list[int]]] = {}
    for t in multi:
        rows, prefix, last = by_size.setdefault(len(t), ([], [], []))
        rows.append(public_index[t])
        prefix.append(public_index[t[:-1]])
        last.append(public_index[t[-1:]])
    term_public: list[int] = []
    term_shared: list[int] = []
    segments: list[int] = []
    for product in products:
        segments.append(len(term_public))
        for size in range(len(product) + 1):
            for subset in combinations(product, size):
                rest = tuple(v for v in product if v not in subset)
                term_public.append(public_index[rest] if rest else ones)
                term_shared.append(shared_index[subset] if subset else empty_share)
    return _Plan(
        tuple((np.array(r), np.array(p), np.array(q)) for _, (r, p, q) in sorted(by_size.items())),
        ones + 1,
        np.array(term_public),
        np.array(term_shared),
        np.array(segments),
    )


def and_products(
    protocol: Protocol,
    variables: np.ndarray,
    masks: np.ndarray,
    monomials: np.ndarray,
    monomial_sets: tuple[Monomial, ...],
    products: tuple[Monomial, ...],
) -> np.ndarray:
    """Shares of several products of XOR-shared variables, all in one round.

    `variables` has shape (V, G, W): V shared variables of G rows of words each; `masks` the
    dealer's masks a_v (same shape) and `monomials` (M, G, W) its shares of the products of the
    masks a_v, v in S, for each S in `monomial_sets` (sorted tuples): every S of two or more
    variables that a product needs. A product (a sorted tuple of variable indexes) is
    prod_v (e_v ^ a_v) = XOR over subsets S of (AND of the public e_v, v not in S) & a_S, with
    e_v = x_v ^ a_v opened once for all products: multi-input AND gates with preprocessed mask
    products as in ABY2.0 (Patra, Schneider, Suresh & Yalame, USENIX Security 2021), here with
    XOR-shared masks. Returns the products' shares, shape (len(products), G, W).
    """
    if variables.shape != masks.shape or monomials.shape[1:] != masks.shape[1:]:
        raise ValueError(
            f"variables {variables.shape}, masks {masks.shape} and mask products "
            f"{monomials.shape} do not match"
        )
    plan = _plan(len(variables), monomial_sets, products)
    opened = open_xor(protocol, variables ^ masks)
    public = np.empty((plan.public_rows, *opened.shape[1:]), dtype=np.uint64)
    public[: len(opened)] = opened
    for rows, prefix, last in plan.public_products:
        public[rows] = public[prefix] & public[last]
    public[-1] = ALL_ONES
    empty = np.full((1, *masks.shape[1:]), ALL_ONES if protocol.rank == 0 else 0, np.uint64)
    shared = np.concatenate([masks, monomials, empty])
    terms = public[plan.term_public] & shared[plan.term_shared]
    return np.bitwise_xor.reduceat(terms, plan.segments, axis=0)


def open_with_dabit(
    protocol: Protocol, bits: np.ndarray, dabit_bits: np.ndarray, count: int
) -> np.ndarray:
    """v = x ^ s for the first `count` bits x of an XOR-shared plane (W words) and a dealer
    daBit s, opened to every party as 0/1 values. One round. Then [x] = v + [s] - 2 v [s] in
    the ring, with [s] the daBit's ring shares (linear: v is public)."""
    return unpack_plane(open_xor(protocol, bits ^ dabit_bits), count)
