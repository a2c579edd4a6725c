"""Calibration, composition, budget refusal, bad input and sensitivity bounds of mpc.dp.

Known answers: the Balle-Wang analytic Gaussian sigma against Google's `dp-accounting` (a test-only
dependency; those tests are skipped without it) and against the paper's defining equation; the
zCDP conversion against `dp-accounting`'s RDP accountant and against Bun-Steinke's closed form.
Mutation tests: a mechanism with half the required noise must fail the calibration checks, and a
sensitivity bound with a wrong formula must fail the empirical neighbouring-data-set test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mpc.dp import (
    Accountant,
    BudgetExceededError,
    DiscreteGaussianMechanism,
    DiscreteLaplaceMechanism,
    DistributedDiscreteGaussian,
    GaussianMechanism,
    InvalidPrivacyParameterError,
    LaplaceMechanism,
    MissingSensitivityError,
    PrivacyBudget,
    Release,
    VectorLaplaceMechanism,
    analytic_gaussian_sigma,
    compose,
    erm_sensitivity,
    gaussian_delta,
    gd_sensitivity,
    logreg_step_error,
    model_release_mechanism,
    zcdp_delta,
    zcdp_epsilon,
    zcdp_rho,
)
from mpc.dp import samplers as S
from mpc.dp.sensitivity import check_clipped, clip_rows
from mpc.rng import Prg

ALPHA = 1e-6
Z_ALPHA = float(stats.norm.isf(ALPHA))  # one-sided z threshold, 4.75


def prg(i: int = 0) -> Prg:
    return Prg(bytes([100 + i]) * 16)


# ---- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0, -1.0, float("nan"), float("inf"), True, "1"])
def test_bad_epsilon(eps: object) -> None:
    with pytest.raises(InvalidPrivacyParameterError, match="epsilon"):
        LaplaceMechanism(epsilon=eps, sensitivity=1.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidPrivacyParameterError, match="epsilon"):
        PrivacyBudget(eps, 1e-6)  # type: ignore[arg-type]


@pytest.mark.parametrize("delta", [-1e-9, 1.0, 1.5, float("nan")])
def test_bad_delta(delta: float) -> None:
    with pytest.raises(InvalidPrivacyParameterError, match=r"delta must be in \[0, 1\)"):
        GaussianMechanism(epsilon=1.0, delta=delta, sensitivity=1.0)
    with pytest.raises(InvalidPrivacyParameterError, match="delta"):
        PrivacyBudget(1.0, delta)


def test_gaussian_needs_delta() -> None:
    for cls in (GaussianMechanism, DiscreteGaussianMechanism):
        with pytest.raises(InvalidPrivacyParameterError, match=r"needs delta > 0.*delta=1e-6"):
            cls(epsilon=1.0, delta=0.0, sensitivity=1.0)
    with pytest.raises(InvalidPrivacyParameterError, match="delta > 0"):
        zcdp_rho(1.0, 0.0)


def test_missing_and_bad_sensitivity() -> None:
    for make in (
        lambda: LaplaceMechanism(epsilon=1.0),
        lambda: GaussianMechanism(epsilon=1.0, delta=1e-6),
        lambda: DiscreteLaplaceMechanism(epsilon=1.0),
        lambda: DiscreteGaussianMechanism(epsilon=1.0, delta=1e-6),
        lambda: VectorLaplaceMechanism(epsilon=1.0, dim=3),
        lambda: model_release_mechanism(epsilon=1.0, sensitivity=None, dim=3),
    ):
        with pytest.raises(MissingSensitivityError, match="pass sensitivity="):
            make()
    with pytest.raises(InvalidPrivacyParameterError, match="sensitivity must be a finite"):
        LaplaceMechanism(epsilon=1.0, sensitivity=-2.0)
    with pytest.raises(MissingSensitivityError, match="clip_norm"):
        erm_sensitivity(n_rows=10, l2=0.1, clip_norm=None)
    with pytest.raises(MissingSensitivityError, match="clip_norm"):
        gd_sensitivity(n_rows=10, l2=0.1, clip_norm=None, learning_rate=0.1, epochs=3)
    with pytest.raises(MissingSensitivityError, match="l2"):
        gd_sensitivity(n_rows=10, l2=None, clip_norm=2.0, learning_rate=0.1, epochs=3)
    with pytest.raises(MissingSensitivityError, match="clip_norm"):
        clip_rows(np.ones((2, 2)), None)
    assert issubclass(MissingSensitivityError, ValueError)


def test_other_bad_parameters() -> None:
    with pytest.raises(InvalidPrivacyParameterError, match="frac_bits"):
        DiscreteLaplaceMechanism(epsilon=1.0, sensitivity=1.0, frac_bits=-1)
    with pytest.raises(InvalidPrivacyParameterError, match="max_colluding"):
        DistributedDiscreteGaussian(
            epsilon=1.0, delta=1e-6, sensitivity=1.0, n_parties=3, max_colluding=3
        )
    with pytest.raises(InvalidPrivacyParameterError, match="learning_rate"):
        gd_sensitivity(n_rows=100, l2=0.1, clip_norm=4.0, learning_rate=10.0, epochs=3)
    with pytest.raises(InvalidPrivacyParameterError, match="encoded"):
        DiscreteGaussianMechanism(epsilon=1.0, delta=1e-6, sensitivity=1.0).randomise(
            prg(), np.array([0.5])
        )


# ---- Balle & Wang analytic Gaussian -------------------------------------------------------------

GRID = [(0.05, 1e-5), (0.5, 1e-6), (1.0, 1e-5), (1.0, 1e-10), (3.0, 1e-3), (8.0, 1e-7), (20, 1e-8)]


@pytest.mark.parametrize(("eps", "delta"), GRID)
def test_analytic_sigma_against_dp_accounting(eps: float, delta: float) -> None:
    import dp_accounting as dpa

    for sens in (1.0, 0.37):
        ours = analytic_gaussian_sigma(eps, delta, sens)
        ref = sens * dpa.get_sigma_gaussian(eps, delta)
        assert ours == pytest.approx(ref, rel=1e-9)
        assert ours >= ref * (1 - 1e-12) or gaussian_delta(eps, ours, sens) <= delta


@pytest.mark.parametrize(("eps", "delta"), GRID)
def test_analytic_sigma_is_minimal_and_valid(eps: float, delta: float) -> None:
    """The defining equation (Balle & Wang 2018, Thm 8): delta(sigma) <= delta, and any smaller
    sigma violates it.  Independent of our bisection: evaluated with scipy's normal CDF."""
    sigma = analytic_gaussian_sigma(eps, delta)

    def bw_delta(s: float) -> float:
        return float(
            stats.norm.cdf(0.5 / s - eps * s) - math.exp(eps) * stats.norm.cdf(-0.5 / s - eps * s)
        )

    assert bw_delta(sigma) <= delta * (1 + 1e-8)
    assert bw_delta(sigma * (1 - 1e-6)) > delta


