"""Noise under MPC (`mpc.dp.reveal`, `mpc.dp.charging`): distributed and dealer noise, charging
before revealing, several releases of a run charged all or nothing, refusal that reveals nothing,
and the output-perturbation release of the joint model (`mpc.dp.model_release`).

In-process parties (runtime "local"); one small Ray test for the dealer actor's noise shares.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import LOCAL, load_scenario

from mpc.dealers.base import DealerClient
from mpc.dealers.seeded import InsecureLocalDealer, SeededDealer
from mpc.dp import (
    Accountant,
    DiscreteGaussianMechanism,
    DiscreteLaplaceMechanism,
    GaussianMechanism,
    InvalidPrivacyParameterError,
    Ledger,
    MissingSensitivityError,
    PlannedRelease,
    PrivacyBudget,
    VectorLaplaceMechanism,
    dp_plan,
    dp_reveal,
    ledger_status,
    model_privacy,
    plan_release,
    prepare_rows,
    release_model,
)
from mpc.dp.mechanisms import noise_spec, sample_noise
from mpc.dp.model_release import max_learning_rate
from mpc.dp.samplers import discrete_gaussian_variance
from mpc.encoding import FixedPoint
from mpc.errors import DealerError, PartyFailedError
from mpc.ml import LogisticRegression, train_plain
from mpc.ml.logreg import public_permutation
from mpc.parties.local import LocalParties
from mpc.parties.party import SessionConfig
from mpc.program import PartyContext
from mpc.protocols.registry import get_protocol
from mpc.rng import Prg

NAMES = ("alice", "bob", "carol")
ZEROS = 3000  # elements per variance check: relative sd of the sample variance ~ sqrt(2/N)


def parties(
    protocol: str = "additive",
    n: int = 3,
    private: Mapping[str, Mapping[str, Any]] | None = None,
    dealer_noise: bool = True,
) -> tuple[LocalParties, SeededDealer]:
    """In-process parties (whose dealer clients can fetch dealer noise shares, unless
    `dealer_noise` is False)."""
    cls = get_protocol(protocol)
    t = cls.check_parties(n, None)
    config = SessionConfig(tuple(NAMES[:n]), protocol, t, FixedPoint(), timeout=10)
    dealer = InsecureLocalDealer(cls.make_scheme(n, t))
    local = LocalParties(config, dealer, private)  # its clients also fetch dealer noise
    if not dealer_noise:  # a plain client: correlated randomness only
        for rank, runner in enumerate(local.runners):
            plain = DealerClient(
                rank,
                dealer.seed_for(rank),
                dealer.scheme,
                functools.partial(_corrections, dealer, rank),
                provides=dealer.provides,
            )
            runner.dealer = plain
            local.dealer_clients[rank] = plain
    return local, dealer


def _corrections(dealer: SeededDealer, rank: int, stream: Any, start: int, count: int) -> Any:
    return functools.partial(dealer.corrections, rank, stream, start, count)


def outputs(local: LocalParties, program: Any, *args: Any, **kw: Any) -> dict[str, Any]:
    return {name: o.output for name, o in local.run(program, *args, **kw).items()}


def zeros_release(ctx: PartyContext, mech: Any, noise: str, frac: bool = False) -> Any:
    value = np.zeros(ZEROS) if frac else np.zeros(ZEROS, dtype=np.int64)
    x = ctx.input("alice", value if ctx.me == "alice" else None, kind="fixed" if frac else "int")
    return dp_reveal(ctx, x, mech, noise=noise, accountant=None)


def assert_variance(samples: np.ndarray, expected: float) -> None:
    """Sample variance within 6 standard errors (false alarm < 1e-8; Gaussian-like tails)."""
    kurtosis = float(np.mean(samples**4) / np.mean(samples**2) ** 2)
    rel_sd = math.sqrt((kurtosis - 1.0) / samples.size)
    assert abs(float(np.var(samples)) / expected - 1.0) < 6.0 * rel_sd, (
        float(np.var(samples)),
        expected,
    )


# ---- distributed noise ---------------------------------------------------------------------------

GAUSS = DiscreteGaussianMechanism(epsilon=1.0, delta=1e-6, sensitivity=1.0, frac_bits=0)


@pytest.mark.parametrize("protocol", ["additive", "shamir"])
def test_distributed_gaussian_has_the_planned_variance(protocol: str) -> None:
    local, _ = parties(protocol)
    out = outputs(local, zeros_release, GAUSS, "distributed")
    values = out["alice"]
    assert values.dtype == np.int64 and values.shape == (ZEROS,)
    assert all(np.array_equal(out[n], values) for n in NAMES)
    t = local.config.threshold  # additive: t = 2 (n - 1), shamir: t = 1
    plan = plan_release(GAUSS, shape=(ZEROS,), frac_bits=0, n_parties=3, max_colluding=t)
    assert plan.distributed is not None
    piece = discrete_gaussian_variance(float(plan.distributed.per_party_sigma2))
    assert plan.variance_factor == pytest.approx(3.0 / (3 - t), rel=1e-3)
    assert_variance(values.astype(np.float64), 3 * piece)
    # the honest pieces alone carry at least the variance one full draw needs
    assert (3 - t) * float(plan.distributed.per_party_sigma2) >= float(GAUSS.sigma2) * 0.999


def test_distributed_pure_epsilon_noise_is_one_full_draw_per_party() -> None:
    mech = DiscreteLaplaceMechanism(epsilon=0.5, sensitivity=1.0, frac_bits=0)
    local, _ = parties("additive")
    values = outputs(local, zeros_release, mech, "distributed")["bob"].astype(np.float64)
    q = math.exp(-1.0 / float(mech.scale))
    one_draw = 2.0 * q / (1.0 - q) ** 2  # variance of the discrete Laplace
    assert_variance(values, 3 * one_draw)
    plan = plan_release(mech, shape=(ZEROS,), frac_bits=0, n_parties=3, max_colluding=1)
    assert plan.variance_factor == 3.0 and plan.cost.epsilon == 0.5


def test_max_colluding_changes_the_split() -> None:
    def program(ctx: PartyContext) -> Any:
        x = ctx.input(
            "alice", np.zeros(ZEROS, dtype=np.int64) if ctx.me == "alice" else None, kind="int"
        )
        return dp_reveal(ctx, x, GAUSS, max_colluding=1, accountant=None)

    local, _ = parties("additive")
    values = outputs(local, program)["carol"].astype(np.float64)
    plan = plan_release(GAUSS, shape=(ZEROS,), frac_bits=0, n_parties=3, max_colluding=1)
    assert plan.variance_factor == pytest.approx(1.5, rel=1e-3)
    assert_variance(values, plan.variance_factor * float(GAUSS.sigma2))


# ---- dealer noise --------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["additive", "shamir"])
def test_dealer_noise_is_one_draw_shared(protocol: str) -> None:
    local, dealer = parties(protocol)
    out = outputs(local, zeros_release, GAUSS, "dealer")
    assert all(np.array_equal(out[n], out["alice"]) for n in NAMES)
    assert dealer.noise_draws == 1 and not dealer._noise
    assert_variance(
        out["alice"].astype(np.float64), discrete_gaussian_variance(float(GAUSS.sigma2))
    )


def test_dealer_vector_noise_in_fixed_point_and_to_one_party() -> None:
    mech = VectorLaplaceMechanism(epsilon=2.0, sensitivity=0.25, dim=4)
    value = np.array([0.5, -1.0, 2.0, 0.0])

    def program(ctx: PartyContext) -> Any:
        x = ctx.input("alice", value if ctx.me == "alice" else None)
        first = dp_reveal(ctx, x, mech, noise="dealer", accountant=None, to="bob")
        second = dp_reveal(ctx, x, mech, noise="dealer", accountant=None, to="bob")
        return first, second

    local, dealer = parties("additive")
    out = outputs(local, program)
    assert out["alice"] == (None, None) and out["carol"] == (None, None)
    first, second = out["bob"]
    assert first.shape == (4,) and not np.array_equal(first, second)  # two draws, keys 0 and 1
    assert dealer.noise_draws == 2
    # exact integer noise: a whole number of ulps, so the value stays on the grid
    ulps = (first - value) * 2**16
    assert np.array_equal(ulps, np.rint(ulps))
    # the next run starts its counter again at 0 under a new epoch
    outputs(local, program)
    assert dealer.noise_draws == 4 and not dealer._noise


def test_dealer_noise_errors() -> None:
    dealer = InsecureLocalDealer(get_protocol("additive").make_scheme(3, 2))
    spec = noise_spec(GAUSS, (5,))
    dealer.noise_share(0, (1, 0), spec)
    with pytest.raises(DealerError, match="asked twice"):
        dealer.noise_share(0, (1, 0), spec)
    with pytest.raises(DealerError, match="different spec"):
        dealer.noise_share(1, (1, 0), {**spec, "epsilon": 2.0})
    with pytest.raises(DealerError, match="bad noise spec"):
        dealer.noise_share(0, (1, 1), {**spec, "mechanism": "pickle"})
    with pytest.raises(DealerError, match="bad noise spec"):
        dealer.noise_share(0, (1, 2), {**spec, "shape": [1 << 23]})
    with pytest.raises(DealerError, match="noise key"):
        dealer.noise_share(0, (-1, 0), spec)  # type: ignore[arg-type]
    dealer.noise_share(2, (2, 0), spec)  # a newer run drops the stale draw of run 1
    assert list(dealer._noise) == [(2, 0)]
    # the spec is plain JSON, and sampling from it is deterministic in the dealer's PRG
    assert json.loads(json.dumps(spec)) == spec
    a = sample_noise(spec, Prg(bytes(16)))
    assert np.array_equal(a, sample_noise(spec, Prg(bytes(16)))) and a.shape == (5,)


def test_dealer_noise_needs_a_noise_dealer() -> None:
    local, _ = parties("additive", dealer_noise=False)
    with pytest.raises(PartyFailedError, match="does not deal noise shares"):
        local.run(zeros_release, GAUSS, "dealer")


# ---- accounting: charge before reveal, refusal reveals nothing -----------------------------------


def ledger_private(
    root: Path, budgets: Mapping[str, tuple[float, float]]
) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "dp_ledger": {
                "directory": str(root / name),
                "dataset": f"patients-{name}",
                "budget": {"epsilon": eps, "delta": delta},
            },
            "count": np.array([10 + i], dtype=np.int64),
        }
        for i, (name, (eps, delta)) in enumerate(budgets.items())
    }


COUNT = DiscreteLaplaceMechanism(epsilon=1.0, sensitivity=1.0, frac_bits=0)


def count_release(ctx: PartyContext, mech: Any = COUNT, noise: str = "distributed") -> Any:
    parts = [
        ctx.input(p, ctx.private["count"] if ctx.me == p else None, kind="int") for p in ctx.parties
    ]
    return dp_reveal(ctx, ctx.sum(parts), mech, noise=noise, label="patients")


def releases(root: Path, name: str) -> list[str]:
    return [r.label for r in Ledger.open(root / name, f"patients-{name}").releases]


@pytest.fixture
def revealed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every party that runs `PartyContext.reveal`."""
    calls: list[str] = []
    original = PartyContext.reveal

    def spy(self: PartyContext, x: Any, to: Any = None) -> Any:
        calls.append(self.me)
        return original(self, x, to)

    monkeypatch.setattr(PartyContext, "reveal", spy)
    return calls


