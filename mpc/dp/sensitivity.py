r"""L2 sensitivity of L2-regularised logistic regression for output perturbation.

Responsibility
--------------
Public bounds on how much the trained weight vector can move when one training row is replaced
(the "replace-one" neighbouring relation of Chaudhuri, Monteleoni & Sarwate, "Differentially
Private Empirical Risk Minimization", JMLR 12, 2011 — CMS11), for

* the exact minimiser (CMS11 Corollary 8): ``Δ = 2L/(nλ)``, with ``L = R`` for the logistic loss
  on rows clipped to ``‖x‖₂ <= R`` (:func:`erm_sensitivity`);
* the iterate that gradient descent actually returns after a fixed number of steps, with
  mini-batches, and with the fixed-point error of a secure run (:func:`gd_sensitivity`),
  following the stability argument of Wu, Li, Kumar, Chaudhuri, Jha & Naughton, "Bolt-on
  Differential Privacy for Scalable Stochastic Gradient Descent-based Analytics", SIGMOD 2017
  (itself from Hardt, Recht & Singer, "Train faster, generalize better", ICML 2016, Lemma 3.7);
* helpers to clip rows and to check that rows are clipped (the owner of whole rows can do this
  locally before sharing; vertically split rows need secure clipping, wired by the lead).

Setting and derivation
----------------------
Objective on a data set D of n rows ``(x_i, y_i)``, ``x_i`` including the constant-1 intercept
column when there is one, ``‖x_i‖₂ <= R``, ``y_i ∈ {0, 1}``::

    J_D(w) = (1/n) Σ_i ℓ(w; x_i, y_i) + (λ/2) ‖w‖²,   ∇ℓ(w; x, y) = (s(w·x) - y) x

where ``s`` is the sigmoid or an approximation of it used consistently (see assumptions).

1. Lipschitz and smoothness.  If ``|s(z) - y| <= r`` (``r = 1`` when s takes values in [0, 1]),
   then ``‖∇ℓ‖ <= rR =: L``.  If s is non-decreasing with slope at most ``a`` (``a = 1/4`` for
   the exact sigmoid), ℓ is convex and ``aR²``-smooth, so ``J_D`` is ``λ``-strongly convex and
   ``β = aR² + λ`` smooth.

2. Gradient descent is a contraction.  Write ``G(w) = w - η∇J(w) = (1-ηλ)w - η∇g(w)`` with
   ``g`` the loss part, convex and ``(β-λ)``-smooth, hence co-coercive:
   ``<u-v, ∇g(u)-∇g(v)> >= ‖∇g(u)-∇g(v)‖² / (β-λ)``.  Expanding,
   ``‖G(u)-G(v)‖² <= (1-ηλ)²‖u-v‖² - η‖∇g(u)-∇g(v)‖² (2(1-ηλ)/(β-λ) - η)``, and the last
   factor is >= 0 iff ``η <= 2/(β+λ)``.  So for ``η <= 2/(β+λ)``:
   ``‖G(u)-G(v)‖ <= c‖u-v‖`` with ``c = 1 - ηλ``.  (No second derivatives needed, so piecewise
   linear sigmoids are covered.)  Without the L2 penalty on some coordinate (e.g. an
   unpenalised intercept) strong convexity is lost and only ``c = 1`` (non-expansive, for
   ``η <= 2/β``) holds.

3. One replaced row.  D and D' differ in row i only; every step uses the same public batch of
   row indices for both.  A step whose batch B does not contain i applies the same map to both
   runs; one that does differs by ``η‖∇ℓ(w; z_i) - ∇ℓ(w; z'_i)‖/|B| <= 2ηL/|B|``.  With
   ``δ_k = ‖w_k - w'_k‖``, ``δ_0 = 0`` (both start at w = 0):
   ``δ_{k+1} <= c δ_k + [i ∈ B_k] 2ηL/|B_k|``.

   Full batch (``|B| = n``, T steps): ``δ_T <= (2ηL/n) Σ_{k<T} c^k = (2L/(nλ))(1 - c^T)``,
   which is below the exact-minimiser bound ``2L/(nλ)`` and tends to it as T grows.

   Mini-batches of size b, m = ceil(n/b) steps per epoch, E epochs (each epoch visits every row
   once, in a public order): row i enters once per epoch, at worst in the epoch's last step
   (fewest contractions after it), and in the smallest batch ``b_min``:
   ``δ_T <= (2ηL/b_min) Σ_{j<E} c^{jm} = (2ηL/b_min)(1 - c^{Em})/(1 - c^m)``.

4. Fixed-point error.  A secure run computes ``w̃_{k+1} = G(w̃_k) + e_k`` with ``‖e_k‖ <= e``
   (truncations, sigmoid approximation error: :func:`logreg_step_error`).  By the contraction,
   ``‖w̃_T - w_T‖ <= e Σ_{k<T} c^k`` (``<= T e``), for D and D' alike, so
   ``‖w̃_T(D) - w̃_T(D')‖ <= δ_T + 2e Σ_{k<T} c^k``: the *slack*.  The truncation randomness
   is data-independent, so for every fixed value of it the released map has this sensitivity,
   and the mechanism (a mixture over it with the same weights for D and D') keeps the
   guarantee.  A probabilistic-truncation *failure* (a wrong, huge value; ``docs/security.md``)
   breaks the bound: its probability must be added to δ by the caller.

Assumptions (what the caller must make true; the bound is only as good as these)
    * rows, *including* the intercept column, have ``‖x‖₂ <= R`` (:func:`clip_rows`);
    * features are scaled with *public* constants: standardising with the data's own mean and
      standard deviation changes every row when one row changes, which this analysis does not
      cover;
    * labels are in {0, 1}, the sigmoid (approximation) is non-decreasing with values in
      ``[y - r, y + r]`` and slope at most ``a`` (``mpc.ml.sigmoid``: 'piecewise' has a =
      0.17707 and values in [0, 1]; 'accurate-clamped' is within 7e-4 of the sigmoid — use
      the exact sigmoid's a = 1/4 and put its error into :func:`logreg_step_error`; 'poly'
      is unbounded outside [-12, 12] and not covered);
    * the penalty ``(λ/2)‖w‖²`` covers every coordinate for the strongly convex bound
      (``regularize_intercept=True``); ``mpc.ml.logreg`` currently does not penalise the
      intercept, for which ``regularize_intercept=False`` gives the weaker linear-in-T bound;
    * the number of steps, the step size, the batch schedule and n are public.

Security model
--------------
Pure functions of public sizes and hyper-parameters (and, for :func:`clip_rows` and
:func:`check_clipped`, of a party's own plaintext rows, run locally at their owner).  The
bounds are worst-case over all data sets; nothing data-dependent is computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mpc.dp.accountant import InvalidPrivacyParameterError, MissingSensitivityError

__all__ = [
    "GDSensitivity",
    "check_clipped",
    "clip_rows",
    "erm_sensitivity",
    "gd_sensitivity",
    "logreg_step_error",
]

FloatArray = npt.NDArray[np.float64]


def _positive(value: object, name: str, hint: str) -> float:
    if value is None:
        raise MissingSensitivityError(f"{name} is not set: {hint}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidPrivacyParameterError(f"{name} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out) or out <= 0:
        raise InvalidPrivacyParameterError(f"{name} must be a finite number > 0, got {value!r}")
    return out


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidPrivacyParameterError(f"{name} must be an int >= 1, got {value!r}")
    return value


_CLIP_HINT = (
    "set clip_norm=R, the L2 bound on every row (intercept column included); clip the rows "
    "with mpc.dp.sensitivity.clip_rows before training"
)
_L2_HINT = "set l2 > 0 (the L2 penalty lambda/2 |w|^2; output perturbation needs it)"


def clip_rows(x: Any, clip_norm: float | None, *, fit_intercept: bool = True) -> FloatArray:
    """Rows scaled down (never up) so that every row, with its intercept 1 if ``fit_intercept``,
    has L2 norm at most ``clip_norm``.

    With an intercept the features are clipped to ``sqrt(R² - 1)`` (so ``R > 1`` is needed).
    Run by the owner of whole rows on its own plaintext, before sharing.
    """
    r = _positive(clip_norm, "clip_norm", _CLIP_HINT)
    arr = np.array(x, dtype=np.float64, ndmin=2)
    if arr.ndim != 2 or not np.all(np.isfinite(arr)):
        raise InvalidPrivacyParameterError("rows must be a finite 2-d array")
    if fit_intercept:
        if r <= 1.0:
            raise InvalidPrivacyParameterError(
                f"clip_norm must be > 1 with an intercept (the constant 1 already has norm 1), "
                f"got {r}"
            )
        limit = math.sqrt(r * r - 1.0)
    else:
        limit = r
    norms = np.linalg.norm(arr, axis=1)
    factor = np.minimum(1.0, limit / np.maximum(norms, np.finfo(np.float64).tiny))
    return np.asarray(arr * factor[:, None], dtype=np.float64)


def check_clipped(x: Any, clip_norm: float | None, *, fit_intercept: bool = True) -> None:
    """InvalidPrivacyParameterError if a row (with its intercept 1) has L2 norm > clip_norm.

    Reports only how many rows exceed the bound (at their owner; never a value)."""
    r = _positive(clip_norm, "clip_norm", _CLIP_HINT)
    arr = np.array(x, dtype=np.float64, ndmin=2)
    sq = np.sum(arr * arr, axis=1) + (1.0 if fit_intercept else 0.0)
    bad = int(np.count_nonzero(sq > r * r * (1.0 + 1e-12)))
    if bad:
        raise InvalidPrivacyParameterError(
            f"{bad} row(s) have L2 norm above clip_norm={r:g}"
            f"{' (intercept included)' if fit_intercept else ''}: clip them with "
            f"mpc.dp.sensitivity.clip_rows or raise clip_norm"
        )


def erm_sensitivity(
    *, n_rows: int, l2: float | None, clip_norm: float | None, max_residual: float = 1.0
) -> float:
    """CMS11 Corollary 8: L2 sensitivity ``2L/(nλ)``, ``L = max_residual · R``, of the exact
    minimiser of the L2-regularised logistic loss (replace-one neighbours)."""
    n = _count(n_rows, "n_rows")
    lam = _positive(l2, "l2", _L2_HINT)
    r = _positive(clip_norm, "clip_norm", _CLIP_HINT)
    res = _positive(max_residual, "max_residual", "1 for a sigmoid with values in [0, 1]")
    return 2.0 * res * r / (n * lam)


def logreg_step_error(
    *,
    dim: int,
    frac_bits: int,
    learning_rate: float,
    clip_norm: float,
    sigmoid_error: float = 0.0,
    sigmoid_slope: float = 0.25,
    logit_ulps: float = 2.0,
    gradient_ulps: float = 2.0,
    update_ulps: float = 2.0,
) -> float:
    """An L2 bound ``e`` on the per-step fixed-point error of secure gradient descent.

    Error model (per step, u = 2^-frac_bits): logits ``Xw`` off by at most ``logit_ulps·u``
    each; the computed sigmoid off by at most ``sigmoid_error`` from the function the bound
    assumes; gradient coordinates (after the division by |B|) off by ``gradient_ulps·u``; the
    update ``w - η g`` off by ``update_ulps·u`` per coordinate.  Then the probability error is
    ``ε_p = sigmoid_error + a·logit_ulps·u``, the gradient error has L2 norm at most
    ``R ε_p + sqrt(dim)·gradient_ulps·u`` (``‖X_B^T e_p‖/|B| <= R max|e_p|``), and

        e = η (R ε_p + sqrt(dim)·gradient_ulps·u) + sqrt(dim)·update_ulps·u.

    The defaults (2 ulps: probabilistic truncation returns floor or one less) must be checked
    against the actual secure implementation; a cruder bound is ``e <= (dim)·c·u`` for any
    per-coordinate error of c ulps.
    """
    d = _count(dim, "dim")
    if isinstance(frac_bits, bool) or not isinstance(frac_bits, int) or frac_bits < 0:
        raise InvalidPrivacyParameterError(f"frac_bits must be an int >= 0, got {frac_bits!r}")
    eta = _positive(learning_rate, "learning_rate", "set the gradient step size")
    r = _positive(clip_norm, "clip_norm", _CLIP_HINT)
    for name, value in (
        ("sigmoid_error", sigmoid_error),
        ("sigmoid_slope", sigmoid_slope),
        ("logit_ulps", logit_ulps),
        ("gradient_ulps", gradient_ulps),
        ("update_ulps", update_ulps),
    ):
        if not math.isfinite(value) or value < 0:
            raise InvalidPrivacyParameterError(f"{name} must be a finite number >= 0, got {value}")
    ulp = 2.0**-frac_bits
    eps_p = sigmoid_error + sigmoid_slope * logit_ulps * ulp
    root = math.sqrt(d)
    return eta * (r * eps_p + root * gradient_ulps * ulp) + root * update_ulps * ulp


@dataclass(frozen=True)
class GDSensitivity:
    """The pieces of a gradient-descent sensitivity bound (all L2, real units).

    ``iterate``: bound for exact arithmetic after the given steps; ``fixed_point``: slack
    ``2e Σ c^k`` for a per-step error e; ``total``: their sum (what to calibrate noise to);
    ``minimiser``: ``2L/(nλ)`` of the exact minimiser, for comparison (inf without strong
    convexity); ``contraction``: c = 1 - ηλ (1 without strong convexity); ``steps``: T.
    """

    iterate: float
    fixed_point: float
    minimiser: float
    contraction: float
    steps: int

    @property
    def total(self) -> float:
        return self.iterate + self.fixed_point


def gd_sensitivity(
    *,
    n_rows: int,
    l2: float | None,
    clip_norm: float | None,
    learning_rate: float,
    epochs: int,
    batch_size: int | None = None,
    sigmoid_slope: float = 0.25,
    max_residual: float = 1.0,
    regularize_intercept: bool = True,
    step_error: float = 0.0,
) -> GDSensitivity:
    """L2 sensitivity of the weights after ``epochs`` passes of (mini-)batch gradient descent
    from w = 0 on the L2-regularised logistic loss (module docstring, steps 1-4).

    ``clip_norm`` R bounds every row *with* its intercept column; ``l2`` is λ in
    ``(λ/2)‖w‖²``; ``batch_size`` None means full batch; ``step_error`` is the per-step L2
    fixed-point error bound e (:func:`logreg_step_error`; 0 for exact arithmetic).  Raises
    InvalidPrivacyParameterError if the step size is too large for the contraction argument
    (``η <= 2/(aR² + 2λ)``, or ``η <= 2/(aR² + λ)`` without strong convexity).
    """
    n = _count(n_rows, "n_rows")
    r = _positive(clip_norm, "clip_norm", _CLIP_HINT)
    if l2 is None:
        raise MissingSensitivityError(f"l2 is not set: {_L2_HINT}")
    if isinstance(l2, bool) or not isinstance(l2, int | float) or not math.isfinite(l2) or l2 < 0:
        raise InvalidPrivacyParameterError(f"l2 must be a finite number >= 0, got {l2!r}")
    lam = float(l2)
    eta = _positive(learning_rate, "learning_rate", "set the gradient step size")
    e_count = _count(epochs, "epochs")
    slope = _positive(sigmoid_slope, "sigmoid_slope", "1/4 for the exact sigmoid")
    res = _positive(max_residual, "max_residual", "1 for a sigmoid with values in [0, 1]")
    if not math.isfinite(step_error) or step_error < 0:
        raise InvalidPrivacyParameterError(f"step_error must be finite and >= 0, got {step_error}")
    strongly_convex = regularize_intercept and lam > 0
    if not strongly_convex and regularize_intercept:
        raise MissingSensitivityError(
            f"l2 is 0: {_L2_HINT} (or pass regularize_intercept=False for the weaker bound)"
        )

    lipschitz = res * r
    beta = slope * r * r + lam
    if strongly_convex:
        eta_max = 2.0 / (beta + lam)
        c = 1.0 - eta * lam
    else:
        eta_max = 2.0 / beta
        c = 1.0
    if eta > eta_max:
        raise InvalidPrivacyParameterError(
            f"learning_rate {eta:g} is too large for the sensitivity bound: gradient descent is "
            f"a contraction only for learning_rate <= {eta_max:.6g} (= 2/(a R^2 + "
            f"{'2 lambda' if strongly_convex else 'lambda'}) with a={slope:g}, R={r:g}, "
            f"lambda={lam:g}); lower the learning rate or clip_norm"
        )

    b = n if batch_size is None else min(_count(batch_size, "batch_size"), n)
    m = -(-n // b)  # steps per epoch
    b_min = n - (m - 1) * b  # the last batch of an epoch is the smallest
    steps = m * e_count

    def geometric(ratio: float, terms: int) -> float:
        if ratio >= 1.0:
            return float(terms)
        return (1.0 - ratio**terms) / (1.0 - ratio)

    iterate = (2.0 * eta * lipschitz / b_min) * geometric(c**m, e_count)
    slack = 2.0 * step_error * geometric(c, steps)
    minimiser = 2.0 * lipschitz / (n * lam) if strongly_convex else math.inf
    return GDSensitivity(iterate, slack, minimiser, c, steps)
