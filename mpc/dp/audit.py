"""Privacy audit of released models: a membership-inference attack and empirical ε lower bounds.

Responsibility
--------------
Measure, rather than prove, how much a released logistic-regression model reveals about one
training row, and check the measurement against the claimed ε:

* :func:`clopper_pearson_upper` / :func:`clopper_pearson_lower`: exact binomial confidence
  bounds (Clopper & Pearson, Biometrika 1934), computed with numpy only (bisection on the
  binomial tail, log-space sums);
* :func:`epsilon_lower_bound`: the empirical lower bound of Jagielski, Ullman & Oprea, "Auditing
  Differentially Private Machine Learning: How Private is Private SGD?", NeurIPS 2020, and Nasr,
  Song, Thakurta, Papernot & Carlini, "Adversary Instantiation", IEEE S&P 2021: an
  (ε, δ)-DP mechanism forces every membership test to satisfy ``FPR + e^ε FNR >= 1 - δ`` and
  ``FNR + e^ε FPR >= 1 - δ``, so with upper confidence bounds on the two error rates
  ``ε >= max(log((1 - δ - FNR_up)/FPR_up), log((1 - δ - FPR_up)/FNR_up))`` holds with
  confidence 1 - α (α/2 per rate);
* :func:`audit_scores`: the loss-threshold attack (Yeom, Giacomelli, Fredrikson & Jha, "Privacy
  Risk in Machine Learning", CSF 2018): say "member" when the released model's loss on the
  target row is below a threshold.  The threshold is chosen on one half of the trials and the
  error rates are counted on the other half, so the confidence bounds stay valid; the attack
  advantage is TPR - FPR on the evaluation half;
* :func:`make_canary` and :func:`audit_model_release`: the experiment.  Neighbouring data sets
  D_in and D_out (replace-one: the same rows except one) differ in a *canary* row placed where it
  moves the weights most (norm R, mislabelled against the model's main direction, its two
  versions apart along the data's flattest direction, where only the L2 penalty resists), the
  model is trained on each and released with the mechanism under audit many times, and the
  attack's scores are audited for each ε of a sweep, with the accuracy of releases of the
  model trained on the real data;
* :func:`secure_check` (on :func:`secure_weights`): a few genuinely secure runs (in-process
  parties, dealer noise) of the same release on D_in, to check that the secure pipeline
  releases what the sweep simulates (its attack scores fall inside the simulated distribution;
  its un-noised weights are within the fixed-point drift the sensitivity analysis allows).

The stronger attack, a worst-case pair and the likelihood-ratio test, is ``mpc.dp.audit_pair``.

The sweep trains in float64 (``mpc.ml.train_plain``, the same recipe and sigmoid as the secure
fit) and adds noise from the *same* mechanism objects, calibrated to the *same* sensitivity (with
the fixed-point slack) as :func:`mpc.dp.model_release.release_model`: gradient descent is
deterministic, so the un-noised weights of D_in and D_out are computed once and each trial is one
fresh noise draw (from the crypto PRG).  This is what makes thousands of trials cheap; the
secure runs check that it is faithful.  The truncation-failure δ of the secure release (about
4e-5) is not simulated: failures are too rare to show in any feasible number of trials.

A lower bound far below ε does not show that the mechanism is tight or loose, only what this
attack achieves; a lower bound above ε shows, with confidence 1 - α, that the release does not
have the claimed guarantee (mutation tests use this: half the noise shows a higher advantage, no
noise a lower bound far above ε).

Security model
--------------
An offline measurement on data the auditor holds in the clear (public example data); nothing
here runs inside the parties except :func:`secure_check`, which uses an insecure in-process dealer
on that same public data and reveals un-noised weights for comparison, which a real deployment
never does.  Noise comes from ``mpc.rng.Prg`` (no NumPy random generator).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from mpc.dp.bisection import bisect
from mpc.dp.mechanisms import Mechanism
from mpc.dp.model_release import ModelPrivacy, model_release_plan, release_model
from mpc.encoding import FixedPoint
from mpc.ml.logreg import LinearModel, LogisticRegression, train_plain
from mpc.rng import Prg

__all__ = [
    "AuditPoint",
    "Canary",
    "SecureCheck",
    "audit_model_release",
    "audit_scores",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "epsilon_lower_bound",
    "logistic_loss",
    "make_canary",
    "secure_check",
    "secure_release_accuracy",
    "secure_weights",
]

FloatArray = npt.NDArray[np.float64]

#: At most this many candidate thresholds (quantiles of the calibration scores) are tried.
MAX_THRESHOLDS = 400


# ---- Clopper-Pearson ---------------------------------------------------------------------------


def _check_counts(successes: int, trials: int) -> None:
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes}/{trials}")


def _log_binomial_pmf(successes: int, trials: int, p: float) -> FloatArray:
    """log P[X = i] for i = 0..successes, X ~ Binomial(trials, p), 0 < p < 1."""
    i = np.arange(1, successes + 1, dtype=np.float64)
    log_choose = np.concatenate([[0.0], np.cumsum(np.log((trials - i + 1.0) / i))])
    k = np.arange(successes + 1, dtype=np.float64)
    return np.asarray(log_choose + k * math.log(p) + (trials - k) * math.log1p(-p))


def _tail_le(successes: int, trials: int, p: float) -> float:
    """P[X <= successes] for X ~ Binomial(trials, p)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if successes >= trials else 0.0
    logs = _log_binomial_pmf(successes, trials, p)
    top = float(np.max(logs))
    return min(1.0, math.exp(top) * float(np.sum(np.exp(logs - top))))