def test_analytic_sigma_hand_values() -> None:
    """Classical calibration sqrt(2 ln(1.25/delta))/eps is valid for eps < 1 and larger."""
    for eps, delta in ((0.5, 1e-5), (0.9, 1e-6)):
        classic = math.sqrt(2 * math.log(1.25 / delta)) / eps
        ours = analytic_gaussian_sigma(eps, delta)
        assert ours < classic
        assert gaussian_delta(eps, classic) <= delta


def _variance_too_small(samples: np.ndarray, required_var: float) -> bool:
    """One-sided test of H0: Var >= required_var, rejecting at p < 1e-6 (z-test on the sample
    variance with the sample fourth moment; the sample variance's left tail is light)."""
    x = samples.astype(np.float64)
    n = x.size
    centred = x - x.mean()
    s2 = float(np.mean(centred**2))
    m4 = float(np.mean(centred**4))
    se = math.sqrt(max(m4 - s2 * s2, 1e-300) / n)
    return (s2 - required_var) / se < -Z_ALPHA


def _dgauss(f: float) -> tuple[np.ndarray, float]:
    m = DiscreteGaussianMechanism(epsilon=1.0, delta=1e-6, sensitivity=2.0)
    noise = S.discrete_gaussian(prg(2), m.sigma2 * f * f, 20_000)
    return noise, S.discrete_gaussian_variance(float(m.sigma2))


def _dlaplace(f: float) -> tuple[np.ndarray, float]:
    m = DiscreteLaplaceMechanism(epsilon=0.5, sensitivity=1.0)
    q = math.exp(-1 / float(m.scale))
    noise = S.discrete_laplace(prg(4), m.scale * f, 20_000)
    return noise, 2 * q / (1 - q) ** 2


