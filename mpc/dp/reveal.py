"""Differentially private release under MPC: charge first, add noise to shares, then open.

:func:`dp_plan` declares and charges all releases of a run at once (all or nothing, at every
party's own ledger: ``mpc.dp.charging``); :meth:`DPPlan.reveal` then adds each release's noise to
the shares (each party's own piece, or the dealer's shares of one draw) and opens only the noisy
value.  :func:`dp_reveal` is the one-release case.  Security model: semi-honest; no party and not
the driver sees a value before its noise is added; distributed noise survives ``max_colluding``
colluding parties, dealer noise needs a dealer that does not collude with a receiver.  See
docs/dp.md ("Releasing under MPC").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mpc.dp.accountant import InvalidPrivacyParameterError
from mpc.dp.charging import AccountantSource, charge
from mpc.dp.mechanisms import Mechanism, noise_spec
from mpc.dp.plan import NoiseMode, ReleasePlan, plan_release
from mpc.errors import ConfigurationError
from mpc.program import PartyContext, Secret
from mpc.protocols.additive import AdditiveScheme
from mpc.rng import Prg

__all__ = ["DPPlan", "PlannedRelease", "dp_plan", "dp_reveal"]


@dataclass(frozen=True)
class PlannedRelease:
    """One release a run will make, declared before any is made (:func:`dp_plan`).

    Attributes:
        mechanism: the noise mechanism, calibrated for one full draw (its ``frac_bits`` those
            of the value).
        shape: the shape of the released value (``()`` for a scalar).
        noise: "distributed" (each party's own piece) or "dealer" (shares of one dealer draw).
        max_colluding: colluders distributed noise must survive (None: the session's threshold).
        to: the receiving parties (None: all).
        label: what is released, for the ledgers.
        failure_delta: probability that the computation feeding the release failed (added to δ).
    """

    mechanism: Mechanism
    shape: tuple[int, ...]
    _: KW_ONLY
    noise: NoiseMode = "distributed"
    max_colluding: int | None = None
    to: str | tuple[str, ...] | None = None
    label: str = ""
    failure_delta: float = 0.0


@dataclass(frozen=True)
class _Entry:
    plan: ReleasePlan
    shape: tuple[int, ...]
    receivers: list[int] | None


class DPPlan:
    """The charged releases of one run at this party; :meth:`reveal` makes them in order."""

    def __init__(self, ctx: PartyContext, entries: Sequence[_Entry]) -> None:
        self._ctx = ctx
        self._entries = list(entries)
        self._next = 0

    def __repr__(self) -> str:
        return f"DPPlan({self._next} of {len(self._entries)} releases made)"

    @property
    def plans(self) -> tuple[ReleasePlan, ...]:
        """The public plan (cost, noise split) of every release, in order."""
        return tuple(e.plan for e in self._entries)

    @property
    def remaining(self) -> int:
        """How many charged releases are still to be made (they stay charged if never made)."""
        return len(self._entries) - self._next

    def _entry(self) -> _Entry:
        if self._next >= len(self._entries):
            raise ConfigurationError(
                f"all {len(self._entries)} planned releases were made: declare every release of "
                f"the run in dp_plan (each is charged once and revealed once)"
            )
        return self._entries[self._next]

    def _open(self, entry: _Entry, noisy: Secret) -> npt.NDArray[Any] | None:
        ctx = self._ctx
        with ctx.channel.operation("dp.reveal"):
            receivers = (
                None if entry.receivers is None else [ctx.parties[r] for r in entry.receivers]
            )
            return ctx.reveal(noisy, receivers)

    def reveal(self, secret: Secret) -> npt.NDArray[Any] | None:
        """Make the next planned release with `secret`: its noisy value at the receivers (float
        for fixed point, int64 for integers), None elsewhere.  SPMD."""
        ctx = self._ctx
        if not isinstance(secret, Secret):
            raise TypeError(f"reveal expects a Secret, got {type(secret).__name__}")
        secret._check(ctx)
        entry = self._entry()
        _check_value(entry.plan, entry.shape, secret)
        self._next += 1
        value = secret.reshape(1) if secret.shape == () else secret
        with ctx.channel.operation("dp.noise"):
            noisy = _add_noise(ctx, value, entry.plan)
        opened = self._open(entry, noisy)
        if opened is None:
            return None
        return opened.reshape(()) if secret.shape == () else opened

    def reveal_with_noise(self, compute: Callable[[Secret], Secret]) -> npt.NDArray[Any] | None:
        """Make the next planned release from a computation its noise enters, rather than
        noise added to a value (objective perturbation, ``mpc.dp.objective``): `compute` gets
        the release's noise as shares (the planned shape; nothing is opened) and returns the
        value to open, at the receivers; None elsewhere.  Its mechanism's analysis must cover
        what `compute` does with the noise.  SPMD."""
        ctx = self._ctx
        entry = self._entry()
        self._next += 1
        shape = entry.shape if entry.shape else (1,)
        integer = entry.plan.frac_bits == 0
        zero = ctx.constant(np.zeros(shape), kind="int" if integer else "fixed")
        if zero.frac != entry.plan.frac_bits:
            raise InvalidPrivacyParameterError(
                f"the mechanism counts noise in ulps of 2^-{entry.plan.frac_bits} but the "
                f"session has {zero.frac} fractional bits: build it with frac_bits={zero.frac}"
            )
        with ctx.channel.operation("dp.noise"):
            noise = _add_noise(ctx, zero, entry.plan)
        value = compute(noise)
        if not isinstance(value, Secret):
            raise TypeError(f"compute must return a Secret, got {type(value).__name__}")
        value._check(ctx)
        return self._open(entry, value)


def _check_value(plan: ReleasePlan, shape: tuple[int, ...], secret: Secret) -> None:
    if secret.frac != plan.frac_bits:
        raise InvalidPrivacyParameterError(
            f"the mechanism counts noise in ulps of 2^-{plan.frac_bits} but the value has "
            f"{secret.frac} fractional bits: build it with frac_bits={secret.frac}"
        )
    if tuple(secret.shape) != shape:
        raise ConfigurationError(
            f"release {plan.cost.label or plan.cost.mechanism!r} was planned for shape {shape}, "
            f"the value has shape {tuple(secret.shape)}: releases are made in the planned order"
        )


def _receivers(ctx: PartyContext, to: str | Sequence[str] | None) -> list[int] | None:
    if to is None:
        return None
    names = [to] if isinstance(to, str) else list(to)
    if not names:
        raise ValueError("to must name at least one party (or be None for all)")
    return sorted({ctx.rank_of(name) for name in names})


def dp_plan(
    ctx: PartyContext,
    releases: Sequence[PlannedRelease],
    *,
    accountant: AccountantSource = "ledger",
) -> DPPlan:
    """Charge every release of this run to every party's accountant at once, or none: a run whose
    releases together exceed any party's budget reveals nothing and charges nothing.  SPMD.

    `accountant`: where each party's accountant comes from (default: each party's ledger in
    ``ctx.private["dp_ledger"]``; at least one party must hold one; None: no accounting).
    Raises BudgetExceededError at a refusing party, which aborts the run at every party.
    """
    if not releases:
        raise ValueError("dp_plan needs at least one PlannedRelease")
    entries = []
    for r in releases:
        if not isinstance(r, PlannedRelease):
            raise TypeError(f"dp_plan takes PlannedRelease items, got {type(r).__name__}")
        shape = tuple(int(v) for v in r.shape)
        plan = plan_release(
            r.mechanism,
            shape=shape if shape else (1,),
            frac_bits=getattr(r.mechanism, "frac_bits", 0),
            n_parties=ctx.n,
            max_colluding=ctx.protocol.t if r.max_colluding is None else r.max_colluding,
            noise=r.noise,
            failure_delta=r.failure_delta,
            label=r.label,
        )
        entries.append(_Entry(plan, shape, _receivers(ctx, r.to)))
    charge(
        ctx,
        [e.plan.cost for e in entries],
        [e.plan.fingerprint(e.receivers) for e in entries],
        accountant,
    )
    return DPPlan(ctx, entries)


def _add_noise(ctx: PartyContext, secret: Secret, plan: ReleasePlan) -> Secret:
    proto = ctx.protocol
    alg = proto.algebra
    if plan.noise == "dealer":
        fetch = getattr(proto.dealer, "noise_share", None)
        if fetch is None:
            raise ConfigurationError(
                "this session's dealer does not deal noise shares: use the trusted (or "
                "enclave) dealer of runtime='ray', an in-process dealer client from "
                "mpc.dealers.seeded.local_noise_client, or noise='distributed'"
            )
        share = np.asarray(fetch(noise_spec(plan.mechanism, plan.shape)))
        return Secret(ctx, proto.add(secret.share, share), secret.frac)
    piece = plan.party_piece(Prg(proto.prg.bytes(16)))  # this party's own, fresh noise seed
    if isinstance(proto.scheme, AdditiveScheme):
        # x = sum of shares: adding a piece to one's own share adds it to x (no communication).
        return Secret(ctx, proto.add(secret.share, alg.from_signed(piece)), secret.frac)
    parts = [ctx.input(name, piece if name == ctx.me else None, kind="int") for name in ctx.parties]
    total = ctx.sum(parts)
    return Secret(ctx, proto.add(secret.share, total.share), secret.frac)


def dp_reveal(
    ctx: PartyContext,
    secret: Secret,
    mechanism: Mechanism,
    *,
    noise: NoiseMode = "distributed",
    max_colluding: int | None = None,
    accountant: AccountantSource = "ledger",
    to: str | Sequence[str] | None = None,
    label: str = "",
    failure_delta: float = 0.0,
) -> npt.NDArray[Any] | None:
    """Open ``secret + noise`` to the parties `to` (all when None), charging every accountant
    first (:func:`dp_plan` of this one release, then :meth:`DPPlan.reveal`): the noisy value at
    the receivers, None elsewhere.  SPMD: every party calls it with the same arguments.  For
    several releases in one run, use :func:`dp_plan` so that they are charged all or nothing.
    """
    if not isinstance(secret, Secret):
        raise TypeError(f"dp_reveal expects a Secret, got {type(secret).__name__}")
    secret._check(ctx)
    planned = PlannedRelease(
        mechanism,
        tuple(secret.shape),
        noise=noise,
        max_colluding=max_colluding,
        to=to if to is None or isinstance(to, str) else tuple(to),
        label=label,
        failure_delta=failure_delta,
    )
    if isinstance(mechanism, Mechanism) and mechanism.frac_bits != secret.frac:
        raise InvalidPrivacyParameterError(
            f"the mechanism counts noise in ulps of 2^-{mechanism.frac_bits} but the value has "
            f"{secret.frac} fractional bits: build it with frac_bits={secret.frac}"
        )
    return dp_plan(ctx, [planned], accountant=accountant).reveal(secret)
