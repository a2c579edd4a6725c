"""Logistic regression trained on secret-shared data by gradient descent in fixed point.

Responsibility: `LogisticRegression`, a frozen configuration whose `fit` runs inside the
parties' SPMD program on a shared design matrix (from `mpc.ml.data`: horizontal or vertical
partition) and returns a `SecureModel` whose weights stay secret-shared: reveal them to named
parties (`LinearModel`: numpy arrays, a `torch.nn.Linear` state dict), predict securely on new
shared rows, or hand the shared weights (`SecureModel.weights`) to another protocol such as a
differentially private release. Also `train_plain`, the same recipe in float64 numpy, as the
reference the secure result is measured against.

Recipe (batch gradient descent on the mean logistic loss, as in SecureML, Mohassel & Zhang,
IEEE S&P 2017, sect. 4.1, with the sigmoid approximations of `mpc.ml.sigmoid`):
    w <- 0;  for each epoch, for each batch B (all rows when batch_size is None):
        z = X_B w;  p = sigmoid(z);  g = X_B^T (p - y_B) / |B| + l2 * w  (no penalty on the
        intercept unless penalize_intercept);  w <- w - learning_rate * g
The intercept is a last column of ones; `penalize_intercept=True` puts the L2 penalty on it too
(what the differential-privacy sensitivity bound of `mpc.dp.sensitivity` needs for its strongly
convex case; `mpc.dp.release`). Mini-batches follow a public permutation of the rows per epoch
derived with the crypto PRG `mpc.rng.Prg` from `shuffle_seed` under a fixed, public key (public,
data-independent; the same at every party and in `train_plain`). Per full-batch epoch: 2 rounds
for X w, the sigmoid's rounds, 2 for X^T r, 1 for the update (one truncation for lr/|B| and the
L2 term together); with `piecewise` and the additive protocol 6 in all (`_fused_step`: every
truncation rides in a product's round; docs/logreg.md, "Rounds per epoch").

Range: every product is checked by `mpc.bounds` against public bounds: |x| <= feature_limit,
|p - y| <= 1 plus the sigmoid's error, and a per-coordinate bound W on the weights that
follows the update, W <- |1 - lr l2| W + lr feature_limit |p - y| (starting from 0). `fit`
checks the whole schedule before the first round (`check_range`): the logits' bound
(columns x feature_limit x W) must stay within what the sigmoid takes (`sigmoid.input_limit`)
and what a product admits, and so must the gradient sum (batch x feature_limit x |p - y|).

Security model: semi-honest, as the session's protocol. `fit` reveals nothing: weights, logits,
probabilities and gradients stay shared; the number of rounds and message sizes depend only on
public sizes (rows, features, epochs, batch size). Public: the configuration, the data shapes,
and the per-epoch wall-clock times in the progress records. Optional leaks, only when asked
for: `reveal_loss=True` reveals one number per epoch to every party (the mean squared error of
the predicted probabilities, i.e. the Brier score; each batch's at the weights before its step);
`SecureModel.reveal(to=...)` reveals the weights to the named parties only; predictions are
revealed only by the caller.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from mpc import bounds
from mpc.encoding import FixedPoint
from mpc.errors import ConfigurationError, InvalidDataError, UnsupportedOperationError
from mpc.ml.data import (
    FEATURE_LIMIT,
    SharedDataset,
    Standardizer,
    check_features,
    check_labels,
    share_horizontal,
    share_vertical,
)
from mpc.ml.sigmoid import (
    NEEDS_COMPARISON,
    PIECEWISE_EXTRA_BITS,
    SIGMOIDS,
    admit_truncation,
    as_fixed,
    check_name,
    input_limit,
    max_error_bound,
    mul,
    sigmoid,
    sigmoid_piecewise,
    sigmoid_plain,
)
from mpc.program import MaskedMatrix, PartyContext, Secret
from mpc.protocols.base import Protocol
from mpc.rng import Prg

FloatArray = npt.NDArray[np.float64]

#: In a full-batch fit whose truncations ride in the masked products (the additive protocol),
#: the piecewise sigmoid's result is truncated to this many bits fewer than the session's, so
#: that the gradient X^T (p - y), folded untruncated into the update, stays within the exact
#: truncation's range 2^62 (`_combine`): 2^-14 is ample for a residual in [-1.06, 1.06].
RESIDUAL_DROP = 2

#: The operation kinds (keys of the per-party stats) that training is counted under.
TRAINING_KINDS = (
    "logreg.forward",
    "sigmoid",
    "logreg.gradient",
    "logreg.update",
    "logreg.loss",
)


# ---- revealed models ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LinearModel:
    """Revealed (plaintext) logistic-regression weights: p = sigmoid(x . coef + intercept)."""

    coef: FloatArray
    intercept: float

    @property
    def n_features(self) -> int:
        return int(self.coef.shape[0])

    def decision_function(self, x: Any) -> FloatArray:
        arr = check_features(x)
        if arr.shape[1] != self.n_features:
            raise InvalidDataError(f"expected {self.n_features} features, got {arr.shape[1]}")
        return np.asarray(arr @ self.coef + self.intercept, dtype=np.float64)

    def predict_proba(self, x: Any) -> FloatArray:
        """P(y = 1 | x) with the exact sigmoid."""
        return sigmoid_plain(self.decision_function(x))

    def predict(self, x: Any) -> npt.NDArray[np.int64]:
        return (self.decision_function(x) >= 0.0).astype(np.int64)

    def accuracy(self, x: Any, y: Any) -> float:
        labels = check_labels(y)
        return float(np.mean(self.predict(x) == labels))

    def max_difference(self, other: LinearModel) -> float:
        """max |w - w'| over the coefficients and the intercept."""
        deltas = np.r_[self.coef - other.coef, self.intercept - other.intercept]
        return float(np.abs(deltas).max())

    def in_original_units(self, standardizer: Standardizer) -> LinearModel:
        """The model for raw features: coef / std, intercept - sum(coef * mean / std)."""
        coef = self.coef / standardizer.std
        return LinearModel(coef, float(self.intercept - np.sum(coef * standardizer.mean)))

    def to_numpy(self) -> dict[str, FloatArray]:
        """{"coef": shape (d,), "intercept": shape (1,)}, float64 copies."""
        return {"coef": self.coef.copy(), "intercept": np.array([self.intercept])}

    def state_dict_arrays(self) -> dict[str, npt.NDArray[np.float32]]:
        """The state dict of `torch.nn.Linear(d, 1)` as float32 numpy arrays:
        {"weight": shape (1, d), "bias": shape (1,)}."""
        return {
            "weight": self.coef.astype(np.float32).reshape(1, -1),
            "bias": np.array([self.intercept], dtype=np.float32),
        }

    def to_torch_state_dict(self) -> dict[str, Any]:
        """`state_dict_arrays` as torch tensors, for `torch.nn.Linear(d, 1).load_state_dict`.

        Needs torch (`pip install "mpc[torch]"`); raises ImportError saying so otherwise.
        """
        try:
            torch = importlib.import_module("torch")
        except ImportError as exc:
            raise ImportError(
                "to_torch_state_dict needs PyTorch, which is not installed; install it with "
                "`pip install 'mpc[torch]'` (torch==2.13.0), or use state_dict_arrays() for the "
                "same content as numpy arrays"
            ) from exc
        return {k: torch.from_numpy(v.copy()) for k, v in self.state_dict_arrays().items()}