def _vector_laplace(f: float) -> tuple[np.ndarray, float]:
    """The noise the pure-epsilon vector mechanism needs: discrete Laplace of scale
    sqrt(d) * Delta * 2^f / epsilon ulps per element (its L1 bound over epsilon)."""
    m = VectorLaplaceMechanism(epsilon=0.5, sensitivity=0.25, dim=9, frac_bits=4)
    needed = math.sqrt(9) * 0.25 * 16 / 0.5  # 24 ulps
    q = math.exp(-1 / needed)
    noise = S.discrete_laplace(prg(6), m.scale * f, 20_000)
    return noise, 2 * q / (1 - q) ** 2


@pytest.mark.parametrize("factor", [1.0, 0.5], ids=["real", "half-noise-mutant"])
@pytest.mark.parametrize("name", ["discrete_gaussian", "discrete_laplace", "vector_laplace"])
def test_noise_calibration_mutation(name: str, factor: float) -> None:
    """The noise a mechanism draws has the variance its guarantee needs; a mutant with half the
    noise (scale or standard deviation halved) is rejected by the same test."""
    make = {"discrete_gaussian": _dgauss, "discrete_laplace": _dlaplace}.get(name, _vector_laplace)
    samples, required = make(factor)
    assert _variance_too_small(samples, required) == (factor < 1.0)


@pytest.mark.parametrize("factor", [1.0, 0.5], ids=["real", "half-sigma-mutant"])
def test_sigma_calibration_mutation(factor: float) -> None:
    """The claimed (eps, delta) holds for the calibrated sigma and fails for sigma / 2, in the
    exact Balle-Wang formula and, for the discrete Gaussian, in its zCDP accounting."""
    g = GaussianMechanism(epsilon=1.0, delta=1e-6, sensitivity=1.0)
    assert (gaussian_delta(1.0, factor * g.sigma) <= 1e-6) == (factor == 1.0)
    d = DiscreteGaussianMechanism(epsilon=1.0, delta=1e-6, sensitivity=1.0)
    rho = 1.0 / (2 * float(d.sigma2) * factor * factor)
    assert (zcdp_delta(rho, 1.0) <= 1e-6) == (factor == 1.0)


def test_discrete_gaussian_calibration_close_to_analytic() -> None:
    """zCDP calibration costs a little more noise than the analytic continuous one, not a lot."""
    for eps, delta in ((0.5, 1e-6), (1.0, 1e-5), (4.0, 1e-6)):
        d = DiscreteGaussianMechanism(epsilon=eps, delta=delta, sensitivity=1.0)
        ratio = math.sqrt(float(d.sigma2)) / analytic_gaussian_sigma(eps, delta)
        assert 1.0 <= ratio < 1.25


def test_fixed_point_sensitivity_in_ulps() -> None:
    m = DiscreteGaussianMechanism(epsilon=1.0, delta=1e-6, sensitivity=0.1, frac_bits=16)
    assert m.sensitivity_ulps == math.ceil(0.1 * 65536)
    unit = DiscreteGaussianMechanism(epsilon=1.0, delta=1e-6, sensitivity=0.1 * 65536)
    assert m.sigma2 == unit.sigma2  # the same calibration in ulps
    assert m.rho == pytest.approx(zcdp_rho(1.0, 1e-6), rel=1e-6)
    lap = DiscreteLaplaceMechanism(epsilon=2.0, sensitivity=3)
    assert lap.scale == pytest.approx(1.5, abs=2**-20)


# ---- zCDP conversions ---------------------------------------------------------------------------


def test_zcdp_conversion_known_answers() -> None:
    # Bun & Steinke's closed form is always valid, CKS20 is tighter.
    for rho, delta in ((0.01, 1e-6), (0.5, 1e-5), (2.0, 1e-8)):
        eps = zcdp_epsilon(rho, delta)
        assert eps <= rho + 2 * math.sqrt(rho * math.log(1 / delta))
        assert zcdp_delta(rho, eps) <= delta * (1 + 1e-9)
        assert zcdp_delta(rho, eps * 0.999) > delta
    # Gaussian with sigma: rho = 1/(2 sigma^2); its exact delta is below the zCDP one.
    sigma = 4.0
    eps = zcdp_epsilon(1 / (2 * sigma**2), 1e-6)
    assert gaussian_delta(eps, sigma) <= 1e-6
    assert zcdp_rho(eps, 1e-6) == pytest.approx(1 / (2 * sigma**2), rel=1e-6)


