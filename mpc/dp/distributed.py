"""Distributed discrete Gaussian: one noise piece per party, the guarantee carried by the honest.

Each of n parties adds its own exact discrete Gaussian piece to its share; the n - t honest pieces
alone carry the target zCDP guarantee when up to t = ``max_colluding`` parties pool and subtract
theirs (Kairouz, Liu & Steinke, ICML 2021).  Security model: each piece is as secret as its
party's PRG; the calibration is public.  See docs/dp.md ("Distributed noise").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

from mpc.dp.accountant import InvalidPrivacyParameterError, Release, zcdp_rho
from mpc.dp.mechanisms import DiscreteGaussianMechanism, IntArray, round_up_scale
from mpc.dp.samplers import discrete_gaussian
from mpc.rng import Prg, Shape, Tag

__all__ = ["DistributedDiscreteGaussian"]


def _kls_tau(per_party_sigma2: float, honest: int) -> float:
    # Kairouz, Liu & Steinke (ICML 2021): tau = 10 sum_{k=1}^{m-1} exp(-2 pi^2 s^2 k/(k+1)).
    return 10.0 * sum(
        math.exp(-2.0 * math.pi**2 * per_party_sigma2 * k / (k + 1)) for k in range(1, honest)
    )


@dataclass(frozen=True, kw_only=True)
class DistributedDiscreteGaussian:
    """Discrete Gaussian noise split into per-party pieces that survive ``max_colluding`` parties.

    Each of the ``n_parties`` parties adds a piece ``N_Z(0, σ²/(n - t))``.  A sum of ``m = n - t``
    discrete Gaussians of scale ``s²`` is ``½ε²``-zCDP with ``ε = min(sqrt(Δ²/(m s²) + 2τd),
    Δ/(sqrt(m) s) + τ sqrt(d))``, ``τ = 10 Σ_{k=1}^{m-1} exp(-2π² s² k/(k+1))`` (KLS21 sect. 4,
    per-piece σ >= 1/2); the per-piece scale is raised until that ρ meets the target.  The
    released value carries all n pieces: variance ``n/(n - t)·σ²``.
    """

    epsilon: float
    delta: float
    sensitivity: float | None = None
    dim: int = 1
    n_parties: int = 2
    max_colluding: int = 1
    frac_bits: int = 0
    per_party_sigma2: Fraction = field(init=False)
    rho: float = field(init=False)

    def __post_init__(self) -> None:
        n, t = self.n_parties, self.max_colluding
        for name, value in (("n_parties", n), ("max_colluding", t), ("dim", self.dim)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidPrivacyParameterError(f"{name} must be an int, got {value!r}")
        if n < 1 or not 0 <= t < n or self.dim < 1:
            raise InvalidPrivacyParameterError(
                f"need n_parties >= 1, 0 <= max_colluding < n_parties and dim >= 1, got "
                f"n_parties={n}, max_colluding={t}, dim={self.dim}: at least one party must be "
                f"honest for distributed noise"
            )
        base = DiscreteGaussianMechanism(
            epsilon=self.epsilon,
            delta=self.delta,
            sensitivity=self.sensitivity,
            frac_bits=self.frac_bits,
        )
        object.__setattr__(self, "epsilon", base.epsilon)
        object.__setattr__(self, "delta", base.delta)
        object.__setattr__(self, "sensitivity", base.sensitivity)
        target_rho = zcdp_rho(base.epsilon, base.delta)
        honest = n - t
        per_party = max(round_up_scale(base.sigma2 / honest), Fraction(1, 4))  # σ >= 1/2
        sens = base.sensitivity_ulps
        for _ in range(10_000):
            rho = self._kls_rho(sens, float(per_party), honest)
            if rho <= target_rho:
                break
            per_party = round_up_scale(per_party * Fraction(101, 100))
        else:  # pragma: no cover
            raise InvalidPrivacyParameterError("could not calibrate the distributed noise")
        object.__setattr__(self, "per_party_sigma2", per_party)
        object.__setattr__(self, "rho", rho)

    def _kls_rho(self, sens: int, s2: float, m: int) -> float:
        tau = _kls_tau(s2, m)
        d = self.dim
        eps1 = math.sqrt(sens * sens / (m * s2) + 2.0 * tau * d)
        eps2 = sens / (math.sqrt(m * s2)) + tau * math.sqrt(d)
        return 0.5 * min(eps1, eps2) ** 2

    @property
    def honest_parties(self) -> int:
        return self.n_parties - self.max_colluding

    @property
    def honest_variance(self) -> float:
        """σ² of the honest parties' sum (the noise the guarantee rests on), in ulps²."""
        return float(self.per_party_sigma2) * self.honest_parties

    @property
    def total_variance(self) -> float:
        """Variance parameter of the released noise (all n pieces) in ulps²: ``n/(n-t) σ²``."""
        return float(self.per_party_sigma2) * self.n_parties

    @property
    def utility_cost(self) -> float:
        """``n / (n - t)``: factor on the noise variance paid for tolerating t colluders."""
        return self.n_parties / self.honest_parties

    def cost(self, label: str = "") -> Release:
        # rho <= zcdp_rho(epsilon, delta), whose CKS20 conversion gives (epsilon, delta)-DP.
        return Release(
            "distributed_discrete_gaussian",
            self.epsilon,
            self.delta,
            rho=self.rho,
            label=label,
            params={
                "sensitivity_l2": float(self.sensitivity or 0.0),
                "frac_bits": self.frac_bits,
                "n_parties": self.n_parties,
                "max_colluding": self.max_colluding,
                "per_party_sigma2_ulps": str(self.per_party_sigma2),
            },
        )

    def party_noise(self, prg: Prg, shape: Shape = (), tag: Tag | None = None) -> IntArray:
        """One party's piece (int64 ulps), drawn from that party's own PRG."""
        return discrete_gaussian(prg, self.per_party_sigma2, shape, tag)
