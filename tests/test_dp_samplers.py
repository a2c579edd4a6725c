"""Goodness of fit of the DP noise samplers (mpc.dp.samplers) and of the mechanisms' noise.

Every statistical test uses a fixed seed (so it is deterministic, never flaky) and rejects only at
p < ALPHA = 1e-6: a correct sampler fails with probability below 1e-6 per test over the choice of
seed.  Power checks ("mutants") show that the same tests reject a sampler with the wrong scale.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats

import mpc.dp
from mpc.dp import (
    DiscreteGaussianMechanism,
    DiscreteLaplaceMechanism,
    DistributedDiscreteGaussian,
    VectorLaplaceMechanism,
)
from mpc.dp import samplers as S
from mpc.rng import Prg

ALPHA = 1e-6
N = 20_000


def prg(i: int = 0) -> Prg:
    return Prg(bytes([i]) * 16)


# ---- chi-square helpers -------------------------------------------------------------------------


def chisq_pvalue(
    samples: npt.NDArray[np.int64], cdf: Callable[[np.ndarray], np.ndarray], lo: int, hi: int
) -> float:
    """Chi-square p-value of integer samples against an exact distribution given by its CDF.

    Bins: X <= lo, each integer of (lo, hi], X > hi; adjacent bins are merged left to right until
    each expects at least 20 samples.
    """
    n = samples.size
    c = cdf(np.arange(lo, hi + 1))
    probs = np.diff(np.concatenate([[0.0], c, [1.0]]))
    raw = np.bincount(np.clip(samples - lo, 0, hi - lo + 1), minlength=probs.size)
    groups: list[list[float]] = []
    cur_p, cur_c = 0.0, 0.0
    for p, count in zip(probs, raw, strict=True):
        cur_p += float(p)
        cur_c += float(count)
        if cur_p * n >= 20.0:
            groups.append([cur_p, cur_c])
            cur_p, cur_c = 0.0, 0.0
    groups[-1][0] += cur_p
    groups[-1][1] += cur_c
    expected = np.array([g[0] for g in groups]) * n
    counts = np.array([g[1] for g in groups])
    expected *= counts.sum() / expected.sum()  # absorbs the series' rounding (< 1e-12)
    return float(stats.chisquare(counts, expected).pvalue)


def dlap_cdf(scale: float) -> Callable[[np.ndarray], np.ndarray]:
    q = math.exp(-1.0 / scale)

    def cdf(k: np.ndarray) -> np.ndarray:
        kk = k.astype(np.float64)
        return np.where(
            k < 0, np.power(q, -kk) / (1.0 + q), 1.0 - np.power(q, kk + 1.0) / (1.0 + q)
        )

    return cdf


def dgauss_cdf(sigma2: float) -> tuple[Callable[[np.ndarray], np.ndarray], int, int]:
    """CDF on [-12 sigma, 12 sigma] (the mass outside is below 1e-31)."""
    lim = math.ceil(12.0 * math.sqrt(sigma2)) + 2
    z = np.arange(-lim, lim + 1)
    cum = np.cumsum(S.discrete_gaussian_pmf(z, sigma2))

    def cdf(k: np.ndarray) -> np.ndarray:
        return np.asarray(cum[k + lim], dtype=np.float64)

    return cdf, -lim, lim


# ---- uniform integers ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 10**12 + 39, 1 << 63])
def test_uniform_below_fits(n: int) -> None:
    x = S.uniform_below(prg(1), n, 50_000, tag="u")
    assert x.dtype == np.int64 or n == 1 << 63
    values = x.astype(np.uint64)
    assert int(values.max()) < n and int(values.min()) >= 0
    if n == 1:
        assert not values.any()
        return
    bins = min(n, 64)
    # exact bin probabilities: bin j = {v : floor(v * bins / n) == j}
    counts_exact = [(-(-(j + 1) * n // bins)) - (-(-j * n // bins)) for j in range(bins)]
    idx = (values.astype(object) * bins // n).astype(np.int64)
    counts = np.bincount(idx, minlength=bins)
    expected = np.array(counts_exact, dtype=np.float64) / n * values.size
    assert stats.chisquare(counts, expected).pvalue > ALPHA


def test_exact_below_big_modulus() -> None:
    n = 3 * (1 << 70) + 5  # beyond 64 bits: the Python-int path
    sampler = S.ExactSampler(prg(2), "big")
    bins = 32
    values = [sampler.below(n) for _ in range(20_000)]
    assert all(0 <= v < n for v in values)
    counts = np.bincount([v * bins // n for v in values], minlength=bins)
    exact = [(-(-(j + 1) * n // bins)) - (-(-j * n // bins)) for j in range(bins)]
    expected = np.array([c / n for c in exact]) * len(values)
    assert stats.chisquare(counts, expected).pvalue > ALPHA


def test_exact_bernoulli_rational() -> None:
    sampler = S.ExactSampler(prg(3), "bern")
    hits = sum(sampler.bernoulli(2, 7) for _ in range(N))
    assert stats.binomtest(hits, N, 2 / 7).pvalue > ALPHA


# ---- Bernoulli(exp(-gamma)) ---------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [Fraction(1, 3), Fraction(1), Fraction(5, 2), 7, 0.125])
def test_bernoulli_exp_fits(gamma: Fraction | int | float) -> None:
    flags = S.bernoulli_exp(prg(4), gamma, N, tag=("b", str(gamma)))
    p = math.exp(-float(gamma))
    assert stats.binomtest(int(flags.sum()), N, p).pvalue > ALPHA


def test_bernoulli_exp_zero_is_certain() -> None:
    assert S.bernoulli_exp(prg(5), 0, 100).all()


def test_bernoulli_exp_mutant_rejected() -> None:
    """Power: samples of exp(-1/2) are rejected as exp(-1/3) samples."""
    flags = S.bernoulli_exp(prg(6), Fraction(1, 2), N)
    assert stats.binomtest(int(flags.sum()), N, math.exp(-1 / 3)).pvalue < ALPHA


# ---- discrete Laplace ---------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [Fraction(1, 2), 1, 3, Fraction(7, 3), 0.3, 1000.5])
def test_discrete_laplace_fits(scale: Fraction | int | float) -> None:
    x = S.discrete_laplace(prg(7), scale, N, tag=("dlap", str(scale)))
    b = float(scale)
    lim = math.ceil(30 * b) + 2
    assert chisq_pvalue(x, dlap_cdf(b), -lim, lim) > ALPHA
    q = math.exp(-1 / b)
    var = 2 * q / (1 - q) ** 2
    # mean: z-test with the exact variance
    assert abs(x.mean()) / math.sqrt(var / N) < 5.0


def test_discrete_laplace_pmf_helper() -> None:
    z = np.arange(-200, 201)
    assert math.isclose(float(S.discrete_laplace_pmf(z, 3.0).sum()), 1.0, rel_tol=1e-12)


def test_discrete_laplace_mutant_rejected() -> None:
    """Power: samples at half the scale fail the fit against the full scale."""
    x = S.discrete_laplace(prg(8), Fraction(3, 2), N)
    assert chisq_pvalue(x, dlap_cdf(3.0), -100, 100) < ALPHA


# ---- discrete Gaussian --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sigma2", [Fraction(1, 4), 1, Fraction(5, 2), 9, Fraction(1000, 7), 10**6 + Fraction(1, 3)]
)
def test_discrete_gaussian_fits(sigma2: Fraction | int) -> None:
    x = S.discrete_gaussian(prg(9), sigma2, N, tag=("dg", str(sigma2)))
    cdf, lo, hi = dgauss_cdf(float(sigma2))
    assert chisq_pvalue(x, cdf, lo, hi) > ALPHA
    var = S.discrete_gaussian_variance(float(sigma2))
    assert abs(x.mean()) / math.sqrt(var / N) < 5.0


def test_discrete_gaussian_variance_known_answer() -> None:
    """Exact variance against direct summation, and CKS20's facts: below sigma^2, close to it."""
    for s2 in (0.25, 1.0, 4.0, 100.0):
        z = np.arange(-2000, 2001, dtype=np.float64)
        w = np.exp(-(z * z) / (2 * s2))
        direct = float((z * z * w).sum() / w.sum())
        assert math.isclose(S.discrete_gaussian_variance(s2), direct, rel_tol=1e-12)
        assert direct <= s2 * (1 + 1e-12)
    assert math.isclose(S.discrete_gaussian_variance(4.0), 4.0, rel_tol=1e-8)
    assert S.discrete_gaussian_variance(0.25) < 0.9 * 0.25  # well below sigma^2 for small sigma


