"""Objective perturbation of the joint logistic-regression model, trained and noised under MPC.

:func:`objective_privacy` is the public analysis: CMS11's objective perturbation with exact
discrete Laplace noise b, its Jacobian term, the number of gradient steps, and the proven
distance G between the secure fit and the exact minimiser of the perturbed objective, which
output noise covers.  :func:`release_objective_model` draws b on shares, trains the perturbed
objective (``LogisticRegression.fit`` with ``offset=b``) and opens only the noised weights.
Security model: as ``mpc.dp.reveal``; the rows must be clipped to ``clip_norm`` (at their owners,
``prepare_rows``).  Proof: docs/dp.md ("Objective
perturbation").
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mpc.dp.accountant import (
    InvalidPrivacyParameterError,
    MissingSensitivityError,
    check_epsilon,
)
from mpc.dp.charging import AccountantSource
from mpc.dp.mechanisms import ObjectivePerturbationMechanism
from mpc.dp.model_release import model_privacy
from mpc.dp.plan import NoiseMode
from mpc.dp.reveal import PlannedRelease, dp_plan
from mpc.encoding import FixedPoint
from mpc.errors import ConfigurationError, UnsupportedOperationError
from mpc.ml.data import SharedDataset
from mpc.ml.logreg import LinearModel, LogisticRegression, Progress
from mpc.ml.sigmoid import PIECEWISE_SLOPE
from mpc.program import PartyContext, Secret
from mpc.protocols.base import Protocol

__all__ = [
    "ObjectivePrivacy",
    "objective_frac_bits",
    "objective_l2",
    "objective_privacy",
    "release_objective_model",
]

#: The optimisation part of the gap is driven below this fraction of the fixed-point part.
OPTIMISATION_SHARE = 0.125


@dataclass(frozen=True)
class ObjectivePrivacy:
    """The public analysis of one objective-perturbation release (docs/dp.md).

    Attributes:
        mechanism: the noise and its charge (``ObjectivePerturbationMechanism``).
        config: the training configuration, with ``epochs`` = ``steps``.
        learning_rate: the step η the secure update applies (decoded encoded constants).
        l2: the penalty Λ it applies (every coordinate).
        slope: the bound a on the sigmoid's slope (the loss's second derivative).
        contraction: c = 1 - ηΛ, the contraction of one exact gradient step.
        steps: T, full-batch gradient steps.
        start_distance: D0, a bound on |w_0 - w*| from the warm start w_0 = -b/(nΛ).
        step_error: e, the L2 fixed-point error of one secure step.
        gap_optimisation, gap_fixed_point, gap_rounding: c^T D0, e/(1 - c), and the effect of
            rounding b to the grid; their sum is the mechanism's ``gap`` G.
        noise_bound: the public bound on |b_i| the fit is checked against (real units).
        start_factor: -w_0/b, on the fixed-point grid.
        draws: full noise draws in the release (1 with dealer noise, n with distributed).
    """

    mechanism: ObjectivePerturbationMechanism
    config: LogisticRegression
    learning_rate: float
    l2: float
    slope: float
    contraction: float
    steps: int
    start_distance: float
    step_error: float
    gap_optimisation: float
    gap_fixed_point: float
    gap_rounding: float
    noise_bound: float
    start_factor: float
    draws: int

    @property
    def gap(self) -> float:
        return self.gap_optimisation + self.gap_fixed_point + self.gap_rounding

    @property
    def start_bound(self) -> float:
        """The public bound on |w_0| (the warm start's product adds at most 2 ulp)."""
        ulp = 2.0**-self.mechanism.frac_bits
        return self.noise_bound * self.start_factor + 2.0 * ulp

    @property
    def failure_delta(self) -> float:
        """δ charged beyond the mechanism's own: the other draws' tails (distributed noise)."""
        return (self.draws - 1) * self.mechanism.tail_delta


def objective_l2(
    *, epsilon: float, n_rows: int, clip_norm: float, l2: float, jacobian_share: float = 0.1
) -> float:
    """The L2 penalty to train with: `l2`, or more where the Jacobian term ``log(1 + a R²/(nΛ))``
    would take more than `jacobian_share` of epsilon (CMS11 Alg. 2 adds such a penalty too)."""
    eps = check_epsilon(epsilon)
    if not 0.0 < jacobian_share < 1.0:
        raise InvalidPrivacyParameterError("jacobian_share must be in (0, 1)")
    slope = PIECEWISE_SLOPE * (1.0 + 2.0**-12)
    return max(l2, slope * clip_norm * clip_norm / (n_rows * math.expm1(jacobian_share * eps)))


def objective_privacy(
    config: LogisticRegression,
    *,
    n_rows: int,
    n_features: int,
    clip_norm: float | None,
    epsilon: float,
    fixed_point: FixedPoint | None = None,
    gap_fraction: float = 0.01,
    draws: int = 1,
    tail_bits: int = 128,
    steps: int | None = None,
) -> ObjectivePrivacy:
    """The public analysis of objective perturbation for ``config.fit`` on `n_rows` rows
    clipped to `clip_norm` (docs/dp.md, "Objective perturbation").  Public numbers only.

    `gap_fraction`: the share of epsilon spent (twice) on the output noise covering G;
    `draws`: full noise draws (1 dealer, n distributed); `steps`: T (default: the fewest that
    bring the optimisation part of G below an eighth of the fixed-point part).  Raises
    InvalidPrivacyParameterError / MissingSensitivityError for what the analysis does not cover.
    """
    if clip_norm is None:
        raise MissingSensitivityError(
            "clip_norm is not set: pass clip_norm=R, the L2 bound every row (intercept included) "
            "was clipped to"
        )
    if not 0.0 < gap_fraction < 0.5:
        raise InvalidPrivacyParameterError(f"gap_fraction must be in (0, 0.5), got {gap_fraction}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise InvalidPrivacyParameterError(f"draws must be an int >= 1, got {draws!r}")
    if not config.fit_intercept:
        raise InvalidPrivacyParameterError("objective perturbation here fits an intercept")
    fp = fixed_point or FixedPoint()
    # the encoded step and penalty, the slope bound and the per-step error, as for output
    # perturbation (refuses uncovered configurations: penalty everywhere, full batch, ...)
    analysis = model_privacy(
        config,
        n_rows=n_rows,
        n_features=n_features,
        clip_norm=clip_norm,
        fixed_point=fp,
        exact_truncation=True,
    )
    r, n, d = float(clip_norm), n_rows, analysis.dim
    eta, lam, slope = analysis.learning_rate, analysis.l2, analysis.sigmoid_slope
    c = 1.0 - eta * lam
    ulp = 2.0**-fp.frac_bits
    jacobian = math.log1p(slope * r * r / (n * lam))
    mechanism = ObjectivePerturbationMechanism(
        epsilon=epsilon,
        sensitivity=2.0 * r,
        epsilon_jacobian=jacobian,
        gap=0.0,
        epsilon_gap=gap_fraction * float(epsilon),
        dim=d,
        frac_bits=fp.frac_bits,
        tail_bits=tail_bits,
    )
    # b of every draw within its bound; the neighbour's b' = b + (gradient change) within 2R more
    bound = draws * mechanism.bound + 2.0 * r + ulp
    grad, decay = config.update_coefficients(n, d, fp.frac_bits)
    kappa = grad / float(decay[0])  # 1/(nΛ): w* = -kappa (b + X^T r*)
    factor = round(kappa * fp.scale) / fp.scale
    root = math.sqrt(d)
    start = r / lam + root * bound * abs(kappa - factor) + root * 2.0 * ulp
    fixed = analysis.step_error / (1.0 - c)
    rounding = root * ulp / (2.0 * n * lam)
    if steps is None:
        target = OPTIMISATION_SHARE * fixed
        steps = max(1, math.ceil(math.log(target / start) / math.log(c)))
    elif isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidPrivacyParameterError(f"steps must be an int >= 1, got {steps!r}")
    optimisation = c**steps * start
    mechanism = dataclasses.replace(mechanism, gap=optimisation + fixed + rounding)
    return ObjectivePrivacy(
        mechanism=mechanism,
        config=dataclasses.replace(config, epochs=steps),
        learning_rate=eta,
        l2=lam,
        slope=slope,
        contraction=c,
        steps=steps,
        start_distance=start,
        step_error=analysis.step_error,
        gap_optimisation=optimisation,
        gap_fixed_point=fixed,
        gap_rounding=rounding,
        noise_bound=bound,
        start_factor=factor,
        draws=draws,
    )


def objective_frac_bits(
    config: LogisticRegression,
    *,
    n_rows: int,
    n_features: int,
    clip_norm: float,
    epsilon: float,
    protocol: type[Protocol],
    draws: int = 1,
    most: int = 23,
    least: int = 12,
) -> int:
    """The most fractional bits (at most `most`) whose fixed point holds the whole training
    schedule with the noise's public bound (``check_range``): more bits make the gap, and so
    the output noise, smaller; a larger noise bound (small epsilon, few rows, distributed
    noise) needs fewer.  Public numbers only; ConfigurationError if even `least` fails."""
    last: ConfigurationError | None = None
    for bits in range(most, least - 1, -1):
        fp = FixedPoint(frac_bits=bits)
        privacy = objective_privacy(
            config,
            n_rows=n_rows,
            n_features=n_features,
            clip_norm=clip_norm,
            epsilon=epsilon,
            fixed_point=fp,
            draws=draws,
        )
        try:
            privacy.config.check_range(
                n_rows,
                n_features,
                fp,
                config.feature_limit,
                protocol,
                True,
                privacy.start_bound,
                privacy.noise_bound,
            )
        except ConfigurationError as exc:
            last = exc
            continue
        return bits
    raise ConfigurationError(f"no fixed point from {most} to {least} bits holds the fit: {last}")


def release_objective_model(
    ctx: PartyContext,
    data: SharedDataset,
    config: LogisticRegression,
    *,
    epsilon: float,
    clip_norm: float | None,
    noise: NoiseMode = "distributed",
    max_colluding: int | None = None,
    accountant: AccountantSource = "ledger",
    to: str | Sequence[str] | None = None,
    label: str = "logistic regression weights (objective perturbation)",
    gap_fraction: float = 0.01,
    steps: int | None = None,
    progress: Progress | None = None,
) -> LinearModel | None:
    """Train on `data` with objective perturbation and release the weights: a LinearModel at
    the parties `to` (all when None), None elsewhere.  SPMD; the charge is made first, at every
    party (``dp_plan``), then b is drawn on shares, the perturbed objective is trained
    (:func:`objective_privacy`'s ``steps`` full-batch steps from ``w_0 = -b/(nΛ)``) and only
    ``weights + output noise`` is opened.  Needs exact truncation (the additive protocol).
    """
    if not isinstance(data, SharedDataset) or data.y is None:
        raise TypeError("release_objective_model needs a SharedDataset with labels")
    if not ctx.protocol.exact_truncation():
        raise UnsupportedOperationError(
            f"objective perturbation needs exact truncation, which protocol "
            f"{ctx.protocol.name!r} does not have: use protocol='additive'"
        )
    if noise not in ("distributed", "dealer"):
        raise ValueError(f"noise must be 'distributed' or 'dealer', got {noise!r}")
    draws = 1 if noise == "dealer" else ctx.n
    privacy = objective_privacy(
        config,
        n_rows=data.n_rows,
        n_features=data.n_features,
        clip_norm=clip_norm,
        epsilon=epsilon,
        fixed_point=ctx.fixed_point,
        gap_fraction=gap_fraction,
        draws=draws,
        steps=steps,
    )
    trained = privacy.config
    if data.feature_limit > trained.feature_limit:
        raise ConfigurationError("share the rows with the configuration's feature_limit")
    # refuse a schedule the fixed point cannot hold before anything is charged
    trained.check_range(
        data.n_rows,
        data.n_features,
        ctx.fixed_point,
        data.feature_limit,
        type(ctx.protocol),
        True,
        privacy.start_bound,
        privacy.noise_bound,
    )
    mechanism = privacy.mechanism
    plan = dp_plan(
        ctx,
        [
            PlannedRelease(
                mechanism,
                (2, mechanism.dim),
                noise=noise,
                max_colluding=max_colluding,
                to=to if to is None or isinstance(to, str) else tuple(to),
                label=label,
                failure_delta=privacy.failure_delta,
            )
        ],
        accountant=accountant,
    )

    def compute(drawn: Secret) -> Secret:
        b = drawn[0]._bounded(privacy.noise_bound)
        start = (b * (-privacy.start_factor))._bounded(privacy.start_bound)
        model = trained.fit(ctx, data, start=start, offset=b, progress=progress)
        output = drawn[1]
        share = ctx.protocol.add(model.weights.share, output.share)
        return Secret(ctx, share, model.weights.frac)  # noised: no bound needed to open

    values = plan.reveal_with_noise(compute)
    if values is None:
        return None
    coef = np.asarray(values[: data.n_features], dtype=np.float64)
    return LinearModel(coef, float(values[data.n_features]))
