"""Every charge is exact: each mechanism's cost against Google's `dp-accounting` (known answers),
noise that is what the cost assumes (exact integers on the grid, never floating point), and
several charges recorded all or nothing.

For each registered mechanism (`mpc.dp.Mechanism.registry`) the charged (epsilon, delta) is
checked against the exact privacy-loss distribution of the noise it draws (pessimistic PLD, an
upper bound on the true cost: the charge is never below it, and not far above it) and, where it
carries a zCDP rho, against the RDP accountant.  Compositions are checked the same way.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant, privacy_loss_distribution
from dp_accounting.pld import privacy_loss_mechanism as plm
from dp_accounting.rdp import RdpAccountant

from mpc.dp import (
    Accountant,
    BudgetExceededError,
    DiscreteGaussianMechanism,
    DiscreteLaplaceMechanism,
    DistributedDiscreteGaussian,
    GaussianMechanism,
    LaplaceMechanism,
    Ledger,
    Mechanism,
    PrivacyBudget,
    VectorLaplaceMechanism,
    compose,
    zcdp_epsilon,
)
from mpc.dp.mechanisms import (
    ObjectivePerturbationMechanism,
    l1_ulps_of_l2,
    noise_spec,
    sample_noise,
)
from mpc.dp.samplers import discrete_gaussian_pmf
from mpc.rng import Prg

#: Dense RDP orders, so that the accountant's conversion is close to the continuous optimum.
ORDERS = [1 + x / 200 for x in range(1, 200)] + [2 + x / 20 for x in range(0, 2000)]

#: One instance of each registered mechanism, at a few parameters (counts and fixed point).
CASES: dict[str, list[Mechanism]] = {
    "discrete_laplace": [
        DiscreteLaplaceMechanism(epsilon=0.5, sensitivity=2.0),
        DiscreteLaplaceMechanism(epsilon=1.3, sensitivity=0.01, frac_bits=10),
    ],
    "discrete_gaussian": [
        DiscreteGaussianMechanism(epsilon=1.0, delta=1e-6, sensitivity=3.0),
        DiscreteGaussianMechanism(epsilon=0.3, delta=1e-8, sensitivity=0.05, frac_bits=12),
    ],
    "cms_vector_laplace": [
        VectorLaplaceMechanism(epsilon=1.0, sensitivity=0.2, dim=31, frac_bits=8),
        VectorLaplaceMechanism(epsilon=0.1, sensitivity=0.16, dim=5, frac_bits=16),
    ],
    "objective_perturbation": [
        ObjectivePerturbationMechanism(
            epsilon=1.0, sensitivity=4.0, epsilon_jacobian=0.0506, gap=1.1e-4,
            epsilon_gap=0.01, dim=31, frac_bits=23,
        ),
        ObjectivePerturbationMechanism(
            epsilon=0.1, sensitivity=2.0, epsilon_jacobian=0.01, gap=0.003,
            epsilon_gap=0.002, dim=5, frac_bits=12, tail_bits=64,
        ),
    ],
}  # fmt: skip


def prg(i: int) -> Prg:
    return Prg(bytes([200 + i]) * 16)


def test_every_registered_mechanism_has_known_answer_cases() -> None:
    assert set(Mechanism.registry) == set(CASES)


def _pld_delta(mech: Mechanism, epsilon: float) -> float:
    """The exact delta(epsilon) of one release of `mech`'s noise (dp-accounting's PLD of the
    1-D mechanism at the sensitivity, in ulps, the noise is calibrated to)."""
    if isinstance(mech, DiscreteGaussianMechanism):
        loss: plm.AdditiveNoisePrivacyLoss = plm.DiscreteGaussianPrivacyLoss(
            math.sqrt(float(mech.sigma2)), sensitivity=mech.sensitivity_ulps
        )
    elif isinstance(mech, VectorLaplaceMechanism):
        loss = plm.DiscreteLaplacePrivacyLoss(
            1.0 / float(mech.scale), sensitivity=mech.sensitivity_l1_ulps
        )
    else:
        assert isinstance(mech, DiscreteLaplaceMechanism)
        loss = plm.DiscreteLaplacePrivacyLoss(
            1.0 / float(mech.scale), sensitivity=mech.sensitivity_ulps
        )
    return float(loss.get_delta_for_epsilon(epsilon))


@pytest.mark.parametrize(
    "mech", [m for ms in CASES.values() for m in ms], ids=lambda m: f"{m.name}-{m.epsilon}"
)
def test_each_charge_against_dp_accounting(mech: Mechanism) -> None:
    """The charged (epsilon, delta) holds for the noise drawn (exact delta from the PLD), is not
    far above it, and the zCDP rho the accountant composes converts back to the charge."""
    cost = mech.cost("x")
    assert cost.mechanism == mech.name
    if isinstance(mech, ObjectivePerturbationMechanism):
        _check_objective_charge(mech)
        return
    assert _pld_delta(mech, cost.epsilon) <= cost.delta + 1e-15
    if cost.delta == 0.0:  # pure epsilon: tight, any smaller epsilon fails
        assert _pld_delta(mech, 0.97 * cost.epsilon) > 0.0
    else:  # the zCDP calibration costs a little noise (delta within 10x, epsilon within 15%)
        assert _pld_delta(mech, cost.epsilon) > cost.delta / 10
        assert _pld_delta(mech, 0.85 * cost.epsilon) > cost.delta
    assert cost.rho is not None
    rdp = RdpAccountant(orders=ORDERS)
    rdp.compose(dp_event.ZCDpEvent(cost.rho))
    if cost.delta > 0:  # the zCDP conversion of the charge (CKS20 Cor. 13), as RDP does it
        assert rdp.get_epsilon(cost.delta) == pytest.approx(cost.epsilon, rel=2e-3)
        assert cost.epsilon <= rdp.get_epsilon(cost.delta) * (1 + 1e-9)
    else:  # pure epsilon implies epsilon^2/2-zCDP: the Laplace RDP curve lies below it
        laplace = RdpAccountant(orders=ORDERS)
        laplace.compose(dp_event.LaplaceDpEvent(1.0 / cost.epsilon))
        assert np.all(laplace._rdp <= np.asarray(ORDERS) * cost.rho * (1 + 1e-12))


def _check_objective_charge(mech: ObjectivePerturbationMechanism) -> None:
    """Objective perturbation (docs/dp.md): the charge is epsilon_noise + epsilon_jacobian +
    2 epsilon_gap and 2^-tail_bits; each noise row is exactly the discrete Laplace mechanism
    for its L1 bound in ulps (the rounding slack included): delta 0 at its epsilon, tight."""
    cost = mech.cost("x")
    total = mech.epsilon_noise + mech.epsilon_jacobian + 2 * mech.epsilon_gap
    assert cost.epsilon == mech.epsilon == pytest.approx(total, rel=1e-12)
    assert cost.delta == 2.0**-mech.tail_bits and cost.rho is None
    f, d = mech.frac_bits, mech.dim
    rows = [
        (mech.scale, l1_ulps_of_l2(float(mech.sensitivity or 0), d, f) + d, mech.epsilon_noise),
        (mech.output_scale, l1_ulps_of_l2(mech.gap, d, f) + (d + 1) // 2, mech.epsilon_gap),
    ]
    for scale, ulps, eps in rows:
        loss = plm.DiscreteLaplacePrivacyLoss(1.0 / float(scale), sensitivity=ulps)
        assert float(loss.get_delta_for_epsilon(eps)) <= 1e-15
        assert float(loss.get_delta_for_epsilon(0.97 * eps)) > 0.0
    # the tail: P[|b_i| > bound] <= exp(-bound/scale) per element, 2^-tail_bits for dim of them
    assert d * math.exp(-mech.bound_ulps / float(mech.scale)) <= 2.0**-mech.tail_bits


@pytest.mark.parametrize("mech", [m for ms in CASES.values() for m in ms], ids=lambda m: m.name)
def test_noise_is_exact_integers_on_the_grid(mech: Mechanism) -> None:
    """What the charge assumes: int64 ulps from the exact samplers, by the mechanism and by the
    dealer's `sample_noise` (the only two ways noise is drawn)."""
    shape: tuple[int, ...] = (getattr(mech, "dim", 4),)
    if isinstance(mech, ObjectivePerturbationMechanism):
        shape = (2, mech.dim)
    own = mech.noise(prg(1), shape)
    dealt = sample_noise(noise_spec(mech, shape), prg(2))
    for noise in (own, dealt):
        assert noise.dtype == np.int64 and noise.shape == shape


