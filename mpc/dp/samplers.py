"""Noise samplers for differential privacy, driven only by the cryptographic PRG of `mpc.rng`.

Exact integer-only samplers (uniform integers, Bernoulli(p) and Bernoulli(exp(-γ)) for rational
parameters, the discrete Laplace and the discrete Gaussian: Canonne, Kamath & Steinke, NeurIPS
2020, Alg. 1-3) for released noise, and floating-point samplers for synthetic data and
simulations only.  With a ``tag`` a sampler reads ``prg.derive(("mpc.dp", domain, tag))``
(deterministic); without, a fresh child stream.  Security model: the noise is as secret as the
PRG seed; rejection loops make running time depend on the noise (no side channels assumed, as
everywhere in `mpc`).  See docs/dp.md ("Samplers").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from mpc.rng import SEED_BYTES, Prg, Shape, Tag

__all__ = [
    "MAX_INTEGER_SCALE",
    "ExactSampler",
    "Rational",
    "bernoulli_exp",
    "discrete_gaussian",
    "discrete_gaussian_pmf",
    "discrete_gaussian_variance",
    "discrete_laplace",
    "discrete_laplace_pmf",
    "standard_normal",
    "to_fraction",
    "uniform_below",
    "uniform_direction",
    "uniform_open01",
]

Rational: TypeAlias = "int | Fraction | float"
"""A rational parameter: int, Fraction, or a finite float (taken at its exact binary value)."""

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

MAX_INTEGER_SCALE = 1 << 50
"""Largest discrete Laplace scale / discrete Gaussian σ accepted, so samples fit int64 with
overwhelming probability (a value beyond ``2^63`` is ``> 8000`` scales out: probability
``< exp(-8000)``; it is still checked and raises OverflowError)."""

_CHUNK_BYTES = 1 << 14
_TWO_POW_M53 = 2.0**-53


# ---- parameters ---------------------------------------------------------------------------------


def to_fraction(value: Rational, name: str) -> Fraction:
    """``value`` as an exact Fraction; TypeError/ValueError naming ``name`` if not a finite number.

    Floats are converted exactly (``Fraction(0.1)`` is the binary value nearest 0.1); pass a
    Fraction or a string-built Fraction (``Fraction("0.1")``) for decimal values.
    """
    if isinstance(value, bool) or not isinstance(value, int | Fraction | float | np.integer):
        raise TypeError(f"{name} must be an int, Fraction or float, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if isinstance(value, np.integer):
        return Fraction(int(value))
    return Fraction(value)


def _shape(shape: Shape) -> tuple[int, ...]:
    if isinstance(shape, bool):
        raise TypeError("shape must be an int or a tuple of ints, got bool")
    if isinstance(shape, int | np.integer):
        dims: tuple[int, ...] = (int(shape),)
    elif isinstance(shape, tuple):
        if any(isinstance(d, bool) or not isinstance(d, int | np.integer) for d in shape):
            raise TypeError(f"shape entries must be ints, got {shape!r}")
        dims = tuple(int(d) for d in shape)
    else:
        raise TypeError(f"shape must be an int or a tuple of ints, got {shape!r}")
    if any(d < 0 for d in dims):
        raise ValueError(f"negative dimensions are not allowed, got shape {dims}")
    return dims


def _child(prg: Prg, tag: Tag | None, domain: str) -> Prg:
    """The PRG a sampler reads: derived from ``tag`` (deterministic) or fresh (auto-tag)."""
    if not isinstance(prg, Prg):
        raise TypeError(f"prg must be an mpc.rng.Prg, got {type(prg).__name__}")
    if tag is None:
        return Prg(prg.bytes(SEED_BYTES))
    return prg.derive(("mpc.dp", domain, tag))


# ---- exact integer sampling ---------------------------------------------------------------------


class ExactSampler:
    """Exact samplers over Python ints, reading one PRG stream through a buffer.

    ``ExactSampler(prg, tag)``; every method consumes the stream in order, so a given
    (seed, tag) and sequence of calls always yields the same values.  Algorithms 1-3 of
    Canonne, Kamath & Steinke (NeurIPS 2020) on top of exact uniform integers (rejection
    sampling of ``bit_length(n - 1)``-bit strings).
    """

    __slots__ = ("_buf", "_chunks", "_pos", "_prg")

    def __init__(self, prg: Prg, tag: Tag | None = None, *, domain: str = "exact") -> None:
        self._prg = _child(prg, tag, domain)
        self._buf = b""
        self._pos = 0
        self._chunks = 0

    def __repr__(self) -> str:
        return "ExactSampler(<secret stream>)"

    def _take(self, nbytes: int) -> bytes:
        if self._pos + nbytes > len(self._buf):
            need = nbytes - (len(self._buf) - self._pos)
            size = max(_CHUNK_BYTES, need)
            fresh = self._prg.bytes(size, ("chunk", self._chunks))
            self._chunks += 1
            self._buf = self._buf[self._pos :] + fresh
            self._pos = 0
        out = self._buf[self._pos : self._pos + nbytes]
        self._pos += nbytes
        return out

    def randbits(self, k: int) -> int:
        """A uniform integer in ``[0, 2^k)``."""
        if k <= 0:
            if k == 0:
                return 0
            raise ValueError(f"k must be >= 0, got {k}")
        value = int.from_bytes(self._take((k + 7) >> 3), "little")
        return value & ((1 << k) - 1)

    def below(self, n: int) -> int:
        """A uniform integer in ``[0, n)`` for any int ``n >= 1``: rejection of ``k``-bit
        strings with ``k = bit_length(n - 1)`` (acceptance probability > 1/2 per try)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        k = (n - 1).bit_length()
        while True:
            r = self.randbits(k)
            if r < n:
                return r

    def bernoulli(self, num: int, den: int) -> bool:
        """``True`` with probability exactly ``num/den`` (``0 <= num <= den``, ``den >= 1``)."""
        if den < 1 or not 0 <= num <= den:
            raise ValueError(f"need 0 <= num <= den and den >= 1, got {num}/{den}")
        return self.below(den) < num

    def bernoulli_exp(self, num: int, den: int) -> bool:
        """``True`` with probability exactly ``exp(-num/den)`` (CKS20 Algorithm 1).

        For ``γ = num/den ∈ [0, 1]``: draw ``A_k ~ Bernoulli(γ/k)`` for k = 1, 2, ... until the
        first ``A_k = 0``; return whether that ``k`` is odd.  For ``γ > 1``: ``floor(γ)``
        independent ``Bernoulli(exp(-1))`` draws must all succeed, then one
        ``Bernoulli(exp(-(γ - floor γ)))``.
        """
        if den < 1 or num < 0:
            raise ValueError(f"need num >= 0 and den >= 1, got {num}/{den}")
        whole, rest = divmod(num, den)
        for _ in range(whole):
            if not self._bernoulli_exp_le1(1, 1):
                return False
        return self._bernoulli_exp_le1(rest, den)

    def _bernoulli_exp_le1(self, num: int, den: int) -> bool:
        # CKS20 Algorithm 1 for gamma = num/den in [0, 1]: A ~ Bernoulli(gamma / k).
        k = 1
        while self.below(den * k) < num:
            k += 1
        return k % 2 == 1

    def discrete_laplace(self, s: int, t: int) -> int:
        """A sample with ``P[z] ∝ exp(-|z| s/t)``, i.e. discrete Laplace of scale ``t/s``
        (CKS20 Algorithm 2; ``s, t >= 1`` ints).

        ``U`` uniform in ``[0, t)`` accepted with probability ``exp(-U/t)``, ``V`` geometric
        (``Bernoulli(exp(-1))`` successes), ``X = U + tV`` is geometric with parameter
        ``1 - exp(-1/t)``; ``Y = floor(X/s)``, a random sign, and ``(-, 0)`` rejected so that 0 is
        not counted twice.
        """
        if s < 1 or t < 1:
            raise ValueError(f"need s >= 1 and t >= 1, got s={s}, t={t}")
        while True:
            u = self.below(t)
            if not self.bernoulli_exp(u, t):
                continue
            v = 0
            while self._bernoulli_exp_le1(1, 1):
                v += 1
            y = (u + t * v) // s
            negative = self.randbits(1) == 1
            if negative and y == 0:
                continue
            return -y if negative else y

    def discrete_gaussian(self, sigma2: Fraction) -> int:
        """A sample with ``P[z] ∝ exp(-z²/(2σ²))`` (CKS20 Algorithm 3), ``σ² > 0`` rational.

        ``t = floor(σ) + 1``; ``Y`` discrete Laplace of scale ``t`` is accepted with probability
        ``exp(-(|Y| - σ²/t)² / (2σ²))``.  With ``σ² = p/q`` that exponent is the exact rational
        ``(|Y| q t - p)² / (2 p q t²)``.
        """
        if sigma2 <= 0:
            raise ValueError(f"sigma2 must be > 0, got {sigma2}")
        p, q = sigma2.numerator, sigma2.denominator
        t = math.isqrt(p // q) + 1  # floor(sqrt(sigma2)) + 1
        den = 2 * p * q * t * t
        while True:
            y = self.discrete_laplace(1, t)
            a = abs(y) * q * t - p
            if self.bernoulli_exp(a * a, den):
                return y


def _fill_int64(values: Callable[[], int], dims: tuple[int, ...]) -> IntArray:
    count = math.prod(dims)
    out = np.empty(count, dtype=np.int64)
    lo, hi = -(1 << 63), (1 << 63) - 1
    for i in range(count):
        v = values()
        if not lo <= v <= hi:  # pragma: no cover - probability < exp(-8000)
            raise OverflowError("a noise sample does not fit int64; lower the scale")
        out[i] = v
    return out.reshape(dims)


def uniform_below(prg: Prg, n: int, shape: Shape = (), tag: Tag | None = None) -> IntArray:
    """Exactly uniform int64 array with values in ``[0, n)``, ``1 <= n <= 2^63``.

    Vectorised rejection sampling (:meth:`mpc.rng.Prg.field`: masked 64-bit words, values
    ``>= n`` redrawn).  For larger ``n`` use :meth:`ExactSampler.below` (Python ints).
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    n = int(n)
    if not 1 <= n <= 1 << 63:
        raise ValueError(f"n must be in [1, 2^63], got {n} (use ExactSampler.below for more)")
    dims = _shape(shape)
    child = _child(prg, tag, "uniform")
    return child.field(dims, n, "uniform").astype(np.int64)


def bernoulli_exp(
    prg: Prg, gamma: Rational, shape: Shape = (), tag: Tag | None = None
) -> npt.NDArray[np.bool_]:
    """Boolean array, each ``True`` with probability exactly ``exp(-gamma)``, ``gamma >= 0``."""
    g = to_fraction(gamma, "gamma")
    if g < 0:
        raise ValueError(f"gamma must be >= 0, got {g}")
    dims = _shape(shape)
    sampler = ExactSampler(prg, tag, domain="bernoulli_exp")
    count = math.prod(dims)
    flags = [sampler.bernoulli_exp(g.numerator, g.denominator) for _ in range(count)]
    return np.array(flags, dtype=np.bool_).reshape(dims)


def _check_scale(scale: Fraction, name: str) -> None:
    if scale <= 0:
        raise ValueError(f"{name} must be > 0, got {scale}")
    if scale > MAX_INTEGER_SCALE:
        raise ValueError(f"{name} must be <= 2^50 so samples fit int64, got {float(scale):.3g}")


def discrete_laplace(
    prg: Prg, scale: Rational, shape: Shape = (), tag: Tag | None = None
) -> IntArray:
    """int64 array of exact discrete Laplace samples, ``P[z] ∝ exp(-|z|/scale)``, ``z ∈ Z``.

    ``scale`` is a positive rational ``t/s`` (CKS20 Algorithm 2).  Adding it to an integer query
    of L1 sensitivity ``Δ`` gives ``(Δ/scale)``-DP (the geometric mechanism of Ghosh,
    Roughgarden & Sundararajan, STOC 2009).
    """
    b = to_fraction(scale, "scale")
    _check_scale(b, "scale")
    dims = _shape(shape)
    sampler = ExactSampler(prg, tag, domain="discrete_laplace")
    s, t = b.denominator, b.numerator
    return _fill_int64(lambda: sampler.discrete_laplace(s, t), dims)


def discrete_gaussian(
    prg: Prg, sigma2: Rational, shape: Shape = (), tag: Tag | None = None
) -> IntArray:
    """int64 array of exact discrete Gaussian samples, ``P[z] ∝ exp(-z²/(2 σ²))``, ``z ∈ Z``.

    ``sigma2`` (σ², a positive rational) is the scale parameter; the variance is slightly below
    σ² (:func:`discrete_gaussian_variance`).  CKS20 Algorithm 3.
    """
    v = to_fraction(sigma2, "sigma2")
    if v <= 0:
        raise ValueError(f"sigma2 must be > 0, got {v}")
    if v > MAX_INTEGER_SCALE * MAX_INTEGER_SCALE:
        raise ValueError(f"sigma2 must be <= 2^100 so samples fit int64, got {float(v):.3g}")
    dims = _shape(shape)
    sampler = ExactSampler(prg, tag, domain="discrete_gaussian")
    return _fill_int64(lambda: sampler.discrete_gaussian(v), dims)


# ---- exact reference distributions (for tests and calibration) ----------------------------------


def discrete_laplace_pmf(z: npt.ArrayLike, scale: float) -> FloatArray:
    """``P[Z = z]`` of the discrete Laplace of scale ``b``: ``tanh(1/(2b)) exp(-|z|/b)``."""
    zz = np.abs(np.asarray(z, dtype=np.float64))
    return np.asarray(math.tanh(0.5 / scale) * np.exp(-zz / scale), dtype=np.float64)


def _dg_normaliser(sigma2: float) -> float:
    sigma = math.sqrt(sigma2)
    limit = math.ceil(40.0 * sigma) + 2
    k = np.arange(1, limit + 1, dtype=np.float64)
    return 1.0 + 2.0 * float(np.sum(np.exp(-(k * k) / (2.0 * sigma2))))


def discrete_gaussian_pmf(z: npt.ArrayLike, sigma2: float) -> FloatArray:
    """``P[Z = z] = exp(-z²/(2σ²)) / Σ_k exp(-k²/(2σ²))`` (series summed to 40 σ)."""
    zz = np.asarray(z, dtype=np.float64)
    return np.asarray(np.exp(-(zz * zz) / (2.0 * sigma2)) / _dg_normaliser(sigma2), np.float64)


def discrete_gaussian_variance(sigma2: float) -> float:
    """Exact variance ``Σ z² P[z]`` of the discrete Gaussian (below ``σ²``; CKS20 Prop. 19
    bounds it by ``σ²``, and it is within ``10^-8`` relative of ``σ²`` once ``σ >= 2``)."""
    sigma = math.sqrt(sigma2)
    limit = math.ceil(40.0 * sigma) + 2
    k = np.arange(1, limit + 1, dtype=np.float64)
    w = np.exp(-(k * k) / (2.0 * sigma2))
    return float(2.0 * np.sum(k * k * w) / (1.0 + 2.0 * np.sum(w)))


# ---- floating-point samplers (synthetic data and simulations, never released noise) ------------


def uniform_open01(prg: Prg, shape: Shape = (), tag: Tag | None = None) -> FloatArray:
    """Floats ``(k + 1/2) 2^-53`` for uniform 53-bit ``k``: uniform on a grid inside (0, 1)."""
    dims = _shape(shape)
    words = _child(prg, tag, "uniform01").ring(dims, "u")
    return _words_to_open01(words)


def _words_to_open01(words: npt.NDArray[np.uint64]) -> FloatArray:
    top = (words >> np.uint64(11)).astype(np.float64)  # exact: < 2^53
    return np.asarray((top + 0.5) * _TWO_POW_M53, dtype=np.float64)


def standard_normal(prg: Prg, shape: Shape = (), tag: Tag | None = None) -> FloatArray:
    """Standard normal floats by Box-Muller from two 53-bit uniforms per pair of outputs.

    Floating point: |value| <= sqrt(2 · 53 ln 2) ≈ 8.57 (see the module's precision caveat).
    """
    dims = _shape(shape)
    count = math.prod(dims)
    pairs = (count + 1) // 2
    child = _child(prg, tag, "normal")
    u1 = _words_to_open01(child.ring(pairs, "u1"))
    u2 = _words_to_open01(child.ring(pairs, "u2"))
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * math.pi * u2
    out = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]
    return np.asarray(out.reshape(dims), dtype=np.float64)


def uniform_direction(prg: Prg, d: int, size: Shape = (), tag: Tag | None = None) -> FloatArray:
    """Unit vectors uniform on the sphere ``S^{d-1}``: normalised standard normal vectors.

    Shape ``size + (d,)``.  Rotation invariance of the Gaussian makes the direction uniform
    (up to the floating-point caveat of :func:`standard_normal`).
    """
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be an int >= 1, got {d!r}")
    dims = (*_shape(size), d)
    child = _child(prg, tag, "direction")
    while True:
        g = standard_normal(child, dims, "g")
        norms = np.linalg.norm(g, axis=-1, keepdims=True)
        if np.all(norms > 0):  # a zero vector has probability ~2^-53 per coordinate^d
            return np.asarray(g / norms, dtype=np.float64)
        child = child.derive("retry")  # pragma: no cover
