"""Releasing the joint logistic-regression model by output perturbation (CMS11) under MPC.

:func:`model_privacy` is the public analysis of the weights ``LogisticRegression.fit`` computes:
their L2 sensitivity as the secure fit encodes it (iterations, encoded step and penalty, the
per-step fixed-point error) and the probability that a probabilistic truncation failed, which is
added to δ.  :func:`prepare_rows` is the owner-side public scaling and clipping;
:func:`release_model` releases the noisy weights with ``mpc.dp.reveal.dp_reveal``.  Security
model: as ``dp_reveal``; the guarantee needs the rows clipped at their owners as declared.
Conditions and derivations: docs/dp.md ("Releasing the joint model by output perturbation").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mpc.dp.accountant import InvalidPrivacyParameterError, MissingSensitivityError
from mpc.dp.charging import AccountantSource
from mpc.dp.mechanisms import (
    DiscreteGaussianMechanism,
    VectorLaplaceMechanism,
    model_release_mechanism,
)
from mpc.dp.plan import NoiseMode
from mpc.dp.reveal import dp_reveal
from mpc.dp.sensitivity import (
    GDSensitivity,
    check_clipped,
    clip_rows,
    gd_sensitivity,
    logreg_step_error,
)
from mpc.encoding import FixedPoint
from mpc.ml.logreg import (
    RESIDUAL_DROP,
    LinearModel,
    LogisticRegression,
    SecureModel,
    encode_constants,
)
from mpc.ml.sigmoid import ACCURATE_MAX_ERROR, PIECEWISE_SLOPE
from mpc.program import PartyContext

__all__ = [
    "ModelPrivacy",
    "max_learning_rate",
    "model_privacy",
    "model_release_plan",
    "prepare_rows",
    "release_model",
    "truncation_failure_delta",
]

FloatArray = npt.NDArray[np.float64]

#: Bound on the sum of |intermediate| over the truncated products of one 'accurate-clamped'
#: sigmoid element (u^2/2 <= 0.25, six squarings <= 1, 8/17 e <= 1, Newton 2 x (2 + 1.1)),
#: with margin (docs/dp.md).
ACCURATE_TRUNCATION_MASS = 16.0
#: Sigmoids the model-release analysis covers.
COVERED_SIGMOIDS = ("piecewise", "accurate-clamped")


@dataclass(frozen=True)
class ModelPrivacy:
    """The public privacy analysis of one secure logistic-regression fit (docs/dp.md).

    ``sensitivity``: the L2 bound on the weights (``total`` = exact-arithmetic iterate bound +
    fixed-point slack), computed with the *encoded* ``learning_rate`` and ``l2``; ``step_error``:
    the per-step fixed-point error e; ``truncation_delta``: the probability that a truncation
    failed (added to δ); ``weight_bound``: the bound W on every iterate's norm it used.
    """

    sensitivity: GDSensitivity
    step_error: float
    truncation_delta: float
    weight_bound: float
    learning_rate: float
    l2: float
    sigmoid_slope: float
    clip_norm: float
    n_rows: int
    dim: int

    @property
    def total(self) -> float:
        return self.sensitivity.total


def _covered(config: LogisticRegression, n_rows: int) -> None:
    if config.l2 <= 0:
        raise MissingSensitivityError(
            "output perturbation needs an L2 penalty: set LogisticRegression(l2=...) > 0 "
            "(e.g. 0.03)"
        )
    if config.fit_intercept and not config.penalize_intercept:
        raise InvalidPrivacyParameterError(
            "release_model needs the intercept penalised (LogisticRegression("
            "penalize_intercept=True)): the strongly convex sensitivity bound and the weight "
            "bound of the truncation analysis need the penalty on every coordinate"
        )
    if config.batch_size is not None and config.batch_size < n_rows:
        raise InvalidPrivacyParameterError(
            "release_model covers full-batch gradient descent only: set batch_size=None"
        )
    if config.sigmoid not in COVERED_SIGMOIDS:
        raise InvalidPrivacyParameterError(
            f"sigmoid {config.sigmoid!r} is not covered by the sensitivity analysis: use one of "
            f"{', '.join(COVERED_SIGMOIDS)} ('poly' is unbounded, 'accurate' is wrong beyond "
            f"|z| = 112)"
        )
    if config.standardize:
        raise InvalidPrivacyParameterError(
            "data-dependent standardisation is not covered (one row changes every row): set "
            "standardize=False and scale rows with public constants (prepare_rows)"
        )


def truncation_failure_delta(
    *,
    n_rows: int,
    width: int,
    clip_norm: float,
    weight_bound: float,
    epochs: int,
    sigmoid: str,
    constants: Sequence[npt.NDArray[np.int64]],
    shift: int,
    frac_bits: int,
    modulus: int = 1 << 64,
    residual: float = 1.0,
) -> float:
    """Union bound on the probability that any truncation of a secure full-batch fit fails
    (docs/dp.md): sum of |product| over the truncated elements of one epoch, times epochs, over
    the modulus.  `constants`/`shift`: the encoded update constants."""
    n, r, w = float(n_rows), float(clip_norm), float(weight_bound)
    root = math.sqrt(width)
    scale = float(2 ** (2 * frac_bits))
    logits = n * r * w * scale
    if sigmoid == "piecewise":
        (slope_int,), _ = encode_constants([PIECEWISE_SLOPE], frac_bits)
        sig = n * r * w * float(2**frac_bits) * float(abs(int(slope_int)))
    elif sigmoid == "accurate-clamped":
        sig = n * ACCURATE_TRUNCATION_MASS * scale
    else:
        raise InvalidPrivacyParameterError(f"no truncation bound for sigmoid {sigmoid!r}")
    grad_l1 = root * n * r * residual
    gradient = grad_l1 * scale
    c_grad = float(np.max(np.abs(constants[0])))
    c_decay = float(np.max(np.abs(constants[1]))) if len(constants) > 1 else 0.0
    update = (c_grad * grad_l1 + c_decay * root * w) * float(2**frac_bits)
    per_epoch = logits + sig + gradient + update
    return min(1.0, 1.01 * epochs * per_epoch / float(modulus))


def model_privacy(
    config: LogisticRegression,
    *,
    n_rows: int,
    n_features: int,
    clip_norm: float | None,
    fixed_point: FixedPoint | None = None,
    modulus: int = 1 << 64,
    exact_truncation: bool = False,
) -> ModelPrivacy:
    """The sensitivity, fixed-point slack and truncation-failure δ of the weights that
    ``config.fit`` computes on `n_rows` clipped rows of `n_features` features (docs/dp.md).
    Public numbers only.  Raises InvalidPrivacyParameterError /
    MissingSensitivityError for a configuration the analysis does not cover, saying what to set.
    With `exact_truncation` (the ring protocols' truncation cannot fail: `mpc.bounds`, and
    `fit` refuses a schedule whose values leave its range) the truncation δ is 0.
    """
    if clip_norm is None:
        raise MissingSensitivityError(
            "clip_norm is not set: pass clip_norm=R, the L2 bound every row (intercept included) "
            "was clipped to at its owner (prepare_rows)"
        )
    _covered(config, n_rows)
    fp = fixed_point or FixedPoint()
    f = fp.frac_bits
    width = n_features + (1 if config.fit_intercept else 0)
    grad_coef, decay = config.update_coefficients(n_rows, width, f)
    eta = grad_coef * n_rows
    lam = float(decay[0]) / eta
    if lam <= 0:
        raise InvalidPrivacyParameterError(
            f"l2={config.l2:g} rounds to 0 in the {f}-bit fixed-point update: raise l2"
        )
    if config.sigmoid == "piecewise":
        (slope_int,), slope_shift = encode_constants([PIECEWISE_SLOPE], f)
        slope = max(PIECEWISE_SLOPE, float(slope_int) / float(2**slope_shift))
        # the debiased truncation of z (one ulp), or, where `fit` fuses its truncations into
        # the masked products, of p to f - RESIDUAL_DROP bits (one of those ulps): the larger
        sigmoid_error = 2.0 ** (RESIDUAL_DROP - f)
        loss_gap = 1.0 / (8.0 * min(PIECEWISE_SLOPE, slope))
        residual = 1.0
    else:
        slope = 0.25
        sigmoid_error = ACCURATE_MAX_ERROR
        loss_gap = math.log(2.0)
        residual = 1.0 + ACCURATE_MAX_ERROR
    step_error = logreg_step_error(
        dim=width,
        frac_bits=f,
        learning_rate=eta,
        clip_norm=float(clip_norm),
        sigmoid_error=sigmoid_error,
        sigmoid_slope=slope,
    )
    bound = gd_sensitivity(
        n_rows=n_rows,
        l2=lam,
        clip_norm=clip_norm,
        learning_rate=eta,
        epochs=config.epochs,
        sigmoid_slope=slope,
        step_error=step_error,
    )
    weight_bound = math.sqrt(2.0 * loss_gap / lam) + bound.fixed_point / 2.0
    encoded, shift = encode_constants(
        [np.asarray(config.learning_rate / n_rows), config.decay(width)], f
    )
    delta_trunc = (
        0.0
        if exact_truncation
        else truncation_failure_delta(
            n_rows=n_rows,
            width=width,
            clip_norm=float(clip_norm),
            weight_bound=weight_bound,
            epochs=config.epochs,
            sigmoid=config.sigmoid,
            constants=encoded,
            shift=shift,
            frac_bits=f,
            modulus=modulus,
            residual=residual,
        )
    )
    return ModelPrivacy(
        bound,
        step_error,
        delta_trunc,
        weight_bound,
        eta,
        lam,
        slope,
        float(clip_norm),
        n_rows,
        width,
    )


def max_learning_rate(*, clip_norm: float, l2: float, sigmoid: str = "piecewise") -> float:
    """The largest step size the sensitivity analysis covers, ``2/(a R² + 2λ)`` (a: the
    sigmoid's slope bound), shrunk by 1% so that the encoded step stays below it."""
    slope = PIECEWISE_SLOPE * (1.0 + 2.0**-12) if sigmoid == "piecewise" else 0.25
    return 0.99 * 2.0 / (slope * clip_norm * clip_norm + 2.0 * l2)


def model_release_plan(
    config: LogisticRegression,
    *,
    n_rows: int,
    n_features: int,
    clip_norm: float | None,
    epsilon: float,
    delta: float = 0.0,
    fixed_point: FixedPoint | None = None,
    modulus: int = 1 << 64,
    exact_truncation: bool = False,
) -> tuple[VectorLaplaceMechanism | DiscreteGaussianMechanism, ModelPrivacy]:
    """The output-perturbation mechanism for the weights `config.fit` computes, and the
    analysis it is calibrated to: ``delta == 0`` gives the pure-ε vector mechanism (exact
    discrete Laplace), ``delta > 0`` the exact discrete Gaussian; either way the release is charged
    ``(epsilon, delta + truncation_delta)``."""
    privacy = model_privacy(
        config,
        n_rows=n_rows,
        n_features=n_features,
        clip_norm=clip_norm,
        fixed_point=fixed_point,
        modulus=modulus,
        exact_truncation=exact_truncation,
    )
    mechanism = model_release_mechanism(
        epsilon=epsilon,
        delta=delta,
        sensitivity=privacy.total,
        dim=privacy.dim,
        frac_bits=(fixed_point or FixedPoint()).frac_bits,
    )
    return mechanism, privacy


def prepare_rows(
    x: Any,
    *,
    clip_norm: float | None,
    center: Any = 0.0,
    scale: Any = 1.0,
    fit_intercept: bool = True,
    fixed_point: FixedPoint | None = None,
) -> FloatArray:
    """The owner-side preparation of its own rows for a DP fit: ``(x - center) / scale`` with
    *public* constants, then each row clipped so that, *after* fixed-point encoding and with
    its intercept 1, its L2 norm is at most `clip_norm` (checked with ``check_clipped`` on the
    encoded rows).  Runs locally at the owner on its plaintext; returns the rows to share with
    ``standardize=False``."""
    if clip_norm is None:
        raise MissingSensitivityError(
            "clip_norm is not set: pass clip_norm=R, the L2 bound on every row (intercept "
            "included), e.g. 2.0 for features scaled to about [-1, 1]"
        )
    fp = fixed_point or FixedPoint()
    arr = np.array(x, dtype=np.float64, ndmin=2)
    scaled = (arr - np.asarray(center, dtype=np.float64)) / np.asarray(scale, dtype=np.float64)
    if not np.all(np.isfinite(scaled)):
        raise InvalidPrivacyParameterError("rows must be finite after the public scaling")
    margin = math.sqrt(scaled.shape[1]) * 2.0 ** -(fp.frac_bits + 1) * 1.001
    clipped = clip_rows(scaled, float(clip_norm) - margin, fit_intercept=fit_intercept)
    check_clipped(fp.decode(fp.encode(clipped)), clip_norm, fit_intercept=fit_intercept)
    return clipped


def release_model(
    ctx: PartyContext,
    model: SecureModel,
    *,
    epsilon: float,
    delta: float = 0.0,
    clip_norm: float | None,
    noise: NoiseMode = "distributed",
    max_colluding: int | None = None,
    accountant: AccountantSource = "ledger",
    to: str | Sequence[str] | None = None,
    label: str = "logistic regression weights",
) -> LinearModel | None:
    """Release the weights of a secure fit with output perturbation (CMS11): a LinearModel with
    the noisy weights at the parties `to` (all when None), None elsewhere.  SPMD.

    ``delta == 0``: pure-ε vector mechanism; ``delta > 0``: discrete Gaussian.  The charged cost is
    ``(epsilon, delta + truncation_delta)`` (:func:`model_privacy`).  `clip_norm` is the bound
    the owners clipped their rows to (:func:`prepare_rows`; the analysis trusts it).  The rest
    as :func:`dp_reveal`.
    """
    if not isinstance(model, SecureModel):
        raise TypeError(f"release_model expects a SecureModel, got {type(model).__name__}")
    if model.n_rows < 1:
        raise InvalidPrivacyParameterError("the model does not record its number of rows")
    mechanism, privacy = model_release_plan(
        model.config,
        n_rows=model.n_rows,
        n_features=model.n_features,
        clip_norm=clip_norm,
        epsilon=epsilon,
        delta=delta,
        fixed_point=ctx.fixed_point,
        modulus=ctx.protocol.algebra.modulus,
        exact_truncation=ctx.protocol.exact_truncation(),
    )
    values = dp_reveal(
        ctx,
        model.weights,
        mechanism,
        noise=noise,
        max_colluding=max_colluding,
        accountant=accountant,
        to=to,
        label=label,
        failure_delta=privacy.truncation_delta,
    )
    if values is None:
        return None
    coef = np.asarray(values[: model.n_features], dtype=np.float64)
    intercept = float(values[model.n_features]) if model.fit_intercept else 0.0
    return LinearModel(coef, intercept)
