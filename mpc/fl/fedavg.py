"""Federated averaging of torch models with secure aggregation: no party sees another's update.

Responsibility: `FedAvg`, a frozen configuration whose `fit(ctx, model, data)` runs inside the
parties' SPMD program. Each round, every party trains its copy of the global model on its own
rows (`local_epochs`, `batch_size`, the optimiser and loss chosen by the user), takes its update
u_i = w_i - w, clips it in L2 to `clip_norm`, weights it (n_i / N, or 1 / n), rounds it
stochastically to integers at scale 2^`scale_bits` with crypto randomness (`mpc.fl.quantize`),
and the parties sum the integers securely (`mpc.fl.aggregate.secure_sum`: exact, packed several
coordinates to an element); every party adds the revealed average to w. `fedavg_plain` is the
same recipe in plaintext (no quantisation, no MPC): the reference the secure result is compared
with. Federated averaging: McMahan, Moore, Ramage, Hampson & Agüera y Arcas, "Communication-
Efficient Learning of Deep Networks from Decentralized Data", AISTATS 2017 (Alg. 1); secure
aggregation: Bonawitz et al., CCS 2017, here by secret sharing among the parties.

Security model: semi-honest, as the session's protocol. Revealed to every party: the total row
count N (once, for the weights), the global model after every round (the weighted average of
the clipped, quantised updates; the rounding noise is independent of the data), and with
`reveal_loss=True` the weighted mean of the parties' local training losses per round. Not
revealed: any party's rows, update, row count or loss. Public: the configuration, the model's
architecture and initial weights (the parties check they agree), sizes and wall-clock times.
The global model is not differentially private (see `mpc.fl.dpsgd` for that): an update
averaged over few rows can reveal them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mpc.errors import ConfigurationError, InvalidDataError, ShapeMismatchError
from mpc.fl.aggregate import agree, fingerprint, secure_sum, share_sum
from mpc.fl.quantize import (
    FloatArray,
    SlotLayout,
    check_finite,
    clip_l2,
    dequantize,
    stochastic_round,
)
from mpc.fl.torch_support import (
    LOSSES,
    OPTIMIZERS,
    load_vector,
    make_loss,
    make_optimizer,
    parameter_vector,
    prepare_data,
    public_seed,
    require_torch,
    structure,
    train_local,
)
from mpc.program import PartyContext
from mpc.rng import Prg, new_seed

__all__ = ["FL_KINDS", "FedAvg", "FedAvgResult", "RoundRecord", "fedavg_plain"]

Weighting = Literal["rows", "equal"]

#: Operation kinds (keys of the per-party stats) that federated training is counted under.
FL_KINDS = ("fl.agree", "fl.rows", "fl.aggregate")
#: Public bound on one party's row count (its secure sum reveals only the total).
MAX_ROWS = 1 << 40
#: Losses are clipped to this before their weighted mean is summed (reveal_loss).
LOSS_LIMIT = 2.0**20


@dataclass(frozen=True)
class RoundRecord:
    """Progress of one round (public): number (from 1), seconds since `fit` started and of
    this round, bytes this party sent in the round and its rounds of communication, the loss
    (the revealed weighted mean of local training losses with reveal_loss, else this party's
    own), whether it was revealed, and what a round is ("round" of FedAvg, "step" of DP-SGD)."""

    round: int
    seconds: float
    round_seconds: float
    bytes_sent: int
    comm_rounds: int
    loss: float
    joint_loss: bool = False
    unit: str = "round"

    def __str__(self) -> str:
        which = "loss" if self.joint_loss else "local loss"
        return (
            f"{self.unit} {self.round:>3}  {which} {self.loss:.5f}  {self.seconds:8.3f} s "
            f"(+{self.round_seconds:.3f} s)  {self.bytes_sent / 1e6:.3f} MB sent, "
            f"{self.comm_rounds} comm rounds"
        )


@dataclass
class FedAvgResult:
    """What `fit` returns at each party: the history, and the public facts of the run. The
    model itself was trained in place (it holds the final global weights)."""

    history: list[RoundRecord] = field(default_factory=list)
    total_rows: int = 0
    n_parameters: int = 0
    slots: int = 1


Progress = Callable[[RoundRecord], None]
AfterRound = Callable[[int, Any], None]


@dataclass(frozen=True)
class FedAvg:
    """Configuration of federated averaging with secure aggregation; `fit` trains.

    Attributes:
        rounds: communication rounds (each: local training everywhere, one secure sum).
        local_epochs: passes over a party's own rows per round.
        batch_size: rows per local step (None: all of the party's rows).
        optimizer: "sgd" or "adam" (with learning_rate, momentum), or a function
            params -> torch.optim.Optimizer; a fresh one every round.
        learning_rate: step size of the built-in optimisers.
        momentum: SGD momentum.
        loss: "cross_entropy" (class-index labels), "bce_with_logits", "mse", or a function
            (output, target) -> scalar tensor.
        clip_norm: L2 bound on each party's update (public; it bounds the integers summed).
        scale_bits: updates are rounded to multiples of 2^-scale_bits (stochastically).
        weighting: "rows" (McMahan et al.: party i weighs n_i / N) or "equal" (1 / n).
        server_learning_rate: the global step: w <- w + server_learning_rate * average.
        seed: public seed of the local batch orders (the same in `fedavg_plain`).
        reveal_loss: reveal the weighted mean local loss each round (one more number).
    """

    rounds: int = 10
    local_epochs: int = 1
    batch_size: int | None = 32
    optimizer: str | Callable[..., Any] = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.0
    loss: str | Callable[..., Any] = "cross_entropy"
    clip_norm: float = 10.0
    scale_bits: int = 22
    weighting: Weighting = "rows"
    server_learning_rate: float = 1.0
    seed: int = 0
    reveal_loss: bool = False

    def __post_init__(self) -> None:
        for name in ("rounds", "local_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            raise ConfigurationError(
                f"batch_size must be a positive integer or None, got {self.batch_size!r}"
            )
        for name in ("learning_rate", "clip_norm", "server_learning_rate"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigurationError(f"{name} must be a finite number > 0, got {value!r}")
        if not isinstance(self.momentum, int | float) or not 0 <= self.momentum < 1:
            raise ConfigurationError(f"momentum must be in [0, 1), got {self.momentum!r}")
        s = self.scale_bits
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= 52:
            raise ConfigurationError(f"scale_bits must be an int in [0, 52], got {s!r}")
        if self.weighting not in ("rows", "equal"):
            raise ConfigurationError(f"weighting must be 'rows' or 'equal', got {self.weighting!r}")
        if isinstance(self.optimizer, str) and self.optimizer not in OPTIMIZERS:
            raise ConfigurationError(
                f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)} "
                "or pass a function params -> torch.optim.Optimizer"
            )
        if isinstance(self.loss, str) and self.loss not in LOSSES:
            raise ConfigurationError(
                f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}"
            )

    # ---- public facts ---------------------------------------------------------------------
    def public(self) -> dict[str, Any]:
        """The configuration's public numbers (what every party must have the same of);
        callables are named by their qualified name."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = getattr(value, "__qualname__", repr(value)) if callable(value) else value
        return out

    def layout(self, parties: int, algebra: Any) -> SlotLayout:
        """The packing of the quantised updates for `parties` parties (ConfigurationError if
        clip_norm at scale 2^scale_bits could overflow the algebra)."""
        return SlotLayout.plan(self.clip_norm, self.scale_bits, parties, algebra)

    def local_seed(self, round_no: int, rank: int) -> int:
        """The public seed of party `rank`'s batch order in round `round_no` (from 1)."""
        return public_seed(("fedavg", self.seed, round_no, rank))

    # ---- one party's side of a round --------------------------------------------------------
    def local_update(
        self, model: Any, x: Any, y: Any, start: FloatArray, round_no: int, rank: int
    ) -> tuple[FloatArray, float]:
        """Train `model` from the global weights `start` on (x, y): (the update, mean loss)."""
        load_vector(model, start)
        optimizer = make_optimizer(
            self.optimizer, model.parameters(), self.learning_rate, self.momentum
        )
        loss = train_local(
            model,
            x,
            y,
            epochs=self.local_epochs,
            batch_size=self.batch_size,
            optimizer=optimizer,
            loss_fn=make_loss(self.loss),
            seed=self.local_seed(round_no, rank),
        )
        return parameter_vector(model) - start, loss

    # ---- training -------------------------------------------------------------------------
    def fit(
        self,
        ctx: PartyContext,
        model: Any,
        data: Any,
        *,
        progress: Progress | None = None,
        after_round: AfterRound | None = None,
    ) -> FedAvgResult:
        """Train `model` (this party's copy, a torch.nn.Module) on this party's rows `data`
        = (x, y) together with the other parties (SPMD: every party calls it). The model ends
        with the final global weights, the same at every party. `progress` gets a RoundRecord
        after every round; `after_round(round, model)` is called with the global model.

        Refused before anything is shared (at every party): models whose parameters differ in
        shape or initial value between parties, configurations that differ, a clip norm and
        scale that could overflow the algebra; at the owner: data with NaN or no rows, an
        update with NaN or infinite values (every other party then fails too, naming it).
        """
        torch = require_torch()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"fit trains a torch.nn.Module, got {type(model).__name__}")
        x, y = prepare_data(data, self.loss, f"party {ctx.me!r}")
        layout = self.layout(ctx.n, ctx.protocol.algebra)  # before any round
        started = time.perf_counter()
        global_w = parameter_vector(model)
        agree_on_model(ctx, model, global_w, type(self).__name__, self.public())
        total_rows = joint_rows(ctx, int(x.shape[0]))
        sent_before = _sent(ctx)  # each round's bytes: its own (the agreement is set-up)
        weight = x.shape[0] / total_rows if self.weighting == "rows" else 1.0 / ctx.n
        prg = Prg(new_seed())  # this party's rounding randomness: fresh, never shared
        result = FedAvgResult(total_rows=total_rows, n_parameters=global_w.size, slots=layout.slots)
        for round_no in range(1, self.rounds + 1):
            round_start = time.perf_counter()
            rounds_before = _comm_rounds(ctx)
            update, loss = self.local_update(model, x, y, global_w, round_no, ctx.rank)
            check_finite(update, f"party {ctx.me!r}: its update of round {round_no}")
            clipped, _ = clip_l2(update, self.clip_norm)
            q = stochastic_round(clipped * weight, self.scale_bits, prg, ("round", round_no))
            loss_int = None
            if self.reveal_loss:
                if not math.isfinite(loss):
                    check_finite(np.array([loss]), f"party {ctx.me!r}: its loss")
                scaled = min(loss, LOSS_LIMIT) * weight * 2.0**self.scale_bits
                loss_int = np.array([round(scaled)], dtype=np.int64)
            summed = secure_sum(ctx, q, layout, extra=loss_int)
            if summed is None:  # pragma: no cover - revealed to every party
                raise RuntimeError("the secure sum was not revealed to this party")
            total, loss_total = summed
            average = dequantize(total, self.scale_bits)
            global_w = global_w + self.server_learning_rate * average
            load_vector(model, global_w)
            if self.reveal_loss:
                loss = float(dequantize(loss_total, self.scale_bits)[0])
            now = time.perf_counter()
            sent_now = _sent(ctx)
            record = RoundRecord(
                round_no,
                now - started,
                now - round_start,
                sent_now - sent_before,
                _comm_rounds(ctx) - rounds_before,
                loss,
                self.reveal_loss,
            )
            sent_before = sent_now
            result.history.append(record)
            if progress is not None:
                progress(record)
            if after_round is not None:
                after_round(round_no, model)
        return result