def test_vector_laplace_covers_the_worst_grid_pair() -> None:
    """The L1 bound of the vector mechanism holds for the worst pair of grid vectors at L2
    distance Delta (all elements moved by the same number of ulps), and its charge is the
    composition, in dp-accounting's PLD, of the elements' discrete Laplace mechanisms."""
    for dim, sens, f in ((31, 0.2, 8), (5, 0.16, 16), (2, 1.0, 0), (9, 0.25, 4)):
        mech = VectorLaplaceMechanism(epsilon=0.7, sensitivity=sens, dim=dim, frac_bits=f)
        exact = math.sqrt(dim) * Fraction(sens) * (1 << f)
        assert exact <= mech.sensitivity_l1_ulps < exact + 1
        step = math.floor(sens * (1 << f) / math.sqrt(dim))
        worst = [step] * dim  # L2 norm <= sens * 2^f, L1 norm dim * step
        assert math.sqrt(sum(v * v for v in worst)) <= float(sens) * (1 << f)
        assert sum(worst) <= mech.sensitivity_l1_ulps
        if step == 0:
            continue
        pld = privacy_loss_distribution.from_discrete_laplace_mechanism(
            1.0 / float(mech.scale), sensitivity=step, value_discretization_interval=1e-5
        )
        composed = pld.self_compose(dim)  # delta 1e-15: the composed PLD's truncated tails
        assert composed.get_epsilon_for_delta(1e-15) <= mech.cost().epsilon
    assert l1_ulps_of_l2(0.5, 4, 0) == 1  # sqrt(4) * 0.5 = 1 exactly