# ---- progress -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpochRecord:
    """Progress of one epoch (public): number (from 1), seconds since `fit` started, seconds of
    this epoch, and the revealed loss when `reveal_loss=True` (else None)."""

    epoch: int
    seconds: float
    epoch_seconds: float
    loss: float | None = None

    def __str__(self) -> str:
        loss = "" if self.loss is None else f"  brier loss {self.loss:.5f} (revealed)"
        return f"epoch {self.epoch:>3}  {self.seconds:8.3f} s  (+{self.epoch_seconds:.3f} s){loss}"


Progress = Callable[[EpochRecord], None]


# ---- the secure model ---------------------------------------------------------------------------
@dataclass
class SecureModel:
    """Secret-shared logistic-regression weights, as returned by `LogisticRegression.fit`.

    `weights` holds coef (the first `n_features` entries) and, with an intercept, the intercept
    last. Lives inside one run of a program (like every `Secret`); return `reveal(...)`'s result
    or predictions from the program, not the model itself.
    """

    weights: Secret
    n_features: int
    fit_intercept: bool
    config: LogisticRegression
    history: list[EpochRecord] = field(default_factory=list)
    #: Rows the model was trained on (public: the shape of the shared data).
    n_rows: int = 0

    def __reduce__(self) -> Any:
        raise TypeError(
            "a SecureModel holds shares and must not leave its party; return model.reveal(...) "
            "or revealed predictions from the program instead"
        )

    @property
    def coef(self) -> Secret:
        return self.weights[: self.n_features]

    def reveal(self, to: str | Sequence[str] | None = None) -> LinearModel | None:
        """Open the weights to the parties `to` (all when None): a LinearModel there, None
        elsewhere. One round. Reveals the weights, and so the model, to those parties."""
        values = self.weights.ctx.reveal(self.weights, to)
        if values is None:
            return None
        coef = np.asarray(values[: self.n_features], dtype=np.float64)
        intercept = float(values[self.n_features]) if self.fit_intercept else 0.0
        return LinearModel(coef, intercept)

    def decision_function(self, ctx: PartyContext, x: Secret | SharedDataset) -> Secret:
        """Shared logits X w + b of shared rows (2 rounds)."""
        rows = x.x if isinstance(x, SharedDataset) else as_fixed(x)
        if rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise InvalidDataError(
                f"expected shared rows with {self.n_features} features, got shape {rows.shape}"
            )
        with ctx.channel.operation("logreg.predict"):
            logits = rows @ self.coef
            if self.fit_intercept:
                logits = logits + self.weights[self.n_features]
        return logits

    def predict_proba(
        self, ctx: PartyContext, x: Secret | SharedDataset, method: str | None = None
    ) -> Secret:
        """Shared P(y = 1 | x) of shared rows, with the training sigmoid unless `method` given.
        Nothing is revealed; reveal the result (`ctx.reveal(p, to=...)`) to whoever may see it."""
        name = check_name(method or self.config.sigmoid)
        _check_protocol(ctx, name)
        logits = self.decision_function(ctx, x)
        with ctx.channel.operation("logreg.predict"):
            return sigmoid(logits, name)