def test_release_charges_every_ledger_then_refuses_without_revealing(
    tmp_path: Path, revealed: list[str]
) -> None:
    budgets = {"alice": (2.5, 1e-6), "bob": (2.5, 1e-6), "carol": (1.5, 1e-6)}
    local, _ = parties("additive", private=ledger_private(tmp_path, budgets))
    out = outputs(local, count_release)
    assert isinstance(out["alice"], np.ndarray) and out["alice"].dtype == np.int64
    assert sorted(revealed) == sorted(NAMES)
    for name in NAMES:
        assert releases(tmp_path, name) == ["patients"]
    revealed.clear()
    # carol has 0.5 left: she refuses, the run aborts everywhere, nothing is revealed or spent
    with pytest.raises(PartyFailedError) as info:
        local.run(count_release)
    assert info.value.party == "carol" and "BudgetExceededError" in info.value.cause
    assert info.value.operation.startswith("dp.charge")
    assert revealed == []
    for name in NAMES:
        assert releases(tmp_path, name) == ["patients"]


def test_status_and_restart_keep_the_budget(tmp_path: Path) -> None:
    budgets = dict.fromkeys(NAMES, (2.0, 1e-6))
    private = ledger_private(tmp_path, budgets)

    def program(ctx: PartyContext) -> Any:
        count_release(ctx)
        return ledger_status(ctx)

    status = outputs(parties("additive", private=private)[0], program)["bob"]
    assert status["spent_epsilon"] == pytest.approx(1.0) and status["releases"] == 1
    # a new set of parties (a restart) reads the same ledgers
    status = outputs(parties("additive", private=private)[0], program)["bob"]
    assert status["remaining_epsilon"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(PartyFailedError, match="BudgetExceededError"):
        parties("additive", private=private)[0].run(count_release)


def two_counts(ctx: PartyContext, labels: tuple[str, ...] = ("first", "second")) -> Any:
    """Releases of one run, planned (and charged) together before any is revealed."""
    parts = [
        ctx.input(p, ctx.private["count"] if ctx.me == p else None, kind="int") for p in ctx.parties
    ]
    total = ctx.sum(parts)
    plan = dp_plan(ctx, [PlannedRelease(COUNT, (1,), label=label) for label in labels])
    return tuple(plan.reveal(total) for _ in labels)


def test_a_run_whose_second_release_exceeds_a_budget_reveals_and_charges_nothing(
    tmp_path: Path, revealed: list[str]
) -> None:
    # carol can pay for one release (epsilon 1) but not for two: the first must not come out
    budgets = {"alice": (3.0, 1e-6), "bob": (3.0, 1e-6), "carol": (1.5, 1e-6)}
    local, _ = parties("additive", private=ledger_private(tmp_path, budgets))
    with pytest.raises(PartyFailedError) as info:
        local.run(two_counts)
    assert info.value.party == "carol" and "BudgetExceededError" in info.value.cause
    assert "the 2 releases of this run ('first', 'second') cost together" in info.value.cause
    assert info.value.operation.startswith("dp.charge")
    assert revealed == []
    for name in NAMES:
        assert releases(tmp_path, name) == []  # no ledger was charged, not even the first
    # a run that fits everywhere charges both, in order, and reveals both
    out = outputs(local, two_counts, ("one",))
    assert all(len(out[n]) == 1 for n in NAMES) and sorted(revealed) == sorted(NAMES)
    revealed.clear()
    with pytest.raises(PartyFailedError, match="BudgetExceededError"):
        local.run(two_counts)  # carol has 0.5 left
    assert revealed == [] and releases(tmp_path, "alice") == ["one"]
    roomy = parties(
        "additive", private=ledger_private(tmp_path / "roomy", dict.fromkeys(NAMES, (3.0, 1e-6)))
    )
    out = outputs(roomy[0], two_counts)
    assert all(len(out[n]) == 2 and out[n][0].shape == (1,) for n in NAMES)
    assert all(releases(tmp_path / "roomy", n) == ["first", "second"] for n in NAMES)


def test_a_plan_is_revealed_as_planned() -> None:
    def too_many(ctx: PartyContext) -> Any:
        x = ctx.input(
            "alice", np.array([5], dtype=np.int64) if ctx.me == "alice" else None, kind="int"
        )
        plan = dp_plan(ctx, [PlannedRelease(COUNT, (1,))], accountant=None)
        plan.reveal(x)
        return plan.reveal(x)

    def wrong_shape(ctx: PartyContext) -> Any:
        x = ctx.input(
            "alice", np.zeros(2, dtype=np.int64) if ctx.me == "alice" else None, kind="int"
        )
        return dp_plan(ctx, [PlannedRelease(COUNT, (1,))], accountant=None).reveal(x)

    def different_plans(ctx: PartyContext) -> Any:
        labels = ["a"] if ctx.me == "bob" else ["a", "b"]
        return dp_plan(ctx, [PlannedRelease(COUNT, (1,), label=x) for x in labels], accountant=None)

    local, _ = parties("additive")
    with pytest.raises(PartyFailedError, match="all 1 planned releases were made"):
        local.run(too_many)
    with pytest.raises(PartyFailedError, match=r"planned for shape \(1,\)"):
        local.run(wrong_shape)
    with pytest.raises(PartyFailedError, match="different release parameters"):
        local.run(different_plans)


def test_tampered_ledger_aborts_before_anything_is_revealed(
    tmp_path: Path, revealed: list[str]
) -> None:
    private = ledger_private(tmp_path, dict.fromkeys(NAMES, (3.0, 1e-6)))
    local, _ = parties("additive", private=private)
    local.run(count_release)
    path = Ledger.paths(tmp_path / "bob", "patients-bob")[0]
    path.write_text(path.read_text().replace('"epsilon":1.0', '"epsilon":0.1'))
    revealed.clear()
    with pytest.raises(PartyFailedError, match="LedgerTamperedError") as info:
        local.run(count_release)
    assert info.value.party == "bob" and revealed == []
    assert releases(tmp_path, "alice") == ["patients"]  # the others did not spend


def test_some_party_must_hold_a_ledger(revealed: list[str]) -> None:
    private = {n: {"count": np.array([3], dtype=np.int64)} for n in NAMES}
    local, _ = parties("additive", private=private)
    with pytest.raises(PartyFailedError, match="no party holds a privacy ledger"):
        local.run(count_release)
    assert revealed == []


def test_in_process_accountants_and_dealer_noise(tmp_path: Path) -> None:
    accountants = {n: Accountant(PrivacyBudget(1.5, 1e-6)) for n in NAMES[:2]}

    def program(ctx: PartyContext) -> Any:
        x = ctx.input(
            "alice", np.array([5], dtype=np.int64) if ctx.me == "alice" else None, kind="int"
        )
        return dp_reveal(ctx, x, COUNT, noise="dealer", accountant=accountants)

    local, _ = parties("additive")
    local.run(program)
    assert all(len(a.releases) == 1 for a in accountants.values())
    assert accountants["alice"].releases[0].params["noise"] == "dealer"
    with pytest.raises(PartyFailedError, match="BudgetExceededError"):
        local.run(program)


def test_parties_must_agree_on_the_release() -> None:
    def program(ctx: PartyContext) -> Any:
        x = ctx.input(
            "alice", np.array([5], dtype=np.int64) if ctx.me == "alice" else None, kind="int"
        )
        eps = 2.0 if ctx.me == "bob" else 1.0
        mech = DiscreteLaplaceMechanism(epsilon=eps, sensitivity=1.0, frac_bits=0)
        return dp_reveal(ctx, x, mech, accountant=None)

    local, _ = parties("additive")
    with pytest.raises(PartyFailedError, match="different release parameters"):
        local.run(program)


def test_bad_release_input() -> None:
    with pytest.raises(TypeError, match="discrete mechanism"):
        plan_release(
            GaussianMechanism(epsilon=1.0, delta=1e-6, sensitivity=1.0),  # type: ignore[arg-type]
            shape=(3,),
            frac_bits=0,
            n_parties=3,
            max_colluding=1,
        )
    with pytest.raises(InvalidPrivacyParameterError, match="frac_bits=16"):
        plan_release(GAUSS, shape=(3,), frac_bits=16, n_parties=3, max_colluding=1)
    with pytest.raises(InvalidPrivacyParameterError, match="at least one party must be honest"):
        plan_release(GAUSS, shape=(3,), frac_bits=0, n_parties=3, max_colluding=3)
    with pytest.raises(InvalidPrivacyParameterError, match="dim=4"):
        plan_release(
            VectorLaplaceMechanism(epsilon=1, sensitivity=1, dim=4),
            shape=(3,),
            frac_bits=16,
            n_parties=3,
            max_colluding=1,
        )
    with pytest.raises(InvalidPrivacyParameterError, match="failure_delta"):
        plan_release(
            GAUSS, shape=(3,), frac_bits=0, n_parties=3, max_colluding=1, failure_delta=1.5
        )
    plan = plan_release(
        GAUSS, shape=(3,), frac_bits=0, n_parties=3, max_colluding=1, failure_delta=1e-7
    )
    assert plan.cost.delta == pytest.approx(1e-6 + 1e-7) and plan.cost.rho is None

    def shared_accountant(ctx: PartyContext) -> Any:
        x = ctx.input(
            "alice", np.array([5], dtype=np.int64) if ctx.me == "alice" else None, kind="int"
        )
        return dp_reveal(ctx, x, COUNT, accountant=Accountant(PrivacyBudget(1.0)))  # type: ignore[arg-type]

    local, _ = parties("additive")
    with pytest.raises(PartyFailedError, match="shared by all parties"):
        local.run(shared_accountant)


# ---- model release -------------------------------------------------------------------------------

R = 2.0
DP_CONFIG = LogisticRegression(
    learning_rate=max_learning_rate(clip_norm=R, l2=0.05),
    epochs=8,
    l2=0.05,
    sigmoid="piecewise",
    standardize=False,
    penalize_intercept=True,
    feature_limit=R,
)


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(seed)  # test data only (numpy.random is banned in mpc/)
    x = gen.normal(0.0, 0.7, (n, 3))
    y = (gen.random(n) < 1.0 / (1.0 + np.exp(-2.0 * x[:, 0] + x[:, 1]))).astype(np.int64)
    return prepare_rows(x, clip_norm=R), y


def fit_program(ctx: PartyContext, config: LogisticRegression, release: bool) -> Any:
    data = config.share_horizontal(ctx, ctx.private["x"], ctx.private["y"])
    model = config.fit(ctx, data)
    raw = model.reveal()  # test only: the un-noised weights, to check the analysis
    noisy = None
    if release:
        noisy = release_model(
            ctx, model, epsilon=1.0, clip_norm=R, noise="dealer", accountant=None, to="alice"
        )
    return raw, noisy


def secure_fit(x: np.ndarray, y: np.ndarray, release: bool = False) -> Any:
    split = np.array_split(np.arange(len(y)), 3)
    private = {n: {"x": x[s], "y": y[s]} for n, s in zip(NAMES, split, strict=True)}
    local, _ = parties("additive", private=private)
    return outputs(local, fit_program, DP_CONFIG, release)


def weights(model: Any) -> np.ndarray:
    return np.r_[model.coef, model.intercept]


def test_secure_fit_matches_the_plain_recipe_within_the_slack_and_release_adds_noise() -> None:
    x, y = synthetic(60, 1)
    out = secure_fit(x, y, release=True)
    raw, noisy = out["alice"]
    assert out["bob"][1] is None
    privacy = model_privacy(DP_CONFIG, n_rows=60, n_features=3, clip_norm=R)
    plain = train_plain(x, y, DP_CONFIG, sigmoid_method="piecewise")
    drift = float(np.linalg.norm(weights(raw) - weights(plain)))
    assert drift <= privacy.sensitivity.fixed_point / 2.0
    assert not np.allclose(weights(noisy), weights(raw))
    assert privacy.sensitivity.steps == 8 and privacy.truncation_delta < 1e-5


def test_secure_fits_on_neighbouring_data_stay_within_the_sensitivity_bound() -> None:
    """The bound of the secure recipe (encoded step, fixed-point slack) holds for secure fits on
    neighbouring data sets, with replaced rows built to move the weights as much as possible."""
    n = 48
    x, y = synthetic(n, 2)
    privacy = model_privacy(DP_CONFIG, n_rows=n, n_features=3, clip_norm=R)
    base = weights(secure_fit(x, y)["alice"][0])
    distances = []
    f = math.sqrt((R - 1e-3) ** 2 - 1.0)
    for k, direction in enumerate(([1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, 0, -1])):
        x2, y2 = x.copy(), y.copy()
        x2[k] = f * np.asarray(direction, dtype=np.float64)
        y2[k] = 1 - y[k] if k % 2 else int(base[:3] @ x2[k] + base[3] < 0)  # confidently wrong
        distances.append(float(np.linalg.norm(weights(secure_fit(x2, y2)["alice"][0]) - base)))
    assert max(distances) <= privacy.total
    assert max(distances) >= 0.25 * privacy.sensitivity.iterate  # the bound is not vacuous


def test_model_privacy_refuses_what_it_does_not_cover() -> None:
    def check(match: str, **changes: Any) -> None:
        config = LogisticRegression(**{**DP_CONFIG.__dict__, **changes})
        with pytest.raises(InvalidPrivacyParameterError, match=match):
            model_privacy(config, n_rows=100, n_features=3, clip_norm=R)

    check("l2", l2=0.0)
    check("penalize_intercept=True", penalize_intercept=False)
    check("batch_size=None", batch_size=10)
    check("not covered", sigmoid="poly")
    check("not covered", sigmoid="accurate")
    check("standardize=False", standardize=True)
    check("learning_rate .* too large", learning_rate=5.0)
    with pytest.raises(MissingSensitivityError, match="clip_norm"):
        model_privacy(DP_CONFIG, n_rows=100, n_features=3, clip_norm=None)
    with pytest.raises(MissingSensitivityError, match="clip_norm"):
        prepare_rows(np.ones((2, 2)), clip_norm=None)


def test_analysis_uses_the_encoded_constants_and_counts_truncation_failures() -> None:
    config = LogisticRegression(
        **{
            **DP_CONFIG.__dict__,
            "epochs": 10,
            "l2": 0.03,
            "learning_rate": max_learning_rate(clip_norm=R, l2=0.03),
        }
    )
    privacy = model_privacy(config, n_rows=455, n_features=30, clip_norm=R)
    grad, decay = config.update_coefficients(455, 31)
    assert privacy.learning_rate == pytest.approx(grad * 455)
    assert privacy.l2 == pytest.approx(decay[-1] / privacy.learning_rate)  # intercept penalised
    assert privacy.learning_rate != config.learning_rate  # the rounding is accounted for
    assert 1e-5 < privacy.truncation_delta < 1e-4  # the breast-cancer recipe: about 4e-5
    twice = model_privacy(
        LogisticRegression(**{**config.__dict__, "epochs": 20}),
        n_rows=455,
        n_features=30,
        clip_norm=R,
    )
    assert twice.truncation_delta == pytest.approx(2 * privacy.truncation_delta, rel=0.05)
    field = model_privacy(config, n_rows=455, n_features=30, clip_norm=R, modulus=(1 << 61) - 1)
    assert field.truncation_delta == pytest.approx(8 * privacy.truncation_delta, rel=1e-6)
    # The ring protocols truncate exactly (no failure within the range fit checks): no δ.
    exact = model_privacy(config, n_rows=455, n_features=30, clip_norm=R, exact_truncation=True)
    assert exact.truncation_delta == 0.0 and exact.total == privacy.total
    clamped = model_privacy(
        LogisticRegression(
            **{
                **config.__dict__,
                "sigmoid": "accurate-clamped",
                "learning_rate": max_learning_rate(clip_norm=R, l2=0.03, sigmoid="accurate"),
            }
        ),
        n_rows=455,
        n_features=30,
        clip_norm=R,
    )
    assert clamped.sensitivity.fixed_point > privacy.sensitivity.fixed_point  # 7e-4 error


def test_prepare_rows_clips_after_encoding() -> None:
    x = np.array([[3.0, 4.0], [0.1, 0.2], [1e3, -1e3]])
    rows = prepare_rows(x, clip_norm=2.0, center=[0.0, 0.0], scale=[1.0, 2.0])
    fp = FixedPoint()
    norms = np.sqrt(np.sum(fp.decode(fp.encode(rows)) ** 2, axis=1) + 1.0)
    assert np.all(norms <= 2.0) and rows[1] == pytest.approx([0.1, 0.1])


def test_public_batch_order_is_a_prg_permutation() -> None:
    order = public_permutation(50, ("t", 1))
    assert sorted(order.tolist()) == list(range(50))
    assert np.array_equal(order, public_permutation(50, ("t", 1)))
    assert not np.array_equal(order, public_permutation(50, ("t", 2)))
    config = LogisticRegression(batch_size=16, shuffle_seed=7)
    expected = public_permutation(50, ("mpc.ml.logreg.batches", 7, 1))
    assert np.array_equal(np.concatenate(config.batches(50, 1)), expected)
    assert sorted(np.concatenate(config.batches(50, 2)).tolist()) == list(range(50))


# ---- Ray: the dealer actor deals noise shares ----------------------------------------------------


@pytest.mark.usefixtures("ray_local")
def test_ray_trusted_dealer_deals_noise_shares(tmp_path: Path) -> None:
    from mpc.session import Session

    private = ledger_private(tmp_path, dict.fromkeys(NAMES, (5.0, 1e-6)))
    with Session(list(NAMES), private=private, timeout=30) as session:
        result = session.run(count_release, COUNT, "dealer")
        stats = session.dealer_stats()
    assert result["alice"] == result["carol"] and result["alice"].shape == (1,)
    assert stats["noise_draws"] == 1
    assert all(releases(tmp_path, n) == ["patients"] for n in NAMES)


# ---- scenarios (in-process smoke tests) ----------------------------------------------------------

#: The scenarios' ledgers go to the test's folder, under the system's temporary folder.
TEMPORARY = "--allow-temporary-ledger"


def test_dp_model_release_scenario_spends_and_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = load_scenario("dp_model_release")
    args = [*LOCAL, "--rows", "150", "--epochs", "4", "--ledger", str(tmp_path), TEMPORARY]
    args += ["--budget-epsilon", "1.5"]
    assert scenario.run(args) == 0
    out = capsys.readouterr().out
    assert "released model, epsilon=1" in out and "non-private secure model" in out
    assert "epsilon left 0.5" in out and out.rstrip().endswith("OK")
    assert scenario.run([*args, "--no-compare"]) == scenario.REFUSED  # 1 + 1 > 1.5
    out = capsys.readouterr().out
    assert "REFUSED" in out and "nothing was revealed" in out
    status = Ledger.open(tmp_path / "north", "breast-cancer-north")
    assert len(status.releases) == 1
    assert scenario.run([*LOCAL, "--parties", "9"]) == 2


def test_dp_joint_statistics_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = load_scenario("dp_joint_statistics")
    args = [*LOCAL, "--ledger", str(tmp_path), TEMPORARY, "--budget-epsilon", "1.5"]
    assert scenario.run(args) == 0
    out = capsys.readouterr().out
    assert "cholesterol 240 or more" in out and out.rstrip().endswith("OK")
    assert "2 release(s)" in out
    assert scenario.run([*args, "--noise", "distributed"]) == scenario.REFUSED
    assert all(len(Ledger.open(tmp_path / n, f"patients-{n}").releases) == 2 for n in HOSPITALS)


HOSPITALS = ("north", "south", "east")


def test_dp_joint_statistics_scenario_is_all_or_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The histogram (epsilon 0.5) fits a budget of 0.7 but the pair (0.95) does not: the run
    reveals nothing and no hospital's ledger is charged, not even for the histogram."""
    scenario = load_scenario("dp_joint_statistics")
    args = [*LOCAL, "--ledger", str(tmp_path), TEMPORARY, "--budget-epsilon", "0.7"]
    assert scenario.run(args) == scenario.REFUSED
    out = capsys.readouterr().out
    assert "REFUSED" in out and "nothing was revealed and nothing was charged" in out
    assert "cholesterol 240 or more" not in out
    for name in HOSPITALS:
        if Ledger.paths(tmp_path / name, f"patients-{name}")[0].exists():
            assert Ledger.open(tmp_path / name, f"patients-{name}").releases == ()