def test_float_mechanisms_draw_no_noise() -> None:
    """Floating-point noise is open to Mironov's attack (CCS 2012): the continuous mechanisms
    only calibrate and cost; their `discrete` equivalent draws exact noise."""
    lap = LaplaceMechanism(epsilon=0.5, sensitivity=1.0)
    gauss = GaussianMechanism(epsilon=1.0, delta=1e-6, sensitivity=1.0)
    for mech in (lap, gauss):
        assert not hasattr(mech, "noise") and not hasattr(mech, "randomise")
        assert not isinstance(mech, Mechanism)
    exact = lap.discrete(frac_bits=0)
    assert isinstance(exact, DiscreteLaplaceMechanism) and exact.cost().epsilon == 0.5
    dg = gauss.discrete(frac_bits=8)
    assert isinstance(dg, DiscreteGaussianMechanism) and dg.cost().delta == 1e-6
    encoded = np.array([3, 4], dtype=np.int64)
    assert exact.randomise(prg(3), encoded).dtype == np.int64


# ---- composition ---------------------------------------------------------------------------------


def test_composition_of_discrete_gaussians_against_rdp() -> None:
    """zCDP composition: rho adds up, and the conversion agrees with dp-accounting's RDP
    accountant composing the same zCDP events."""
    mechs = [
        DiscreteGaussianMechanism(epsilon=0.5, delta=1e-7, sensitivity=1.0),
        DiscreteGaussianMechanism(epsilon=0.3, delta=1e-8, sensitivity=0.05, frac_bits=12),
        DiscreteGaussianMechanism(epsilon=1.0, delta=1e-6, sensitivity=3.0),
    ] * 3
    costs = [m.cost() for m in mechs]
    total = compose(costs, 1e-5)
    assert total is not None
    rdp = RdpAccountant(orders=ORDERS)
    for c in costs:
        rdp.compose(dp_event.ZCDpEvent(c.rho or 0.0))
    ref = rdp.get_epsilon(1e-5)
    assert total.epsilon == pytest.approx(ref, rel=2e-3) and total.epsilon <= ref * (1 + 1e-9)
    assert total.epsilon == pytest.approx(zcdp_epsilon(sum(c.rho or 0.0 for c in costs), 1e-5))
    assert total.epsilon < 0.5 * sum(c.epsilon for c in costs)  # much better than basic


def test_composition_of_pure_releases_against_pld() -> None:
    """Pure-epsilon releases compose to the sum at delta 0, exactly what the PLD accountant
    finds for the noise drawn; at delta > 0 the charge stays above the PLD's tight epsilon."""
    counts = DiscreteLaplaceMechanism(epsilon=0.5, sensitivity=2.0)
    vector = VectorLaplaceMechanism(epsilon=0.25, sensitivity=0.2, dim=31, frac_bits=8)
    costs = [counts.cost(), vector.cost()] * 4
    pld = PLDAccountant()
    pld.compose(
        dp_event.DiscreteLaplaceDpEvent(1 / float(counts.scale), counts.sensitivity_ulps), 4
    )
    pld.compose(
        dp_event.DiscreteLaplaceDpEvent(1 / float(vector.scale), vector.sensitivity_l1_ulps), 4
    )
    total = compose(costs, 0.0)
    assert total is not None and total.epsilon == pytest.approx(3.0)
    assert pld.get_epsilon(1e-15) == pytest.approx(total.epsilon, rel=1e-6)  # (its tails)
    loose = compose(costs, 1e-6)
    assert loose is not None and loose.epsilon >= pld.get_epsilon(1e-6)