@pytest.mark.parametrize("rho", [0.005, 0.1, 0.5, 3.0])
def test_zcdp_epsilon_against_dp_accounting(rho: float) -> None:
    import dp_accounting as dpa
    from dp_accounting import rdp

    orders = [1 + x / 200 for x in range(1, 200)] + [2 + x / 20 for x in range(0, 2000)]
    acct = rdp.RdpAccountant(orders=orders)
    acct.compose(dpa.GaussianDpEvent(1.0 / math.sqrt(2 * rho)))  # sensitivity 1: rho-zCDP
    ref = acct.get_epsilon(1e-6)
    ours = zcdp_epsilon(rho, 1e-6)
    assert ours == pytest.approx(ref, rel=2e-3)
    assert ours <= ref * (1 + 1e-9)  # continuous optimisation over alpha is at least as tight


# ---- composition and budget ---------------------------------------------------------------------


def test_basic_composition_and_refusal() -> None:
    acct = Accountant(PrivacyBudget(1.0, 0.0))
    lap = DiscreteLaplaceMechanism(epsilon=0.4, sensitivity=1)
    acct.spend(lap.cost("count 1"))
    acct.spend(lap.cost("count 2"))
    spent = acct.spent()
    assert spent is not None and spent.epsilon == pytest.approx(0.8) and spent.delta == 0.0
    assert acct.remaining_epsilon() == pytest.approx(0.2)
    with pytest.raises(BudgetExceededError, match=r"would exceed the budget.*remaining 0.2"):
        acct.spend(lap.cost("count 3"))
    assert len(acct.releases) == 2  # the refused release was not recorded
    acct.spend(DiscreteLaplaceMechanism(epsilon=0.2, sensitivity=1).cost())
    assert acct.remaining_epsilon() == pytest.approx(0.0, abs=1e-12)


def test_release_larger_than_budget_message() -> None:
    acct = Accountant(PrivacyBudget(0.5, 1e-6))
    with pytest.raises(BudgetExceededError, match="more than the whole budget"):
        acct.check(LaplaceMechanism(epsilon=1.0, sensitivity=1.0).cost())
    with pytest.raises(BudgetExceededError, match="more than the whole budget"):
        acct.spend(GaussianMechanism(epsilon=0.4, delta=1e-5, sensitivity=1.0).cost())
    assert acct.spent() is None


def test_randomise_spends_before_noise() -> None:
    acct = Accountant(PrivacyBudget(1.0, 1e-6), composition="basic")
    mech = DiscreteGaussianMechanism(epsilon=0.6, delta=1e-7, sensitivity=1.0)
    out = mech.randomise(prg(5), np.array([10, 20]), accountant=acct, label="counts")
    assert out.shape == (2,)
    assert acct.releases[0].label == "counts"
    with pytest.raises(BudgetExceededError):
        mech.randomise(prg(5), np.array([10, 20]), accountant=acct)
    assert len(acct.releases) == 1


def test_zcdp_composition_beats_basic_for_gaussians() -> None:
    """Ten Gaussian releases at (0.5, 1e-7): basic composition needs eps = 5, zCDP much less."""
    mech = GaussianMechanism(epsilon=0.5, delta=1e-7, sensitivity=1.0)
    rel = [mech.cost(f"r{i}") for i in range(10)]
    basic = compose(rel, 1e-5, "basic")
    tight = compose(rel, 1e-5, "zcdp")
    assert basic is not None and tight is not None
    assert basic.epsilon == pytest.approx(5.0)
    expected = zcdp_epsilon(10 * mech.rho, 1e-5)
    assert tight.epsilon == pytest.approx(expected)
    assert tight.epsilon < 0.6 * basic.epsilon
    # The accountant accepts all ten under a budget of eps = 3 only with zCDP.
    z = Accountant(PrivacyBudget(3.0, 1e-5))
    b = Accountant(PrivacyBudget(3.0, 1e-5), composition="basic")
    for r in rel:
        z.spend(r)
    with pytest.raises(BudgetExceededError):
        for r in rel:
            b.spend(r)
    assert len(b.releases) == 6


