"""Shamir secret sharing over the prime field 2^61 - 1 (n >= 2t + 1), two multiplication paths.

Responsibility: the `shamir` (dealer-free degree reduction) and `shamir-beaver` protocols.

Sharing (Shamir, "How to share a secret", CACM 1979): party i (rank i) holds f(i + 1) for a
random polynomial f of degree t with f(0) = secret. Reconstruction interpolates at 0 with
Lagrange coefficients that are computed once per set of points and cached. When more than t + 1
shares are opened, the extra ones are checked against the interpolated polynomial, so an
inconsistent (wrong) share is detected (not corrected) as long as at most n - t - 1 are wrong.

Multiplication, `shamir`: degree reduction by resharing (Gennaro, Rabin & Rabin, PODC 1998;
BGW 1988): each party multiplies its shares locally (degree 2t), parties 0..2t reshare their
product with degree t, and every party combines the received shares with the Lagrange
coefficients at 0 of the points 1..2t+1. One round, no dealer; needs an honest majority.
Multiplication, `shamir-beaver`: Beaver triples in Shamir form from a dealer (see `beaver`).
Truncation (both): dealer truncation pairs (`Protocol.truncate`).
Security model: semi-honest, up to t < n/2 corrupt parties; the wrong-share check is a
detection aid, not malicious security.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np

from mpc.algebra import FIELD61, Algebra
from mpc.errors import CheatingDetectedError, ConfigurationError
from mpc.protocols.base import Need, Protocol, SecurityModel, SharingScheme
from mpc.protocols.beaver import BeaverMultiplication
from mpc.rng import Prg


@lru_cache(maxsize=1024)
def lagrange_coefficients(points: tuple[int, ...], target: int, modulus: int) -> tuple[int, ...]:
    """Coefficients l_k with f(target) = sum_k l_k f(points[k]), for deg f < len(points)."""
    if len(set(points)) != len(points):
        raise ValueError(f"interpolation points must be distinct, got {points}")
    coeffs = []
    for k, xk in enumerate(points):
        num, den = 1, 1
        for m, xm in enumerate(points):
            if m != k:
                num = num * (target - xm) % modulus
                den = den * (xk - xm) % modulus
        coeffs.append(num * pow(den, -1, modulus) % modulus)
    return tuple(coeffs)


class ShamirScheme(SharingScheme):
    """Degree-t Shamir sharing; party of rank i holds the evaluation at i + 1."""

    def __init__(self, n: int, t: int, algebra: Algebra = FIELD61, verify: bool = True) -> None:
        super().__init__(n, t)
        if not algebra.is_field:
            raise ConfigurationError("Shamir sharing needs a prime field, not a ring")
        self.algebra = algebra
        self.verify = verify

    def combine(self, values: Sequence[np.ndarray], coeffs: Sequence[int]) -> np.ndarray:
        """sum_k coeffs[k] * values[k] in the field.

        Lagrange coefficients for few parties are often tiny (for points 1, 2: 2 and -1), so
        coefficients of magnitude <= 3 use additions instead of a full field multiplication.
        """
        total: np.ndarray | None = None
        for v, c in zip(values, coeffs, strict=True):
            term = self._scaled(v, c)
            total = term if total is None else self.algebra.add(total, term)
        if total is None:
            raise ValueError("combine needs at least one value")
        return total

    def _scaled(self, v: np.ndarray, c: int) -> np.ndarray:
        alg = self.algebra
        centered = c if c <= alg.modulus // 2 else c - alg.modulus
        if abs(centered) <= 3 and centered != 0:
            out = v
            for _ in range(abs(centered) - 1):
                out = alg.add(out, v)
            return alg.neg(out) if centered < 0 else out
        return alg.mul_public(v, c)

    def interpolate(
        self, known: Mapping[int, np.ndarray], targets: Sequence[int]
    ) -> list[np.ndarray]:
        """Evaluate the polynomial through the points {x: value} at each target x."""
        points = tuple(sorted(known))
        values = [known[x] for x in points]
        return [
            self.combine(values, lagrange_coefficients(points, x, self.algebra.modulus))
            for x in targets
        ]

    def share(self, secret: np.ndarray, prg: Prg) -> list[np.ndarray]:
        alg = self.algebra
        coeffs = [alg.random(prg, secret.shape) for _ in range(self.t)]
        shares = []
        for rank in range(self.n):
            x = rank + 1
            acc = coeffs[-1] if coeffs else secret
            for c in reversed([secret, *coeffs[:-1]]):
                acc = alg.add(alg.mul_public(acc, x), c)
            shares.append(acc)
        return shares

    def reconstruct(self, shares: Mapping[int, np.ndarray]) -> np.ndarray:
        if len(shares) < self.t + 1:
            raise ValueError(f"Shamir reconstruction needs {self.t + 1} shares, got {len(shares)}")
        ranks = sorted(shares)
        base = {r + 1: shares[r] for r in ranks[: self.t + 1]}
        extra = ranks[self.t + 1 :]
        if self.verify and extra:
            expected = self.interpolate(base, [r + 1 for r in extra])
            for r, e in zip(extra, expected, strict=True):
                if not np.array_equal(e, shares[r]):
                    raise CheatingDetectedError(
                        f"opened Shamir shares are inconsistent (the share of party rank {r} "
                        "does not lie on the polynomial of the others): a party sent a wrong share"
                    )
        return self.interpolate(base, [0])[0]

    @property
    def checks_openings(self) -> bool:
        return self.verify and self.n > self.t + 1

    def add_public(self, share: np.ndarray, constant: np.ndarray, rank: int) -> np.ndarray:
        return self.algebra.add(share, constant)

    def seeded_prefix(self, fixed_secret: bool) -> int:
        return self.t if fixed_secret else self.t + 1

    def complete(
        self, seeded: list[np.ndarray], secret: np.ndarray | None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        known = {rank + 1: s for rank, s in enumerate(seeded)}
        if secret is None:
            secret = self.interpolate(known, [0])[0]
        else:
            known[0] = secret
        rest = range(len(seeded), self.n)
        return secret, self.interpolate(known, [r + 1 for r in rest])


class _ShamirBase(Protocol):
    algebra = FIELD61

    @classmethod
    def default_threshold(cls, n: int) -> int:
        return max(1, (n - 1) // 2)

    @classmethod
    def check_parties(cls, n: int, threshold: int | None) -> int:
        t = super().check_parties(n, threshold)
        if n < 2 * t + 1:
            fix = (
                f"use t <= {(n - 1) // 2} or at least {2 * t + 1} parties"
                if n >= 3
                else "use at least 3 parties (or the 'additive' protocol for 2)"
            )
            raise ConfigurationError(
                f"{cls.name} needs n >= 2t + 1 parties (honest majority): got n={n}, t={t}; {fix}"
            )
        return t

    @classmethod
    def make_scheme(cls, n: int, t: int) -> SharingScheme:
        return ShamirScheme(n, t)


class ShamirDegreeReduction(_ShamirBase):
    """`shamir`: products by local multiplication and resharing (dealer-free)."""

    name = "shamir"
    summary = "Shamir sharing over GF(2^61-1), dealer-free degree reduction (n >= 2t+1)"
    security = SecurityModel(
        threshold="t < n/2",
        trust="an honest majority (products); a dealer only for fixed-point truncation pairs",
        detects_wrong_shares=True,
    )
    needs = frozenset[Need]()
    optional_needs = frozenset({Need.TRUNCATION_PAIRS})

    def _reduce_degree(self, product: np.ndarray) -> np.ndarray:
        scheme = self.scheme
        assert isinstance(scheme, ShamirScheme)
        resharers = list(range(2 * self.t + 1))
        outgoing: dict[int, np.ndarray] = {}
        own: np.ndarray | None = None
        if self.rank in resharers:
            shares = scheme.share(product, self.prg)
            outgoing = {j: shares[j] for j in range(self.n) if j != self.rank}
            own = shares[self.rank]
        received = self.channel.exchange(outgoing, [r for r in resharers if r != self.rank])
        if own is not None:
            received[self.rank] = own
        coeffs = lagrange_coefficients(tuple(r + 1 for r in resharers), 0, self.algebra.modulus)
        return scheme.combine([received[r] for r in resharers], coeffs)

    def mul(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self._reduce_degree(self.algebra.mul(x, y))

    def matmul(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self._reduce_degree(self.algebra.matmul(x, y))


class ShamirBeaver(BeaverMultiplication, _ShamirBase):
    """`shamir-beaver`: Shamir sharing, products by Beaver triples in Shamir form."""

    name = "shamir-beaver"
    summary = "Shamir sharing over GF(2^61-1), Beaver triples in Shamir form (n >= 2t+1)"
    security = SecurityModel(
        threshold="t < n/2", trust="a trusted dealer", detects_wrong_shares=True
    )
    needs = frozenset({Need.TRIPLES, Need.MATRIX_TRIPLES, Need.TRUNCATION_PAIRS})
