"""Continuous Laplace and Gaussian mechanisms: calibration and cost only, no noise.

Floating-point noise added to a value leaks through its low-order bits (Mironov, "On
Significance of the Least Significant Bits for Differential Privacy", CCS 2012), so these
classes draw none: they give the textbook calibration (the Laplace scale Δ/ε; the analytic
Gaussian σ of Balle & Wang, ICML 2018, Thm 8) and its cost, and ``discrete(frac_bits)`` returns
the exact mechanism on the fixed-point grid that releases noise.  Pure functions of public
numbers.  See docs/dp.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mpc.dp.accountant import Release, check_delta, check_epsilon
from mpc.dp.bisection import bisect
from mpc.dp.mechanisms import (
    DiscreteGaussianMechanism,
    DiscreteLaplaceMechanism,
    check_sensitivity,
    gaussian_needs_delta,
)

__all__ = ["GaussianMechanism", "LaplaceMechanism", "analytic_gaussian_sigma", "gaussian_delta"]


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def gaussian_delta(epsilon: float, sigma: float, sensitivity: float = 1.0) -> float:
    """Exact δ(ε) of the Gaussian mechanism N(0, σ²) with L2 sensitivity Δ (Balle & Wang 2018,
    Theorem 8): ``Φ(Δ/(2σ) - εσ/Δ) - e^ε Φ(-Δ/(2σ) - εσ/Δ)``.  If the second term underflows
    it is dropped, which over-estimates δ (the safe side)."""
    a = sensitivity / (2.0 * sigma)
    b = epsilon * sigma / sensitivity
    first = _phi(a - b)
    tail = math.erfc((a + b) / math.sqrt(2.0))
    second = 0.0 if tail == 0.0 else math.exp(epsilon + math.log(0.5 * tail))
    return max(0.0, first - second)


def analytic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """Smallest σ (to ~1e-12 relative, rounded up) with ``gaussian_delta(ε, σ, Δ) <= δ``."""
    eps = check_epsilon(epsilon)
    d = check_delta(delta)
    gaussian_needs_delta(d, "Gaussian mechanism")
    delta_sens = check_sensitivity(sensitivity, "L2", "e.g. 1 for a count")
    lo = hi = delta_sens
    while gaussian_delta(eps, hi, delta_sens) > d:
        hi *= 2.0
    while gaussian_delta(eps, lo, delta_sens) <= d and lo > 1e-300:
        lo /= 2.0
    _, hi = bisect(lambda s: gaussian_delta(eps, s, delta_sens) > d, lo, hi, 200, rel_tol=1e-13)
    return hi


@dataclass(frozen=True, kw_only=True)
class LaplaceMechanism:
    """Continuous Laplace of scale ``sensitivity/epsilon`` (L1 sensitivity); ε-DP (Dwork,
    McSherry, Nissim & Smith, TCC 2006).  No noise: use ``discrete(frac_bits)``."""

    epsilon: float
    sensitivity: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", check_epsilon(self.epsilon))
        object.__setattr__(
            self, "sensitivity", check_sensitivity(self.sensitivity, "L1", "e.g. 1 for a count")
        )

    @property
    def scale(self) -> float:
        return float(self.sensitivity or 0.0) / self.epsilon

    def cost(self, label: str = "") -> Release:
        return Release(
            "laplace",
            self.epsilon,
            0.0,
            rho=self.epsilon**2 / 2.0,
            label=label,
            params={"sensitivity_l1": float(self.sensitivity or 0.0), "scale": self.scale},
        )

    def discrete(self, frac_bits: int = 0) -> DiscreteLaplaceMechanism:
        """The same ε and sensitivity on the grid of ``2^-frac_bits``: exact noise.  The
        sensitivity must bound the change of the *encoded* value (``grid_sensitivity``)."""
        return DiscreteLaplaceMechanism(
            epsilon=self.epsilon, sensitivity=self.sensitivity, frac_bits=frac_bits
        )


@dataclass(frozen=True, kw_only=True)
class GaussianMechanism:
    """Continuous Gaussian, σ by the analytic calibration of Balle & Wang (ICML 2018); (ε, δ)-DP
    for L2 sensitivity Δ and ``Δ²/(2σ²)``-zCDP.  No noise: use ``discrete(frac_bits)``."""

    epsilon: float
    delta: float
    sensitivity: float | None = None
    sigma: float = field(init=False)

    def __post_init__(self) -> None:
        eps = check_epsilon(self.epsilon)
        d = check_delta(self.delta)
        gaussian_needs_delta(d, "Gaussian mechanism")
        sens = check_sensitivity(self.sensitivity, "L2", "for a model use mpc.dp.sensitivity")
        object.__setattr__(self, "epsilon", eps)
        object.__setattr__(self, "delta", d)
        object.__setattr__(self, "sensitivity", sens)
        object.__setattr__(self, "sigma", analytic_gaussian_sigma(eps, d, sens))

    @property
    def rho(self) -> float:
        return float(self.sensitivity or 0.0) ** 2 / (2.0 * self.sigma**2)

    def cost(self, label: str = "") -> Release:
        return Release(
            "gaussian",
            self.epsilon,
            self.delta,
            rho=self.rho,
            label=label,
            params={"sensitivity_l2": float(self.sensitivity or 0.0), "sigma": self.sigma},
        )

    def discrete(self, frac_bits: int = 0) -> DiscreteGaussianMechanism:
        """The exact discrete Gaussian for the same (ε, δ) and sensitivity on the grid of
        ``2^-frac_bits`` (zCDP calibration: 5-10% more σ than the analytic one)."""
        return DiscreteGaussianMechanism(
            epsilon=self.epsilon,
            delta=self.delta,
            sensitivity=self.sensitivity,
            frac_bits=frac_bits,
        )
