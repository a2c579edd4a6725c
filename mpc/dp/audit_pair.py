"""Worst-case-pair audit of the model release: a crafted neighbouring pair, the likelihood-ratio
test on the released weights, and the empirical ε lower bound with its confidence.

The auditor picks D_in and D_out that differ in one row (:func:`crafted_pair`: rows the auditor
writes, the canary alone in feature space; :func:`data_canary_pair`: one row of the real data
replaced), releases the model of each many times with the release's own mechanism
(:func:`audit_pair`), and bounds ε from the errors of the Neyman-Pearson test between the two
release distributions (Jagielski et al. 2020; Nasr et al. 2021).  Method, figures and limits:
docs/dp.md ("Audit").  Security model: an offline measurement on data the auditor holds in the
clear; noise from ``mpc.rng.Prg``; :func:`secure_pair_check` runs an insecure in-process dealer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mpc.dp.audit import audit_scores, secure_weights
from mpc.dp.bisection import bisect
from mpc.dp.mechanisms import DiscreteGaussianMechanism, Mechanism, VectorLaplaceMechanism
from mpc.dp.model_release import model_release_plan
from mpc.encoding import FixedPoint
from mpc.ml.logreg import LogisticRegression, train_plain
from mpc.rng import Prg

__all__ = [
    "NeighbouringPair",
    "PairAuditPoint",
    "PairCheck",
    "audit_pair",
    "crafted_pair",
    "data_canary_pair",
    "likelihood_ratio",
    "pair_ceiling",
    "secure_pair_check",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Noise draws per chunk (memory: chunk x dim int64 per world).
CHUNK = 20000


@dataclass(frozen=True)
class NeighbouringPair:
    """Training sets D_in = (x_in, y_in) and D_out = (x_out, y_out) that differ in one row, and
    the weights (intercept last) the float64 recipe trains on each."""

    name: str
    x_in: FloatArray
    y_in: IntArray
    x_out: FloatArray
    y_out: IntArray
    w_in: FloatArray
    w_out: FloatArray

    def gap(self, norm: str) -> float:
        """``||w_in - w_out||`` in 'l1' or 'l2'."""
        g = self.w_in - self.w_out
        return float(np.sum(np.abs(g)) if norm == "l1" else np.linalg.norm(g))


def _train(x: FloatArray, y: IntArray, config: LogisticRegression) -> FloatArray:
    sigmoid = "piecewise" if config.sigmoid == "piecewise" else "exact"
    model = train_plain(x, y, config, sigmoid_method=sigmoid)
    return np.asarray(np.r_[model.coef, model.intercept], dtype=np.float64)


def _pair(
    name: str, x_in: FloatArray, y_in: IntArray, x_out: FloatArray, y_out: IntArray, config: Any
) -> NeighbouringPair:
    return NeighbouringPair(
        name, x_in, y_in, x_out, y_out, _train(x_in, y_in, config), _train(x_out, y_out, config)
    )


def _feature_norm(clip_norm: float) -> float:
    """The largest feature norm of a row whose intercept 1 keeps it within `clip_norm` (with
    the margin of ``make_canary``: fixed-point encoding stays inside)."""
    return math.sqrt((clip_norm * (1.0 - 1e-6)) ** 2 - 1.0) * (1.0 - 1e-6)


def crafted_pair(
    n_rows: int,
    n_features: int,
    config: LogisticRegression,
    clip_norm: float,
    *,
    support: int | None = None,
) -> NeighbouringPair:
    """The auditor's own data: n_rows - 1 rows with all features 0 labelled 1 (they only push
    the intercept up, so the canary soon has residual near 1), and the canary, labelled 0, at
    ``+a`` (D_in) or ``-a`` (D_out) on the first `support` features (all by default), at the
    clipping norm.  The two gradients then differ by nearly 2·sqrt(R² - 1) at every step, in
    directions no other row uses, and spread over `support` coordinates (the L1 norm the vector
    Laplace noise is calibrated to)."""
    k = n_features if support is None else support
    if not 1 <= k <= n_features or n_rows < 2:
        raise ValueError(f"need 1 <= support <= n_features and n_rows >= 2, got {k}, {n_rows}")
    x = np.zeros((n_rows, n_features))
    y = np.ones(n_rows, dtype=np.int64)
    y[0] = 0
    x_in, x_out = x.copy(), x.copy()
    x_in[0, :k] = _feature_norm(clip_norm) / math.sqrt(k)
    x_out[0, :k] = -x_in[0, :k]
    name = "worst-case pair" if k == n_features else f"worst-case pair (support {k})"
    return _pair(name, x_in, y, x_out, y.copy(), config)


def data_canary_pair(
    x: Any,
    y: Any,
    config: LogisticRegression,
    clip_norm: float,
    *,
    norm: str = "l1",
    index: int = 0,
    passes: int = 2,
) -> NeighbouringPair:
    """The real rows, row `index` replaced by a canary at the clipping norm, labelled 0 in D_in
    and 1 in D_out (the two gradients then differ by exactly the row, whatever the model), along
    a sign vector: first the signs of the data's flattest direction, then single sign flips kept
    while they increase the `norm` ('l1' or 'l2') of the weight gap."""
    arr = np.asarray(x, dtype=np.float64)
    labels = np.asarray(y, dtype=np.int64)
    d = arr.shape[1]
    _, vectors = np.linalg.eigh(arr.T @ arr)
    signs = np.where(vectors[:, 0] >= 0.0, 1.0, -1.0)
    scale = _feature_norm(clip_norm) / math.sqrt(d)

    def build(s: FloatArray) -> NeighbouringPair:
        x_c = arr.copy()
        x_c[index] = scale * s
        y_in, y_out = labels.copy(), labels.copy()
        y_in[index], y_out[index] = 0, 1
        return _pair("canary in the data", x_c, y_in, x_c, y_out, config)

    best = build(signs)
    for _ in range(passes):
        improved = False
        for i in range(d):
            signs[i] = -signs[i]
            candidate = build(signs)
            if candidate.gap(norm) > best.gap(norm):
                best, improved = candidate, True
            else:
                signs[i] = -signs[i]
        if not improved:
            break
    return best


# ---- the test --------------------------------------------------------------------------------


def likelihood_ratio(mechanism: Mechanism, released: Any, a_in: Any, a_out: Any) -> IntArray:
    """A statistic monotone in the log-likelihood ratio log p_in(z)/p_out(z) of each released
    vector (rows of `released`, integer ulps) between the noise of `mechanism` centred at a_in
    and at a_out, in exact integers (a float statistic could tell the worlds apart by rounding
    alone): ``Σ|z - a_out| - |z - a_in|`` for Laplace noise (log ratio times the scale),
    ``Σ(2z - a_in - a_out)(a_in - a_out)`` for Gaussian noise (times 2σ²)."""
    z = np.asarray(released, dtype=np.int64)
    a, b = np.asarray(a_in, dtype=np.int64), np.asarray(a_out, dtype=np.int64)
    if isinstance(mechanism, VectorLaplaceMechanism):
        return np.asarray(np.sum(np.abs(z - b) - np.abs(z - a), axis=-1), dtype=np.int64)
    if isinstance(mechanism, DiscreteGaussianMechanism):
        return np.asarray(np.sum((2 * z - a - b) * (a - b), axis=-1), dtype=np.int64)
    raise TypeError(f"no likelihood ratio for {type(mechanism).__name__}")


def _gaussian_epsilon(mu: float, delta: float) -> float:
    """The ε at `delta` of two Gaussians mu standard deviations apart (Balle & Wang 2018)."""

    def phi(t: float) -> float:
        return 0.5 * math.erfc(-t / math.sqrt(2.0))

    def excess(e: float) -> float:
        return phi(-e / mu + mu / 2) - math.exp(e) * phi(-e / mu - mu / 2)

    if mu <= 0.0 or excess(0.0) <= delta:
        return 0.0
    _, hi = bisect(lambda e: excess(e) > delta, 0.0, 4.0 * mu * mu + 10.0, 80)
    return hi


def pair_ceiling(
    mechanism: Mechanism, a_in: Any, a_out: Any, delta: float = 0.0, noise_scale: float = 1.0
) -> float:
    """The most any test can show on this pair: the pure ε of the two Laplace release
    distributions (``||a_in - a_out||_1 / b``), or the ε at `delta` of the two Gaussians
    (continuous approximation of the discrete Gaussian).  With the noise multiplied by
    `noise_scale` (mutations), the same for the scaled noise, up to its rounding."""
    g = np.asarray(a_in, dtype=np.int64) - np.asarray(a_out, dtype=np.int64)
    if not np.any(g):
        return 0.0
    if noise_scale <= 0.0:
        return math.inf
    if isinstance(mechanism, VectorLaplaceMechanism):
        return float(np.sum(np.abs(g))) / (float(mechanism.scale) * noise_scale)
    if isinstance(mechanism, DiscreteGaussianMechanism):
        sigma = math.sqrt(float(mechanism.sigma2)) * noise_scale
        return _gaussian_epsilon(float(np.linalg.norm(g.astype(np.float64))) / sigma, delta)
    raise TypeError(f"no ceiling for {type(mechanism).__name__}")


@dataclass(frozen=True)
class PairAuditPoint:
    """The audit of one claimed ε: the lower bound (confidence ``1 - alpha``), the pair's own
    ceiling, the test's error rates on the evaluation half, and its TPR - FPR."""

    pair: str
    epsilon: float
    delta: float
    mechanism: str
    trials: int
    epsilon_lower: float
    confidence: float
    ceiling: float
    fpr: float
    fnr: float
    advantage: float
    noise_scale: float = 1.0

    @property
    def violated(self) -> bool:
        """The empirical lower bound exceeds the claimed ε (the guarantee is refuted)."""
        return self.epsilon_lower > self.epsilon

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "violated": self.violated}


