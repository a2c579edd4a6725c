"""Noise mechanisms on the fixed-point grid: one base, one registry by name, exact noise only.

Each mechanism is a frozen, keyword-only configuration under :class:`Mechanism`: its ``name``,
its ``cost()`` (the :class:`~mpc.dp.accountant.Release` an accountant is charged), its
``noise()`` (int64 ulps of ``2^-frac_bits`` from the exact integer samplers of
``mpc.dp.samplers``) and its ``spec()`` (the plain-JSON public parameters; :func:`sample_noise`
rebuilds the mechanism from it, which is all a dealer needs).  Security model: calibration is
public; the noise is as secret as the PRG seed it comes from and must be added before anyone sees
the value (``mpc.dp.reveal``).  Derivations and references: docs/dp.md.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar

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
from mpc.dp.samplers import MAX_INTEGER_SCALE, discrete_gaussian, discrete_laplace
from mpc.rng import Prg, Shape, Tag

__all__ = [
    "MAX_NOISE_ELEMENTS",
    "DiscreteGaussianMechanism",
    "DiscreteLaplaceMechanism",
    "Mechanism",
    "ObjectivePerturbationMechanism",
    "VectorLaplaceMechanism",
    "grid_sensitivity",
    "l1_ulps_of_l2",
    "mechanism_from_spec",
    "model_release_mechanism",
    "noise_spec",
    "sample_noise",
    "sensitivity_in_ulps",
]

IntArray = npt.NDArray[np.int64]

#: Rational scales are rounded *up* to a multiple of 2^-SCALE_BITS (more noise, never less).
SCALE_BITS = 20
#: Largest noise draw a spec may ask for (elements).
MAX_NOISE_ELEMENTS = 1 << 22
#: The fixed-point fractional bits of `mpc.encoding.FixedPoint` by default.
DEFAULT_FRAC_BITS = 16


# ---- validation and exact conversions -----------------------------------------------------------


def check_sensitivity(value: object, norm: str, hint: str) -> float:
    """`value` as a float if it is a finite number > 0; else MissingSensitivityError (None) or
    InvalidPrivacyParameterError, naming the norm and what to pass."""
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


def check_frac_bits(frac_bits: object) -> int:
    if isinstance(frac_bits, bool) or not isinstance(frac_bits, int) or not 0 <= frac_bits <= 52:
        raise InvalidPrivacyParameterError(
            f"frac_bits must be an int in [0, 52] (the fixed-point fractional bits, "
            f"mpc.encoding.FixedPoint.frac_bits; 0 for counts), got {frac_bits!r}"
        )
    return frac_bits


def gaussian_needs_delta(delta: float, what: str) -> None:
    if delta == 0.0:
        raise InvalidPrivacyParameterError(
            f"the {what} needs delta > 0 (it is never pure epsilon-DP): set delta, e.g. "
            f"delta=1e-6 (well below 1/n_rows), or use a Laplace mechanism for delta = 0"
        )


def sensitivity_in_ulps(sensitivity: float, frac_bits: int) -> int:
    """``ceil(sensitivity · 2^frac_bits)``, exact (a float is taken at its binary value)."""
    scaled = Fraction(sensitivity) * (1 << frac_bits)
    return max(1, math.ceil(scaled))


def l1_ulps_of_l2(sensitivity: float, dim: int, frac_bits: int) -> int:
    """``ceil(sqrt(dim) · sensitivity · 2^frac_bits)``, exact: a bound on the L1 distance in ulps
    of two grid vectors of `dim` elements whose L2 distance is at most `sensitivity`."""
    delta = Fraction(sensitivity)
    p, q = delta.numerator, delta.denominator
    square = dim * p * p * (1 << (2 * frac_bits))  # (sqrt(dim) p 2^f)^2
    root = math.isqrt(square)
    if root * root < square:
        root += 1
    return max(1, -(-root // q))


def grid_sensitivity(sensitivity: float, frac_bits: int, dim: int = 1, norm: str = "l2") -> float:
    """Sensitivity (real units) of a value *rounded onto the fixed-point grid*: rounding adds
    less than one ulp per coordinate, so ``Δ + 2^-f·sqrt(dim)`` (L2) or ``Δ + 2^-f·dim`` (L1).
    Values computed exactly on the grid (counts, or a fixed-point model whose bound includes its
    fixed-point error, as ``mpc.dp.sensitivity`` does) need no slack."""
    if norm not in ("l1", "l2"):
        raise InvalidPrivacyParameterError(f"norm must be 'l1' or 'l2', got {norm!r}")
    ulp = 2.0**-frac_bits
    return sensitivity + ulp * (math.sqrt(dim) if norm == "l2" else dim)


def round_up_scale(value: Fraction) -> Fraction:
    q = 1 << SCALE_BITS
    return Fraction(math.ceil(value * q), q)


def laplace_scale(ulps: int, epsilon: float) -> Fraction:
    """The discrete Laplace scale ``ulps/ε`` rounded up on the 2^-20 grid; refused if the
    noise would not fit int64."""
    scale = round_up_scale(Fraction(ulps) / Fraction(epsilon))
    if scale > MAX_INTEGER_SCALE:
        raise InvalidPrivacyParameterError(
            f"noise scale {float(scale):.3g} ulps is too large for int64 noise: raise epsilon or "
            f"lower frac_bits"
        )
    return scale


def sigma2_for_rho(sens_ulps: int, rho: float) -> Fraction:
    """Smallest σ² on the 2^-20 grid with Δ²/(2σ²) <= rho (exact check in rationals)."""
    target = Fraction(rho)
    sigma2 = round_up_scale(Fraction(sens_ulps * sens_ulps) / (2 * target))
    while Fraction(sens_ulps * sens_ulps) / (2 * sigma2) > target:  # pragma: no cover
        sigma2 += Fraction(1, 1 << SCALE_BITS)
    return sigma2


# ---- the base -----------------------------------------------------------------------------------


class Mechanism(ABC):
    """A noise mechanism on the grid of ``2^-frac_bits``: name, cost, noise and spec.

    Subclasses are frozen keyword-only dataclasses whose init fields are their public
    parameters (numbers only); each registers under its ``name``, which is also the spec's
    ``"mechanism"`` and the charged Release's mechanism.
    """

    name: ClassVar[str]
    registry: ClassVar[dict[str, type[Mechanism]]] = {}
    epsilon: float
    frac_bits: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if isinstance(name, str):
            if name in Mechanism.registry:
                raise ValueError(f"a mechanism named {name!r} is already registered")
            Mechanism.registry[name] = cls

    @abstractmethod
    def cost(self, label: str = "") -> Release:
        """The privacy cost of one release of a value (what an accountant is charged)."""

    @abstractmethod
    def noise(self, prg: Prg, shape: Shape = (), tag: Tag | None = None) -> IntArray:
        """Exact int64 noise in ulps of ``2^-frac_bits``, of `shape`, from `prg`."""

    def check_shape(self, shape: Sequence[int]) -> None:  # noqa: B027 - optional hook
        """Refuse a released value of this shape (the default: any shape)."""

    def spec(self) -> dict[str, Any]:
        """The public parameters as plain JSON, with ``"mechanism": name``."""
        params = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}  # type: ignore[arg-type]
        return {"mechanism": self.name, **params}

    def randomise(
        self,
        prg: Prg,
        encoded: Any,
        *,
        accountant: Accountant | None = None,
        label: str = "",
        tag: Tag | None = None,
    ) -> IntArray:
        """``encoded + noise`` on fixed-point integers (``FixedPoint(frac_bits).encode``); spends
        ``cost(label)`` at `accountant` first (BudgetExceededError before any noise is drawn)."""
        arr = np.asarray(encoded)
        if arr.dtype.kind not in "iu":
            raise InvalidPrivacyParameterError(
                f"randomise takes fixed-point encoded integers (FixedPoint(frac_bits="
                f"{self.frac_bits}).encode(...)), got dtype {arr.dtype}"
            )
        self.check_shape(arr.shape)
        if accountant is not None:
            accountant.spend(self.cost(label))
        return np.asarray(arr.astype(np.int64) + self.noise(prg, arr.shape, tag), dtype=np.int64)


# ---- the mechanisms -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DiscreteLaplaceMechanism(Mechanism):
    """Exact discrete Laplace noise in ulps of ``2^-frac_bits``; ε-DP for L1 sensitivity Δ.

    ``P[z] ∝ exp(-|z|/b)`` with ``b = ceil(Δ·2^f)/ε`` ulps rounded up (Ghosh, Roughgarden &
    Sundararajan, STOC 2009; sampled by Canonne, Kamath & Steinke, NeurIPS 2020, Alg. 2).
    ``sensitivity`` is in real units (for counts, frac_bits = 0, a number of rows).
    """

    name: ClassVar[str] = "discrete_laplace"
    epsilon: float
    sensitivity: float | None = None
    frac_bits: int = 0
    scale: Fraction = field(init=False)

    def __post_init__(self) -> None:
        eps = check_epsilon(self.epsilon)
        sens = check_sensitivity(self.sensitivity, "L1", "e.g. 1 for a count")
        f = check_frac_bits(self.frac_bits)
        object.__setattr__(self, "epsilon", eps)
        object.__setattr__(self, "sensitivity", sens)
        object.__setattr__(self, "scale", laplace_scale(sensitivity_in_ulps(sens, f), eps))

    @property
    def sensitivity_ulps(self) -> int:
        return sensitivity_in_ulps(float(self.sensitivity or 0.0), self.frac_bits)

    def cost(self, label: str = "") -> Release:
        return Release(
            self.name,
            self.epsilon,
            0.0,
            rho=self.epsilon**2 / 2.0,  # pure ε implies ε²/2-zCDP (Bun & Steinke 2016, Prop 1.4)
            label=label,
            params={
                "sensitivity_l1": float(self.sensitivity or 0.0),
                "sensitivity_ulps": self.sensitivity_ulps,
                "frac_bits": self.frac_bits,
                "scale_ulps": str(self.scale),
            },
        )

    def noise(self, prg: Prg, shape: Shape = (), tag: Tag | None = None) -> IntArray:
        return discrete_laplace(prg, self.scale, shape, tag)


@dataclass(frozen=True, kw_only=True)
class DiscreteGaussianMechanism(Mechanism):
    """Exact discrete Gaussian noise in ulps of ``2^-frac_bits``, calibrated to (ε, δ) via zCDP.

    ``σ² = Δ_ulps²/(2ρ)``, ρ the largest zCDP parameter whose conversion (CKS20 Cor. 13) gives
    (ε, δ), rounded up on the 2^-20 grid; ``Δ²/(2σ²)``-zCDP for L2 sensitivity Δ (CKS20 Thm 14,
    independent coordinates).  Also the (ε, δ) output perturbation of a fixed-point model.
    """

    name: ClassVar[str] = "discrete_gaussian"
    epsilon: float
    delta: float
    sensitivity: float | None = None
    frac_bits: int = 0
    sigma2: Fraction = field(init=False)

    def __post_init__(self) -> None:
        eps = check_epsilon(self.epsilon)
        d = check_delta(self.delta)
        gaussian_needs_delta(d, "discrete Gaussian mechanism")
        sens = check_sensitivity(self.sensitivity, "L2", "for a model use mpc.dp.sensitivity")
        f = check_frac_bits(self.frac_bits)
        sigma2 = sigma2_for_rho(sensitivity_in_ulps(sens, f), zcdp_rho(eps, d))
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
            self.name,
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
        return discrete_gaussian(prg, self.sigma2, shape, tag)


@dataclass(frozen=True, kw_only=True)
class VectorLaplaceMechanism(Mechanism):
    """Pure ε-DP output perturbation of a vector of `dim` elements and L2 sensitivity Δ
    (Chaudhuri, Monteleoni & Sarwate, JMLR 2011, Alg. 1), with exact noise on the grid.

    Noise: independent exact discrete Laplace per element, scale ``b = ceil(sqrt(dim)·Δ·2^f)/ε``
    ulps.  Two grid vectors at L2 distance <= Δ are at L1 distance <= sqrt(dim)·Δ, so this is
    the discrete Laplace mechanism for that L1 bound: exactly ε-DP, with no floating point.
    The price of exactness: about ``2·dim/(dim + 1)`` times the noise variance of CMS11's
    continuous noise (density ∝ exp(-ε‖b‖₂/Δ), which has no exact sampler here).
    """

    name: ClassVar[str] = "cms_vector_laplace"
    epsilon: float
    sensitivity: float | None = None
    dim: int = 1
    frac_bits: int = DEFAULT_FRAC_BITS
    scale: Fraction = field(init=False)

    def __post_init__(self) -> None:
        eps = check_epsilon(self.epsilon)
        sens = check_sensitivity(self.sensitivity, "L2", "for a model use mpc.dp.sensitivity")
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise InvalidPrivacyParameterError(f"dim must be an int >= 1, got {self.dim!r}")
        f = check_frac_bits(self.frac_bits)
        object.__setattr__(self, "epsilon", eps)
        object.__setattr__(self, "sensitivity", sens)
        object.__setattr__(self, "scale", laplace_scale(l1_ulps_of_l2(sens, self.dim, f), eps))

    @property
    def sensitivity_l1_ulps(self) -> int:
        """The L1 bound in ulps the noise is calibrated to, ``ceil(sqrt(dim)·Δ·2^f)``."""
        return l1_ulps_of_l2(float(self.sensitivity or 0.0), self.dim, self.frac_bits)

    def check_shape(self, shape: Sequence[int]) -> None:
        if math.prod(shape) != self.dim:
            raise InvalidPrivacyParameterError(
                f"the vector mechanism has dim={self.dim} but the value has shape "
                f"{tuple(shape)}: build it with dim=<the number of released elements>"
            )

    def cost(self, label: str = "") -> Release:
        return Release(
            self.name,
            self.epsilon,
            0.0,
            rho=self.epsilon**2 / 2.0,
            label=label,
            params={
                "sensitivity_l2": float(self.sensitivity or 0.0),
                "dim": self.dim,
                "frac_bits": self.frac_bits,
                "sensitivity_l1_ulps": self.sensitivity_l1_ulps,
                "scale_ulps": str(self.scale),
            },
        )

    def noise(self, prg: Prg, shape: Shape = (), tag: Tag | None = None) -> IntArray:
        """i.i.d. elements (a shape of several `dim`-vectors gives independent draws)."""
        return discrete_laplace(prg, self.scale, shape, tag)


@dataclass(frozen=True, kw_only=True)
class ObjectivePerturbationMechanism(Mechanism):
    """The noise of objective perturbation (CMS11 Alg. 2) trained under MPC, with output noise
    covering the proven distance G between the trained weights and the exact minimiser
    (``mpc.dp.objective``; proof in docs/dp.md, "Objective perturbation").

    One draw has shape ``(2, dim)``, in ulps of ``2^-frac_bits``: row 0 the linear term b of
    the objective (exact discrete Laplace, scale ``(ceil(sqrt(dim)·Δ·2^f) + dim)/ε_noise``,
    Δ = `sensitivity`, the L2 change of the gradient sum when one row is replaced), row 1 the
    output noise (discrete Laplace, scale ``(ceil(sqrt(dim)·G·2^f) + ceil(dim/2))/epsilon_gap``).
    ``ε = ε_noise + epsilon_jacobian + 2·epsilon_gap``: the charge.  |b| <= ``bound_ulps``
    except with probability ``2^-tail_bits`` per draw (checked; charged as δ).
    """

    name: ClassVar[str] = "objective_perturbation"
    epsilon: float
    sensitivity: float | None = None
    epsilon_jacobian: float = 0.0
    gap: float = 0.0
    epsilon_gap: float = 0.0
    dim: int = 1
    frac_bits: int = DEFAULT_FRAC_BITS
    tail_bits: int = 128
    epsilon_noise: float = field(init=False)
    scale: Fraction = field(init=False)
    output_scale: Fraction = field(init=False)
    bound_ulps: int = field(init=False)

    def __post_init__(self) -> None:
        eps = check_epsilon(self.epsilon)
        sens = check_sensitivity(self.sensitivity, "L2", "2R for the logistic loss: 2 x clip_norm")
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise InvalidPrivacyParameterError(f"dim must be an int >= 1, got {self.dim!r}")
        f = check_frac_bits(self.frac_bits)
        tail = self.tail_bits
        if isinstance(tail, bool) or not isinstance(tail, int) or not 1 <= tail <= 1024:
            raise InvalidPrivacyParameterError(
                f"tail_bits must be an int in [1, 1024], got {tail!r}"
            )
        for label, value in (("epsilon_jacobian", self.epsilon_jacobian), ("gap", self.gap)):
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise InvalidPrivacyParameterError(f"{label} must be a finite number >= 0")
        gap_eps = check_epsilon(self.epsilon_gap, "epsilon_gap")
        noise_eps = eps - float(self.epsilon_jacobian) - 2.0 * gap_eps
        if not noise_eps > 0.0:
            raise InvalidPrivacyParameterError(
                f"epsilon {eps:g} does not cover the Jacobian term {self.epsilon_jacobian:.4g} "
                f"and twice the gap's {gap_eps:.4g}: raise epsilon or the L2 penalty "
                f"(mpc.dp.objective.objective_l2), or lower gap_fraction"
            )
        scale = laplace_scale(l1_ulps_of_l2(sens, self.dim, f) + self.dim, noise_eps)
        gap_ulps = l1_ulps_of_l2(float(self.gap), self.dim, f) if self.gap > 0 else 0
        output = laplace_scale(gap_ulps + -(-self.dim // 2), gap_eps)
        # P[|k| > K] <= exp(-K/scale) for the discrete Laplace: dim elements, 2^-tail overall
        tail_log = tail * math.log(2.0) + math.log(self.dim)
        bound = math.ceil(float(scale) * tail_log * (1.0 + 1e-9)) + 1
        if bound >= 1 << 62:
            raise InvalidPrivacyParameterError(
                "the objective noise is too large for int64 shares: raise epsilon or lower "
                "frac_bits"
            )
        object.__setattr__(self, "epsilon", eps)
        object.__setattr__(self, "sensitivity", sens)
        object.__setattr__(self, "epsilon_noise", noise_eps)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "output_scale", output)
        object.__setattr__(self, "bound_ulps", bound)

    @property
    def tail_delta(self) -> float:
        """The probability that one draw's |b| exceeds ``bound_ulps``: at most 2^-tail_bits."""
        return 2.0**-self.tail_bits

    @property
    def bound(self) -> float:
        """``bound_ulps`` in real units: the public bound on |b| of one draw."""
        return float(Fraction(self.bound_ulps, 1 << self.frac_bits))

    def check_shape(self, shape: Sequence[int]) -> None:
        if tuple(shape) != (2, self.dim):
            raise InvalidPrivacyParameterError(
                f"objective-perturbation noise has shape (2, {self.dim}) (the objective's b and "
                f"the output noise), not {tuple(shape)}"
            )

    def cost(self, label: str = "") -> Release:
        return Release(
            self.name,
            self.epsilon,
            self.tail_delta,
            rho=None,
            label=label,
            params={
                "sensitivity_l2": float(self.sensitivity or 0.0),
                "epsilon_noise": self.epsilon_noise,
                "epsilon_jacobian": float(self.epsilon_jacobian),
                "epsilon_gap": float(self.epsilon_gap),
                "gap_l2": float(self.gap),
                "dim": self.dim,
                "frac_bits": self.frac_bits,
                "scale_ulps": str(self.scale),
                "output_scale_ulps": str(self.output_scale),
                "bound_ulps": self.bound_ulps,
            },
        )

    def noise(self, prg: Prg, shape: Shape = (), tag: Tag | None = None) -> IntArray:
        """One draw: shape (2, dim); raises OverflowError if |b| > bound_ulps (probability
        <= 2^-tail_bits, charged as the release's δ)."""
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        self.check_shape(dims)
        first = None if tag is None else (tag, "objective")
        second = None if tag is None else (tag, "output")
        b = discrete_laplace(prg, self.scale, (self.dim,), first)
        if int(np.max(np.abs(b))) > self.bound_ulps:
            raise OverflowError(
                "objective noise beyond its public bound (probability <= 2^-tail_bits): "
                "nothing was computed; run again"
            )
        out = discrete_laplace(prg, self.output_scale, (self.dim,), second)
        return np.stack([b, out]).astype(np.int64)


