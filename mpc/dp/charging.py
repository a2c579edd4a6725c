"""Charging releases to every party's own accountant, all or nothing, before anything opens.

Each party builds its accountant from its own private data (its ledger; :func:`party_accountant`)
and checks the whole batch of a run's releases against it; two barrier rounds make every party
wait until all have accepted (and then until all have recorded) the batch, so a refusal anywhere
aborts the run before any ledger is charged or any value revealed.  Security model: a party
trusts only its own ledger and the public release description; the barrier messages are public
fingerprints.  See docs/dp.md ("Accounting").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np

from mpc.dp.accountant import (
    Accountant,
    InvalidPrivacyParameterError,
    PrivacyBudget,
    Release,
)
from mpc.dp.ledger import Ledger
from mpc.errors import ConfigurationError
from mpc.program import PartyContext

__all__ = [
    "LEDGER_KEY",
    "AccountantSource",
    "charge",
    "format_ledger_status",
    "ledger_status",
    "party_accountant",
]

#: Where each party's accountant comes from: "ledger" (its ``ctx.private["dp_ledger"]``), None
#: (no accounting), a mapping party name -> Accountant (in-process), or a function of ctx.
AccountantSource: TypeAlias = (
    str | Mapping[str, Accountant | None] | Callable[[PartyContext], Accountant | None] | None
)

#: The key of a party's ledger description in its private data.
LEDGER_KEY = "dp_ledger"


def _ledger_accountant(description: Any, who: str) -> Accountant:
    if isinstance(description, Accountant):
        return description  # in-process use: the caller built it at this party
    if not isinstance(description, Mapping):
        raise InvalidPrivacyParameterError(
            f"{who}: private {LEDGER_KEY!r} must be a mapping {{'directory': ..., 'dataset': "
            f"..., 'budget': {{'epsilon': ..., 'delta': ...}}}} (or an Accountant in-process)"
        )
    directory = description.get("directory")
    dataset = description.get("dataset")
    if not isinstance(directory, str) or not isinstance(dataset, str):
        raise InvalidPrivacyParameterError(
            f"{who}: private {LEDGER_KEY!r} needs 'directory' and 'dataset' strings"
        )
    raw = description.get("budget")
    budget = None
    if raw is not None:
        if isinstance(raw, Mapping):
            budget = PrivacyBudget.from_json(raw)
        elif isinstance(raw, list | tuple) and len(raw) == 2:
            budget = PrivacyBudget(raw[0], raw[1])
        else:
            raise InvalidPrivacyParameterError(
                f"{who}: the ledger budget must be {{'epsilon': e, 'delta': d}} or [e, d]"
            )
    composition = description.get("composition", "zcdp")
    ledger = Ledger.open(directory, dataset, budget)
    return Accountant(composition=composition, ledger=ledger)


def party_accountant(ctx: PartyContext, source: AccountantSource = "ledger") -> Accountant | None:
    """This party's accountant for a release (None if it holds none), from `source`:

    * ``"ledger"``: the ledger described by ``ctx.private["dp_ledger"]`` (opened and verified
      now: a tampered or missing ledger raises LedgerTamperedError); None without that key;
    * None: no accounting at any party;
    * a mapping party name -> Accountant (in-process runs), or a function ``ctx -> Accountant``.
    """
    if source is None:
        return None
    if isinstance(source, Accountant):
        raise TypeError(
            "accountant must not be one Accountant shared by all parties (each party would "
            "charge it): pass a mapping {party: Accountant}, a function of ctx, or 'ledger'"
        )
    if isinstance(source, str):
        if source != "ledger":
            raise ValueError(
                f"accountant must be 'ledger', None, a mapping or a function, got {source!r}"
            )
        description = ctx.private.get(LEDGER_KEY)
        return None if description is None else _ledger_accountant(description, ctx.me)
    if isinstance(source, Mapping):
        found = source.get(ctx.me)
        if found is not None and not isinstance(found, Accountant):
            raise TypeError(f"accountant for {ctx.me!r} is not an Accountant")
        return found
    if callable(source):
        return source(ctx)
    raise TypeError(f"unsupported accountant source {type(source).__name__}")


def ledger_status(ctx: PartyContext) -> dict[str, Any] | None:
    """This party's ledger bookkeeping (public numbers: budget, spent, remaining, number of
    releases), or None if it holds no ledger.  Opens and verifies the ledger."""
    acct = party_accountant(ctx, "ledger")
    if acct is None:
        return None
    spent = acct.spent()
    return {
        "budget_epsilon": acct.budget.epsilon,
        "budget_delta": acct.budget.delta,
        "spent_epsilon": 0.0 if spent is None else spent.epsilon,
        "spent_delta": 0.0 if spent is None else spent.delta,
        "remaining_epsilon": acct.remaining_epsilon(),
        "releases": len(acct.releases),
    }


def format_ledger_status(name: str, status: dict[str, Any]) -> str:
    """One line of a party's `ledger_status` for scenario reports."""
    return (
        f"  {name:<8} spent epsilon {status['spent_epsilon']:.4g} delta "
        f"{status['spent_delta']:.2e} of ({status['budget_epsilon']:g}, "
        f"{status['budget_delta']:g}); epsilon left {status['remaining_epsilon']:.4g}; "
        f"{status['releases']} release(s)"
    )