def _grid(weights: FloatArray, frac_bits: int) -> IntArray:
    return np.asarray(np.rint(weights * float(2**frac_bits)), dtype=np.int64)


def _statistics(
    mechanism: Mechanism,
    prg: Prg,
    centre: IntArray,
    a_in: IntArray,
    a_out: IntArray,
    trials: int,
    noise_scale: float,
) -> IntArray:
    out = []
    for start in range(0, trials, CHUNK):
        rows = min(CHUNK, trials - start)
        noise = mechanism.noise(prg.derive(("chunk", start)), (rows, centre.size))
        if noise_scale != 1.0:
            noise = np.asarray(np.rint(noise * noise_scale), dtype=np.int64)
        out.append(likelihood_ratio(mechanism, centre + noise, a_in, a_out))
    return np.concatenate(out)


def audit_pair(
    pair: NeighbouringPair,
    *,
    config: LogisticRegression,
    clip_norm: float,
    epsilons: Sequence[float],
    delta: float = 0.0,
    trials: int = 20000,
    alpha: float = 0.05,
    noise_scale: float = 1.0,
    fixed_point: FixedPoint | None = None,
    seed: bytes = b"mpc.dp.audit_pair.v1",
    progress: Callable[[str], None] | None = None,
) -> list[PairAuditPoint]:
    """For each claimed ε: `trials` releases of each world's weights (on the fixed-point grid)
    with the noise of the mechanism ``model_release_plan`` builds for this recipe, and the
    likelihood-ratio threshold test; the threshold is chosen on half the trials and the error
    rates, with Clopper-Pearson bounds, counted on the other half.  `noise_scale` scales the
    noise (mutation tests); the claimed ε stays the one calibrated for."""
    fp = fixed_point or FixedPoint()
    n, d = pair.x_in.shape
    a_in, a_out = _grid(pair.w_in, fp.frac_bits), _grid(pair.w_out, fp.frac_bits)
    root = Prg(bytes(16)).derive(("mpc.dp.audit_pair", seed))
    points = []
    for eps in epsilons:
        mechanism, _ = model_release_plan(
            config,
            n_rows=n,
            n_features=d,
            clip_norm=clip_norm,
            epsilon=eps,
            delta=delta,
            fixed_point=fp,
        )
        draw = root.derive(("eps", repr(eps)))
        stat_in = _statistics(mechanism, draw.derive("in"), a_in, a_in, a_out, trials, noise_scale)
        stat_out = _statistics(
            mechanism, draw.derive("out"), a_out, a_in, a_out, trials, noise_scale
        )
        outcome = audit_scores(
            -stat_in.astype(np.float64), -stat_out.astype(np.float64), delta=delta, alpha=alpha
        )
        point = PairAuditPoint(
            pair.name,
            float(eps),
            delta,
            type(mechanism).__name__,
            trials,
            outcome.epsilon_lower,
            1.0 - alpha,
            pair_ceiling(mechanism, a_in, a_out, delta, noise_scale),
            outcome.fpr,
            outcome.fnr,
            outcome.advantage,
            noise_scale,
        )
        points.append(point)
        if progress is not None:
            progress(
                f"{pair.name}, claimed epsilon {eps:g}: lower bound {point.epsilon_lower:.3f} "
                f"({point.confidence:.0%}), pair ceiling {point.ceiling:.3f}"
            )
    return points


