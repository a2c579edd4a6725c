"""XOR-shared bit vectors: opening, AND gates from dealer triples, conversion to the ring.

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
triple and daBit and must not reuse them. Every opened value is masked by a fresh uniform
dealer bit, so it is independent of the inputs.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from mpc.bitpack import unpack_plane
from mpc.errors import IntegrityError
from mpc.protocols.base import Protocol

ALL_ONES = np.array(0xFFFF_FFFF_FFFF_FFFF, dtype=np.uint64)


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


def and_products(
    protocol: Protocol,
    variables: np.ndarray,
    masks: np.ndarray,
    monomials: dict[frozenset[int], np.ndarray],
    products: list[tuple[int, ...]],
) -> list[np.ndarray]:
    """Shares of several products of XOR-shared variables, all in one round.

    `variables` has shape (V, G, W): V shared variables of G rows of words each; `masks` the
    dealer's masks a_v (same shape) and `monomials[S]` its shares of the product of the masks
    a_v, v in S, for every S of two or more variables that a product needs. A product (a tuple
    of variable indexes) is prod_v (e_v ^ a_v) = XOR over subsets S of
    (AND of the public e_v, v not in S) & a_S, with e_v = x_v ^ a_v opened once for all
    products: multi-input AND gates with preprocessed mask products as in ABY2.0 (Patra,
    Schneider, Suresh & Yalame, USENIX Security 2021), here with XOR-shared masks.
    """
    if variables.shape != masks.shape:
        raise ValueError(f"variables of shape {variables.shape} with masks of {masks.shape}")
    opened = open_xor(protocol, variables ^ masks)
    out = []
    for product in products:
        # The term of the empty subset is public (the AND of every e_v): rank 0 holds it.
        acc = _and_all([opened[v] for v in product])
        if protocol.rank != 0:
            acc[...] = 0
        for size in range(1, len(product) + 1):
            for subset in combinations(product, size):
                shared = masks[subset[0]] if size == 1 else monomials[frozenset(subset)]
                public = [opened[v] for v in product if v not in subset]
                np.bitwise_xor(acc, _and_all(public) & shared if public else shared, out=acc)
        out.append(acc)
    return out


def _and_all(words: list[np.ndarray]) -> np.ndarray:
    out = np.array(words[0], copy=True)
    for w in words[1:]:
        np.bitwise_and(out, w, out=out)
    return out


def bits_to_ring(
    protocol: Protocol, bits: np.ndarray, dabit_bits: np.ndarray, dabit: np.ndarray, count: int
) -> np.ndarray:
    """Ring shares (0/1) of the first `count` bits of an XOR-shared plane (W words). One round."""
    alg = protocol.algebra
    v = unpack_plane(open_xor(protocol, bits ^ dabit_bits), count)
    flip = alg.sub(np.ones((), dtype=np.uint64), alg.add(v, v))  # 1 - 2v
    return protocol.add_public(protocol.mul_public(dabit, flip), v)