def _barrier(ctx: PartyContext, words: list[int]) -> dict[int, list[int]]:
    """One round: send `words` to every other party, receive theirs."""
    others = [j for j in range(ctx.n) if j != ctx.rank]
    payload = np.asarray(words, dtype=np.uint64)
    received = ctx.channel.exchange({j: payload for j in others}, others)
    out = {j: [int(v) for v in np.asarray(a).reshape(-1)] for j, a in received.items()}
    out[ctx.rank] = list(words)
    return out


def _batch_fingerprint(fingerprints: Sequence[int]) -> int:
    body = b"".join(int(f).to_bytes(8, "big") for f in fingerprints)
    return int.from_bytes(hashlib.sha256(b"mpc.dp.batch" + body).digest()[:8], "big")


def charge(
    ctx: PartyContext,
    costs: Sequence[Release],
    fingerprints: Sequence[int],
    accountant: AccountantSource = "ledger",
) -> None:
    """Charge all of `costs` (one run's releases, described by their public `fingerprints`) to
    every party's accountant, or none of them.  SPMD; before anything is revealed:

    1. each party's accountant checks the whole batch (``Accountant.check_all``); a refusal
       raises BudgetExceededError there, which aborts the run at every party;
    2. barrier: the parties compare the batch's fingerprint and whether each holds an
       accountant, so nobody goes on if anybody refused or planned different releases;
    3. each accountant records the batch (``Accountant.spend_all``: durably, under its lock);
    4. barrier: nobody adds noise or opens before every ledger has recorded the batch.

    A failure after 3 leaves the batch charged and unrevealed (the safe direction).
    """
    with ctx.channel.operation("dp.charge"):
        acct = party_accountant(ctx, accountant)
        if acct is not None:
            acct.check_all(costs)  # BudgetExceededError: this party refuses, the run aborts
    fingerprint = _batch_fingerprint(fingerprints)
    with ctx.channel.operation("dp.commit"):
        words = _barrier(ctx, [fingerprint, int(acct is not None)])
    if any(w[0] != fingerprint for w in words.values()):
        raise ConfigurationError(
            "the parties called dp_reveal (or dp_plan) with different release parameters "
            "(mechanism, epsilon, delta, shape, receivers or the list of releases): every party "
            "must release the same thing"
        )
    if accountant == "ledger" and not any(w[1] for w in words.values()):
        raise InvalidPrivacyParameterError(
            f"no party holds a privacy ledger: give each data owner one in its private data "
            f"(private[{LEDGER_KEY!r}] = {{'directory': ..., 'dataset': ..., 'budget': ...}}), "
            f"or pass accountant=None to release without a budget"
        )
    with ctx.channel.operation("dp.charge"):
        if acct is not None:
            acct.spend_all(costs)
    with ctx.channel.operation("dp.commit"):
        _barrier(ctx, [fingerprint])  # every ledger has recorded the batch