# ---- configuration and training -----------------------------------------------------------------
@dataclass(frozen=True)
class LogisticRegression:
    """Configuration of secure logistic regression; `fit` trains inside an SPMD program.

    learning_rate: step size on the mean gradient; epochs: passes over the data; l2: L2 penalty
    (l2/2 |w|^2, not on the intercept unless penalize_intercept); fit_intercept; batch_size:
    rows per step (None: full batch); sigmoid: one of `mpc.ml.sigmoid.SIGMOIDS`; standardize and
    feature_limit: used by `share_horizontal` / `share_vertical` (z-scores, |value| <=
    feature_limit); shuffle_seed: public seed of the mini-batch order (None: rows in order);
    penalize_intercept: apply the L2 penalty to the intercept as well (needed by the strongly
    convex sensitivity bound of `mpc.dp.sensitivity.gd_sensitivity`, see `mpc.dp.release`).
    """

    learning_rate: float = 1.0
    epochs: int = 10
    l2: float = 0.0
    fit_intercept: bool = True
    batch_size: int | None = None
    sigmoid: str = "accurate-clamped"
    standardize: bool = True
    feature_limit: float = FEATURE_LIMIT
    shuffle_seed: int | None = 0
    penalize_intercept: bool = False

    def __post_init__(self) -> None:
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr):
            raise ConfigurationError(f"learning_rate must be a finite number, got {lr!r}")
        if lr <= 0:
            raise ConfigurationError(f"learning_rate must be positive, got {lr}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigurationError(f"epochs must be a positive integer, got {self.epochs!r}")
        if not isinstance(self.l2, int | float) or not math.isfinite(self.l2) or self.l2 < 0:
            raise ConfigurationError(f"l2 must be a finite number >= 0, got {self.l2!r}")
        if self.learning_rate * self.l2 >= 2.0:
            raise ConfigurationError(
                f"learning_rate * l2 = {self.learning_rate * self.l2:g} >= 2: the L2 term alone "
                "makes gradient descent diverge; lower one of them"
            )
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            raise ConfigurationError(
                f"batch_size must be a positive integer or None, got {self.batch_size!r}"
            )
        if self.sigmoid not in SIGMOIDS:
            raise ConfigurationError(
                f"unknown sigmoid {self.sigmoid!r}; choose one of {', '.join(SIGMOIDS)}"
            )
        limit = self.feature_limit
        if not isinstance(limit, int | float) or not math.isfinite(limit) or limit <= 0:
            raise ConfigurationError(f"feature_limit must be a positive number, got {limit!r}")

    # ---- public checks --------------------------------------------------------------------------
    def batch_rows(self, n_rows: int) -> int:
        return n_rows if self.batch_size is None else min(self.batch_size, n_rows)

    def check_range(
        self,
        n_rows: int,
        n_features: int,
        fixed_point: FixedPoint | None = None,
        feature_limit: float | None = None,
        protocol: type[Protocol] | None = None,
        zero_one: bool = True,
        start_bound: float = 0.0,
        offset_bound: float = 0.0,
    ) -> None:
        """ConfigurationError if the learning rate or the batch can leave the fixed-point range.

        With |x| <= L (feature_limit) and the first step taken from w = 0, where p = 1/2 for every
        sigmoid, every gradient entry is at most L/2, so one step moves a logit by at most
        lr * (d L^2 + 1) / 2; that must stay below the fixed-point bound 2^int_bits. The gradient
        sum over a batch of B rows, at most B L (|p - y| <= 1), must stay below it as well.
        With the session's `protocol` (class), also the whole schedule of bounds that `fit` tracks
        (`weight_bounds`): every logit and gradient product must be admitted (`mpc.bounds`).
        All use public numbers only (sizes, configuration, the feature bound).
        """
        fp = fixed_point or FixedPoint()
        bound = fp.max_abs
        limit = self.feature_limit if feature_limit is None else feature_limit
        step = self.learning_rate * (n_features * limit * limit + 1.0) / 2.0
        if step >= bound:
            safe = 2.0 * bound / (n_features * limit * limit + 1.0)
            raise ConfigurationError(
                f"learning_rate {self.learning_rate:g} overflows the fixed-point range: with "
                f"{n_features} features of |x| <= {limit:g} one gradient step can move a logit by "
                f"up to {step:.3g}, beyond 2^{fp.int_bits} = {bound:g}; use a learning rate below "
                f"{safe:.3g} (or a smaller feature_limit)"
            )
        batch = self.batch_rows(n_rows)
        if batch * limit >= bound:
            raise ConfigurationError(
                f"a batch of {batch} rows with |x| <= {limit:g} can make a gradient sum of "
                f"{batch * limit:.3g}, beyond the fixed-point bound {bound:g}; use batch_size "
                f"<= {int(bound // limit) - 1} (or a smaller feature_limit)"
            )
        if protocol is not None:
            self._check_schedule(
                n_rows, n_features, fp, limit, protocol, zero_one, start_bound, offset_bound
            )

    def residual_limit(self, zero_one: bool = True, frac_bits: int = 16) -> float:
        """A bound on |p - y|: 1 plus the sigmoid's error for labels in {0, 1} (p lies within
        that error of [0, 1] wherever the logits stay within `sigmoid.input_limit`); one more
        for labels only known to satisfy |y| <= 1 (`zero_one=False`); plus the truncation of
        p to `frac_bits` - RESIDUAL_DROP bits in the fused gradient (below 2 of its ulps)."""
        slack = 2.0 ** (1 + RESIDUAL_DROP - frac_bits)
        return (1.0 if zero_one else 2.0) + max_error_bound(self.sigmoid)[0] + slack

    def weight_bounds(
        self,
        n_rows: int,
        n_features: int,
        fixed_point: FixedPoint,
        feature_limit: float,
        zero_one: bool = True,
        start_bound: float = 0.0,
        offset_bound: float = 0.0,
    ) -> list[float]:
        """The public bound W on every weight before each step of training, in order (the
        first is `start_bound`, 0 from w = 0): W <- max|1 - decay| W + lr_eff * (batch *
        max(L, 1) * R + `offset_bound`) + 2 ulp, with the encoded constants of the update
        (`update_coefficients`) and R = `residual_limit`."""
        width = n_features + (1 if self.fit_intercept else 0)
        column = max(feature_limit, 1.0) if self.fit_intercept else feature_limit
        ulp = 2.0**-fixed_point.frac_bits
        weights, out = float(start_bound), [float(start_bound)]
        for epoch in range(1, self.epochs + 1):
            for rows in self.batches(n_rows, epoch):
                grad, decay = self.update_coefficients(len(rows), width, fixed_point.frac_bits)
                shrink = float(np.max(np.abs(1.0 - decay)))
                # the gradient sum is itself truncated (below 2 ulp), then the update (2 ulp)
                residual = self.residual_limit(zero_one, fixed_point.frac_bits)
                step = grad * (len(rows) * column * residual + 2 * ulp + offset_bound)
                weights = shrink * weights + step + 2 * ulp
                out.append(weights)
        return out

    def _check_schedule(
        self,
        n_rows: int,
        n_features: int,
        fixed_point: FixedPoint,
        feature_limit: float,
        protocol: type[Protocol],
        zero_one: bool,
        start_bound: float = 0.0,
        offset_bound: float = 0.0,
    ) -> None:
        """Refuse a schedule whose logits or gradient sums leave what the products admit."""
        exact = protocol.exact_truncation()
        products = bounds.product_limit(
            protocol.algebra, fixed_point.frac_bits, fixed_point.failure_bits, exact
        )
        width = n_features + (1 if self.fit_intercept else 0)
        column = max(feature_limit, 1.0) if self.fit_intercept else feature_limit
        logits = min(products, input_limit(self.sigmoid, products))
        batch = self.batch_rows(n_rows)
        residual = self.residual_limit(zero_one, fixed_point.frac_bits)
        gradient = batch * column * residual
        hint = (
            "lower feature_limit, learning_rate or epochs, add l2, or use fewer fractional bits "
            "(FixedPoint(frac_bits=...))"
        )
        if gradient >= products:
            raise ConfigurationError(
                f"a gradient sum over {batch} rows with |x| <= {column:g} can reach "
                f"{gradient:.3g}, beyond the {products:.3g} a product admits with "
                f"{protocol.algebra.name} (mpc.bounds); use batch_size <= "
                f"{int(products // (column * residual))} or {hint}"
            )
        weights = self.weight_bounds(
            n_rows, n_features, fixed_point, feature_limit, zero_one, start_bound, offset_bound
        )
        for step, bound in enumerate(weights[:-1], start=1):
            reach = width * column * bound
            if reach >= logits:
                if logits < products:
                    why = f"the sigmoid {self.sigmoid!r} takes |z| <= {logits:.3g}"
                    fix = "use sigmoid 'accurate-clamped' or 'piecewise' (any z; additive), or "
                else:
                    why = f"a product admits {products:.3g} with {protocol.algebra.name}"
                    fix = ""
                raise ConfigurationError(
                    f"at step {step} the logits X w can reach {reach:.3g} ({width} columns of "
                    f"|x| <= {column:g}, weights |w| <= {bound:.3g}), but {why}; {fix}{hint}"
                )

    # ---- sharing data ---------------------------------------------------------------------------
    def share_horizontal(
        self,
        ctx: PartyContext,
        x: Any,
        y: Any,
        *,
        owners: Sequence[str] | None = None,
        standardizer: Standardizer | None = None,
        labels: bool = True,
    ) -> SharedDataset:
        """`mpc.ml.data.share_horizontal` with this configuration's standardize/feature_limit."""
        return share_horizontal(
            ctx,
            x,
            y,
            owners=owners,
            standardize=self.standardize,
            standardizer=standardizer,
            feature_limit=self.feature_limit,
            labels=labels,
        )

    def share_vertical(
        self,
        ctx: PartyContext,
        x: Any,
        *,
        label_owner: str | None,
        y: Any = None,
        owners: Sequence[str] | None = None,
        standardizer: Standardizer | None = None,
    ) -> SharedDataset:
        """`mpc.ml.data.share_vertical` with this configuration's standardize/feature_limit."""
        return share_vertical(
            ctx,
            x,
            label_owner=label_owner,
            y=y,
            owners=owners,
            standardize=self.standardize,
            standardizer=standardizer,
            feature_limit=self.feature_limit,
        )

    # ---- training -------------------------------------------------------------------------------
    def batches(self, n_rows: int, epoch: int) -> list[npt.NDArray[np.int64]]:
        """The public row indices of each step of `epoch` (from 1); the same in `train_plain`."""
        if self.batch_size is None or self.batch_size >= n_rows:
            return [np.arange(n_rows, dtype=np.int64)]
        if self.shuffle_seed is None:
            order = np.arange(n_rows, dtype=np.int64)
        else:
            # Public, data-independent order (not a secret): every party derives the same one.
            order = public_permutation(n_rows, ("mpc.ml.logreg.batches", self.shuffle_seed, epoch))
        return [order[i : i + self.batch_size] for i in range(0, n_rows, self.batch_size)]

    def decay(self, width: int) -> FloatArray:
        """The per-coordinate weight decay learning_rate * l2 of one step (0 on the intercept,
        the last coordinate, unless penalize_intercept)."""
        decay = np.full(width, self.learning_rate * self.l2)
        if self.fit_intercept and not self.penalize_intercept:
            decay[-1] = 0.0
        return decay

    def update_coefficients(
        self, batch_rows: int, width: int, frac_bits: int = 16
    ) -> tuple[float, FloatArray]:
        """The public constants one secure step really applies, decoded: (the coefficient of the
        gradient sum, learning_rate / batch_rows, and the decay vector), each as rounded by the
        fixed-point encoding of the update (`_combine`). The sensitivity analysis of
        `mpc.dp.release` uses these exact values (the effective step size and penalty)."""
        decay = self.decay(width)
        grad = np.asarray(self.learning_rate / batch_rows, dtype=np.float64)
        constants = [grad] + ([decay] if np.any(decay) else [])
        encoded, shift = encode_constants(constants, frac_bits)
        scale = float(2**shift)
        grad_eff = float(encoded[0]) / scale
        decay_eff = encoded[1] / scale if len(encoded) > 1 else np.zeros(width)
        return grad_eff, np.asarray(np.broadcast_to(decay_eff, (width,)), dtype=np.float64)

    def fit(
        self,
        ctx: PartyContext,
        data: SharedDataset | Secret,
        y: Secret | None = None,
        *,
        progress: Progress | None = None,
        reveal_loss: bool = False,
        start: Secret | None = None,
        offset: Secret | None = None,
    ) -> SecureModel:
        """Train on shared rows (SPMD: every party calls it with its shares); nothing revealed.

        `data` is a `SharedDataset` (its labels are used) or a shared matrix X of shape (n, d)
        with shared labels `y` of shape (n,) (integers 0/1 or fixed point). `progress` is called
        at every party after every epoch with an `EpochRecord`; with `reveal_loss=True` the
        records carry the Brier loss, revealed to every party (a leak the caller accepts).

        `start` (shared weights to start from, default 0) and `offset` (a shared vector added
        to the gradient sum X^T (p - y) of every step, full batch only) serve objective
        perturbation (`mpc.dp.objective`): gradient descent on the mean loss plus b.w/n for
        b = offset, from `start`. Their public bounds enter the range checks.
        """
        x, labels, limit = _resolve(data, y, self.feature_limit)
        zero_one = isinstance(data, SharedDataset)  # labels checked 0/1 by their owners
        n, d = x.shape
        _check_protocol(ctx, self.sigmoid)
        width = d + (1 if self.fit_intercept else 0)
        for name, extra in (("start", start), ("offset", offset)):
            if extra is not None and extra.shape != (width,):
                raise InvalidDataError(f"{name} must have shape ({width},), got {extra.shape}")
        if offset is not None and self.batch_size is not None and self.batch_size < n:
            raise ConfigurationError("an offset needs full-batch training: set batch_size=None")
        extra_bounds = (
            0.0 if start is None else start.bound,
            0.0 if offset is None else offset.bound,
        )
        self.check_range(n, d, ctx.fixed_point, limit, type(ctx.protocol), zero_one, *extra_bounds)
        weight_bounds = iter(
            self.weight_bounds(n, d, ctx.fixed_point, limit, zero_one, *extra_bounds)[1:]
        )
        started = time.perf_counter()
        design = x
        if self.fit_intercept:
            ones = ctx.constant(np.ones((n, 1)))
            design = ctx.concat([x, ones], axis=1)
        width = design.shape[1]
        w = ctx.constant(np.zeros(width)) if start is None else as_fixed(start)
        decay = self.decay(width)
        full = self.batch_size is None or self.batch_size >= n
        # Full batch: the design matrix is opened once under a dealer mask, with its first
        # product, and reused by both products of every epoch (X @ w and X^T @ residual).
        # Mini-batches are multiplied plainly: each batch's mask would be a new dealer stream
        # (one blocking dealer call per batch), which measured slower than opening it twice.
        full_x = design.masked() if full else None
        # `piecewise`, where the masked products can truncate their vector operand in their own
        # round (additive): the logits z = X w are kept untruncated and updated by the step s,
        # z <- z - X s, whose product also truncates s; the sigmoid compares z untruncated,
        # and the residual's truncation rides in the gradient's product (`_fused_step`): 6
        # rounds an epoch instead of 11. (The other sigmoids truncate z and p themselves and
        # would gain no round, for more dealer bytes.)
        deferred = (
            full_x is not None
            and self.sigmoid == "piecewise"
            and ctx.protocol.settles_in_masked_products()
            # the fused sigmoid works at scale 3f + 2 with values up to 1 + 1/(2a) < 4:
            # beyond 19 fractional bits (64-bit ring) the unfused steps are used
            and 4.0 * 2.0 ** (3 * ctx.fixed_point.frac_bits + PIECEWISE_EXTRA_BITS)
            < bounds.wrap_limit(ctx.protocol.algebra)
        )
        logits: Secret | None = None
        if deferred:
            zeros = ctx.constant(np.zeros(n))
            f = ctx.fixed_point.frac_bits
            logits = Secret(ctx, zeros.share, 2 * f, f, bound=0.0)  # X @ 0, untruncated
            if start is not None and full_x is not None:  # X @ start, untruncated (a round)
                logits = full_x.product(w, deferred=True)
        steps = sum(len(self.batches(n, e)) for e in range(1, self.epochs + 1))
        history: list[EpochRecord] = []
        for epoch in range(1, self.epochs + 1):
            epoch_start = time.perf_counter()
            loss_sum: Secret | None = None
            for rows in self.batches(n, epoch):
                steps -= 1
                if full_x is not None and logits is not None:
                    bound = next(weight_bounds)
                    logits, w, loss_part = self._fused_step(
                        ctx,
                        full_x,
                        logits,
                        w,
                        labels,
                        decay,
                        bound,
                        zero_one,
                        reveal_loss,
                        last=steps == 0,
                        offset=offset,
                    )
                    if loss_part is not None:
                        loss_sum = loss_part if loss_sum is None else loss_sum + loss_part
                    continue
                xb: Secret | MaskedMatrix
                xbt: Secret | MaskedMatrix
                if full_x is not None:
                    xb, xbt, yb = full_x, full_x.T, labels
                else:
                    xb, yb = design[rows], labels[rows]
                    xbt = xb.T
                with ctx.channel.operation("logreg.forward"):
                    z = xb @ w
                p = sigmoid(z, self.sigmoid)
                # p is within the sigmoid's error of [0, 1] (the logits stay where that error
                # bound holds: `check_range`), y is 0 or 1
                residual = _residual(
                    p, yb, self.residual_limit(zero_one, ctx.fixed_point.frac_bits)
                )
                if reveal_loss:
                    with ctx.channel.operation("logreg.loss"):
                        part = mul(residual, residual).sum()
                    loss_sum = part if loss_sum is None else loss_sum + part
                with ctx.channel.operation("logreg.gradient"):
                    grad_sum = xbt @ residual
                with ctx.channel.operation("logreg.update"):
                    # w - lr g - decay w; with `deferred`, truncated in the round of the next
                    # epoch's forward product
                    step = [(grad_sum, self.learning_rate / len(rows)), (w, decay)]
                    if offset is not None:  # full batch: the same coefficient as the gradient
                        step.append((offset, self.learning_rate / len(rows)))
                    w = _combine(step, skip_zero=True, defer=deferred, subtract_from=w)
                # (1 - decay) w - lr g exactly, up to the truncation: `weight_bounds`
                w = w._bounded(next(weight_bounds))
            loss = None
            if loss_sum is not None:
                with ctx.channel.operation("logreg.loss"):
                    opened = ctx.reveal(loss_sum)
                loss = None if opened is None else float(opened) / n
            now = time.perf_counter()
            record = EpochRecord(epoch, now - started, now - epoch_start, loss)
            history.append(record)
            if progress is not None:
                progress(record)
        return SecureModel(w, d, self.fit_intercept, self, history, n_rows=n)

    def _fused_step(
        self,
        ctx: PartyContext,
        x: MaskedMatrix,
        logits: Secret,
        w: Secret,
        labels: Secret,
        decay: FloatArray,
        weight_bound: float,
        zero_one: bool,
        reveal_loss: bool,
        last: bool,
        offset: Secret | None = None,
    ) -> tuple[Secret, Secret, Secret | None]:
        """One full-batch `piecewise` step with every truncation in a product's round
        (additive): the sigmoid on the untruncated logits z = X w (4 rounds), the gradient
        X^T (p - y) with the residual's truncation (1), the step s = lr/n g + decay w folded
        with the gradient's pending truncation (local), and z - X s with s's truncation (1;
        after the last step s is truncated alone). Returns (z, w, loss part)."""
        f = ctx.fixed_point.frac_bits
        width = w.size
        column = max(self.feature_limit, 1.0) if self.fit_intercept else self.feature_limit
        n = labels.size
        p = sigmoid_piecewise(logits, frac=None if reveal_loss else f - RESIDUAL_DROP)
        residual = _residual(p, labels, self.residual_limit(zero_one, f))
        loss_part = None
        if reveal_loss:
            with ctx.channel.operation("logreg.loss"):
                loss_part = mul(residual, residual).sum()
        with ctx.channel.operation("logreg.gradient"):
            grad_sum = x.T.product(residual, deferred=True)
        with ctx.channel.operation("logreg.update"):
            terms = [(grad_sum, self.learning_rate / n), (w, decay)]
            if offset is not None:  # + b: the same encoded coefficient as the gradient sum
                terms.append((offset, self.learning_rate / n))
            step = _combine(terms, skip_zero=True, defer=True)
            if not last:
                moved = x.product(step, deferred=True)  # X s, with s's truncation in its round
                logits = _raw_difference(logits, moved)
            elif step._pending:  # nothing to multiply: s is truncated alone
                share = ctx.protocol.truncate(step._share, step._pending)
                step = Secret(ctx, share, f, bound=step.bound)
            w = (w - step)._bounded(weight_bound)  # s settled: exact
        # z = X w exactly (the ring's products and sums are exact): its bound follows w's
        return logits._bounded(width * column * weight_bound), w, loss_part


def _raw_difference(a: Secret, b: Secret) -> Secret:
    """a - b of two values whose truncations are pending by the same bits at the same scale,
    left pending (local); otherwise as `Secret.__sub__` (which truncates them first)."""
    if a._frac != b._frac or a._pending != b._pending or not a._pending:
        difference: Secret = a - b
        return difference
    share = a.ctx.protocol.sub(a._share, b._share)
    return Secret(a.ctx, share, a._frac, a._pending, a.bound + b.bound)


def _resolve(
    data: SharedDataset | Secret, y: Secret | None, default_limit: float
) -> tuple[Secret, Secret, float]:
    if isinstance(data, SharedDataset):
        if y is not None:
            raise TypeError("pass labels either inside the SharedDataset or as y, not both")
        if data.y is None:
            raise InvalidDataError("this dataset was shared without labels; cannot train on it")
        # the owners checked |x| <= feature_limit and 0/1 labels before sharing (`mpc.ml.data`),
        # which the dataset's bounds must show (a dataset built by hand cannot claim more)
        ulp = 2.0**-data.x.frac  # the shared features' encoding rounds by half of one
        if data.x.bound > data.feature_limit + ulp or data.y.bound > 1.0:
            raise ConfigurationError(
                f"the dataset's shared features are bounded by {data.x.bound:g} and its labels "
                f"by {data.y.bound:g}, beyond its feature_limit {data.feature_limit:g} and 1; "
                "share it with share_horizontal / share_vertical (which check both)"
            )
        x, labels, limit = data.x, data.y, data.feature_limit
    else:
        if y is None:
            raise TypeError("fit(ctx, X, y): shared labels y are required with a shared matrix")
        if not isinstance(data, Secret) or not isinstance(y, Secret):
            raise TypeError("fit expects shared data (Secret values), e.g. from share_horizontal")
        if y.bound > 1.0:
            raise ConfigurationError(
                f"the labels' public bound is {y.bound:g}; share 0/1 labels with a declared "
                "bound: ctx.input(..., kind='int', bound=1)"
            )
        x, labels, limit = data, y, min(default_limit, data.bound)
        if data.bound > default_limit + 2.0**-data.frac:  # (the encoding's half an ulp)
            raise ConfigurationError(
                f"the features' public bound is {data.bound:g}, beyond feature_limit "
                f"{default_limit:g}; declare it when sharing (ctx.input(..., bound=...))"
            )
    if not isinstance(x, Secret) or not isinstance(labels, Secret):
        raise TypeError("fit expects shared data (Secret values), e.g. from share_horizontal")
    if x.ndim != 2:
        raise InvalidDataError(f"the design matrix must be 2-D (rows x features), got {x.shape}")
    if labels.shape != (x.shape[0],):
        raise InvalidDataError(
            f"{x.shape[0]} rows of features but labels of shape {labels.shape}; they must match"
        )
    return as_fixed(x), labels, limit


def _check_protocol(ctx: PartyContext, method: str) -> None:
    if method in NEEDS_COMPARISON and type(ctx.protocol).less_than_zero is Protocol.less_than_zero:
        raise UnsupportedOperationError(
            f"sigmoid {method!r} needs secure comparison, which protocol {ctx.protocol.name!r} "
            "does not provide; use sigmoid='poly' or protocol='additive'"
        )


def _combine(
    terms: list[tuple[Secret, Any]],
    *,
    skip_zero: bool = False,
    defer: bool = False,
    subtract_from: Secret | None = None,
) -> Secret:
    """sum_i c_i * x_i for fixed-point secrets x_i and public reals c_i, with one truncation
    (or `subtract_from` - sum_i c_i * x_i: with `defer`, the value is lifted to the sum's scale
    exactly, inside the pending truncation; else it is subtracted after the truncation).

    Every c_i is encoded as round(c_i * 2^(16 + e)) with one e = max(0, floor(-log2 max |c|)),
    so small constants like lr / |B| keep about 16 significant bits; the sum is truncated once
    by 16 + e bits and debiased by 1 ulp (see `mpc.ml.sigmoid`). A term whose own truncation
    is pending (a masked product's result) is folded in untruncated, its constant scaled up by
    2^pending (exactly), where the exact truncation admits the larger sum; else it is settled
    first (one round). With `defer`, the truncation is left pending for the next product to
    do in its round (`MaskedMatrix.__matmul__`); else it takes one round now.
    """
    if subtract_from is not None and not defer:
        result: Secret = subtract_from - _combine(terms, skip_zero=skip_zero)
        return result
    kept = [
        (as_fixed(x), np.asarray(c, dtype=np.float64))
        for x, c in terms
        if not (skip_zero and not np.any(np.asarray(c)))
    ]
    if not kept:
        raise ValueError("nothing to combine")
    ctx = kept[0][0].ctx
    f = ctx.fixed_point.frac_bits
    encoded, shift = encode_constants([c for _, c in kept], f)
    proto = ctx.protocol
    alg = proto.algebra
    base = None if subtract_from is None else as_fixed(subtract_from)
    largest = sum(x.bound * float(np.max(np.abs(c))) for x, c in kept)
    largest += 0.0 if base is None else base.bound
    top = max(x._frac for x, _ in kept)  # the largest scale of an untruncated term
    exact = bounds.truncation_limit(alg, ctx.fixed_point.failure_bits, proto.exact_truncation())
    if top > f and largest * 2.0 ** (top + shift) >= exact:
        for x, _ in kept:
            x.settle()  # the folded sum would be too large to truncate
        top = f
    bound = admit_truncation(ctx, largest, top + shift)
    total: np.ndarray | None = None
    for (x, _), big in zip(kept, encoded, strict=True):
        scaled = alg.mul(alg.from_signed(big), _power(alg, top - x._frac))
        part = proto.mul_public(x._share, scaled)
        total = part if total is None else proto.add(total, part)
    assert total is not None
    bits = top + shift - f
    if base is not None:
        total = proto.sub(proto.mul_public(base.share, _power(alg, bits)), total)
    total = proto.add_public(total, _power(alg, bits))  # + 1 ulp after the truncation
    bound += 2.0 ** (1 - f)
    if defer:
        return Secret(ctx, total, top + shift, bits, bound)
    return Secret(ctx, proto.truncate(total, bits), f, bound=bound)  # in this operation's stats


def _power(algebra: Any, bits: int) -> np.ndarray:
    """2^bits as a public ring or field element."""
    power: np.ndarray = algebra.from_signed(np.asarray(1 << bits, dtype=object))
    return power


def _residual(p: Secret, y: Secret, bound: float) -> Secret:
    """p - y with a public `bound`, keeping p's pending truncation (if any) pending: y (labels,
    integers or fixed point, exact) is lifted to p's untruncated scale, locally."""
    if not p._pending:
        return (p - y)._bounded(bound)
    alg = p.ctx.protocol.algebra
    lifted = p.ctx.protocol.mul_public(y.share, _power(alg, p._frac - y.frac))
    if lifted.shape != p._share.shape:
        raise InvalidDataError(f"labels of shape {y.shape} for predictions of shape {p.shape}")
    share = p.ctx.protocol.sub(p._share, lifted)
    return Secret(p.ctx, share, p._frac, p._pending, bound)


def encode_constants(
    constants: Sequence[Any], frac_bits: int
) -> tuple[list[npt.NDArray[np.int64]], int]:
    """Public reals c_i as integers round(c_i * 2^(f + e)) with one e = max(0, floor(-log2 max
    |c|)) (at most 24), and the shift f + e to truncate by after the products (`_combine`)."""
    arrays = [np.asarray(c, dtype=np.float64) for c in constants]
    biggest = max(float(np.max(np.abs(c))) for c in arrays)
    extra = 0 if biggest == 0.0 else min(24, max(0, int(np.floor(-np.log2(biggest)))))
    shift = frac_bits + extra
    return [np.rint(c * float(2**shift)).astype(np.int64) for c in arrays], shift


def public_permutation(n: int, tag: Any) -> npt.NDArray[np.int64]:
    """A public permutation of range(n) derived from `tag` with the crypto PRG under a fixed,
    public all-zero key: the rows sorted by 64-bit PRG keys (ties, probability < n^2 / 2^65,
    keep index order). Public and data-independent: everyone derives the same one."""
    keys = Prg(bytes(16)).derive(("mpc.ml.public-permutation", tag)).ring(n)
    return np.argsort(keys, kind="stable").astype(np.int64)


# ---- the plaintext reference --------------------------------------------------------------------
def train_plain(
    x: Any,
    y: Any,
    config: LogisticRegression,
    *,
    sigmoid_method: str = "exact",
    progress: Progress | None = None,
) -> LinearModel:
    """The same recipe as `LogisticRegression.fit` in float64 numpy, on already prepared (e.g.
    standardised) plaintext rows: the reference for the secure result.

    `sigmoid_method` is 'exact' (the logistic function; the default, what the secure model is
    compared with) or the name of an approximation, computed in float64 (to separate the
    approximation's effect from fixed-point error).
    """
    arr = check_features(x)
    labels = check_labels(y, arr.shape[0]).astype(np.float64)
    n, d = arr.shape
    design = np.hstack([arr, np.ones((n, 1))]) if config.fit_intercept else arr
    w = np.zeros(design.shape[1])
    decay = config.decay(design.shape[1])
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        for rows in config.batches(n, epoch):
            xb = design[rows]
            p = sigmoid_plain(xb @ w, sigmoid_method)
            grad_sum = xb.T @ (p - labels[rows])
            w = w - (config.learning_rate / len(rows)) * grad_sum - decay * w
        if progress is not None:
            now = time.perf_counter()
            progress(EpochRecord(epoch, now - started, now - epoch_start))
    intercept = float(w[d]) if config.fit_intercept else 0.0
    return LinearModel(w[:d].copy(), intercept)
