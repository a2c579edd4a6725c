"""Additive secret sharing over the ring Z_2^64 with Beaver multiplication (n >= 2 parties).

Responsibility: the `additive` protocol: x = x_0 + ... + x_{n-1} mod 2^64.

Protocol: sharing and linear operations as in SPDZ (Damgård, Pastro, Smart & Zakarias, CRYPTO
2012) without MACs; products by Beaver triples (see `mpc.protocols.beaver`); fixed-point
truncation by dealer pairs (ABY3, see `Protocol.truncate`).
Security model: semi-honest, tolerates n-1 corrupt parties, needs a trusted dealer for triples
and truncation pairs. A wrong share changes the result without detection (no MACs).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mpc.algebra import RING64, Algebra, Ring64
from mpc.protocols.base import Need, SecurityModel, SharingScheme
from mpc.protocols.beaver import BeaverMultiplication
from mpc.protocols.comparison import less_than_zero, less_than_zero_times
from mpc.rng import Prg


class AdditiveScheme(SharingScheme):
    """n-out-of-n additive sharing over an algebra (the ring Z_2^64 by default)."""

    def __init__(self, n: int, t: int, algebra: Algebra = RING64) -> None:
        super().__init__(n, t)
        self.algebra = algebra

    def share(self, secret: np.ndarray, prg: Prg) -> list[np.ndarray]:
        alg = self.algebra
        shares = [alg.random(prg, secret.shape) for _ in range(self.n - 1)]
        last = secret
        for s in shares:
            last = alg.sub(last, s)
        return [*shares, last]

    def reconstruct(self, shares: Mapping[int, np.ndarray]) -> np.ndarray:
        if len(shares) != self.n:
            raise ValueError(
                f"additive reconstruction needs all {self.n} shares, got {len(shares)}"
            )
        values = list(shares.values())
        if len(values) == 1:
            return np.array(values[0], copy=True)
        total = self.algebra.add(values[0], values[1])
        for s in values[2:]:
            if isinstance(self.algebra, Ring64) and total.shape == s.shape:
                np.add(total, s, out=total)  # total is ours: add in place, no new array
            else:
                total = self.algebra.add(total, s)
        return total

    def add_public(self, share: np.ndarray, constant: np.ndarray, rank: int) -> np.ndarray:
        if rank == 0:
            return self.algebra.add(share, constant)
        shape = np.broadcast_shapes(share.shape, np.shape(constant))
        return share if shape == share.shape else np.broadcast_to(share, shape).copy()

    def constant_holders(self) -> list[int]:
        return [0]

    def seeded_prefix(self, fixed_secret: bool) -> int:
        return self.n - 1 if fixed_secret else self.n

    def complete(
        self, seeded: list[np.ndarray], secret: np.ndarray | None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        ring = isinstance(self.algebra, Ring64)
        total = seeded[0]
        for k, s in enumerate(seeded[1:]):
            if ring and k and total.shape == s.shape:
                np.add(total, s, out=total)  # total is ours (from the first sum): in place
            else:
                total = self.algebra.add(total, s)
        if secret is None:
            return total, []
        if ring and len(seeded) > 1 and total.shape == np.shape(secret):
            return secret, [np.subtract(secret, total, out=total)]
        return secret, [self.algebra.sub(secret, total)]


class AdditiveBeaver(BeaverMultiplication):
    """`additive`: n-party additive sharing over Z_2^64, Beaver triples from a dealer."""

    name = "additive"
    summary = "additive sharing over Z_2^64, Beaver triples (n >= 2)"
    security = SecurityModel(threshold="n-1 of n", trust="a trusted dealer")
    needs = frozenset({Need.TRIPLES, Need.MATRIX_TRIPLES, Need.TRUNCATION_PAIRS})
    optional_needs = frozenset({Need.COMPARISON_MASKS})
    algebra = RING64

    def less_than_zero(self, x: np.ndarray, wide: bool = False) -> np.ndarray:
        """Exact sign bit; see `mpc.protocols.comparison`. Five rounds (four if `wide`)."""
        return less_than_zero(self, x, wide)

    def less_than_zero_times(
        self, x: np.ndarray, y: np.ndarray, wide: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The sign bit and its product with y, in the same five rounds (four if `wide`)."""
        return less_than_zero_times(self, x, y, wide)

    @classmethod
    def make_scheme(cls, n: int, t: int) -> SharingScheme:
        return AdditiveScheme(n, t)
