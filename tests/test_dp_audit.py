"""The privacy audit (`mpc.dp.audit`, `mpc.dp.audit_pair`): confidence bounds, the empirical ε
lower bound, the membership attack on released models, the worst-case pair with its
likelihood-ratio test, and mutations the audit must catch.

Small trial counts (CI); benchmarks/dp_audit.py runs the full sweep on breast cancer.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpc.dp import mechanisms
from mpc.dp.audit import (
    audit_model_release,
    audit_scores,
    clopper_pearson_lower,
    clopper_pearson_upper,
    epsilon_lower_bound,
    make_canary,
    secure_check,
)
from mpc.dp.audit_pair import (
    NeighbouringPair,
    audit_pair,
    crafted_pair,
    data_canary_pair,
    likelihood_ratio,
    pair_ceiling,
    secure_pair_check,
)
from mpc.dp.mechanisms import DiscreteGaussianMechanism, VectorLaplaceMechanism
from mpc.dp.release import max_learning_rate, model_privacy, prepare_rows
from mpc.dp.sensitivity import check_clipped
from mpc.ml import LogisticRegression, train_plain
from mpc.ml.data import breast_cancer_split

R = 2.0
CONFIG = LogisticRegression(
    learning_rate=max_learning_rate(clip_norm=R, l2=0.05),
    epochs=10,
    l2=0.05,
    sigmoid="piecewise",
    standardize=False,
    penalize_intercept=True,
    feature_limit=R,
)
TRIALS = 600


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(seed)  # test data only
    x = gen.normal(0.0, 0.6, (n, 2))
    y = (gen.random(n) < 1.0 / (1.0 + np.exp(-3.0 * x[:, 0]))).astype(np.int64)
    return prepare_rows(x, clip_norm=R), y


X, Y = data(60, 3)
XT, YT = data(200, 4)


# ---- statistics ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (17, 400), (250, 500)])
def test_clopper_pearson_against_scipy(k: int, n: int) -> None:
    from scipy import stats

    alpha = 0.025
    upper = 1.0 if k == n else float(stats.beta.ppf(1 - alpha, k + 1, n - k))
    lower = 0.0 if k == 0 else float(stats.beta.ppf(alpha, k, n - k + 1))
    assert clopper_pearson_upper(k, n, alpha) == pytest.approx(upper, abs=1e-9)
    assert clopper_pearson_lower(k, n, alpha) == pytest.approx(lower, abs=1e-9)


def test_epsilon_lower_bound_known_cases() -> None:
    n = 500
    u = 1.0 - 0.025 ** (1.0 / n)  # the 97.5% upper bound of 0 errors in n
    assert epsilon_lower_bound(0, n, 0, n) == pytest.approx(math.log((1 - u) / u), rel=1e-6)
    assert epsilon_lower_bound(250, n, 250, n) == 0.0
    assert epsilon_lower_bound(0, n, 0, n, delta=0.5) < epsilon_lower_bound(0, n, 0, n)
    with pytest.raises(ValueError):
        clopper_pearson_upper(5, 4, 0.05)


def test_attack_on_laplace_scores_is_valid_and_powerful() -> None:
    """1-D Laplace shifted by the sensitivity is exactly ε-DP: the bound stays below ε, and the
    attack (threshold chosen on held-out halves) gets a large part of it."""
    gen = np.random.default_rng(5)
    for eps in (0.5, 2.0):
        scores_in = gen.laplace(0.0, 1.0 / eps, 20000)
        scores_out = gen.laplace(1.0, 1.0 / eps, 20000)
        outcome = audit_scores(scores_in, scores_out)
        assert outcome.epsilon_lower <= eps
        assert outcome.epsilon_lower >= 0.6 * eps
        assert 0.0 < outcome.advantage < 1.0


# ---- the release audit -------------------------------------------------------------------------


def test_canary_stays_within_the_sensitivity_bound() -> None:
    canary = make_canary(X, Y, CONFIG, R)
    bound = model_privacy(CONFIG, n_rows=60, n_features=2, clip_norm=R)
    assert np.linalg.norm(np.r_[canary.x_in, 1.0]) <= R
    # the canary gets within a factor 4 of the worst case here (a brute-force search over row
    # directions and labels does no better: 0.31); on breast cancer it reaches half of it
    assert 0.25 * bound.total <= canary.distance <= bound.sensitivity.iterate


def test_sweep_never_claims_more_than_the_release_gives() -> None:
    audit = audit_model_release(
        X,
        Y,
        XT,
        YT,
        config=CONFIG,
        clip_norm=R,
        epsilons=[0.5, 1.0, 2.0, 5.0, math.inf],
        trials=TRIALS,
    )
    finite = [p for p in audit.points if not math.isinf(p.epsilon)]
    assert not any(p.violated for p in finite)
    assert all(p.epsilon_lower <= p.epsilon for p in finite)
    no_noise = audit.points[-1]
    assert no_noise.advantage == 1.0 and no_noise.epsilon_lower > 4.0
    assert finite[-1].advantage > finite[0].advantage  # the attack gets better as ε grows
    assert finite[-1].accuracy_mean > finite[0].accuracy_mean
    gaussian = audit_model_release(
        X,
        Y,
        XT,
        YT,
        config=CONFIG,
        clip_norm=R,
        epsilons=[1.0, 5.0],
        delta=1e-5,
        trials=200,
        canary=audit.canary,
    )
    assert not any(p.violated for p in gaussian.points)
    assert gaussian.points[0].mechanism == "DiscreteGaussianMechanism"


def test_mutations_are_caught() -> None:
    """Half the noise: a clearly higher advantage; no noise: the lower bound refutes a small ε."""
    canary = make_canary(X, Y, CONFIG, R)

    def audit(scale: float, eps: float) -> float:
        point = audit_model_release(
            X,
            Y,
            XT,
            YT,
            config=CONFIG,
            clip_norm=R,
            epsilons=[eps],
            trials=TRIALS,
            noise_scale=scale,
            canary=canary,
        ).points[0]
        return point.advantage if scale else point.epsilon_lower

    correct, half = audit(1.0, 5.0), audit(0.5, 5.0)
    # two advantages on 300 + 300 evaluation trials each: standard error about 0.06 for the gap,
    # which is about 0.18 in expectation (0.46 against 0.28 over seeds)
    assert half > correct + 0.08
    assert audit(0.0, 0.5) > 0.5  # no noise: the audit fails the claimed ε = 0.5


def test_secure_releases_match_the_simulated_ones() -> None:
    canary = make_canary(X, Y, CONFIG, R)
    check = secure_check(X, Y, config=CONFIG, clip_norm=R, canary=canary, epsilon=2.0, runs=2)
    assert check.ok, check
    assert check.drift <= check.drift_bound and len(check.scores) == 2


# ---- the worst-case pair (mpc.dp.audit_pair) ---------------------------------------------------

CANCER_CONFIG = LogisticRegression(
    learning_rate=max_learning_rate(clip_norm=R, l2=0.03),
    epochs=10,
    l2=0.03,
    sigmoid="piecewise",
    standardize=False,
    penalize_intercept=True,
    feature_limit=R,
)
N_CANCER, D_CANCER = 455, 30  # the breast-cancer training split: 455 rows, 30 features


@pytest.fixture(scope="module")
def worst() -> NeighbouringPair:
    return crafted_pair(N_CANCER, D_CANCER, CANCER_CONFIG, R)


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x_train, x_test, y_train, y_test = breast_cancer_split()
    lo, hi = x_train.min(axis=0), x_train.max(axis=0)  # test data: ranges from the rows

    def prepare(x: np.ndarray) -> np.ndarray:
        return prepare_rows(x, clip_norm=R, center=(hi + lo) / 2, scale=(hi - lo) / 2)

    return prepare(x_train), y_train, prepare(x_test), y_test


def test_likelihood_ratio_and_ceiling_known_answers() -> None:
    laplace = VectorLaplaceMechanism(epsilon=2.0, sensitivity=0.5, dim=2, frac_bits=4)
    a_in, a_out = np.array([3, 0]), np.array([0, 4])
    z = np.array([[3, 0], [0, 4], [10, -10], [1, 1]])
    # Σ|z - a_out| - |z - a_in|: 7 and -7 at the centres, 7 in a tail, (1 + 3) - (2 + 1)
    assert likelihood_ratio(laplace, z, a_in, a_out).tolist() == [7, -7, 7, 1]
    # b = ceil(sqrt(2) 0.5 16)/2 = 12/2 = 6 ulps; ||a_in - a_out||_1 = 7
    assert pair_ceiling(laplace, a_in, a_out) == pytest.approx(7 / 6)
    gauss = DiscreteGaussianMechanism(epsilon=1.0, delta=1e-6, sensitivity=1.0, frac_bits=0)
    # Σ (2z - a_in - a_out)(a_in - a_out) = 2σ² log p_in(z)/p_out(z)
    stat = likelihood_ratio(gauss, z, a_in, a_out)
    sigma2 = float(gauss.sigma2)
    for row, s in zip(z, stat, strict=True):
        log_ratio = (np.sum((row - a_out) ** 2) - np.sum((row - a_in) ** 2)) / (2 * sigma2)
        assert s / (2 * sigma2) == pytest.approx(log_ratio)
    # Gaussians ||(3, -4)|| / σ apart: ε(δ = 0.1) solves the Balle-Wang equation
    mu = 5.0 / math.sqrt(sigma2)
    eps = pair_ceiling(gauss, a_in, a_out, 0.1)
    from scipy import stats

    phi = stats.norm.cdf
    assert phi(-eps / mu + mu / 2) - math.exp(eps) * phi(-eps / mu - mu / 2) == pytest.approx(
        0.1, abs=1e-9
    )


def test_crafted_pair_is_within_the_proven_sensitivity_and_near_it(worst: NeighbouringPair) -> None:
    """The pair is a legal neighbouring pair (rows clipped, one row apart) whose weight gap stays
    below the proven bound (else the analysis would be wrong) and reaches most of it, spread
    over the coordinates (the L1 norm the vector Laplace noise is calibrated to)."""
    bound = model_privacy(CANCER_CONFIG, n_rows=N_CANCER, n_features=D_CANCER, clip_norm=R)
    check_clipped(worst.x_in, R)
    check_clipped(worst.x_out, R)
    assert int(np.sum(np.any(worst.x_in != worst.x_out, axis=1))) == 1
    assert np.array_equal(worst.y_in, worst.y_out)
    assert worst.gap("l2") <= bound.sensitivity.iterate
    assert worst.gap("l2") >= 0.6 * bound.total
    assert worst.gap("l1") >= 0.6 * math.sqrt(D_CANCER + 1) * bound.total


def test_data_canary_moves_the_l1_gap_more_than_the_loss_canary(cancer: tuple) -> None:
    """On the real rows, the label-flip canary along a sign vector moves the weights by more than
    twice the loss attack's canary in L1 (0.42 against 0.18 of the bound here)."""
    x, y, _, _ = cancer
    pair = data_canary_pair(x, y, CANCER_CONFIG, R)
    check_clipped(pair.x_in, R)
    canary = make_canary(x, y, CANCER_CONFIG, R)
    d_in, y_in, d_out, y_out = canary.datasets(x, y)

    def weights(rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
        model = train_plain(rows, labels, CANCER_CONFIG, sigmoid_method="piecewise")
        return np.r_[model.coef, model.intercept]

    old = float(np.sum(np.abs(weights(d_in, y_in) - weights(d_out, y_out))))
    assert pair.gap("l1") > 2.0 * old


def test_pair_audit_never_claims_more_than_the_release_gives(worst: NeighbouringPair) -> None:
    points = audit_pair(
        worst, config=CANCER_CONFIG, clip_norm=R, epsilons=[0.5, 1.0, 2.0, 4.0, 10.0], trials=2000
    )
    points += audit_pair(
        worst, config=CANCER_CONFIG, clip_norm=R, epsilons=[10.0], delta=1e-6, trials=1000
    )
    assert not any(p.violated for p in points)
    for p in points:
        assert p.epsilon_lower <= p.ceiling <= p.epsilon  # no test beats the pair's own ε
        assert p.confidence == 0.95
    assert points[-1].mechanism == "DiscreteGaussianMechanism"


def test_pair_attack_is_stronger_than_the_loss_attack(
    worst: NeighbouringPair, cancer: tuple
) -> None:
    """Same release (recipe, claimed ε = 10, pure-ε vector noise), same trials: the worst-case
    pair's likelihood-ratio test bounds ε above 1, which the loss attack on its canary does not
    reach (over seeds: 1.2 to 2.3 against 0 to 0.8)."""
    x, y, xt, yt = cancer
    old = audit_model_release(
        x, y, xt, yt, config=CANCER_CONFIG, clip_norm=R, epsilons=[10.0], trials=2000
    ).points[0]
    new = audit_pair(worst, config=CANCER_CONFIG, clip_norm=R, epsilons=[10.0], trials=2000)[0]
    assert old.epsilon_lower < 1.0 < new.epsilon_lower


def test_a_broken_mechanism_is_refuted(
    worst: NeighbouringPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Noise calibrated to the L2 instead of the L1 bound (sqrt(31) = 5.6 times too small): the
    pair audit refutes the claimed ε = 4 (lower bound 4.5 to 5.2 over seeds); no noise at all:
    every claim up to 4 is refuted."""
    correct = mechanisms.l1_ulps_of_l2
    monkeypatch.setattr(
        mechanisms, "l1_ulps_of_l2", lambda sens, dim, frac_bits: correct(sens, 1, frac_bits)
    )
    small = audit_pair(worst, config=CANCER_CONFIG, clip_norm=R, epsilons=[4.0], trials=10000)
    assert small[0].violated, small
    assert small[0].epsilon_lower <= small[0].ceiling  # the statistics stay valid
    monkeypatch.setattr(
        mechanisms.VectorLaplaceMechanism,
        "noise",
        lambda self, prg, shape=(), tag=None: np.zeros(shape, dtype=np.int64),
    )
    none = audit_pair(worst, config=CANCER_CONFIG, clip_norm=R, epsilons=[1.0, 4.0], trials=2000)
    assert all(p.violated for p in none), none


def test_secure_releases_match_the_simulated_pair() -> None:
    pair = crafted_pair(60, 2, CONFIG, R)
    check = secure_pair_check(pair, config=CONFIG, clip_norm=R, epsilon=2.0, runs=1)
    assert check.ok, check
