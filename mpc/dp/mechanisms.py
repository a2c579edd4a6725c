"""Differential-privacy mechanisms: calibration of the noise and its privacy cost.

Responsibility
--------------
Each mechanism is a frozen, validated configuration that knows (a) how much noise its guarantee
needs, (b) the :class:`~mpc.dp.accountant.Release` it costs (``cost()``), and (c) how to draw
that noise from a :class:`mpc.rng.Prg` (``noise()``) and add it (``randomise()``, which spends
the cost at an accountant *first* when one is given).  Noise arrays are what each party (or the
dealer) adds to its *share* when the lead wires noise-under-MPC; nothing here touches shares.

Mechanisms (sensitivity: the largest change of the query between neighbouring data sets that
differ in one individual's row, in the norm named):

* :class:`LaplaceMechanism`: continuous Laplace of scale ``Δ₁/ε``; ε-DP (Dwork, McSherry,
  Nissim & Smith, "Calibrating Noise to Sensitivity in Private Data Analysis", TCC 2006).
  Floating-point noise: prefer :class:`DiscreteLaplaceMechanism` (Mironov, CCS 2012).
* :class:`GaussianMechanism`: continuous Gaussian with the *analytic* calibration of Balle &
  Wang, "Improving the Gaussian Mechanism for Differential Privacy: Analytical Calibration and
  Optimal Denoising", ICML 2018 (Theorem 8): the smallest σ (bisection, rounded up) with
  ``Φ(Δ/(2σ) - εσ/Δ) - e^ε Φ(-Δ/(2σ) - εσ/Δ) <= δ``; (ε, δ)-DP for L2 sensitivity Δ, any ε > 0
  (the classical ``σ = Δ sqrt(2 ln(1.25/δ))/ε`` needs ε < 1 and adds more noise).  Floating point.
* :class:`DiscreteLaplaceMechanism`: ``P[z] ∝ exp(-|z|/b)`` on the integers (the geometric
  mechanism, Ghosh, Roughgarden & Sundararajan, STOC 2009), sampled exactly (Canonne, Kamath &
  Steinke, NeurIPS 2020, Alg. 2); ε-DP for integer-valued queries of L1 sensitivity Δ when
  ``b >= Δ/ε``.
* :class:`DiscreteGaussianMechanism`: ``P[z] ∝ exp(-z²/(2σ²))`` on the integers, sampled
  exactly (CKS20 Alg. 3); ``Δ²/(2σ²)``-zCDP for integer vectors of L2 sensitivity Δ (CKS20
  Thm 14), calibrated to (ε, δ) through the zCDP conversion of CKS20 Cor. 13 (5-10%
  more noise than the analytic continuous calibration).
* :class:`VectorLaplaceMechanism`: the pure ε-DP vector noise of Chaudhuri, Monteleoni &
  Sarwate, "Differentially Private Empirical Risk Minimization", JMLR 12 (2011), Alg. 1 (output
  perturbation): density ``∝ exp(-ε‖b‖₂/Δ)``, sampled as norm ``~ Gamma(d, Δ/ε)`` times a
  uniform direction.  The (ε, δ) variant of the same output perturbation is
  :class:`GaussianMechanism` / :class:`DiscreteGaussianMechanism` with the same L2
  sensitivity (:func:`model_release_mechanism` picks one).
* :class:`DistributedDiscreteGaussian`: the discrete Gaussian split into ``n`` per-party pieces
  so that the honest parties' pieces alone carry the guarantee (see its docstring).

Fixed-point values.  The discrete mechanisms work in *units of the fixed-point ulp*
``2^-frac_bits``: ``sensitivity`` is given in real units and converted to
``ceil(Δ · 2^frac_bits)`` ulps (exact rational arithmetic), noise is an int64 array of ulps, and
``randomise`` adds it to the *encoded* int64 values (``mpc.encoding.FixedPoint.encode``).  The
sensitivity must bound the change of the encoded value itself: when a real value is rounded onto
the grid, rounding adds up to one ulp per coordinate (:func:`grid_sensitivity`).  Counts are the
case ``frac_bits = 0``.

Floating-point vector noise (:class:`VectorLaplaceMechanism`) is rounded to the fixed-point grid
by ``noise_fixed``: for a value already on the grid, ``round(v + b) = v + round(b)``, so this is
post-processing of the continuous mechanism and keeps its guarantee, and it drops the low-order
float bits that Mironov's attack reads (his "snapping" idea).  It does *not* remove the
53-bit-uniform precision caveat of ``mpc.dp.samplers`` (tails cut at ~36.7 scale units per
exponential term, probabilities resolved to ~2^-53): this is an approximation of the ideal
mechanism, not an exact implementation.  Use the discrete Gaussian when exactness matters.

Bad input: ε <= 0 or not finite, δ outside [0, 1), δ = 0 for a Gaussian mechanism, and a
non-positive sensitivity raise :class:`~mpc.dp.accountant.InvalidPrivacyParameterError`; a
missing sensitivity raises :class:`~mpc.dp.accountant.MissingSensitivityError`; each message
says what to set.

Security model
--------------
A mechanism's guarantee holds only if (1) the sensitivity is a true bound for the query on
*every* pair of neighbouring data sets (clip rows, bound counts), (2) the noise is drawn from a
PRG whose seed no observer of the output knows (each party's or the dealer's own seed), and (3)
the noise is added before anyone sees the value: in ``mpc`` that means to shares, under MPC
(wired by the lead; not done here).  Distributed noise further assumes that at most
``max_colluding`` parties pool their pieces.  Calibration functions are pure and public.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from mpc.dp.accountant import (
    Accountant,
    InvalidPrivacyParameterError,
    MissingSensitivityError,
    Release,
    check_delta,
    check_epsilon,
    zcdp_rho,
)
from mpc.dp.bisection import bisect
from mpc.dp.samplers import (
    MAX_INTEGER_SCALE,
    discrete_gaussian,
    discrete_laplace,
    gamma_integer_shape,
    laplace,
    standard_normal,
    uniform_direction,
)
from mpc.rng import Prg, Shape, Tag

__all__ = [
    "DiscreteGaussianMechanism",
    "DiscreteLaplaceMechanism",
    "DistributedDiscreteGaussian",
    "GaussianMechanism",
    "LaplaceMechanism",
    "VectorLaplaceMechanism",
    "analytic_gaussian_sigma",
    "gaussian_delta",
    "grid_sensitivity",
    "model_release_mechanism",
    "sensitivity_in_ulps",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

#: Rational scales are rounded *up* to a multiple of 2^-SCALE_BITS (more noise, never less).
SCALE_BITS = 20


# ---- validation helpers -------------------------------------------------------------------------


def _check_sensitivity(value: object, norm: str, hint: str) -> float:
    if value is None:
        raise MissingSensitivityError(
            f"sensitivity is not set: pass sensitivity=<the {norm} sensitivity of the released "
            f"value> (the most one individual's row can change it; {hint})"
        )
    if isinstance(value, bool) or not isinstance(value, int | float | Fraction):
        raise InvalidPrivacyParameterError(
            f"sensitivity must be a number, got {type(value).__name__}"
        )
    out = float(value)
    if not math.isfinite(out) or out <= 0:
        raise InvalidPrivacyParameterError(
            f"sensitivity must be a finite number > 0 ({norm} sensitivity), got {value!r}"
        )
    return out


def _check_frac_bits(frac_bits: object) -> int:
    if isinstance(frac_bits, bool) or not isinstance(frac_bits, int) or not 0 <= frac_bits <= 52:
        raise InvalidPrivacyParameterError(
            f"frac_bits must be an int in [0, 52] (the fixed-point fractional bits, "
            f"mpc.encoding.FixedPoint.frac_bits; 0 for counts), got {frac_bits!r}"
        )
    return frac_bits


def _gaussian_needs_delta(delta: float, what: str) -> None:
    if delta == 0.0:
        raise InvalidPrivacyParameterError(
            f"the {what} needs delta > 0 (it is never pure epsilon-DP): set delta, e.g. "
            f"delta=1e-6 (well below 1/n_rows), or use a Laplace mechanism for delta = 0"
        )


def _spend(accountant: Accountant | None, release: Release) -> None:
    if accountant is not None:
        accountant.spend(release)  # raises BudgetExceededError before any noise is drawn


def sensitivity_in_ulps(sensitivity: float, frac_bits: int) -> int:
    """``ceil(sensitivity · 2^frac_bits)``, exact (a float is taken at its binary value)."""
    scaled = Fraction(sensitivity) * (1 << frac_bits)
    return max(1, math.ceil(scaled))


def grid_sensitivity(sensitivity: float, frac_bits: int, dim: int = 1, norm: str = "l2") -> float:
    """Sensitivity (real units) of a value *rounded onto the fixed-point grid*.

    Rounding x and x' to multiples of ``u = 2^-frac_bits`` changes each coordinate of the
    difference by less than one ulp, so ``‖round(x) - round(x')‖ <= Δ + u·sqrt(dim)`` (L2) or
    ``Δ + u·dim`` (L1).  Use this when the value is computed in floats and then encoded; values
    computed exactly on the grid (counts, or a fixed-point model whose bound already includes its
    fixed-point error, as ``mpc.dp.sensitivity`` does) need no slack.
    """
    if norm not in ("l1", "l2"):
        raise InvalidPrivacyParameterError(f"norm must be 'l1' or 'l2', got {norm!r}")
    ulp = 2.0**-frac_bits
    return sensitivity + ulp * (math.sqrt(dim) if norm == "l2" else dim)


def _round_up_scale(value: Fraction) -> Fraction:
    q = 1 << SCALE_BITS
    return Fraction(math.ceil(value * q), q)


# ---- Balle & Wang analytic Gaussian -------------------------------------------------------------


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def gaussian_delta(epsilon: float, sigma: float, sensitivity: float = 1.0) -> float:
    """Exact δ(ε) of the Gaussian mechanism N(0, σ²) with L2 sensitivity Δ (Balle & Wang 2018,
    Theorem 8): ``Φ(Δ/(2σ) - εσ/Δ) - e^ε Φ(-Δ/(2σ) - εσ/Δ)``.

    Numerics: if the second term underflows it is dropped, which over-estimates δ (safe side).
    """
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
    _gaussian_needs_delta(d, "Gaussian mechanism")
    delta_sens = _check_sensitivity(sensitivity, "L2", "e.g. 1 for a count")
    lo = hi = delta_sens
    while gaussian_delta(eps, hi, delta_sens) > d:
        hi *= 2.0
    while gaussian_delta(eps, lo, delta_sens) <= d and lo > 1e-300:
        lo /= 2.0
    _, hi = bisect(lambda s: gaussian_delta(eps, s, delta_sens) > d, lo, hi, 200, rel_tol=1e-13)
    return hi


# ---- continuous mechanisms ----------------------------------------------------------------------


class _FloatNoise:
    """`randomise` for mechanisms whose noise is a float array of the value's shape."""

    def cost(self, label: str = "") -> Release:
        raise NotImplementedError

    def noise(self, prg: Prg, shape: Shape = (), tag: Tag | None = None) -> FloatArray:
        raise NotImplementedError

    def randomise(
        self,
        prg: Prg,
        value: Any,
        *,
        accountant: Accountant | None = None,
        label: str = "",
        tag: Tag | None = None,
    ) -> FloatArray:
        """``value + noise``; spends ``cost(label)`` at ``accountant`` first (if given)."""
        arr = np.asarray(value, dtype=np.float64)
        _spend(accountant, self.cost(label))
        return np.asarray(arr + self.noise(prg, arr.shape, tag), dtype=np.float64)


@dataclass(frozen=True, kw_only=True)
class LaplaceMechanism(_FloatNoise):
    """Continuous Laplace noise of scale ``sensitivity/epsilon`` (L1 sensitivity); ε-DP.

    Floating-point noise (see the module docstring); prefer :class:`DiscreteLaplaceMechanism`.
    """

    epsilon: float
    sensitivity: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", check_epsilon(self.epsilon))
        object.__setattr__(
            self, "sensitivity", _check_sensitivity(self.sensitivity, "L1", "e.g. 1 for a count")
        )

    @property
    def scale(self) -> float:
        assert self.sensitivity is not None
        return self.sensitivity / self.epsilon

    def cost(self, label: str = "") -> Release:
        return Release(
            "laplace",
            self.epsilon,
            0.0,
            rho=self.epsilon**2 / 2.0,
            label=label,
            params={"sensitivity_l1": float(self.sensitivity or 0.0), "scale": self.scale},
        )

    def noise(self, prg: Prg, shape: Shape = (), tag: Tag | None = None) -> FloatArray:
        return laplace(prg, self.scale, shape, tag)


@dataclass(frozen=True, kw_only=True)
class GaussianMechanism(_FloatNoise):
    """Continuous Gaussian noise, σ by the analytic calibration of Balle & Wang (ICML 2018);
    (ε, δ)-DP for L2 sensitivity Δ; also ``Δ²/(2σ²)``-zCDP.  The (ε, δ) variant of the CMS11
    vector output perturbation when applied to a model vector.  Floating-point noise."""

    epsilon: float
    delta: float
    sensitivity: float | None = None
    sigma: float = field(init=False)

    def __post_init__(self) -> None:
        eps = check_epsilon(self.epsilon)
        d = check_delta(self.delta)
        _gaussian_needs_delta(d, "Gaussian mechanism")
        sens = _check_sensitivity(self.sensitivity, "L2", "for a model use mpc.dp.sensitivity")
        object.__setattr__(self, "epsilon", eps)
        object.__setattr__(self, "delta", d)
        object.__setattr__(self, "sensitivity", sens)
        object.__setattr__(self, "sigma", analytic_gaussian_sigma(eps, d, sens))

    @property
    def rho(self) -> float:
        assert self.sensitivity is not None
        return self.sensitivity**2 / (2.0 * self.sigma**2)

    def cost(self, label: str = "") -> Release:
        return Release(
            "gaussian",
            self.epsilon,
            self.delta,
            rho=self.rho,
            label=label,
            params={"sensitivity_l2": float(self.sensitivity or 0.0), "sigma": self.sigma},
        )

    def noise(self, prg: Prg, shape: Shape = (), tag: Tag | None = None) -> FloatArray:
        return np.asarray(self.sigma * standard_normal(prg, shape, tag), dtype=np.float64)


# ---- discrete mechanisms ------------------------------------------------------------------------


def _randomise_int(noise: IntArray, value: Any, frac_bits: int) -> IntArray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise InvalidPrivacyParameterError(
            f"randomise takes fixed-point encoded integers (FixedPoint(frac_bits={frac_bits})"
            f".encode(...)), got dtype {arr.dtype}"
        )
    return np.asarray(arr.astype(np.int64) + noise, dtype=np.int64)


class _IntegerNoise:
    """`randomise` for mechanisms whose noise is an integer number of fixed-point ulps."""

    frac_bits: int

    def cost(self, label: str = "") -> Release:
        raise NotImplementedError

    def noise(self, prg: Prg, shape: Shape = (), tag: Tag | None = None) -> IntArray:
        raise NotImplementedError

    def randomise(
        self,
        prg: Prg,
        encoded: Any,
        *,
        accountant: Accountant | None = None,
        label: str = "",
        tag: Tag | None = None,
    ) -> IntArray:
        """``encoded + noise`` on fixed-point integers; spends at ``accountant`` first."""
        arr = np.asarray(encoded)
        _spend(accountant, self.cost(label))
        return _randomise_int(self.noise(prg, arr.shape, tag), arr, self.frac_bits)


@dataclass(frozen=True, kw_only=True)
class DiscreteLaplaceMechanism(_IntegerNoise):
    """Exact discrete Laplace noise in ulps of ``2^-frac_bits``; ε-DP for L1 sensitivity Δ.

    ``sensitivity`` is in real units (for counts, frac_bits = 0, a number of rows); the noise
    scale is ``b = ceil(Δ·2^f)/ε`` ulps, rounded up to a multiple of ``2^-20``.
    """

    epsilon: float
    sensitivity: float | None = None
    frac_bits: int = 0
    scale: Fraction = field(init=False)

    def __post_init__(self) -> None:
        eps = check_epsilon(self.epsilon)
        sens = _check_sensitivity(self.sensitivity, "L1", "e.g. 1 for a count")
        f = _check_frac_bits(self.frac_bits)
        ulps = sensitivity_in_ulps(sens, f)
        scale = _round_up_scale(Fraction(ulps) / Fraction(eps))
        if scale > MAX_INTEGER_SCALE:
            raise InvalidPrivacyParameterError(
                f"noise scale {float(scale):.3g} ulps is too large for int64 noise: raise "
                f"epsilon or lower frac_bits"
            )
        object.__setattr__(self, "epsilon", eps)
        object.__setattr__(self, "sensitivity", sens)
        object.__setattr__(self, "scale", scale)

    @property
    def sensitivity_ulps(self) -> int:
        return sensitivity_in_ulps(float(self.sensitivity or 0.0), self.frac_bits)

    def cost(self, label: str = "") -> Release:
        return Release(
            "discrete_laplace",
            self.epsilon,
            0.0,
            rho=self.epsilon**2 / 2.0,
            label=label,
            params={
                "sensitivity_l1": float(self.sensitivity or 0.0),
                "sensitivity_ulps": self.sensitivity_ulps,
                "frac_bits": self.frac_bits,
                "scale_ulps": str(self.scale),
            },
        )

    def noise(self, prg: Prg, shape: Shape = (), tag: Tag | None = None) -> IntArray:
        """int64 noise in ulps."""
        return discrete_laplace(prg, self.scale, shape, tag)


def _sigma2_for_rho(sens_ulps: int, rho: float) -> Fraction:
    """Smallest σ² on the 2^-20 grid with Δ²/(2σ²) <= rho (exact check in rationals)."""
    target = Fraction(rho)
    sigma2 = _round_up_scale(Fraction(sens_ulps * sens_ulps) / (2 * target))
    while Fraction(sens_ulps * sens_ulps) / (2 * sigma2) > target:  # pragma: no cover
        sigma2 += Fraction(1, 1 << SCALE_BITS)
    return sigma2


@dataclass(frozen=True, kw_only=True)
class DiscreteGaussianMechanism(_IntegerNoise):
    """Exact discrete Gaussian noise in ulps of ``2^-frac_bits``, calibrated to (ε, δ) via zCDP.

    ``σ² = Δ_ulps² / (2ρ)`` with ρ the largest zCDP parameter whose CKS20 conversion gives
    (ε, δ)-DP, rounded up to a multiple of ``2^-20``.  For vectors, Δ is the L2 sensitivity
    (independent coordinates: CKS20 Thm 14).  Also the (ε, δ) vector output perturbation for a
    fixed-point model.
    """

    epsilon: float
    delta: float
    sensitivity: float | None = None
    frac_bits: int = 0
    sigma2: Fraction = field(init=False)

    def __post_init__(self) -> None:
        eps = check_epsilon(self.epsilon)
        d = check_delta(self.delta)
        _gaussian_needs_delta(d, "discrete Gaussian mechanism")
        sens = _check_sensitivity(self.sensitivity, "L2", "for a model use mpc.dp.sensitivity")
        f = _check_frac_bits(self.frac_bits)
        ulps = sensitivity_in_ulps(sens, f)
        sigma2 = _sigma2_for_rho(ulps, zcdp_rho(eps, d))
        if sigma2 > MAX_INTEGER_SCALE * MAX_INTEGER_SCALE:
            raise InvalidPrivacyParameterError(
                f"noise sigma^2 {float(sigma2):.3g} ulps^2 is too large for int64 noise: raise "
                f"epsilon or delta, or lower frac_bits"
            )
        object.__setattr__(self, "epsilon", eps)
        object.__setattr__(self, "delta", d)
        object.__setattr__(self, "sensitivity", sens)
        object.__setattr__(self, "sigma2", sigma2)

    @property
    def sensitivity_ulps(self) -> int:
        return sensitivity_in_ulps(float(self.sensitivity or 0.0), self.frac_bits)

    @property
    def rho(self) -> float:
        """The zCDP parameter ``Δ_ulps²/(2σ²)`` of one release."""
        s = self.sensitivity_ulps
        return float(Fraction(s * s) / (2 * self.sigma2))

    def cost(self, label: str = "") -> Release:
        return Release(
            "discrete_gaussian",
            self.epsilon,
            self.delta,
            rho=self.rho,
            label=label,
            params={
                "sensitivity_l2": float(self.sensitivity or 0.0),
                "sensitivity_ulps": self.sensitivity_ulps,
                "frac_bits": self.frac_bits,
                "sigma2_ulps": str(self.sigma2),
            },
        )

    def noise(self, prg: Prg, shape: Shape = (), tag: Tag | None = None) -> IntArray:
        """int64 noise in ulps."""
        return discrete_gaussian(prg, self.sigma2, shape, tag)


# ---- CMS11 pure-epsilon vector mechanism --------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class VectorLaplaceMechanism:
    """Pure ε-DP vector noise of Chaudhuri, Monteleoni & Sarwate (JMLR 2011, Alg. 1).

    Density ``∝ exp(-ε‖b‖₂/Δ)`` on ``R^dim`` for L2 sensitivity Δ: ``‖b‖ ~ Gamma(dim, Δ/ε)``
    and ``b/‖b‖`` uniform on the sphere (CMS11 sect. 3).  Floating point from the crypto PRG
    (module docstring); ``noise_fixed`` rounds it onto the fixed-point grid.  Its noise cannot be
    split into independent per-party pieces: under MPC it must come from the dealer (noise
    shares) — the distributable alternative is :class:`DistributedDiscreteGaussian`.
    """

    epsilon: float
    sensitivity: float | None = None
    dim: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", check_epsilon(self.epsilon))
        object.__setattr__(
            self,
            "sensitivity",
            _check_sensitivity(self.sensitivity, "L2", "for a model use mpc.dp.sensitivity"),
        )
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise InvalidPrivacyParameterError(f"dim must be an int >= 1, got {self.dim!r}")

    @property
    def norm_scale(self) -> float:
        """θ = Δ/ε, the scale of the Gamma(dim, θ) norm (mean ``dim·θ``)."""
        assert self.sensitivity is not None
        return self.sensitivity / self.epsilon

    def cost(self, label: str = "") -> Release:
        return Release(
            "cms_vector_laplace",
            self.epsilon,
            0.0,
            rho=self.epsilon**2 / 2.0,
            label=label,
            params={"sensitivity_l2": float(self.sensitivity or 0.0), "dim": self.dim},
        )

    def noise(self, prg: Prg, size: Shape = (), tag: Tag | None = None) -> FloatArray:
        """Float noise of shape ``size + (dim,)``."""
        child = prg.derive(("mpc.dp", "cms", tag)) if tag is not None else Prg(prg.bytes(16))
        norms = gamma_integer_shape(child, self.dim, self.norm_scale, size, "norm")
        directions = uniform_direction(child, self.dim, size, "direction")
        return np.asarray(norms[..., None] * directions, dtype=np.float64)

    def noise_fixed(
        self, prg: Prg, frac_bits: int, size: Shape = (), tag: Tag | None = None
    ) -> IntArray:
        """The noise rounded to int64 ulps of ``2^-frac_bits`` (post-processing: see module)."""
        f = _check_frac_bits(frac_bits)
        scaled = np.rint(self.noise(prg, size, tag) * float(1 << f))
        if np.any(np.abs(scaled) >= 2.0**62):  # pragma: no cover - astronomically unlikely
            raise OverflowError("vector noise does not fit int64: raise epsilon")
        return scaled.astype(np.int64)

    def randomise(
        self,
        prg: Prg,
        value: Any,
        *,
        accountant: Accountant | None = None,
        label: str = "",
        tag: Tag | None = None,
    ) -> FloatArray:
        """``value + noise`` for a float vector of length ``dim``; spends first."""
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape[-1:] != (self.dim,):
            raise InvalidPrivacyParameterError(
                f"value must end in dimension dim={self.dim}, got shape {arr.shape}"
            )
        _spend(accountant, self.cost(label))
        return np.asarray(arr + self.noise(prg, arr.shape[:-1], tag), dtype=np.float64)

    def randomise_fixed(
        self,
        prg: Prg,
        encoded: Any,
        frac_bits: int,
        *,
        accountant: Accountant | None = None,
        label: str = "",
        tag: Tag | None = None,
    ) -> IntArray:
        """``encoded + round(noise)`` on fixed-point integers; spends first."""
        arr = np.asarray(encoded)
        if arr.shape[-1:] != (self.dim,):
            raise InvalidPrivacyParameterError(
                f"value must end in dimension dim={self.dim}, got shape {arr.shape}"
            )
        _spend(accountant, self.cost(label))
        return _randomise_int(self.noise_fixed(prg, frac_bits, arr.shape[:-1], tag), arr, frac_bits)


def model_release_mechanism(
    *,
    epsilon: float,
    delta: float = 0.0,
    sensitivity: float | None,
    dim: int,
    frac_bits: int = 16,
) -> VectorLaplaceMechanism | DiscreteGaussianMechanism:
    """Output perturbation of a model vector (CMS11): pure ε (``delta = 0``) gives
    :class:`VectorLaplaceMechanism`; ``delta > 0`` gives the exact
    :class:`DiscreteGaussianMechanism` in ulps of ``2^-frac_bits``."""
    d = check_delta(delta)
    if d == 0.0:
        return VectorLaplaceMechanism(epsilon=epsilon, sensitivity=sensitivity, dim=dim)
    return DiscreteGaussianMechanism(
        epsilon=epsilon, delta=d, sensitivity=sensitivity, frac_bits=frac_bits
    )


# ---- distributed discrete Gaussian --------------------------------------------------------------


def _kls_tau(per_party_sigma2: float, honest: int) -> float:
    # Kairouz, Liu & Steinke (ICML 2021): tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k/(k+1)).
    return 10.0 * sum(
        math.exp(-2.0 * math.pi**2 * per_party_sigma2 * k / (k + 1)) for k in range(1, honest)
    )


@dataclass(frozen=True, kw_only=True)
class DistributedDiscreteGaussian:
    """Discrete Gaussian noise split into per-party pieces that survive ``max_colluding`` parties.

    Each of the ``n_parties`` parties adds its own piece ``N_Z(0, σ²/(n - t))`` (t =
    ``max_colluding``) to its share.  Colluding parties know their own pieces and can subtract
    them, so the guarantee rests on the ``n - t`` honest pieces, whose sum has variance about σ²
    (the target).  A sum of discrete Gaussians is *not* exactly a discrete Gaussian; Kairouz,
    Liu & Steinke, "The Distributed Discrete Gaussian Mechanism for Federated Learning with
    Secure Aggregation", ICML 2021 (sect. 4, the privacy of sums of discrete Gaussians, which
    needs per-piece σ >= 1/2), bound the sum of ``m = n - t`` pieces of scale ``s²`` by
    ``ρ = ½ ε²`` with ``ε = min(sqrt(Δ²/(m s²) + 2τd), Δ/(sqrt(m) s) + τ sqrt(d))`` and
    ``τ = 10 Σ_{k=1}^{m-1} exp(-2π² s² k/(k+1))`` (we use the more conservative constants of the
    variants we are aware of); ``τ`` is below ``10^-15`` per piece once ``s >= 2``.

    Utility cost: the released value carries *all* n pieces, total variance
    ``n/(n - t) · σ²`` instead of σ², i.e. standard deviation ``sqrt(n/(n - t))`` times larger
    (t = 1 of 3 parties: 1.5x variance, 1.22x std; t = n - 1: n times the variance).
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
        per_party = _round_up_scale(base.sigma2 / honest)
        if per_party < Fraction(1, 4):
            per_party = Fraction(1, 4)  # the KLS21 bound needs sigma >= 1/2 per piece
        sens = base.sensitivity_ulps
        for _ in range(10_000):
            rho = self._kls_rho(sens, float(per_party), honest)
            if rho <= target_rho:
                break
            per_party = _round_up_scale(per_party * Fraction(101, 100))
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