def test_mixed_composition_is_valid_and_minimal() -> None:
    lap = LaplaceMechanism(epsilon=0.3, sensitivity=1.0).cost()
    gauss = GaussianMechanism(epsilon=0.5, delta=1e-7, sensitivity=1.0).cost()
    rel = [lap, gauss, gauss, gauss]
    total = compose(rel, 1e-5)
    assert total is not None
    basic = 0.3 + 1.5
    zmix = 0.3 + zcdp_epsilon(3 * (gauss.rho or 0.0), 1e-5)
    zall = zcdp_epsilon(3 * (gauss.rho or 0.0) + 0.045, 1e-5)
    assert total.epsilon == pytest.approx(min(basic, zmix, zall))
    assert compose([], 1e-5) is None
    with pytest.raises(InvalidPrivacyParameterError, match="composition"):
        Accountant(PrivacyBudget(1.0), composition="rdp")  # type: ignore[arg-type]
    with pytest.raises(InvalidPrivacyParameterError, match="needs a budget"):
        Accountant()


def test_release_json_round_trip() -> None:
    r = DiscreteGaussianMechanism(epsilon=1.0, delta=1e-6, sensitivity=1.0, frac_bits=8).cost("m")
    assert Release.from_json(r.to_json()) == r


def test_distributed_noise_cost() -> None:
    plan = DistributedDiscreteGaussian(
        epsilon=1.0, delta=1e-6, sensitivity=1.0, dim=20, n_parties=5, max_colluding=2
    )
    assert plan.utility_cost == pytest.approx(5 / 3)
    assert plan.total_variance == pytest.approx(plan.honest_variance * 5 / 3)
    assert plan.rho <= zcdp_rho(1.0, 1e-6)
    assert zcdp_delta(plan.rho, 1.0) <= 1e-6
    single = DiscreteGaussianMechanism(epsilon=1.0, delta=1e-6, sensitivity=1.0)
    assert plan.honest_variance == pytest.approx(float(single.sigma2), rel=1e-4)
    # Tiny per-party scale: the KLS21 correction tau is no longer negligible and costs noise.
    small = DistributedDiscreteGaussian(
        epsilon=5.0, delta=1e-3, sensitivity=1.0, dim=50, n_parties=10, max_colluding=0
    )
    assert small.rho <= zcdp_rho(5.0, 1e-3)
    assert float(small.per_party_sigma2) >= 0.25


# ---- sensitivity of logistic regression ---------------------------------------------------------


def test_erm_and_gd_formulas() -> None:
    assert erm_sensitivity(n_rows=500, l2=0.01, clip_norm=3.0) == pytest.approx(
        2 * 3 / (500 * 0.01)
    )
    b = gd_sensitivity(n_rows=500, l2=0.01, clip_norm=3.0, learning_rate=0.5, epochs=40)
    c = 1 - 0.5 * 0.01
    assert b.contraction == pytest.approx(c)
    assert b.iterate == pytest.approx(2 * 3 / (500 * 0.01) * (1 - c**40))
    assert b.iterate < b.minimiser == pytest.approx(1.2)
    assert b.total == b.iterate
    longer = gd_sensitivity(n_rows=500, l2=0.01, clip_norm=3.0, learning_rate=0.5, epochs=4000)
    assert b.iterate < longer.iterate < longer.minimiser
    flat = gd_sensitivity(
        n_rows=500,
        l2=0.01,
        clip_norm=3.0,
        learning_rate=0.5,
        epochs=40,
        regularize_intercept=False,
    )
    assert flat.iterate == pytest.approx(2 * 0.5 * 3 * 40 / 500)
    assert math.isinf(flat.minimiser)


def _gd(
    x: np.ndarray,
    y: np.ndarray,
    *,
    lr: float,
    l2: float,
    epochs: int,
    batch: int | None,
    frac_bits: int | None = None,
    rounding: Prg | None = None,
) -> np.ndarray:
    """Plain float64 (mini-)batch gradient descent on the L2-regularised mean logistic loss,
    penalty on every coordinate; optionally each update rounded like probabilistic truncation
    (floor, then minus one ulp at random)."""
    n, d = x.shape
    w = np.zeros(d)
    b = n if batch is None else batch
    step = 0
    for _epoch in range(epochs):
        for start in range(0, n, b):
            rows = slice(start, min(start + b, n))
            xb, yb = x[rows], y[rows]
            p = 1.0 / (1.0 + np.exp(-(xb @ w)))
            w = w - lr * (xb.T @ (p - yb) / xb.shape[0] + l2 * w)
            if frac_bits is not None and rounding is not None:
                scale = float(1 << frac_bits)
                down = rounding.below_bits(d, 1, ("round", step)).astype(np.float64)
                w = (np.floor(w * scale) - down) / scale
            step += 1
    return w