def agree_on_model(
    ctx: PartyContext, model: Any, start: FloatArray, what: str, public: Any
) -> None:
    """Compare the model's architecture and initial weights and the configuration `public`
    (of class `what`) with every party (one public round): ShapeMismatchError or
    ConfigurationError at every party, naming who differs, before anything is shared."""
    shapes = structure(model)
    words = [fingerprint(shapes), fingerprint(start.tobytes().hex()), fingerprint(public)]
    words += [start.size, len(shapes)]
    everyone = agree(ctx, words)
    names = ctx.parties
    if any(w[0] != words[0] or w[3] != words[3] for w in everyone):
        sizes = ", ".join(
            f"{name}: {w[3]:,} parameters in {w[4]} tensors"
            for name, w in zip(names, everyone, strict=True)
        )
        raise ShapeMismatchError(
            f"the parties' models differ in their parameters' shapes ({sizes}): every "
            "party must build the same architecture (same layers in the same order); "
            "nothing was shared"
        )
    if any(w[2] != words[2] for w in everyone):
        raise ConfigurationError(
            f"the parties' {what} configurations differ ("
            f"{_groups(names, [w[2] for w in everyone])}): every party must pass the same "
            "configuration; nothing was shared"
        )
    if any(w[1] != words[1] for w in everyone):
        raise ConfigurationError(
            f"the parties' initial weights differ ({_groups(names, [w[1] for w in everyone])})"
            ": build the model from the same state at every party (load one state dict, or "
            "torch.manual_seed(...) before constructing it in separate processes); nothing "
            "was shared"
        )