def _wilson_upper(successes: Any, trials: int, alpha: float) -> FloatArray:
    """Closed-form upper bounds close to Clopper-Pearson's, elementwise (to pick thresholds
    quickly)."""
    z = _normal_quantile(1.0 - alpha)
    p = np.asarray(successes, dtype=np.float64) / trials
    centre = p + z * z / (2 * trials)
    spread = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return np.asarray(np.minimum(1.0, (centre + spread) / (1 + z * z / trials)))


def _normal_quantile(q: float) -> float:
    _, hi = bisect(lambda x: 0.5 * math.erfc(-x / math.sqrt(2.0)) < q, -12.0, 12.0, 80)
    return hi


def clopper_pearson_upper(successes: int, trials: int, alpha: float) -> float:
    """One-sided upper confidence bound (level 1 - alpha) on a binomial proportion: the p with
    P[Bin(trials, p) <= successes] = alpha (1 if successes == trials)."""
    _check_counts(successes, trials)
    if successes == trials:
        return 1.0
    _, hi = bisect(lambda p: _tail_le(successes, trials, p) > alpha, successes / trials, 1.0, 80)
    return hi


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided lower confidence bound (level 1 - alpha): 1 - upper bound of the failures."""
    _check_counts(successes, trials)
    return 1.0 - clopper_pearson_upper(trials - successes, trials, alpha)


def epsilon_lower_bound(
    false_positives: int,
    negatives: int,
    false_negatives: int,
    positives: int,
    *,
    delta: float = 0.0,
    alpha: float = 0.05,
) -> float:
    """Empirical ε lower bound (confidence 1 - alpha) from a membership test's error counts:
    ``max(0, log((1 - δ - FNR_up)/FPR_up), log((1 - δ - FPR_up)/FNR_up))`` with Clopper-Pearson
    upper bounds at alpha/2 each (module docstring)."""
    fpr = clopper_pearson_upper(false_positives, negatives, alpha / 2.0)
    fnr = clopper_pearson_upper(false_negatives, positives, alpha / 2.0)
    best = 0.0
    for num, den in ((1.0 - delta - fnr, fpr), (1.0 - delta - fpr, fnr)):
        if num > 0.0 and den > 0.0:
            best = max(best, math.log(num / den))
    return best


def _quick_epsilons(
    false_positives: Any,
    negatives: int,
    false_negatives: Any,
    positives: int,
    delta: float,
    alpha: float,
) -> FloatArray:
    """epsilon_lower_bound with Wilson instead of Clopper-Pearson bounds, elementwise over
    arrays of error counts (threshold choice)."""
    fpr = _wilson_upper(false_positives, negatives, alpha / 2.0)
    fnr = _wilson_upper(false_negatives, positives, alpha / 2.0)
    best = np.zeros(fpr.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        for num, den in ((1.0 - delta - fnr, fpr), (1.0 - delta - fpr, fnr)):
            ok = (num > 0.0) & (den > 0.0)
            best = np.where(ok, np.maximum(best, np.log(np.where(ok, num / den, 1.0))), best)
    return np.asarray(best)


# ---- the attack --------------------------------------------------------------------------------


def logistic_loss(weights: FloatArray, row: FloatArray, label: int) -> FloatArray:
    """The logistic loss of each weight vector (rows of `weights`, intercept last) on one
    example (`row` without its intercept)."""
    w = np.atleast_2d(weights)
    margin = (w[:, :-1] @ row + w[:, -1]) * (2.0 * label - 1.0)
    return np.asarray(np.logaddexp(0.0, -margin), dtype=np.float64)


@dataclass(frozen=True)
class AttackOutcome:
    """The loss-threshold attack on one pair of score samples (evaluation half)."""

    threshold: float
    fpr: float
    fnr: float
    advantage: float
    epsilon_lower: float
    evaluated: int


def _errors(scores_in: FloatArray, scores_out: FloatArray, tau: float) -> tuple[int, int]:
    """(false positives, false negatives) of 'member iff score <= tau'."""
    return int(np.sum(scores_out <= tau)), int(np.sum(scores_in > tau))


def _candidates(scores: FloatArray) -> FloatArray:
    values = np.unique(scores)
    if values.size > MAX_THRESHOLDS:
        values = np.quantile(values, np.linspace(0.0, 1.0, MAX_THRESHOLDS))
    return np.asarray(values, dtype=np.float64)


def audit_scores(
    scores_in: Any, scores_out: Any, *, delta: float = 0.0, alpha: float = 0.05
) -> AttackOutcome:
    """Threshold attack, 'member iff score <= threshold': the threshold (any score of the first
    half of each sample) that maximises the ε lower bound (with Wilson bounds there, for
    speed), and the one that maximises TPR - FPR;
    their error rates, ε lower bound (Clopper-Pearson) and advantage counted on the second
    halves (so the confidence bounds are valid)."""
    s_in = np.asarray(scores_in, dtype=np.float64)
    s_out = np.asarray(scores_out, dtype=np.float64)
    if s_in.size < 4 or s_out.size < 4:
        raise ValueError("need at least 4 trials in each world")
    half_in, half_out = s_in.size // 2, s_out.size // 2
    cal_in, ev_in = s_in[:half_in], s_in[half_in:]
    cal_out, ev_out = s_out[:half_out], s_out[half_out:]
    taus = _candidates(np.concatenate([cal_in, cal_out]))
    fps = np.searchsorted(np.sort(cal_out), taus, side="right")
    fns = cal_in.size - np.searchsorted(np.sort(cal_in), taus, side="right")
    eps = _quick_epsilons(fps, cal_out.size, fns, cal_in.size, delta, alpha)
    adv = (1.0 - fns / cal_in.size) - fps / cal_out.size
    tau_eps, tau_adv = float(taus[np.argmax(eps)]), float(taus[np.argmax(adv)])
    fp, fn = _errors(ev_in, ev_out, tau_eps)
    eps_lb = epsilon_lower_bound(fp, ev_out.size, fn, ev_in.size, delta=delta, alpha=alpha)
    fp_a, fn_a = _errors(ev_in, ev_out, tau_adv)
    advantage = (1.0 - fn_a / ev_in.size) - fp_a / ev_out.size
    return AttackOutcome(
        tau_eps, fp / ev_out.size, fn / ev_in.size, advantage, eps_lb, ev_in.size + ev_out.size
    )


# ---- the experiment ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Canary:
    """Neighbouring training sets that differ in row `index`: D_in holds (x_in, label), D_out
    holds (x_out, label) there.  The attack targets (x_in, label)."""

    x_in: FloatArray
    x_out: FloatArray
    label: int
    index: int
    distance: float  # ||w(D_in) - w(D_out)|| of the plain recipe

    def datasets(self, x: FloatArray, y: Any) -> tuple[FloatArray, Any, FloatArray, Any]:
        x_in, x_out = x.copy(), x.copy()
        y_in, y_out = np.array(y, copy=True), np.array(y, copy=True)
        x_in[self.index], x_out[self.index] = self.x_in, self.x_out
        y_in[self.index] = y_out[self.index] = self.label
        return x_in, y_in, x_out, y_out


def _weights(model: LinearModel) -> FloatArray:
    return np.asarray(np.r_[model.coef, model.intercept], dtype=np.float64)


def _train(x: FloatArray, y: Any, config: LogisticRegression) -> FloatArray:
    return _weights(train_plain(x, y, config, sigmoid_method=_plain_sigmoid(config)))


def _plain_sigmoid(config: LogisticRegression) -> str:
    return "piecewise" if config.sigmoid == "piecewise" else "exact"


def make_canary(
    x: Any,
    y: Any,
    config: LogisticRegression,
    clip_norm: float,
    *,
    index: int = 0,
    angles: Sequence[float] = (0.5, 0.7, 0.85, 0.95, 1.0),
) -> Canary:
    """The canary pair that moves the plain recipe's weights most among a few candidates.

    With v the direction of the model trained on (x, y) and u the direction of least data
    variance orthogonal to v: x_in = f (cos a v + sin a u), x_out = f (cos a v - sin a u),
    f = sqrt(R^2 - 1) (full norm with the intercept), both labelled against the model's
    prediction, so both residuals stay near 1 and the two gradients differ by 2 f sin a u."""
    arr = np.asarray(x, dtype=np.float64)
    w0 = _train(arr, y, config)
    coef = w0[:-1]
    v = coef / max(float(np.linalg.norm(coef)), 1e-12)
    centered = arr - arr.mean(axis=0)
    project = np.eye(arr.shape[1]) - np.outer(v, v)
    values, vectors = np.linalg.eigh(project @ (centered.T @ centered) @ project)
    order = [i for i in np.argsort(values) if abs(float(vectors[:, i] @ v)) < 0.5]
    u = vectors[:, order[0]] if order else project[:, 0] / np.linalg.norm(project[:, 0])
    f = math.sqrt((clip_norm * (1.0 - 1e-6)) ** 2 - 1.0) * (1.0 - 1e-6)
    best: Canary | None = None
    for sin_a in angles:
        cos_a = math.sqrt(max(0.0, 1.0 - sin_a * sin_a))
        for sign in (1.0, -1.0):
            x_in = f * (sign * cos_a * v + sin_a * u)
            x_out = f * (sign * cos_a * v - sin_a * u)
            label = int(float(coef @ x_in + w0[-1]) < 0.0)  # against the model's prediction
            candidate = Canary(x_in, x_out, label, index, 0.0)
            d_in, y_in, d_out, y_out = candidate.datasets(arr, y)
            distance = float(
                np.linalg.norm(_train(d_in, y_in, config) - _train(d_out, y_out, config))
            )
            if best is None or distance > best.distance:
                best = Canary(x_in, x_out, label, index, distance)
    assert best is not None
    return best


@dataclass(frozen=True)
class AuditPoint:
    """One ε of the sweep (``epsilon = inf``: no noise)."""

    epsilon: float
    delta: float
    mechanism: str
    trials: int
    advantage: float
    epsilon_lower: float
    fpr: float
    fnr: float
    accuracy_mean: float
    accuracy_std: float
    noise_scale: float = 1.0

    @property
    def violated(self) -> bool:
        """The empirical lower bound exceeds the claimed ε (the guarantee is refuted)."""
        return self.epsilon_lower > self.epsilon

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["epsilon"] = "inf" if math.isinf(self.epsilon) else self.epsilon
        out["violated"] = self.violated
        return out


def _noise(mechanism: Mechanism, prg: Prg, trials: int, dim: int, frac_bits: int) -> FloatArray:
    """`trials` independent draws of the release noise, in real units, as the secure release
    adds them (int64 ulps of the fixed-point grid)."""
    ulps = mechanism.noise(prg, (trials, dim))
    return np.asarray(ulps, dtype=np.float64) / float(2**frac_bits)


def _accuracy(weights: FloatArray, x: FloatArray, y: Any) -> FloatArray:
    logits = weights[:, :-1] @ x.T + weights[:, -1:]
    return np.asarray(np.mean((logits >= 0.0) == np.asarray(y)[None, :], axis=1))


@dataclass
class ReleaseAudit:
    """The whole sweep: its points, the canary, and the analysis the noise is calibrated to."""

    points: list[AuditPoint]
    canary: Canary
    privacy: ModelPrivacy
    plain_accuracy: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def canary_fraction(self) -> float:
        """||w(D_in) - w(D_out)|| over the sensitivity bound: how close the canary comes."""
        return self.canary.distance / self.privacy.total


def audit_model_release(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    *,
    config: LogisticRegression,
    clip_norm: float,
    epsilons: Sequence[float],
    delta: float = 0.0,
    trials: int = 1000,
    noise_scale: float = 1.0,
    alpha: float = 0.05,
    seed: bytes = b"mpc.dp.audit.v1",
    canary: Canary | None = None,
    fixed_point: FixedPoint | None = None,
) -> ReleaseAudit:
    """Audit the output-perturbation release of `config` (rows already prepared and clipped to
    `clip_norm`) for each ε in `epsilons` (``math.inf``: no noise): `trials` releases per world
    and ε, the loss-threshold attack on the canary, and the test accuracy of releases of the
    model trained on the real rows.  `noise_scale` scales the noise (mutation tests: 0.5 is half
    the required noise, 0 none); the claimed ε stays the one calibrated for."""
    fp = fixed_point or FixedPoint()
    x = np.asarray(x_train, dtype=np.float64)
    xt = np.asarray(x_test, dtype=np.float64)
    n, d = x.shape
    if trials < 4:
        raise ValueError("trials must be at least 4")
    chosen = canary or make_canary(x, y_train, config, clip_norm)
    d_in, y_in, d_out, y_out = chosen.datasets(x, y_train)
    w_in, w_out = _train(d_in, y_in, config), _train(d_out, y_out, config)
    w_real = _train(x, y_train, config)
    root = Prg(bytes(16)).derive(("mpc.dp.audit", seed))
    points = []
    privacy: ModelPrivacy | None = None
    for eps in epsilons:
        if math.isinf(eps):
            zero = np.zeros((trials, d + 1))
            noise_in = noise_out = noise_real = zero
            name, eps_delta = "none", 0.0
        else:
            mechanism, privacy = model_release_plan(
                config,
                n_rows=n,
                n_features=d,
                clip_norm=clip_norm,
                epsilon=eps,
                delta=delta,
                fixed_point=fp,
            )
            name = type(mechanism).__name__
            eps_delta = delta
            draw = root.derive(("eps", repr(eps)))
            noise_in = noise_scale * _noise(
                mechanism, draw.derive("in"), trials, d + 1, fp.frac_bits
            )
            noise_out = noise_scale * _noise(
                mechanism, draw.derive("out"), trials, d + 1, fp.frac_bits
            )
            noise_real = noise_scale * _noise(
                mechanism, draw.derive("real"), min(trials, 500), d + 1, fp.frac_bits
            )
        scores_in = logistic_loss(w_in + noise_in, chosen.x_in, chosen.label)
        scores_out = logistic_loss(w_out + noise_out, chosen.x_in, chosen.label)
        outcome = audit_scores(scores_in, scores_out, delta=eps_delta, alpha=alpha)
        accuracy = _accuracy(w_real + noise_real, xt, y_test)
        points.append(
            AuditPoint(
                float(eps),
                eps_delta,
                name,
                trials,
                outcome.advantage,
                outcome.epsilon_lower,
                outcome.fpr,
                outcome.fnr,
                float(np.mean(accuracy)),
                float(np.std(accuracy)),
                noise_scale,
            )
        )
    if privacy is None:
        privacy = model_release_plan(
            config, n_rows=n, n_features=d, clip_norm=clip_norm, epsilon=1.0, fixed_point=fp
        )[1]
    plain = float(_accuracy(w_real[None, :], xt, y_test)[0])
    return ReleaseAudit(points, chosen, privacy, plain)


# ---- genuinely secure runs ---------------------------------------------------------------------


def _local_parties(
    x: FloatArray, y: Any, parties: Sequence[str], fixed_point: FixedPoint | None = None
) -> Any:
    """In-process parties (additive sharing) holding the rows of (x, y) split by rows, with an
    in-process dealer that also deals noise shares."""
    from mpc.dealers.seeded import InsecureLocalDealer, local_noise_client
    from mpc.parties.local import LocalParties
    from mpc.parties.party import SessionConfig
    from mpc.protocols.registry import get_protocol

    split = np.array_split(np.arange(x.shape[0]), len(parties))
    labels = np.asarray(y)
    private = {p: {"x": x[s], "y": labels[s]} for p, s in zip(parties, split, strict=True)}
    cls = get_protocol("additive")
    t = cls.check_parties(len(parties), None)
    session = SessionConfig(tuple(parties), "additive", t, fixed_point or FixedPoint(), timeout=30)
    dealer = InsecureLocalDealer(cls.make_scheme(len(parties), t))
    local = LocalParties(session, dealer, private)
    for rank, runner in enumerate(local.runners):
        client = local_noise_client(dealer, rank)
        runner.dealer = client
        local.dealer_clients[rank] = client
    return local


def secure_release_accuracy(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    *,
    config: LogisticRegression,
    clip_norm: float,
    epsilon: float,
    delta: float = 0.0,
    runs: int = 5,
    noise: str = "dealer",
    parties: Sequence[str] = ("alice", "bob", "carol"),
) -> list[float]:
    """Test accuracy of `runs` genuinely secure fits and releases (in-process parties, additive
    sharing; `noise` "dealer" or "distributed") of the model on (x_train, y_train).
    ``epsilon = inf``: the non-private secure model, revealed without noise (comparison only)."""
    from mpc.program import PartyContext

    local = _local_parties(np.asarray(x_train, dtype=np.float64), y_train, parties)

    def program(ctx: PartyContext) -> Any:
        data = config.share_horizontal(ctx, ctx.private["x"], ctx.private["y"])
        model = config.fit(ctx, data)
        if math.isinf(epsilon):
            return model.reveal(to=parties[0])
        return release_model(
            ctx,
            model,
            epsilon=epsilon,
            delta=delta,
            clip_norm=clip_norm,
            noise=noise,  # type: ignore[arg-type]
            accountant=None,
            to=parties[0],
        )

    xt = np.asarray(x_test, dtype=np.float64)
    return [float(local.run(program)[parties[0]].output.accuracy(xt, y_test)) for _ in range(runs)]


def secure_weights(
    x: Any,
    y: Any,
    *,
    config: LogisticRegression,
    clip_norm: float,
    epsilon: float,
    delta: float = 0.0,
    runs: int = 3,
    parties: Sequence[str] = ("alice", "bob", "carol"),
) -> tuple[FloatArray, list[FloatArray]]:
    """A genuinely secure fit of (x, y) (in-process parties, additive sharing, rows split among
    `parties`): its un-noised weights (audit only, on public data) and the weights of `runs`
    releases with dealer noise shares (intercept last)."""
    from mpc.program import PartyContext

    local = _local_parties(np.asarray(x, dtype=np.float64), y, parties)

    def program(ctx: PartyContext, raw: bool) -> Any:
        data = config.share_horizontal(ctx, ctx.private["x"], ctx.private["y"])
        model = config.fit(ctx, data)
        if raw:
            return model.reveal(to=parties[0])
        return release_model(
            ctx,
            model,
            epsilon=epsilon,
            delta=delta,
            clip_norm=clip_norm,
            noise="dealer",
            accountant=None,
            to=parties[0],
        )

    first = parties[0]
    raw_weights = _weights(local.run(program, True)[first].output)
    return raw_weights, [_weights(local.run(program, False)[first].output) for _ in range(runs)]


@dataclass(frozen=True)
class SecureCheck:
    """Secure releases of D_in compared with the simulation: each release's attack score and
    whether it lies inside the range of `simulated` simulated scores (a faithful release falls
    outside with probability 2/(simulated + 1)); the un-noised secure weights' distance to the
    plain recipe and the drift the analysis allows."""

    epsilon: float
    scores: list[float]
    inside: list[bool]
    simulated_range: tuple[float, float]
    drift: float
    drift_bound: float

    @property
    def ok(self) -> bool:
        return all(self.inside) and self.drift <= self.drift_bound


def secure_check(
    x_train: Any,
    y_train: Any,
    *,
    config: LogisticRegression,
    clip_norm: float,
    canary: Canary,
    epsilon: float,
    delta: float = 0.0,
    runs: int = 3,
    parties: Sequence[str] = ("alice", "bob", "carol"),
    simulated: int = 20000,
) -> SecureCheck:
    """`runs` genuinely secure fits and releases (in-process parties, additive sharing, dealer
    noise shares) of the model on D_in, split by rows among `parties`; see SecureCheck."""
    x = np.asarray(x_train, dtype=np.float64)
    d_in, y_in, _, _ = canary.datasets(x, y_train)
    n, d = d_in.shape
    raw, released = secure_weights(
        d_in,
        y_in,
        config=config,
        clip_norm=clip_norm,
        epsilon=epsilon,
        delta=delta,
        runs=runs,
        parties=parties,
    )
    plain = _train(d_in, y_in, config)
    drift = float(np.linalg.norm(raw - plain))
    mechanism, privacy = model_release_plan(
        config, n_rows=n, n_features=d, clip_norm=clip_norm, epsilon=epsilon, delta=delta
    )
    sim = plain + _noise(
        mechanism, Prg(bytes(16)).derive("mpc.dp.audit.secure-check"), simulated, d + 1, 16
    )
    sim_scores = logistic_loss(sim, canary.x_in, canary.label)
    low, high = float(np.min(sim_scores)), float(np.max(sim_scores))
    scores = [float(logistic_loss(w, canary.x_in, canary.label)[0]) for w in released]
    return SecureCheck(
        epsilon,
        scores,
        [low <= s <= high for s in scores],
        (low, high),
        drift,
        privacy.sensitivity.fixed_point / 2.0,
    )
