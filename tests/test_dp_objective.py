"""Objective perturbation of the joint model (`mpc.dp.objective`, docs/dp.md).

The proof's pieces checked numerically (the Jacobian ratio, the privacy loss of the exact
minimiser on neighbouring data sets, the gap between a secure fit and the exact minimiser), the
accuracy of a secure release, the exact charge, and bad input.  About 15 s (secure fits of 150
and 455 rows, 3 in-process parties, 23 fractional bits).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from helpers import load_scenario

from mpc.dp import Accountant, BudgetExceededError, InvalidPrivacyParameterError, PrivacyBudget
from mpc.dp.audit import _local_parties
from mpc.dp.mechanisms import (
    ObjectivePerturbationMechanism,
    l1_ulps_of_l2,
    mechanism_from_spec,
    noise_spec,
    sample_noise,
)
from mpc.dp.objective import ObjectivePrivacy, objective_privacy, release_objective_model
from mpc.encoding import FixedPoint
from mpc.errors import ConfigurationError, PartyFailedError
from mpc.ml import LogisticRegression
from mpc.ml.data import breast_cancer_split
from mpc.ml.sigmoid import PIECEWISE_EXTRA_BITS, PIECEWISE_SLOPE
from mpc.program import PartyContext
from mpc.rng import Prg

PARTIES = ("north", "south", "east")
R = 2.0
FP = FixedPoint(frac_bits=23)
SCENARIO = load_scenario("dp_model_release")


def recipe(epsilon: float, l2: float = 0.03) -> LogisticRegression:
    args = SCENARIO.parse_args(["--epsilon", str(epsilon), "--l2", str(l2)])
    config: LogisticRegression = SCENARIO.recipe(args, 455)
    return config


def rows(count: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x_train, x_test, y_train, y_test = breast_cancer_split()
    setup = {"columns": list(range(30)), "scaling": "log", "frac_bits": 23, "clip_norm": R}
    x, xt = SCENARIO.prepared(x_train, setup), SCENARIO.prepared(x_test, setup)
    if count is not None:
        x, y_train = x[:count], y_train[:count]
    return x, xt, y_train, y_test


def design(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((x.shape[0], 1))])


def encoded_slope() -> float:
    bits = FP.frac_bits + PIECEWISE_EXTRA_BITS
    return round(PIECEWISE_SLOPE * 2**bits) / 2**bits


def gradient(a: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray, lam: float) -> Any:
    """The gradient of J(w) = (1/n) sum l(x.w, y) + lam/2 |w|^2 + b.w/n, l' = s(z) - y with
    the (encoded) piecewise sigmoid s(z) = clip(1/2 + a z, 0, 1)."""
    s = np.clip(0.5 + encoded_slope() * (a @ w), 0.0, 1.0)
    return (a.T @ (s - y) + b) / a.shape[0] + lam * w


def minimiser(a: np.ndarray, y: np.ndarray, b: np.ndarray, pv: ObjectivePrivacy) -> np.ndarray:
    """The exact minimiser, by float64 gradient descent run far past convergence."""
    w = np.zeros(a.shape[1])
    for _ in range(3000):
        w = w - pv.learning_rate * gradient(a, y, w, b, pv.l2)
    assert np.linalg.norm(gradient(a, y, w, b, pv.l2)) < 1e-12
    return w


def analysis(n: int, epsilon: float = 1.0, **kw: Any) -> ObjectivePrivacy:
    return objective_privacy(
        recipe(epsilon), n_rows=n, n_features=30, clip_norm=R, epsilon=epsilon, fixed_point=FP, **kw
    )


# ---- the proof's pieces --------------------------------------------------------------------------


def test_jacobian_ratio_is_bounded_and_the_bound_is_reached() -> None:
    """det(A + c x x^T) / det(A + c' x' x'^T) <= 1 + a R^2/(n lambda) for A >= n lambda I,
    c, c' in [0, a], |x|, |x'| <= R (random cases); a row along A's flattest direction
    reaches it, so a smaller term (e.g. a R/(n lambda), R > 1) would fail."""
    rng = np.random.default_rng(7)
    n, d, lam, a = 50, 6, 0.05, encoded_slope()
    bound = 1.0 + a * R * R / (n * lam)
    for _ in range(200):
        xs = rng.normal(size=(n - 1, d))
        xs *= np.minimum(1.0, R / np.linalg.norm(xs, axis=1))[:, None]
        base = (xs.T * rng.uniform(0, a, n - 1)) @ xs + n * lam * np.eye(d)
        x, x2 = (v * R / np.linalg.norm(v) * rng.uniform(0, 1) for v in rng.normal(size=(2, d)))
        c, c2 = rng.uniform(0, a, 2)
        ratio = np.linalg.det(base + c * np.outer(x, x)) / np.linalg.det(
            base + c2 * np.outer(x2, x2)
        )
        assert ratio <= bound * (1 + 1e-12)
    flat = n * lam * np.eye(d)
    x = np.zeros(d)
    x[0] = R
    worst = np.linalg.det(flat + a * np.outer(x, x)) / np.linalg.det(flat)
    assert worst == pytest.approx(bound, rel=1e-12)
    assert worst > 1.0 + a * R / (n * lam)  # diffprivlib's a R: below the true ratio


def test_privacy_loss_of_the_exact_minimiser_is_within_its_charge() -> None:
    """CMS11's change of variables on neighbouring data sets (one row replaced): the noise b'
    that gives D' the same minimiser w differs from b by the change of that row's gradient
    (at most 2R), w is then D''s minimiser too, and the privacy loss at w, (|b'|_1 - |b|_1)/t
    + log det(H_D(w))/det(H_D'(w)), stays within epsilon_noise + epsilon_jacobian."""
    x, _, y, _ = rows(120)
    a = design(x)
    n, d = a.shape
    pv = analysis(n)
    mech = pv.mechanism
    t = float(mech.scale) / FP.scale  # the noise scale in real units
    rng = np.random.default_rng(3)
    slope, h = encoded_slope(), 0.5 / encoded_slope()
    losses = []
    for trial in range(12):
        b = rng.laplace(0.0, t, d)
        i = int(rng.integers(n))
        other = a.copy()
        labels = y.astype(np.float64).copy()
        if trial % 2:  # adversarial: the opposite label, the row pushed to norm R
            labels[i] = 1.0 - labels[i]
            other[i, :-1] *= math.sqrt(R * R - 1) / np.linalg.norm(other[i, :-1])
        else:
            other[i, :-1] = rng.uniform(-1, 1, d - 1)
            other[i, :-1] *= min(1.0, math.sqrt(R * R - 1) / np.linalg.norm(other[i, :-1]))
        w = minimiser(a, y, b, pv)
        row = (np.clip(0.5 + slope * a[i] @ w, 0, 1) - y[i]) * a[i]
        row2 = (np.clip(0.5 + slope * other[i] @ w, 0, 1) - labels[i]) * other[i]
        b2 = b + row - row2
        assert np.linalg.norm(b2 - b) <= 2 * R + 1e-12
        assert np.linalg.norm(minimiser(other, labels, b2, pv) - w) < 1e-9  # the bijection

        def hessian(m: np.ndarray, w: np.ndarray = w) -> Any:
            inside = (np.abs(m @ w) < h).astype(np.float64) * slope
            return (m.T * inside) @ m + n * pv.l2 * np.eye(d)

        jac = np.linalg.slogdet(hessian(a))[1] - np.linalg.slogdet(hessian(other))[1]
        loss = (np.abs(b2).sum() - np.abs(b).sum()) / t + jac
        assert jac <= mech.epsilon_jacobian + 1e-12
        losses.append(loss)
    assert max(losses) <= mech.epsilon_noise + mech.epsilon_jacobian
    assert max(losses) > 0.1 * mech.epsilon_noise  # the bound is not vacuous


def secure_fit_with(b: np.ndarray, x: np.ndarray, y: np.ndarray, pv: ObjectivePrivacy) -> Any:
    """The un-noised secure fit of the perturbed objective with a known b (a test only: a
    release never opens it)."""
    local = _local_parties(x, y, PARTIES, FP)
    config = pv.config

    def program(ctx: PartyContext) -> Any:
        data = config.share_horizontal(ctx, ctx.private["x"], ctx.private["y"])
        shared = ctx.input("north", b if ctx.me == "north" else None, bound=pv.noise_bound)
        start = (shared * (-pv.start_factor))._bounded(pv.start_bound)
        return config.fit(ctx, data, start=start, offset=shared).reveal(to="north")

    model = local.run(program)["north"].output
    return np.r_[model.coef, model.intercept]


def test_secure_fit_is_within_the_gap_of_the_exact_minimiser() -> None:
    """|secure fit - exact minimiser| <= G (the steps' part, the fixed-point part, the rounding
    of b), measured on a secure fit with a known b; with fewer steps the distance exceeds the
    gap the analysis computes for its own number of steps, so the steps' term is needed."""
    x, _, y, _ = rows(150)
    a = design(x)
    pv = analysis(150)
    b = np.random.default_rng(5).laplace(0.0, 20.0, a.shape[1])
    b = np.round(b * FP.scale) / FP.scale  # on the grid, as the noise is
    exact = minimiser(a, y, b, pv)
    distance = float(np.linalg.norm(secure_fit_with(b, x, y, pv) - exact))
    assert distance <= pv.gap
    few = analysis(150, steps=20)
    short = float(np.linalg.norm(secure_fit_with(b, x, y, few) - exact))
    assert short <= few.gap and short > pv.gap


# ---- releases ------------------------------------------------------------------------------------


def release(
    epsilon: float, x: np.ndarray, y: np.ndarray, noise: str = "dealer", accountant: Any = None
) -> Any:
    local = _local_parties(x, y, PARTIES, FP)
    config = recipe(epsilon)

    def program(ctx: PartyContext) -> Any:
        data = config.share_horizontal(ctx, ctx.private["x"], ctx.private["y"])
        return release_objective_model(
            ctx,
            data,
            config,
            epsilon=epsilon,
            clip_norm=R,
            noise=noise,  # type: ignore[arg-type]
            accountant=accountant,
            to="north",
        )

    return local.run(program)["north"].output


def test_secure_release_at_epsilon_10_is_accurate() -> None:
    x, xt, y, yt = rows()
    accuracies = [release(10.0, x, y).accuracy(xt, yt) for _ in range(2)]
    assert min(accuracies) >= 0.9, accuracies


def test_the_charge_is_exact_and_made_before_anything_opens() -> None:
    """Each party's accountant is charged (epsilon, draws x 2^-128): one draw with dealer
    noise, one per party with distributed noise; a budget below epsilon refuses."""
    x, _, y, _ = rows(60)
    accountants = {p: Accountant(PrivacyBudget(20.0, 1e-9)) for p in PARTIES}
    release(5.0, x, y, accountant=accountants)
    release(5.0, x, y, noise="distributed", accountant=accountants)
    for acct in accountants.values():
        dealt, distributed = acct.releases
        assert dealt.mechanism == "objective_perturbation" and dealt.epsilon == 5.0
        assert dealt.delta == 2.0**-128 and distributed.delta == 3 * 2.0**-128
        assert dealt.params["epsilon_noise"] + dealt.params["epsilon_jacobian"] + 2 * dealt.params[
            "epsilon_gap"
        ] == pytest.approx(5.0, rel=1e-12)
    poor = {p: Accountant(PrivacyBudget(4.0, 1e-9)) for p in PARTIES}
    with pytest.raises(PartyFailedError) as refused:
        release(5.0, x, y, accountant=poor)
    assert "BudgetExceededError" in refused.value.cause
    assert all(acct.releases == () for acct in poor.values())
    assert issubclass(BudgetExceededError, Exception)


def test_the_analysis_known_answers() -> None:
    """The Jacobian term, the noise scale and the tail bound from public numbers alone."""
    pv = analysis(455)
    mech = pv.mechanism
    slope = max(PIECEWISE_SLOPE, encoded_slope())
    assert mech.epsilon_jacobian == pytest.approx(math.log1p(slope * R * R / (455 * pv.l2)))
    ulps = l1_ulps_of_l2(2 * R, 31, 23) + 31
    assert float(mech.scale) == pytest.approx(ulps / mech.epsilon_noise, rel=1e-6)
    assert float(mech.scale) >= ulps / mech.epsilon_noise  # rounded up: never less noise
    assert pv.contraction == pytest.approx(1 - pv.learning_rate * pv.l2)
    assert pv.gap_optimisation <= pv.gap_fixed_point / 8
    noise = sample_noise(noise_spec(mech, (2, 31)), Prg(bytes(16)))
    assert noise.shape == (2, 31) and int(np.abs(noise[0]).max()) <= mech.bound_ulps


# ---- bad input -----------------------------------------------------------------------------------


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidPrivacyParameterError, match="epsilon"):
        objective_privacy(recipe(1.0), n_rows=455, n_features=30, clip_norm=R, epsilon=0.0)
    with pytest.raises(InvalidPrivacyParameterError, match="gap_fraction"):
        analysis(455, gap_fraction=0.5)
    with pytest.raises(InvalidPrivacyParameterError, match="objective_l2"):
        objective_privacy(
            recipe(1.0, l2=0.001), n_rows=50, n_features=30, clip_norm=R, epsilon=0.05
        )
    with pytest.raises(InvalidPrivacyParameterError, match="full-batch"):
        objective_privacy(
            LogisticRegression(
                learning_rate=1.0, l2=0.03, batch_size=64, sigmoid="piecewise",
                standardize=False, penalize_intercept=True, feature_limit=R,
            ),
            n_rows=455, n_features=30, clip_norm=R, epsilon=1.0,
        )  # fmt: skip
    with pytest.raises(InvalidPrivacyParameterError, match="clip_norm"):
        objective_privacy(recipe(1.0), n_rows=455, n_features=30, clip_norm=None, epsilon=1.0)
    mech = analysis(455).mechanism
    with pytest.raises(InvalidPrivacyParameterError, match="shape"):
        noise_spec(mech, (31,))
    spec = {**noise_spec(mech, (2, 31)), "tail_bits": 0}
    with pytest.raises(InvalidPrivacyParameterError, match="tail_bits"):
        mechanism_from_spec(spec)
    with pytest.raises(InvalidPrivacyParameterError, match="epsilon_gap"):
        ObjectivePerturbationMechanism(epsilon=1.0, sensitivity=4.0, epsilon_gap=0.0, dim=3)


def test_fit_refuses_a_bad_offset() -> None:
    x, _, y, _ = rows(30)
    local = _local_parties(x, y, PARTIES, FP)
    config = recipe(1.0)
    batched = LogisticRegression(
        learning_rate=1.0, l2=0.03, batch_size=8, sigmoid="piecewise", standardize=False,
        penalize_intercept=True, feature_limit=R,
    )  # fmt: skip

    def program(ctx: PartyContext, cfg: LogisticRegression, width: int) -> Any:
        data = cfg.share_horizontal(ctx, ctx.private["x"], ctx.private["y"])
        return cfg.fit(ctx, data, offset=ctx.constant(np.zeros(width)))

    for cfg, width, error in ((config, 30, "shape"), (batched, 31, "full-batch")):
        with pytest.raises(PartyFailedError, match=error) as failed:
            local.run(program, cfg, width)
        assert ("InvalidDataError" if width == 30 else "ConfigurationError") in failed.value.cause
    assert issubclass(ConfigurationError, Exception)