def joint_rows(ctx: PartyContext, rows: int) -> int:
    """N = sum of the parties' row counts, by a secure sum (only N is revealed)."""
    if rows > MAX_ROWS:
        raise InvalidDataError(f"party {ctx.me!r}: more than 2^40 rows")
    total = share_sum(ctx, np.array([rows], dtype=np.int64), float(MAX_ROWS), 1, "fl.rows")
    with ctx.channel.operation("fl.rows"):
        opened = ctx.reveal(total)
    if opened is None:  # pragma: no cover - revealed to every party
        raise RuntimeError("the row count was not revealed")
    return int(np.asarray(opened).reshape(-1)[0])


def _groups(names: Sequence[str], values: Sequence[int]) -> str:
    """'alice and bob agree, carol differs': the parties grouped by equal values."""
    groups: dict[int, list[str]] = {}
    for name, value in zip(names, values, strict=True):
        groups.setdefault(value, []).append(name)
    return "; ".join(
        " and ".join(g) + (" agree" if len(g) > 1 else " alone") for g in groups.values()
    )


def _sent(ctx: PartyContext) -> int:
    return int(ctx.channel.stats.total.bytes_sent)


def _comm_rounds(ctx: PartyContext) -> int:
    return int(ctx.channel.stats.total.rounds)