def model_release_mechanism(
    *,
    epsilon: float,
    delta: float = 0.0,
    sensitivity: float | None,
    dim: int,
    frac_bits: int = DEFAULT_FRAC_BITS,
) -> VectorLaplaceMechanism | DiscreteGaussianMechanism:
    """Output perturbation of a model vector (CMS11): pure ε (``delta = 0``) gives
    :class:`VectorLaplaceMechanism`, ``delta > 0`` the :class:`DiscreteGaussianMechanism`."""
    d = check_delta(delta)
    if d == 0.0:
        return VectorLaplaceMechanism(
            epsilon=epsilon, sensitivity=sensitivity, dim=dim, frac_bits=frac_bits
        )
    return DiscreteGaussianMechanism(
        epsilon=epsilon, delta=d, sensitivity=sensitivity, frac_bits=frac_bits
    )


# ---- specs: what a dealer is asked for ----------------------------------------------------------


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidPrivacyParameterError(f"noise spec: {name} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise InvalidPrivacyParameterError(f"noise spec: {name} must be finite, got {value!r}")
    return out


def _int(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidPrivacyParameterError(
            f"noise spec: {name} must be an int in [{low}, {high}], got {value!r}"
        )
    return value


_PARAMETERS: dict[str, Callable[[object, str], float | int]] = {
    "epsilon": _number,
    "delta": _number,
    "sensitivity": _number,
    "frac_bits": lambda v, n: _int(v, n, 0, 52),
    "dim": lambda v, n: _int(v, n, 1, MAX_NOISE_ELEMENTS),
    "epsilon_jacobian": _number,
    "gap": _number,
    "epsilon_gap": _number,
    "tail_bits": lambda v, n: _int(v, n, 1, 1024),
}


def noise_spec(mechanism: Mechanism, shape: Sequence[int]) -> dict[str, Any]:
    """The plain-JSON description of one full draw of `mechanism`'s noise for a value of
    `shape`: what a party sends the dealer (public parameters only)."""
    dims = [int(v) for v in shape]
    mechanism.check_shape(dims)
    return {**mechanism.spec(), "shape": dims}


def mechanism_from_spec(spec: Mapping[str, Any]) -> tuple[Mechanism, tuple[int, ...]]:
    """Validate a noise spec (from :func:`noise_spec`) and rebuild (mechanism, shape);
    InvalidPrivacyParameterError for anything else (unknown mechanism or keys, wrong types, a
    shape larger than MAX_NOISE_ELEMENTS)."""
    if not isinstance(spec, Mapping):
        raise InvalidPrivacyParameterError("noise spec must be a mapping")
    name = spec.get("mechanism")
    cls = Mechanism.registry.get(name) if isinstance(name, str) else None
    if cls is None:
        raise InvalidPrivacyParameterError(
            f"noise spec: unknown mechanism {name!r}; one of {sorted(Mechanism.registry)}"
        )
    params = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    expected = {*params, "mechanism", "shape"}
    if set(spec) != expected:
        raise InvalidPrivacyParameterError(
            f"noise spec for {name} must have exactly the keys {sorted(expected)}, got "
            f"{sorted(spec)}"
        )
    raw_shape = spec["shape"]
    if not isinstance(raw_shape, list | tuple) or len(raw_shape) > 8:
        raise InvalidPrivacyParameterError("noise spec: shape must be a list of at most 8 ints")
    shape = tuple(_int(v, "shape entry", 0, MAX_NOISE_ELEMENTS) for v in raw_shape)
    if math.prod(shape) > MAX_NOISE_ELEMENTS:
        raise InvalidPrivacyParameterError(
            f"noise spec: {math.prod(shape)} elements, more than {MAX_NOISE_ELEMENTS}"
        )
    mechanism = cls(**{p: _PARAMETERS[p](spec[p], p) for p in params})
    mechanism.check_shape(shape)
    return mechanism, shape


def sample_noise(spec: Mapping[str, Any], prg: Prg) -> IntArray:
    """One full draw of the noise `spec` describes, from `prg` (the dealer's own): int64 ulps."""
    mechanism, shape = mechanism_from_spec(spec)
    return np.asarray(mechanism.noise(Prg(prg.bytes(16)), shape), dtype=np.int64)
