"""Privacy budget and accountant: what releases cost, and refusal before overspending.

The error types of `mpc.dp`; :class:`PrivacyBudget` and :class:`Release` (one release's
``(epsilon, delta)`` and, where it has one, its zCDP ``rho``); composition (basic, and zCDP with
the conversion of Canonne, Kamath & Steinke 2020, Cor. 13: :func:`compose`); and
:class:`Accountant`, which refuses a release, or a batch of releases, that would exceed the
budget before anything is revealed.  Security model: bookkeeping on public numbers; it is only as
good as the costs it is told (mechanisms state their own: ``mechanism.cost()``).  See docs/dp.md
("Accountant and budget").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mpc.dp.bisection import bisect
from mpc.errors import MpcError

if TYPE_CHECKING:  # pragma: no cover
    from mpc.dp.ledger import Ledger

__all__ = [
    "Accountant",
    "BudgetExceededError",
    "Composition",
    "DPError",
    "InvalidPrivacyParameterError",
    "LedgerTamperedError",
    "MissingSensitivityError",
    "PrivacyBudget",
    "Release",
    "check_delta",
    "check_epsilon",
    "compose",
    "zcdp_delta",
    "zcdp_epsilon",
    "zcdp_rho",
]

Composition = Literal["basic", "zcdp"]


# ---- errors -------------------------------------------------------------------------------------


class DPError(MpcError):
    """Base class of the differential-privacy errors of `mpc.dp`."""


class InvalidPrivacyParameterError(DPError, ValueError):
    """An epsilon, delta, sensitivity, budget or mechanism parameter that cannot be used."""


class MissingSensitivityError(InvalidPrivacyParameterError):
    """A mechanism or bound was built without the sensitivity or clipping bound it needs."""


class BudgetExceededError(DPError):
    """A release was refused (before anything was revealed): it would exceed the budget."""


class LedgerTamperedError(DPError):
    """A privacy ledger failed verification (edited, truncated, missing, or its key is missing)."""


# ---- parameters ---------------------------------------------------------------------------------


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidPrivacyParameterError(
            f"{name} must be a number, got {type(value).__name__} {value!r}"
        )
    return float(value)  # NaN is refused by the callers' range checks


def check_epsilon(epsilon: object, name: str = "epsilon") -> float:
    """``epsilon`` as a float if it is finite and > 0, else InvalidPrivacyParameterError."""
    eps = _number(epsilon, name)
    if not math.isfinite(eps) or eps <= 0:
        raise InvalidPrivacyParameterError(
            f"{name} must be a finite number > 0 (the privacy-loss bound; smaller is more "
            f"private, e.g. {name}=1.0), got {epsilon!r}"
        )
    return eps


def check_delta(delta: object, name: str = "delta") -> float:
    """``delta`` as a float if it is in [0, 1), else InvalidPrivacyParameterError."""
    d = _number(delta, name)
    if not 0.0 <= d < 1.0:
        raise InvalidPrivacyParameterError(
            f"{name} must be in [0, 1) (the probability the epsilon bound may fail; use 0 for "
            f"pure DP or a value well below 1/n_rows such as 1e-6), got {delta!r}"
        )
    return d


@dataclass(frozen=True)
class PrivacyBudget:
    """A total privacy budget ``(epsilon, delta)`` for one data set (``epsilon > 0``,
    ``0 <= delta < 1``)."""

    epsilon: float
    delta: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", check_epsilon(self.epsilon, "budget epsilon"))
        object.__setattr__(self, "delta", check_delta(self.delta, "budget delta"))

    def to_json(self) -> dict[str, float]:
        return {"epsilon": self.epsilon, "delta": self.delta}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PrivacyBudget:
        return cls(float(data["epsilon"]), float(data["delta"]))


@dataclass(frozen=True)
class Release:
    """The privacy cost of one release.

    ``mechanism``: a name (e.g. ``"discrete_gaussian"``); ``epsilon``, ``delta``: the
    release's own guarantee; ``rho``: its zCDP parameter if it has one (Gaussian-type and pure
    ε-DP mechanisms), else None; ``label``: free text (what was released); ``params``: public
    mechanism parameters (sensitivity, σ, ...) kept for the record.
    """

    mechanism: str
    epsilon: float
    delta: float = 0.0
    rho: float | None = None
    label: str = ""
    params: Mapping[str, float | int | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.mechanism, str) or not self.mechanism:
            raise InvalidPrivacyParameterError("a release needs a mechanism name")
        object.__setattr__(self, "epsilon", check_epsilon(self.epsilon, "release epsilon"))
        object.__setattr__(self, "delta", check_delta(self.delta, "release delta"))
        if self.rho is not None:
            rho = _number(self.rho, "release rho")
            if not math.isfinite(rho) or rho <= 0:
                raise InvalidPrivacyParameterError(f"release rho must be finite and > 0, got {rho}")
            object.__setattr__(self, "rho", rho)
        object.__setattr__(self, "params", dict(self.params))

    def to_json(self) -> dict[str, Any]:
        return {
            "mechanism": self.mechanism,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "rho": self.rho,
            "label": self.label,
            "params": dict(self.params),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Release:
        rho = data.get("rho")
        return cls(
            mechanism=str(data["mechanism"]),
            epsilon=float(data["epsilon"]),
            delta=float(data["delta"]),
            rho=None if rho is None else float(rho),
            label=str(data.get("label", "")),
            params=dict(data.get("params", {})),
        )


# ---- zCDP conversions ---------------------------------------------------------------------------


def _log_delta_at(rho: float, eps: float, alpha: float) -> float:
    # log of exp((a-1)(a rho - eps)) / (a-1) * (1 - 1/a)^a   (CKS20 Corollary 13)
    return (
        (alpha - 1.0) * (alpha * rho - eps)
        + alpha * math.log1p(-1.0 / alpha)
        - math.log(alpha - 1.0)
    )


def zcdp_delta(rho: float, epsilon: float) -> float:
    """Smallest δ (up to the numerical search) such that ``rho``-zCDP implies
    ``(epsilon, δ)``-DP, by CKS20 Corollary 13 (never larger than BS16's
    ``exp(-(ε-ρ)²/(4ρ))`` for ε > ρ)."""
    if rho <= 0:
        return 0.0
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    # The optimal alpha solves (2a - 1) rho - eps + log(1 - 1/a) = 0; the left side increases
    # in a, so bisect on it (as in the paper's reference code).  Any alpha > 1 is valid.
    lo, hi = bisect(
        lambda a: (2.0 * a - 1.0) * rho - epsilon + math.log1p(-1.0 / a) < 0,
        1.0 + 1e-9,
        max(2.0, (epsilon + 1.0) / (2.0 * rho) + 2.0),
        200,
    )
    best = min(_log_delta_at(rho, epsilon, a) for a in (lo, hi))
    if epsilon > rho:
        best = min(best, -((epsilon - rho) ** 2) / (4.0 * rho))
    return min(1.0, math.exp(best)) if best < 700 else 1.0


def zcdp_epsilon(rho: float, delta: float) -> float:
    """Smallest ε (bisection, rounded up) such that ``rho``-zCDP implies ``(ε, delta)``-DP."""
    if rho <= 0:
        return 0.0
    if not 0.0 < delta < 1.0:
        raise ValueError(f"converting zCDP to (epsilon, delta)-DP needs 0 < delta < 1, got {delta}")
    hi = rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))  # BS16 Prop 1.3: always valid
    _, hi = bisect(lambda eps: zcdp_delta(rho, eps) > delta, 0.0, hi, 100)
    return hi


def zcdp_rho(epsilon: float, delta: float) -> float:
    """Largest ρ (bisection, rounded down) such that ρ-zCDP implies ``(epsilon, delta)``-DP."""
    eps = check_epsilon(epsilon)
    d = check_delta(delta)
    if d == 0.0:
        raise InvalidPrivacyParameterError(
            "zCDP implies (epsilon, delta)-DP only for delta > 0: set delta (e.g. 1e-6)"
        )
    lo, hi = 0.0, eps + 1.0
    while zcdp_delta(hi, eps) <= d:  # pragma: no cover - eps + 1 is always too much
        hi *= 2.0
    lo, _ = bisect(lambda rho: zcdp_delta(rho, eps) <= d, lo, hi, 200)
    return lo


# ---- composition --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Total:
    epsilon: float
    delta: float
    method: str


def _candidates(
    releases: Iterable[Release], delta_budget: float, composition: Composition
) -> list[_Total]:
    rel = list(releases)
    basic = _Total(sum(r.epsilon for r in rel), sum(r.delta for r in rel), "basic")
    out = [basic]
    if composition == "basic" or delta_budget <= 0.0:
        return out
    for name, in_z in (
        ("zcdp(gaussian)", lambda r: r.rho is not None and r.delta > 0.0),
        ("zcdp(all)", lambda r: r.rho is not None),
    ):
        z = [r for r in rel if in_z(r)]
        others = [r for r in rel if not in_z(r)]
        if not z:
            continue
        rho = sum(float(r.rho) for r in z if r.rho is not None)
        delta_rest = sum(r.delta for r in others)
        delta_z = delta_budget - delta_rest
        if delta_z <= 0.0:
            continue
        eps = sum(r.epsilon for r in others) + zcdp_epsilon(rho, delta_z)
        out.append(_Total(eps, delta_budget, name))
    return out


def compose(
    releases: Iterable[Release], delta_budget: float = 0.0, composition: Composition = "zcdp"
) -> PrivacyBudget | None:
    """The tightest total ``(epsilon, delta)`` with ``delta <= delta_budget`` among the
    compositions described in the module docstring, or None if none has ``delta <=
    delta_budget`` (or there are no releases)."""
    rel = list(releases)
    if not rel:
        return None
    fits = [t for t in _candidates(rel, delta_budget, composition) if t.delta <= delta_budget]
    if not fits:
        return None
    best = min(fits, key=lambda t: t.epsilon)
    return PrivacyBudget(best.epsilon, best.delta)


class Accountant:
    """Tracks the releases of one data set against its budget and refuses overspending.

    ``Accountant(budget, composition="zcdp", ledger=None)``.  With a ledger
    (:class:`mpc.dp.ledger.Ledger`), the budget is the ledger's, past releases are replayed from
    it, and every spend is appended (under the ledger's file lock, after re-verifying it)
    before :meth:`spend` returns, so a restart does not reset the budget.

    Use: ``acct.spend(mechanism.cost())`` and only then compute and reveal the noisy value.  If
    the release later fails, the budget stays spent (the safe direction).
    """

    def __init__(
        self,
        budget: PrivacyBudget | None = None,
        *,
        composition: Composition = "zcdp",
        ledger: Ledger | None = None,
    ) -> None:
        if composition not in ("basic", "zcdp"):
            raise InvalidPrivacyParameterError(
                f"composition must be 'basic' or 'zcdp', got {composition!r}"
            )
        self._composition: Composition = composition
        self._ledger = ledger
        if ledger is not None:
            ledger_budget = ledger.budget
            if budget is not None and budget != ledger_budget:
                raise InvalidPrivacyParameterError(
                    f"the ledger of data set {ledger.dataset!r} has budget {ledger_budget}, not "
                    f"{budget}: pass budget=None to use the ledger's"
                )
            budget = ledger_budget
            self._releases: list[Release] = list(ledger.releases)
        else:
            self._releases = []
        if not isinstance(budget, PrivacyBudget):
            raise InvalidPrivacyParameterError(
                "an accountant needs a budget: pass budget=PrivacyBudget(epsilon, delta) "
                "(or a ledger that has one)"
            )
        self._budget = budget

    @property
    def budget(self) -> PrivacyBudget:
        return self._budget

    @property
    def composition(self) -> Composition:
        return self._composition

    @property
    def releases(self) -> tuple[Release, ...]:
        return tuple(self._releases)

    def spent(self) -> PrivacyBudget | None:
        """The total guarantee of the releases so far (None before the first)."""
        return compose(self._releases, self._budget.delta, self._composition)

    def remaining_epsilon(self) -> float:
        """``budget.epsilon`` minus the epsilon spent (at the budget's delta)."""
        spent = self.spent()
        return self._budget.epsilon - (0.0 if spent is None else spent.epsilon)

    def check(self, release: Release) -> PrivacyBudget:
        """The total after ``release`` if it fits the budget; BudgetExceededError if not.
        Changes nothing."""
        return self._check(self._releases, [release])

    def check_all(self, releases: Sequence[Release]) -> PrivacyBudget:
        """The total after *all* of `releases` if together they fit the budget;
        BudgetExceededError if not.  Changes nothing."""
        return self._check(self._releases, list(releases))

    def _check(self, history: list[Release], batch: list[Release]) -> PrivacyBudget:
        if not batch:
            raise InvalidPrivacyParameterError("no release to check: pass at least one")
        for release in batch:
            if not isinstance(release, Release):
                raise TypeError(f"expected a Release, got {type(release).__name__}")
        b = self._budget
        total = compose([*history, *batch], b.delta, self._composition)
        if total is not None and total.epsilon <= b.epsilon and total.delta <= b.delta:
            return total
        alone = compose(batch, b.delta, self._composition)
        if len(batch) == 1:
            release = batch[0]
            what = (
                f"release {release.label or release.mechanism!r} costs "
                f"epsilon={release.epsilon:.6g}, delta={release.delta:.3g}"
            )
        else:
            names = ", ".join(repr(r.label or r.mechanism) for r in batch)
            together = (
                "more than any budget"
                if alone is None
                else f"epsilon={alone.epsilon:.6g} at delta={alone.delta:.3g}"
            )
            what = f"the {len(batch)} releases of this run ({names}) cost together {together}"
        whose, its, it = (
            ("the release's", "its", "it")
            if len(batch) == 1
            else ("the releases'", "their", "them")
        )
        if alone is None or alone.epsilon > b.epsilon or alone.delta > b.delta:
            raise BudgetExceededError(
                f"{what}, more than the whole budget (epsilon={b.epsilon:.6g}, "
                f"delta={b.delta:.3g}) of this data set: lower {whose} epsilon (or raise "
                f"{its} delta within the budget), or use a data set budget large enough for "
                f"{it}; nothing was released"
            )
        spent = compose(history, b.delta, self._composition)
        spent_txt = (
            "nothing spent yet"
            if spent is None
            else f"already spent epsilon={spent.epsilon:.6g} at delta={spent.delta:.3g}"
        )
        raise BudgetExceededError(
            f"{what}; {spent_txt} of the budget (epsilon={b.epsilon:.6g}, delta={b.delta:.3g}), "
            f"so it would exceed the budget: lower {whose} epsilon to fit the remaining "
            f"{self._budget.epsilon - (0.0 if spent is None else spent.epsilon):.6g}; nothing "
            f"was released"
        )

    def spend(self, release: Release) -> PrivacyBudget:
        """Record ``release`` and return the new total, or raise BudgetExceededError and record
        nothing.  With a ledger, the ledger is re-read and verified under its lock first (other
        processes may have spent), and the release is durably appended before returning."""
        return self.spend_all([release])

    def spend_all(self, releases: Sequence[Release]) -> PrivacyBudget:
        """Record *all* of `releases` (checked together, then appended in order under one ledger
        lock) and return the new total, or raise BudgetExceededError and record none."""
        batch = list(releases)
        if self._ledger is None:
            total = self._check(self._releases, batch)
            self._releases.extend(batch)
            return total
        with self._ledger.transaction() as txn:
            history = list(txn.releases)
            self._releases = history
            total = self._check(history, batch)
            for release in batch:
                txn.append(release)
            self._releases = [*history, *batch]
        return total