def test_discrete_gaussian_large_sigma_moments() -> None:
    """sigma^2 = 10^11 + 1/3 (fixed-point scale): big-int path; mean and variance z-tests."""
    s2 = Fraction(10**11) + Fraction(1, 3)
    x = S.discrete_gaussian(prg(10), s2, 4000).astype(np.float64)
    var = float(s2)
    assert abs(x.mean()) / math.sqrt(var / x.size) < 5.0
    # sample variance of a Gaussian: sd ~ var * sqrt(2/n)
    assert abs(x.var() - var) / (var * math.sqrt(2 / x.size)) < 5.0


def test_discrete_gaussian_mutant_rejected() -> None:
    """Power: noise with half the standard deviation fails the fit (the mutation tests)."""
    x = S.discrete_gaussian(prg(11), Fraction(9, 4), N)
    cdf, lo, hi = dgauss_cdf(9.0)
    assert chisq_pvalue(x, cdf, lo, hi) < ALPHA


def test_discrete_bad_parameters() -> None:
    for bad in (0, -1, Fraction(-1, 2)):
        with pytest.raises(ValueError):
            S.discrete_gaussian(prg(), bad, 3)
        with pytest.raises(ValueError):
            S.discrete_laplace(prg(), bad, 3)
    with pytest.raises(ValueError):
        S.discrete_laplace(prg(), float("inf"), 3)
    with pytest.raises(TypeError):
        S.discrete_gaussian(prg(), "1", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        S.discrete_laplace(prg(), 2**60, 3)
    with pytest.raises(ValueError):
        S.bernoulli_exp(prg(), -1, 3)


# ---- determinism and domain separation ---------------------------------------------------------


def test_samplers_deterministic_per_tag() -> None:
    a = S.discrete_gaussian(prg(12), 10, 100, tag="t")
    b = S.discrete_gaussian(prg(12), 10, 100, tag="t")
    c = S.discrete_gaussian(prg(12), 10, 100, tag="other")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    g = prg(12)
    d1 = S.discrete_gaussian(g, 10, 100)
    d2 = S.discrete_gaussian(g, 10, 100)  # auto tag: a fresh stream each call
    assert not np.array_equal(d1, d2)
    assert S.discrete_laplace(prg(12), 3, (2, 3)).shape == (2, 3)
    assert S.discrete_gaussian(prg(12), 3, ()).shape == ()


def test_no_insecure_generators_in_dp_package() -> None:
    root = Path(mpc.dp.__file__).parent
    pattern = re.compile(r"numpy\.random|np\.random|^\s*import random|from random|torch")
    for path in root.glob("*.py"):
        for line in path.read_text().splitlines():
            if line.strip().startswith(("#", '"', "*")) or "``" in line:
                continue
            assert not pattern.search(line), f"{path.name}: {line}"


# ---- floating-point samplers --------------------------------------------------------------------


def test_uniform_open01_and_normal_fit() -> None:
    u = S.uniform_open01(prg(13), N)
    assert (u > 0).all() and (u < 1).all()
    assert stats.kstest(u, "uniform").pvalue > ALPHA
    z = S.standard_normal(prg(13), (N // 2, 2))
    assert z.shape == (N // 2, 2)
    assert stats.kstest(z.ravel(), "norm").pvalue > ALPHA
    assert np.abs(z).max() < 8.6


@pytest.mark.parametrize("d", [2, 3, 10])
def test_uniform_direction(d: int) -> None:
    u = S.uniform_direction(prg(17), d, N, tag=("dir", d))
    assert u.shape == (N, d)
    assert np.allclose(np.linalg.norm(u, axis=1), 1.0, atol=1e-12)
    # The projection on any fixed unit vector v has (1 + <u, v>)/2 ~ Beta((d-1)/2, (d-1)/2).
    a = (d - 1) / 2
    fixed = np.cos(np.arange(1, d + 1) * 0.7)
    for v in (np.eye(d)[0], np.eye(d)[-1], fixed / np.linalg.norm(fixed)):
        proj = (1.0 + u @ v) / 2.0
        assert stats.kstest(proj, "beta", args=(a, a)).pvalue > ALPHA
    # second moments: E[u u^T] = I/d (entrywise z-test, var of u_i u_j <= 1/d)
    cov = u.T @ u / N
    assert np.abs(cov - np.eye(d) / d).max() < 5.0 * math.sqrt(1.0 / (d * N)) + 1e-12


def test_uniform_direction_mutant_rejected() -> None:
    """Power: a direction biased towards the first axis fails the projection test."""
    g = S.standard_normal(prg(18), (N, 3))
    g[:, 0] *= 1.2
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    assert stats.kstest((1.0 + u[:, 0]) / 2.0, "beta", args=(1.0, 1.0)).pvalue < ALPHA


# ---- mechanisms' noise --------------------------------------------------------------------------


def test_vector_laplace_noise_is_exact_discrete_laplace_on_the_grid() -> None:
    """The pure-epsilon vector noise is int64 ulps, distributed exactly as the discrete Laplace
    of scale ceil(sqrt(d) * Delta * 2^f) / epsilon (the L1 bound of the grid vector over
    epsilon), element by element, independent across elements."""
    mech = VectorLaplaceMechanism(epsilon=0.5, sensitivity=0.2, dim=4, frac_bits=6)
    assert mech.sensitivity_l1_ulps == math.ceil(2 * 0.2 * 64)  # sqrt(4) * 0.2 * 2^6 = 25.6
    assert mech.scale >= Fraction(26) / Fraction(0.5) and mech.scale - 52 < Fraction(1, 2**19)
    noise = mech.noise(prg(19), (N // 4, 4), tag="v")
    assert noise.dtype == np.int64 and noise.shape == (N // 4, 4)
    cdf = dlap_cdf(float(mech.scale))
    assert chisq_pvalue(noise.ravel(), cdf, -400, 400) > ALPHA
    for j in range(4):  # every element has the full scale
        assert chisq_pvalue(noise[:, j].copy(), cdf, -400, 400) > ALPHA
    corr = np.corrcoef(noise.T.astype(np.float64))
    assert np.abs(corr - np.eye(4)).max() < 5.0 / math.sqrt(N // 4)
    # power: the noise of the same mechanism at half its scale is rejected
    half = S.discrete_laplace(prg(22), mech.scale / 2, N)
    assert chisq_pvalue(half, cdf, -400, 400) < ALPHA


def test_discrete_mechanisms_noise_in_ulps() -> None:
    mech = DiscreteGaussianMechanism(epsilon=1.0, delta=1e-6, sensitivity=0.01, frac_bits=16)
    assert mech.sensitivity_ulps == math.ceil(0.01 * 2**16)
    x = mech.noise(prg(20), 4000).astype(np.float64)
    s2 = float(mech.sigma2)
    assert abs(x.var() - s2) / (s2 * math.sqrt(2 / x.size)) < 5.0
    lap = DiscreteLaplaceMechanism(epsilon=0.5, sensitivity=1)
    assert lap.scale >= Fraction(2) and lap.scale - 2 < Fraction(1, 2**19)
    y = lap.noise(prg(20), N)
    assert chisq_pvalue(y, dlap_cdf(float(lap.scale)), -200, 200) > ALPHA


def test_distributed_pieces_sum_to_target_variance() -> None:
    plan = DistributedDiscreteGaussian(
        epsilon=1.0, delta=1e-6, sensitivity=1.0, n_parties=4, max_colluding=2
    )
    assert plan.utility_cost == 2.0
    s2 = float(plan.per_party_sigma2)
    pieces = [plan.party_noise(prg(21 + i), 4000) for i in range(4)]
    for piece in pieces:
        assert abs(piece.var() - s2) / (s2 * math.sqrt(2 / 4000)) < 5.0
    honest = (pieces[0] + pieces[1]).astype(np.float64)
    total = sum(p.astype(np.float64) for p in pieces)
    assert (
        abs(honest.var() - plan.honest_variance) / (plan.honest_variance * math.sqrt(2 / 4000))
        < 5.0
    )
    assert (
        abs(total.var() - plan.total_variance) / (plan.total_variance * math.sqrt(2 / 4000)) < 5.0
    )
    # The honest variance alone meets the single-party calibration.
    single = DiscreteGaussianMechanism(epsilon=1.0, delta=1e-6, sensitivity=1.0)
    assert plan.honest_variance >= float(single.sigma2) * (1 - 1e-6)