# ---- genuinely secure runs ---------------------------------------------------------------------


@dataclass(frozen=True)
class PairCheck:
    """Secure releases of D_in against the simulation: each release's statistic and whether it
    lies in the range of `simulated` simulated ones; the un-noised secure weights' distance to
    the float64 recipe and the drift the analysis allows."""

    epsilon: float
    inside: list[bool]
    drift: float
    drift_bound: float

    @property
    def ok(self) -> bool:
        return all(self.inside) and self.drift <= self.drift_bound


def secure_pair_check(
    pair: NeighbouringPair,
    *,
    config: LogisticRegression,
    clip_norm: float,
    epsilon: float,
    delta: float = 0.0,
    runs: int = 2,
    simulated: int = 20000,
) -> PairCheck:
    """`runs` genuinely secure fits and releases of D_in (3 in-process parties, additive sharing,
    dealer noise), compared with :func:`audit_pair`'s simulation of the same release."""
    raw, released = secure_weights(
        pair.x_in,
        pair.y_in,
        config=config,
        clip_norm=clip_norm,
        epsilon=epsilon,
        delta=delta,
        runs=runs,
    )
    n, d = pair.x_in.shape
    fp = FixedPoint()
    mechanism, privacy = model_release_plan(
        config, n_rows=n, n_features=d, clip_norm=clip_norm, epsilon=epsilon, delta=delta
    )
    a_in, a_out = _grid(pair.w_in, fp.frac_bits), _grid(pair.w_out, fp.frac_bits)
    sim = _statistics(
        mechanism,
        Prg(bytes(16)).derive("mpc.dp.audit_pair.check"),
        a_in,
        a_in,
        a_out,
        simulated,
        1.0,
    )
    low, high = int(np.min(sim)), int(np.max(sim))
    stats = [
        int(likelihood_ratio(mechanism, _grid(w, fp.frac_bits), a_in, a_out)) for w in released
    ]
    return PairCheck(
        epsilon,
        [low <= s <= high for s in stats],
        float(np.linalg.norm(raw - pair.w_in)),
        privacy.sensitivity.fixed_point / 2.0,
    )