# ---- the plaintext reference ----------------------------------------------------------------
def fedavg_plain(
    config: FedAvg,
    model: Any,
    datasets: Sequence[Any],
    *,
    after_round: AfterRound | None = None,
) -> list[float]:
    """The same recipe in plaintext, one process (no MPC, no quantisation): `model` (the
    initial global model, trained in place) and one (x, y) per party, in rank order. Returns
    the weighted mean local loss per round. The reference of tests, scenario and benchmarks."""
    prepared = [prepare_data(d, config.loss, f"dataset {i}") for i, d in enumerate(datasets)]
    total_rows = sum(int(x.shape[0]) for x, _ in prepared)
    n = len(prepared)
    global_w = parameter_vector(model)
    losses = []
    for round_no in range(1, config.rounds + 1):
        average = np.zeros_like(global_w)
        mean_loss = 0.0
        for rank, (x, y) in enumerate(prepared):
            weight = x.shape[0] / total_rows if config.weighting == "rows" else 1.0 / n
            update, loss = config.local_update(model, x, y, global_w, round_no, rank)
            check_finite(update, f"dataset {rank}: its update of round {round_no}")
            clipped, _ = clip_l2(update, config.clip_norm)
            average += clipped * weight
            mean_loss += min(loss, LOSS_LIMIT) * weight
        global_w = global_w + config.server_learning_rate * average
        load_vector(model, global_w)
        losses.append(mean_loss)
        if after_round is not None:
            after_round(round_no, model)
    return losses
