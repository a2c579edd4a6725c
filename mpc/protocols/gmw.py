"""XOR-shared bit vectors: opening, AND gates from dealer triples, conversion to the ring.

Responsibility: the boolean sub-protocol that comparisons run on. A shared bit vector is held
as bit planes packed 64 elements per uint64 word (`mpc.bitpack`): x = x_0 ^ ... ^ x_{n-1}. XOR
and NOT are local (a public constant is XORed in by rank 0 only); an AND gate takes one round.
Packing makes a gate on 64 elements one word operation and one bit of traffic each.

Protocols:
  - AND gates: the GMW protocol (Goldreich, Micali & Wigderson, STOC 1987) with Beaver triples
    over GF(2) (Beaver, CRYPTO 1991): open e = x ^ a and d = y ^ b in one round, then
    z = c ^ (e & b) ^ (d & a) ^ (e & d), the public e & d XORed in once.
  - Boolean to arithmetic: with a dealer "daBit" s, XOR-shared and shared in the ring (Rotaru &
    Wood, "MArBled circuits", INDOCRYPT 2019), open v = x ^ s (uniform, one round), then
    [x] = v + [s] - 2 v [s], linear in [s] because v is public.
Security model: semi-honest, n-1 of n corrupt, as the additive protocol; the dealer knows every
triple and daBit and must not reuse them. Every opened value is masked by a fresh uniform
dealer bit, so it is independent of the inputs.
"""

from __future__ import annotations

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


def and_gates(
    protocol: Protocol,
    x: np.ndarray,
    y: np.ndarray,
    triple: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """Shares of x & y for XOR-shared word arrays of equal shape. One round."""
    a, b, c = triple
    if not x.shape == y.shape == a.shape:
        raise ValueError(f"AND gates on shapes {x.shape}, {y.shape} with triples of {a.shape}")
    opened = open_xor(protocol, np.concatenate([x ^ a, y ^ b]))
    e, d = opened[: len(x)], opened[len(x) :]
    z = c ^ (e & b) ^ (d & a)
    return xor_public(protocol, z, e & d)


class AndTriples:
    """Rows of a dealer's (G, W) AND triples, handed out in order; each row is used once."""

    def __init__(self, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
        self._a, self._b, self._c = a, b, c
        self._next = 0

    def take(self, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        start, stop = self._next, self._next + rows
        if stop > len(self._a):
            raise ValueError(f"AND triples exhausted: {stop} rows asked, {len(self._a)} dealt")
        self._next = stop
        return self._a[start:stop], self._b[start:stop], self._c[start:stop]

    @property
    def unused(self) -> int:
        return len(self._a) - self._next


def bits_to_ring(
    protocol: Protocol, bits: np.ndarray, dabit_bits: np.ndarray, dabit: np.ndarray, count: int
) -> np.ndarray:
    """Ring shares (0/1) of the first `count` bits of an XOR-shared plane (W words). One round."""
    alg = protocol.algebra
    v = unpack_plane(open_xor(protocol, bits ^ dabit_bits), count)
    flip = alg.sub(np.ones((), dtype=np.uint64), alg.add(v, v))  # 1 - 2v
    return protocol.add_public(protocol.mul_public(dabit, flip), v)
