"""DP-SGD across parties: per-example clipping at each party, the noise added under MPC.

Responsibility: `DPSGD`, a frozen configuration whose `fit(ctx, model, data)` trains one torch
model on the union of the parties' rows with record-level differential privacy (Abadi et al.,
"Deep Learning with Differential Privacy", CCS 2016, Alg. 1). Each step:
  1. every party draws its batch by Poisson sampling (rate q, from its own crypto PRG: nobody
     learns who is in a batch), computes per-example gradients (`torch.func.vmap(grad)`),
     clips each to L2 norm C and rounds it stochastically to integers at scale 2^s;
  2. it adds its piece of discrete Gaussian noise (`mpc.dp.samplers.discrete_gaussian`, from a
     fresh PRG) to the sum of its integers and secret-shares the result; the parties add the
     shares and reveal only the noisy total, sum of all clipped gradients plus the noise
     (`mpc.fl.aggregate.share_sum`);
  3. every party takes the step w <- w - lr * total / (2^s q N) (N: the total row count).
The noise is that of central DP-SGD: the n - t honest parties' pieces sum to a discrete
Gaussian of standard deviation noise_multiplier * Delta (Delta = C 2^s + sqrt(d), the L2 bound
of one rounded per-example gradient of d coordinates), whatever t = `max_colluding` parties
subtract theirs (Kairouz, Liu & Steinke, ICML 2021, distributed discrete Gaussian; their
closeness term tau is checked to be negligible, below 1e-12).

Accounting: Renyi DP (Mironov, "Renyi Differential Privacy", CSF 2017) of the Poisson-subsampled
Gaussian mechanism (Mironov, Talwar & Zhang 2019) over all steps, converted to (epsilon, delta),
by Google's `dp-accounting` (`RdpAccountant`); `noise_multiplier` is found by bisection when an
epsilon is given. The discrete Gaussian with integer sensitivity has the Renyi divergences of
the continuous one or less (Canonne, Kamath & Steinke, NeurIPS 2020), which this accounting
relies on. The whole run is charged to every party's ledger before training starts, all or
nothing (`mpc.dp.charging.charge`); a party whose ledger cannot afford it refuses and nothing
is trained or revealed.

Security model: semi-honest, as the session's protocol. Revealed to every party: the total row
count N and every step's noisy gradient sum (hence the model after every step), covered by
the charged (epsilon, delta) against the union of the rows, for up to `max_colluding`
colluding parties. Not revealed: any row, per-example gradient, batch membership or party's
sum. Public: the configuration, the model's architecture and initial weights.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from mpc import bounds
from mpc.dp.accountant import (
    InvalidPrivacyParameterError,
    Release,
    check_delta,
    check_epsilon,
)
from mpc.dp.charging import AccountantSource, charge
from mpc.dp.samplers import discrete_gaussian
from mpc.errors import ConfigurationError, InvalidDataError
from mpc.fl.aggregate import fingerprint, share_sum
from mpc.fl.fedavg import (
    FedAvgResult,
    RoundRecord,
    agree_on_model,
    joint_rows,
)
from mpc.fl.quantize import check_finite, clip_rows_l2, dequantize, stochastic_round
from mpc.fl.torch_support import (
    LOSSES,
    load_vector,
    make_loss,
    parameter_vector,
    prepare_data,
    require_torch,
    trainable,
)
from mpc.program import PartyContext
from mpc.rng import Prg, new_seed

__all__ = ["DPSGD", "DPSGD_KINDS", "calibrate_noise", "dp_event", "dpsgd_epsilon"]

#: Operation kinds (keys of the per-party stats) that DP-SGD is counted under.
DPSGD_KINDS = ("fl.agree", "fl.rows", "fl.dpsgd", "dp.charge", "dp.commit")
#: A party's noise piece is refused beyond this many of its standard deviations (probability
#: below e^-800: never), so that the ring sum has a public bound.
NOISE_TAILS = 40.0
#: The largest KLS21 closeness term tau accepted for the distributed noise.
MAX_TAU = 1e-12


# ---- accounting ----------------------------------------------------------------------------------
def _dp_accounting() -> Any:
    try:
        import dp_accounting
    except ImportError as exc:  # pragma: no cover - a dependency of the dev extra
        raise ImportError(
            "DP-SGD accounting needs Google's dp-accounting: pip install dp-accounting==0.6.0"
        ) from exc
    return dp_accounting


def dp_event(sampling_rate: float, noise_multiplier: float, steps: int) -> Any:
    """The dp-accounting event of DP-SGD: `steps` compositions of the Poisson-subsampled
    Gaussian mechanism with rate q and noise multiplier sigma."""
    dpa = _dp_accounting()
    step = dpa.PoissonSampledDpEvent(sampling_rate, dpa.GaussianDpEvent(noise_multiplier))
    return dpa.SelfComposedDpEvent(step, steps)


@functools.lru_cache(maxsize=256)
def dpsgd_epsilon(sampling_rate: float, noise_multiplier: float, steps: int, delta: float) -> float:
    """epsilon at `delta` of DP-SGD by Renyi DP accounting (dp-accounting's RdpAccountant, its
    default orders and its (epsilon, delta) conversion)."""
    dpa = _dp_accounting()
    accountant = dpa.rdp.RdpAccountant()
    accountant.compose(dp_event(sampling_rate, noise_multiplier, steps))
    return float(accountant.get_epsilon(delta))


@functools.lru_cache(maxsize=64)
def calibrate_noise(epsilon: float, delta: float, sampling_rate: float, steps: int) -> float:
    """The smallest noise multiplier (to 0.1 %, rounded up) whose DP-SGD run costs at most
    `epsilon` at `delta`."""
    lo, hi = 0.05, 1.0
    while dpsgd_epsilon(sampling_rate, hi, steps, delta) > epsilon:
        lo, hi = hi, hi * 2.0
        if hi > 1e4:
            raise InvalidPrivacyParameterError(
                f"epsilon {epsilon:g} at delta {delta:g} needs a noise multiplier above 1e4 for "
                f"{steps} steps at sampling rate {sampling_rate:g}: raise epsilon, or take "
                "fewer steps or a smaller sampling rate"
            )
    while hi - lo > 1e-3 * hi:
        mid = 0.5 * (lo + hi)
        if dpsgd_epsilon(sampling_rate, mid, steps, delta) > epsilon:
            lo = mid
        else:
            hi = mid
    return hi


# ---- configuration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DPSGD:
    """Configuration of DP-SGD across parties; `fit` trains.

    Attributes:
        epsilon: the run's privacy target at `delta` (the noise multiplier is calibrated to
            it); or None with `noise_multiplier` given (epsilon is then computed).
        delta: the run's delta (well below 1 / rows, e.g. 1e-5).
        noise_multiplier: sigma (noise standard deviation over the clip norm); None with epsilon.
        sampling_rate: q, each row's probability of being in a step's batch (Poisson).
        steps: gradient steps (expected passes over the data: steps * q).
        clip_norm: C, the L2 bound of each per-example gradient.
        learning_rate: SGD step size on the noisy mean gradient.
        loss: "cross_entropy", "bce_with_logits", "mse" or a function (output, target) -> the
            batch's mean loss (it must broadcast over one example).
        scale_bits: per-example gradients are rounded to multiples of 2^-scale_bits.
        max_colluding: colluding parties the noise must survive (None: the protocol's t).
        label: what the ledgers record.
    """

    epsilon: float | None = None
    delta: float = 1e-5
    noise_multiplier: float | None = None
    sampling_rate: float = 0.01
    steps: int = 100
    clip_norm: float = 1.0
    learning_rate: float = 0.1
    loss: str | Callable[..., Any] = "cross_entropy"
    scale_bits: int = 16
    max_colluding: int | None = None
    label: str = "dp-sgd"

    def __post_init__(self) -> None:
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise InvalidPrivacyParameterError(
                "give exactly one of epsilon (the noise is calibrated to it) and "
                "noise_multiplier (epsilon is then computed)"
            )
        if self.epsilon is not None:
            check_epsilon(self.epsilon)
        if check_delta(self.delta) == 0.0:
            raise InvalidPrivacyParameterError("DP-SGD needs delta > 0 (e.g. 1e-5)")
        if self.noise_multiplier is not None and not (
            isinstance(self.noise_multiplier, int | float)
            and math.isfinite(self.noise_multiplier)
            and self.noise_multiplier > 0
        ):
            raise InvalidPrivacyParameterError(
                f"noise_multiplier must be a finite number > 0, got {self.noise_multiplier!r}"
            )
        q = self.sampling_rate
        if not isinstance(q, int | float) or not 0 < q <= 1:
            raise ConfigurationError(f"sampling_rate must be in (0, 1], got {q!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigurationError(f"steps must be a positive integer, got {self.steps!r}")
        for name in ("clip_norm", "learning_rate"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigurationError(f"{name} must be a finite number > 0, got {value!r}")
        s = self.scale_bits
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= 40:
            raise ConfigurationError(f"scale_bits must be an int in [0, 40], got {s!r}")
        if isinstance(self.loss, str) and self.loss not in LOSSES:
            raise ConfigurationError(
                f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}"
            )

    # ---- public numbers -------------------------------------------------------------------------
    def sigma(self) -> float:
        """The noise multiplier: given, or calibrated to epsilon."""
        if self.noise_multiplier is not None:
            return float(self.noise_multiplier)
        assert self.epsilon is not None  # __post_init__: one of the two
        return calibrate_noise(self.epsilon, self.delta, self.sampling_rate, self.steps)

    def spent_epsilon(self) -> float:
        """The epsilon the run costs at `delta` (RDP accounting of `sigma()`)."""
        return dpsgd_epsilon(self.sampling_rate, self.sigma(), self.steps, self.delta)

    def release(self, n_parties: int, colluding: int) -> Release:
        """What every party's ledger is charged (before training)."""
        sigma = self.sigma()
        return Release(
            "dp_sgd",
            max(self.spent_epsilon(), 1e-9),  # a vanishing cost is still a release
            self.delta,
            rho=None,
            label=self.label,
            params={
                "accounting": "rdp, poisson-subsampled gaussian (dp-accounting)",
                "noise_multiplier": sigma,
                "sampling_rate": float(self.sampling_rate),
                "steps": self.steps,
                "clip_norm": float(self.clip_norm),
                "scale_bits": self.scale_bits,
                "n_parties": n_parties,
                "max_colluding": colluding,
            },
        )

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = getattr(value, "__qualname__", repr(value)) if callable(value) else value
        return out

    def noise(self, dim: int, n_parties: int, colluding: int) -> tuple[int, Fraction]:
        """(Delta in ulps, each party's noise variance in ulps^2): Delta = ceil(C 2^s +
        sqrt(d)) bounds a rounded per-example gradient; the n - t honest pieces sum to
        variance (sigma Delta)^2."""
        delta_ulps = math.ceil(self.clip_norm * 2.0**self.scale_bits + math.sqrt(dim))
        honest = n_parties - colluding
        target = Fraction(self.sigma()) ** 2 * delta_ulps * delta_ulps / honest
        per_party = Fraction(math.ceil(target * 1024), 1024)  # rounded up: more noise
        tau = 10.0 * sum(
            math.exp(-2.0 * math.pi**2 * float(per_party) * k / (k + 1)) for k in range(1, honest)
        )
        if tau > MAX_TAU:
            raise InvalidPrivacyParameterError(
                f"the distributed noise's pieces are too small (KLS21 tau = {tau:.3g}): raise "
                "scale_bits or the noise multiplier"
            )
        return delta_ulps, per_party

    # ---- training -------------------------------------------------------------------------------
    def fit(
        self,
        ctx: PartyContext,
        model: Any,
        data: Any,
        *,
        accountant: AccountantSource = "ledger",
        progress: Callable[[RoundRecord], None] | None = None,
        after_step: Callable[[int, Any], None] | None = None,
    ) -> FedAvgResult:
        """Train `model` (this party's copy; ends with the final weights, the same at every
        party) on the union of the parties' rows with DP-SGD; this party's rows are `data` =
        (x, y). SPMD. `accountant`: as `mpc.dp.dp_plan` (default: each party's ledger in
        ctx.private["dp_ledger"]); the run is charged to all of them before the first step,
        or to none (BudgetExceededError at the refusing party; nothing is trained or revealed).
        `progress` gets a RoundRecord per step (its loss: this party's batch, not revealed)."""
        torch = require_torch()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"fit trains a torch.nn.Module, got {type(model).__name__}")
        x, y = prepare_data(data, self.loss, f"party {ctx.me!r}")
        colluding = ctx.protocol.t if self.max_colluding is None else self.max_colluding
        if not 0 <= colluding < ctx.n:
            raise InvalidPrivacyParameterError(
                f"max_colluding must be in [0, {ctx.n - 1}] for {ctx.n} parties, got {colluding}"
            )
        weights = parameter_vector(model)
        dim = weights.size
        _, per_party = self.noise(dim, ctx.n, colluding)
        started = time.perf_counter()
        agree_on_model(ctx, model, weights, type(self).__name__, self.public())
        total_rows = joint_rows(ctx, int(x.shape[0]))
        # public range: every party's batch sum of rounded gradients is within rows * B, its
        # noise within NOISE_TAILS standard deviations; the sum over n parties must not wrap
        limit = math.ceil(self.clip_norm * 2.0**self.scale_bits)
        noise_limit = NOISE_TAILS * math.sqrt(float(per_party))
        bound = float(total_rows * limit) + noise_limit
        bounds.check_wrap(
            ctx.n * bound,
            0,
            ctx.protocol.algebra,
            f"DP-SGD: {ctx.n} parties' noisy sums of {total_rows} rows' gradients clipped to "
            f"{self.clip_norm:g} at scale 2^{self.scale_bits}",
        )
        release = self.release(ctx.n, colluding)
        charge(ctx, [release], [fingerprint(release.to_json())], accountant)
        result = FedAvgResult(total_rows=total_rows, n_parameters=dim, slots=1)
        rounding = Prg(new_seed())  # this party's own randomness: sampling, rounding, noise
        loss_fn = make_loss(self.loss)
        grads_of = _per_example_gradients(model, loss_fn)
        expected = self.sampling_rate * total_rows
        sent_before = int(ctx.channel.stats.total.bytes_sent)
        for step in range(1, self.steps + 1):
            step_start = time.perf_counter()
            rounds_before = int(ctx.channel.stats.total.rounds)
            draws = rounding.below_bits(x.shape[0], 53, ("sample", step)).astype(np.float64)
            rows = np.flatnonzero(draws * 2.0**-53 < self.sampling_rate)
            mine = np.zeros(dim, dtype=np.int64)
            loss = math.nan
            if rows.size:
                index = torch.from_numpy(rows)
                per_example, loss = grads_of(x[index], y[index])
                check_finite(per_example, f"party {ctx.me!r}: its gradients of step {step}")
                clipped = clip_rows_l2(per_example, self.clip_norm)
                q = stochastic_round(clipped, self.scale_bits, rounding, ("round", step))
                mine = q.sum(axis=0)
            piece = discrete_gaussian(rounding, per_party, (dim,), ("noise", step))
            if float(np.max(np.abs(piece))) > noise_limit:  # pragma: no cover - p < e^-800
                raise InvalidDataError(f"party {ctx.me!r}: a noise draw beyond 40 sigma")
            total = share_sum(ctx, mine + piece, bound, dim, "fl.dpsgd")
            with ctx.channel.operation("fl.dpsgd"):
                opened = ctx.reveal(total)
            if opened is None:  # pragma: no cover - revealed to every party
                raise RuntimeError("the noisy sum was not revealed to this party")
            gradient = dequantize(np.asarray(opened), self.scale_bits) / expected
            weights = weights - self.learning_rate * gradient
            load_vector(model, weights)
            now = time.perf_counter()
            sent_now = int(ctx.channel.stats.total.bytes_sent)
            record = RoundRecord(
                step,
                now - started,
                now - step_start,
                sent_now - sent_before,
                int(ctx.channel.stats.total.rounds) - rounds_before,
                loss,
                unit="step",
            )
            sent_before = sent_now
            result.history.append(record)
            if progress is not None:
                progress(record)
            if after_step is not None:
                after_step(step, model)
        return result


def _per_example_gradients(
    model: Any, loss_fn: Callable[..., Any]
) -> Callable[[Any, Any], tuple[np.ndarray, float]]:
    """A function (x, y) -> (per-example gradients as rows of float64, the batch's mean loss),
    with torch.func (vmap of grad of the loss of one example at the model's current weights)."""
    torch = require_torch()
    from torch.func import functional_call, grad, vmap

    names = [name for name, _ in trainable(model)]

    def one(params: dict[str, Any], xi: Any, yi: Any) -> Any:
        out = functional_call(model, params, (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0))

    per_example = vmap(grad(one), in_dims=(None, 0, 0))

    def gradients(xb: Any, yb: Any) -> tuple[np.ndarray, float]:
        params = {name: p.detach() for name, p in trainable(model)}
        grads = per_example(params, xb, yb)
        rows = torch.cat([grads[name].reshape(xb.shape[0], -1) for name in names], dim=1)
        with torch.no_grad():
            loss = float(loss_fn(model(xb), yb))
        return rows.to(torch.float64).numpy(), loss

    return gradients