def test_mixed_composition_is_never_below_the_pld() -> None:
    """Laplace counts, discrete Gaussian sums and a vector release together: the accountant's
    total is an upper bound on the exact composition (dp-accounting PLDs of the same noise)."""
    counts = DiscreteLaplaceMechanism(epsilon=0.5, sensitivity=2.0)
    sums = DiscreteGaussianMechanism(epsilon=0.5, delta=1e-7, sensitivity=307.0)
    vector = VectorLaplaceMechanism(epsilon=1.0, sensitivity=0.2, dim=31, frac_bits=8)
    costs = [counts.cost(), sums.cost(), vector.cost(), sums.cost()]
    total = compose(costs, 1e-6)
    assert total is not None
    pld = privacy_loss_distribution.from_discrete_laplace_mechanism(
        1 / float(counts.scale), sensitivity=counts.sensitivity_ulps
    )
    gauss = privacy_loss_distribution.from_discrete_gaussian_mechanism(
        math.sqrt(float(sums.sigma2)), sensitivity=sums.sensitivity_ulps
    )
    pld = pld.compose(gauss).compose(gauss)
    pld = pld.compose(
        privacy_loss_distribution.from_discrete_laplace_mechanism(
            1 / float(vector.scale), sensitivity=vector.sensitivity_l1_ulps
        )
    )
    assert pld.get_epsilon_for_delta(1e-6) <= total.epsilon
    assert total.epsilon < 1.6 * pld.get_epsilon_for_delta(1e-6)


# ---- the distributed discrete Gaussian -----------------------------------------------------------


def _renyi_over_alpha(pmf: np.ndarray, shift: int, alphas: list[float]) -> float:
    """max over alpha of D_alpha(P || P shifted by `shift`) / alpha, computed exactly on the
    support (the pmf is negligible at its ends)."""
    q = np.roll(pmf, shift)
    keep = (pmf > 0) & (q > 0)
    lp, lq = np.log(pmf[keep]), np.log(q[keep])
    worst = 0.0
    for a in alphas:
        terms = a * lp + (1 - a) * lq
        top = float(terms.max())
        divergence = (top + math.log(float(np.exp(terms - top).sum()))) / (a - 1)
        worst = max(worst, divergence / a)
    return worst


@pytest.mark.parametrize(
    ("eps", "delta", "n", "t"), [(8.0, 1e-3, 3, 1), (4.0, 1e-5, 5, 2), (1.0, 1e-6, 3, 2)]
)
def test_distributed_gaussian_charge_bounds_the_honest_sum(
    eps: float, delta: float, n: int, t: int
) -> None:
    """The charged rho of the distributed noise bounds the Renyi divergence of the sum of the
    n - t honest pieces (computed exactly by convolution), and converts to the charged
    (epsilon, delta) in dp-accounting's RDP accountant."""
    plan = DistributedDiscreteGaussian(
        epsilon=eps, delta=delta, sensitivity=1.0, n_parties=n, max_colluding=t
    )
    m, s2 = n - t, float(plan.per_party_sigma2)
    half = math.ceil(60 * math.sqrt(m * s2)) + 5
    one = discrete_gaussian_pmf(np.arange(-half, half + 1), s2)
    total = one
    for _ in range(m - 1):
        total = np.convolve(total, one)[half : 3 * half + 1]
    measured = _renyi_over_alpha(total, 1, [1.5, 2, 3, 5, 10, 20, 50])
    assert measured <= plan.rho * (1 + 1e-9)
    rdp = RdpAccountant(orders=ORDERS)
    rdp.compose(dp_event.ZCDpEvent(plan.rho))
    assert rdp.get_epsilon(delta) <= eps * (1 + 2e-3)


# ---- several charges, all or nothing ------------------------------------------------------------


def test_spend_all_records_all_or_nothing(tmp_path: Path) -> None:
    """A batch whose second release does not fit is refused whole; the ledger is untouched."""
    ledger = Ledger.open(tmp_path, "d", PrivacyBudget(1.5, 1e-6))
    acct = Accountant(ledger=ledger)
    one = DiscreteLaplaceMechanism(epsilon=1.0, sensitivity=1.0)
    acct.check(one.cost("first"))  # the first alone fits
    with pytest.raises(BudgetExceededError, match="the 2 releases of this run"):
        acct.check_all([one.cost("first"), one.cost("second")])
    with pytest.raises(BudgetExceededError, match="the 2 releases of this run"):
        acct.spend_all([one.cost("first"), one.cost("second")])
    assert acct.releases == () and Ledger.open(tmp_path, "d").releases == ()
    half = DiscreteLaplaceMechanism(epsilon=0.5, sensitivity=1.0)
    total = acct.spend_all([half.cost("a"), one.cost("b")])
    assert total.epsilon == pytest.approx(1.5)
    assert [r.label for r in Ledger.open(tmp_path, "d").releases] == ["a", "b"]