def _data(seed: int, n: int, d: int, clip: float) -> tuple[np.ndarray, np.ndarray]:
    g = Prg(bytes([seed]) * 16)
    feats = S.standard_normal(g, (n, d - 1), "x") * 1.5
    x = np.hstack([clip_rows(feats, clip), np.ones((n, 1))])
    y = (S.uniform_open01(g, n, "y") < 1 / (1 + np.exp(-feats[:, 0]))).astype(np.float64)
    return x, y


def _neighbour(x: np.ndarray, y: np.ndarray, i: int, g: Prg, k: int, clip: float) -> tuple:
    """Replace row i by an adversarial-ish row: a large-norm row with the opposite label in a
    random direction (or the same row's reflection)."""
    d = x.shape[1]
    direction = S.uniform_direction(g, d - 1, (), ("dir", k))
    new = np.append(direction * math.sqrt(clip * clip - 1.0), 1.0)
    if k % 3 == 0:
        new = np.append(
            -x[i, :-1] * math.sqrt(clip * clip - 1.0) / max(np.linalg.norm(x[i, :-1]), 1e-12), 1.0
        )
    x2, y2 = x.copy(), y.copy()
    x2[i] = new
    y2[i] = 1.0 - y[i]
    return x2, y2


CONFIGS = [
    # n, d, clip, lr, l2, epochs, batch
    (60, 4, 2.0, 1.0, 0.05, 30, None),
    (60, 4, 3.0, 0.4, 0.2, 60, None),
    (64, 3, 2.0, 0.5, 0.05, 8, 16),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_gd_sensitivity_holds_on_neighbours(config: tuple) -> None:
    """Train on D and on 60 neighbours D' (one row replaced) and check ||w - w'|| <= bound;
    the bound is not vacuous (the worst pair reaches a fair fraction of it)."""
    n, d, clip, lr, l2, epochs, batch = config
    x, y = _data(n + d, n, d, clip)
    check_clipped(x[:, :-1], clip)
    bound = gd_sensitivity(
        n_rows=n, l2=l2, clip_norm=clip, learning_rate=lr, epochs=epochs, batch_size=batch
    )
    w = _gd(x, y, lr=lr, l2=l2, epochs=epochs, batch=batch)
    g = Prg(bytes([d]) * 16)
    worst = 0.0
    for k in range(60):
        i = int(S.uniform_below(g, n, (), ("i", k)))
        x2, y2 = _neighbour(x, y, i, g, k, clip)
        w2 = _gd(x2, y2, lr=lr, l2=l2, epochs=epochs, batch=batch)
        worst = max(worst, float(np.linalg.norm(w - w2)))
    assert worst <= bound.iterate
    assert worst >= 0.15 * bound.iterate


def _adversarial_pair(n: int, clip: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A separable data set along e1 and a replaced row that each model gets confidently wrong,
    placed so that the gradient difference points where only the L2 penalty curves the loss."""
    f = math.sqrt(clip * clip - 1.0)
    half = (n - 1) // 2
    rows = [[f, 0.0, 1.0]] * half + [[-f, 0.0, 1.0]] * (n - 1 - half)
    labels = [1.0] * half + [0.0] * (n - 1 - half)
    sin_a = 0.9
    cos_a = math.sqrt(1 - sin_a * sin_a)
    x1 = np.array([*rows, [f * cos_a, f * sin_a, 1.0]])
    x2 = np.array([*rows, [-f * cos_a, f * sin_a, 1.0]])
    return x1, np.array([*labels, 0.0]), x2, np.array([*labels, 1.0])


ADV = {"n": 40, "clip": 2.0, "lr": 1.0, "l2": 0.001, "epochs": 50}


def _adversarial_distance() -> tuple[float, float]:
    x1, y1, x2, y2 = _adversarial_pair(ADV["n"], ADV["clip"])
    kw = {"lr": ADV["lr"], "l2": ADV["l2"], "epochs": ADV["epochs"], "batch": None}
    dist = float(np.linalg.norm(_gd(x1, y1, **kw) - _gd(x2, y2, **kw)))  # type: ignore[arg-type]
    bound = gd_sensitivity(
        n_rows=ADV["n"],
        l2=ADV["l2"],
        clip_norm=ADV["clip"],
        learning_rate=ADV["lr"],
        epochs=ADV["epochs"],
    )
    return dist, bound.iterate


def test_gd_sensitivity_adversarial_pair_is_close_to_the_bound() -> None:
    """The bound is within about a factor 2 of a constructed worst case (the factor 2 is
    intrinsic: the two rows' residuals start at 1/2 and cannot both be 1 at w = 0)."""
    dist, bound = _adversarial_distance()
    assert 0.4 * bound <= dist <= bound


@pytest.mark.parametrize("mutant", ["lipschitz=R/4", "single-step", "contraction=1-eta*beta"])
def test_gd_sensitivity_mutants_fail(mutant: str) -> None:
    """Mutation tests: plausible wrong sensitivity formulas are caught by the neighbouring test.
    'lipschitz=R/4' confuses the sigmoid's slope with the residual bound; 'single-step' keeps
    only one step's 2 eta L / n; 'contraction=1-eta*beta' contracts at the smoothness instead of
    the strong-convexity rate (2L / (n beta) in total)."""
    dist, bound = _adversarial_distance()
    n, clip, lr, l2 = ADV["n"], ADV["clip"], ADV["lr"], ADV["l2"]
    beta = clip * clip / 4 + l2
    wrong = {
        "lipschitz=R/4": bound / 4,
        "single-step": 2 * lr * clip / n,
        "contraction=1-eta*beta": 2 * clip / (n * beta),
    }[mutant]
    assert dist > wrong


def test_gd_sensitivity_with_fixed_point_slack() -> None:
    """Coarse fixed point (6 fractional bits; every update floored and then lowered by one ulp
    at random, like probabilistic truncation; independent for D and D'): each run stays within
    its share of the slack of the exact run, accumulating well beyond one step's error (so a
    one-step slack would be wrong), and neighbouring runs stay within the total bound."""
    n, d, clip, lr, l2, epochs = 60, 4, 2.0, 1.0, 0.05, 30
    f = 6
    x, y = _data(7, n, d, clip)
    step_error = logreg_step_error(
        dim=d, frac_bits=f, learning_rate=lr, clip_norm=clip, logit_ulps=0, gradient_ulps=0
    )
    assert step_error == pytest.approx(math.sqrt(d) * 2 * 2.0**-f)
    bound = gd_sensitivity(
        n_rows=n, l2=l2, clip_norm=clip, learning_rate=lr, epochs=epochs, step_error=step_error
    )
    per_run = bound.fixed_point / 2
    assert per_run == pytest.approx(step_error * (1 - (1 - lr * l2) ** epochs) / (lr * l2))
    exact = _gd(x, y, lr=lr, l2=l2, epochs=epochs, batch=None)
    g = Prg(bytes([9]) * 16)
    worst = 0.0
    for k in range(30):
        i = int(S.uniform_below(g, n, (), ("i", k)))
        x2, y2 = _neighbour(x, y, i, g, k, clip)
        w1 = _gd(x, y, lr=lr, l2=l2, epochs=epochs, batch=None, frac_bits=f, rounding=g.derive(k))
        w2 = _gd(
            x2, y2, lr=lr, l2=l2, epochs=epochs, batch=None, frac_bits=f, rounding=g.derive(-k - 1)
        )
        drift = float(np.linalg.norm(w1 - exact))
        assert step_error < drift <= per_run
        worst = max(worst, float(np.linalg.norm(w1 - w2)))
    assert worst <= bound.total


def test_clip_rows() -> None:
    rows = np.array([[3.0, 4.0], [0.1, 0.0], [0.0, 0.0]])
    clipped = clip_rows(rows, 2.0)  # features to sqrt(3) so that ||(x, 1)|| <= 2
    assert np.linalg.norm(clipped[0]) == pytest.approx(math.sqrt(3))
    assert np.array_equal(clipped[1:], rows[1:])
    check_clipped(clipped, 2.0)
    with pytest.raises(InvalidPrivacyParameterError, match="1 row"):
        check_clipped(rows, 2.0)
    with pytest.raises(InvalidPrivacyParameterError, match="> 1"):
        clip_rows(rows, 1.0)
    assert np.linalg.norm(clip_rows(rows, 2.0, fit_intercept=False)[0]) == pytest.approx(2.0)
