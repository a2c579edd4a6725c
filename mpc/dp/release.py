"""Differentially private release under MPC: noise is added to shares, before anything opens.

Responsibility
--------------
* :func:`dp_reveal`: inside an SPMD program, charge the release to every party's privacy
  accountant, add calibrated noise to a shared value *on shares*, and only then open it to the
  named parties.  Two ways to produce the noise:

  - ``noise="distributed"``: each party samples its own piece with its own crypto PRG (the
    party's protocol PRG, which no other party or the driver knows) and the pieces are summed
    into the shared value.  With additive sharing a party simply adds its piece to its own
    share (no communication); with any other scheme each party secret-shares its piece
    (``ctx.input``, one round per party) and the parties add the shares.

    * Discrete Gaussian (the (ε, δ) mechanism): :class:`~mpc.dp.mechanisms.
      DistributedDiscreteGaussian` pieces of variance ``σ²/(n - t)`` each, so that the ``n - t``
      honest pieces alone carry the guarantee when up to ``t = max_colluding`` parties pool
      their pieces (Kairouz, Liu & Steinke, ICML 2021).  Utility cost: the released value
      carries all ``n`` pieces, variance ``n/(n - t)·σ²`` (t = 1 of 3: 1.5x; t = n - 1: nx).
    * Pure ε (discrete Laplace, CMS vector Laplace): these cannot be split into independent
      pieces that sum to the right law, so *each* party adds a full-scale independent draw.
      One honest party's draw alone makes the value ε-DP (the other draws are independent of
      the data: post-processing), so the guarantee holds against up to ``n - 1`` colluding
      parties whatever ``max_colluding`` says.  Utility cost: n times the noise variance
      (sqrt(n) times the standard deviation).

  - ``noise="dealer"``: the trusted dealer samples one full draw of the mechanism (e.g. the
    CMS vector noise) with its own PRG and secret-shares it with the protocol's
    ``SharingScheme.share``; each party fetches its share once (``mpc.dealers.seeded``,
    keyed by run and counter like the dealer's streams; the request names the mechanism and
    its public parameters, :func:`noise_spec`).  No utility cost, but the dealer knows the
    noise: it must not collude with anyone who receives the release (the same trust as for
    triples).  Needs a dealer client that deals noise (:class:`mpc.dealers.seeded.
    NoiseDealerClient`: the Ray trusted/enclave dealer, or ``local_noise_client`` in-process).

* Accounting, all before anything is opened (two barrier rounds, ``dp.commit``):

  1. every party that holds an accountant *checks* that the release fits its budget
     (``Accountant.check``); a party that refuses raises ``BudgetExceededError``, which aborts
     the run at every party;
  2. barrier: every party sends every other a fingerprint of the release (mechanism, cost,
     shape, receivers) and whether it holds an accountant; parties wait for all of them, so
     nobody goes on if anybody refused, and a party with different release parameters is
     detected;
  3. every accountant *spends* the release (durably appended to its ledger);
  4. barrier again: nobody adds noise or opens before every ledger has recorded the release.

  Only then is the noise added and the value opened (``dp.reveal``).  A refused release
  therefore reveals nothing and spends nothing anywhere; a failure after step 3 leaves the
  release spent and unrevealed (the safe direction).  By default (``accountant="ledger"``)
  each data owner's accountant is its own ledger, described in its private data:
  ``ctx.private["dp_ledger"] = {"directory": ..., "dataset": ..., "budget": {"epsilon": ...,
  "delta": ...}}`` (:func:`party_accountant`); at least one party must hold one.

* Output perturbation of the joint logistic-regression model (Chaudhuri, Monteleoni & Sarwate,
  JMLR 2011): :func:`model_privacy` derives the L2 sensitivity of the weights *as the secure
  fit computes them* (``mpc.dp.sensitivity.gd_sensitivity``: iteration count, step size and
  penalty exactly as the fixed-point update encodes them, the per-step fixed-point error
  including the sigmoid approximation, and the probability that a probabilistic truncation
  fails, which is added to δ); :func:`prepare_rows` is the owner-side public scaling and
  clipping; :func:`release_model` releases the noisy weights.

Conditions of the model-release analysis (refused otherwise, with a message that says what to
set): L2 penalty ``l2 > 0`` on every coordinate (``penalize_intercept=True``); full-batch
gradient descent (``batch_size=None``: the encoded step of a smaller last batch differs);
``standardize=False`` with rows scaled by *public* constants and clipped to ``clip_norm`` at their
owner (:func:`prepare_rows`; data-dependent standardisation changes every row when one row
changes); a bounded, monotone sigmoid: ``'piecewise'`` (slope 0.17707, values in [0, 1]; its
1-ulp rounding goes into the per-step error) or ``'accurate-clamped'`` (counted as the exact
sigmoid, its 7e-4 error goes into the per-step error); ``'poly'`` is unbounded and
``'accurate'`` is wrong beyond |z| = 112, so neither is covered.

Truncation failures.  Every fixed-point product is truncated with a dealer pair, which fails
(returns a huge wrong value) with probability ``|x|/M`` per element, x the product before
truncation (``docs/security.md``; M = 2^64 in the ring).  A failure breaks the sensitivity
bound, so its probability is added to the release's δ.  :func:`truncation_failure_delta` bounds
the sum of |x| over one epoch with public numbers only: ``‖x_i‖ <= R`` (clipped rows, intercept
included), ``‖w_k‖ <= W`` for every iterate (gradient descent with a step below 2/β decreases
the objective, so ``(λ/2)‖w_k‖² <= J(0) - inf loss <= C0``: ``C0 = ln 2`` for the exact
sigmoid's loss, ``1/(8a)`` for the piecewise one, plus the fixed-point drift), ``|s - y| <= 1``:

  logits ``X w``: ``n R W``; piecewise sigmoid ``a·2^e·n R W`` (its constant's scale);
  accurate-clamped sigmoid ``16 n`` (its 11 products are of magnitude <= 2 each);
  gradient sum ``X^T r``: ``sqrt(d) n R``; update: the encoded constants times the gradient
  sum and ``sqrt(d) W``;

each times ``2^(2f)`` (the scale of a product) over M, times the epochs.  With 455 rows, R = 2,
λ = 0.03 and 10 epochs this is about 4e-5: the release is (ε, δ + 4e-5)-DP.  That is the price
of probabilistic truncation (the Shamir field); it is reported with every release
(``ModelPrivacy``) and charged.  The ring protocols truncate exactly (``mpc.bounds``: no failure
within the range `fit` checks before training), so with them this δ is 0.

Security model
--------------
Semi-honest, as the session's protocol.  Who sees what:

* the parties named in ``to`` (all when None) see the *noisy* value and nothing else; no party,
  and not the driver, ever sees the value before the noise is added (it exists only as shares);
* each party sees its own noise piece (distributed) or its share of the dealer's noise; with
  distributed noise a coalition learns its own pieces, which is what the calibration allows for;
* the dealer (dealer noise) sees the noise it dealt and must not collude with a receiver;
* every party sees the public release description (mechanism, ε, δ, sensitivity, shape), the
  fact that each other party holds an accountant, and a refusal (which aborts the run; the
  refusing party's message has public numbers only: budget, spent, requested);
* each ledger is written only by its owner's party process (ledger files and keys stay there).

What the guarantee needs beyond this module: a sensitivity that truly bounds the released value
(clipped rows, public scaling), noise seeds no receiver knows, and at most ``max_colluding``
colluding parties (distributed Gaussian) or a non-colluding dealer (dealer noise).  Timing of the
noise samplers is data-independent but noise-dependent (rejection loops): no side channels are
assumed, as everywhere in ``mpc``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from mpc.dp.accountant import (
    Accountant,
    InvalidPrivacyParameterError,
    MissingSensitivityError,
    PrivacyBudget,
    Release,
    check_delta,
)
from mpc.dp.ledger import Ledger
from mpc.dp.mechanisms import (
    DiscreteGaussianMechanism,
    DiscreteLaplaceMechanism,
    DistributedDiscreteGaussian,
    VectorLaplaceMechanism,
    model_release_mechanism,
)
from mpc.dp.sensitivity import (
    GDSensitivity,
    check_clipped,
    clip_rows,
    gd_sensitivity,
    logreg_step_error,
)
from mpc.encoding import FixedPoint
from mpc.errors import ConfigurationError
from mpc.ml.logreg import LinearModel, LogisticRegression, SecureModel, encode_constants
from mpc.ml.sigmoid import ACCURATE_MAX_ERROR, PIECEWISE_SLOPE
from mpc.program import PartyContext, Secret
from mpc.protocols.additive import AdditiveScheme
from mpc.rng import Prg

__all__ = [
    "LEDGER_KEY",
    "AccountantSource",
    "ModelPrivacy",
    "NoiseMode",
    "ReleasePlan",
    "RevealMechanism",
    "dp_reveal",
    "format_ledger_status",
    "ledger_status",
    "max_learning_rate",
    "mechanism_from_spec",
    "model_privacy",
    "model_release_plan",
    "noise_spec",
    "party_accountant",
    "plan_release",
    "prepare_rows",
    "release_model",
    "sample_noise",
    "truncation_failure_delta",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

NoiseMode = Literal["distributed", "dealer"]
RevealMechanism: TypeAlias = (
    DiscreteGaussianMechanism | DiscreteLaplaceMechanism | VectorLaplaceMechanism
)
#: Where each party's accountant comes from: "ledger" (its ``ctx.private["dp_ledger"]``), None
#: (no accounting), a mapping party name -> Accountant (in-process), or a function of ctx.
AccountantSource: TypeAlias = (
    str | Mapping[str, Accountant | None] | Callable[[PartyContext], Accountant | None] | None
)

#: The key of a party's ledger description in its private data.
LEDGER_KEY = "dp_ledger"
#: Largest noise draw the dealer accepts to sample (elements).
MAX_NOISE_ELEMENTS = 1 << 22
#: Bound on the sum of |intermediate| over the truncated products of one 'accurate-clamped'
#: sigmoid element (u^2/2 <= 0.25, six squarings <= 1, 8/17 e <= 1, Newton 2 x (2 + 1.1)),
#: with margin; see the module docstring.
ACCURATE_TRUNCATION_MASS = 16.0
#: Sigmoids the model-release analysis covers.
COVERED_SIGMOIDS = ("piecewise", "accurate-clamped")


# ---- noise specs (what the dealer is asked for) -------------------------------------------------


def _finite(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidPrivacyParameterError(f"noise spec: {name} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise InvalidPrivacyParameterError(f"noise spec: {name} must be finite, got {value!r}")
    return out


def _int(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidPrivacyParameterError(
            f"noise spec: {name} must be an int in [{low}, {high}], got {value!r}"
        )
    return value


def noise_spec(mechanism: RevealMechanism, shape: Sequence[int], frac_bits: int) -> dict[str, Any]:
    """The plain-JSON description of one full draw of `mechanism`'s noise for a value of `shape`
    with `frac_bits` fractional bits: what a party sends the dealer (public parameters only)."""
    dims = [int(v) for v in shape]
    base: dict[str, Any] = {"shape": dims, "frac_bits": int(frac_bits)}
    if isinstance(mechanism, DiscreteGaussianMechanism):
        return {
            "mechanism": "discrete_gaussian",
            "epsilon": mechanism.epsilon,
            "delta": mechanism.delta,
            "sensitivity": float(mechanism.sensitivity or 0.0),
            **base,
        }
    if isinstance(mechanism, DiscreteLaplaceMechanism):
        return {
            "mechanism": "discrete_laplace",
            "epsilon": mechanism.epsilon,
            "sensitivity": float(mechanism.sensitivity or 0.0),
            **base,
        }
    if isinstance(mechanism, VectorLaplaceMechanism):
        return {
            "mechanism": "cms_vector_laplace",
            "epsilon": mechanism.epsilon,
            "sensitivity": float(mechanism.sensitivity or 0.0),
            "dim": mechanism.dim,
            **base,
        }
    raise TypeError(f"no noise spec for {type(mechanism).__name__}")


def mechanism_from_spec(spec: Mapping[str, Any]) -> tuple[RevealMechanism, tuple[int, ...], int]:
    """Validate a noise spec (from :func:`noise_spec`) and rebuild (mechanism, shape, frac_bits).

    InvalidPrivacyParameterError for anything else: unknown mechanism or keys, wrong types,
    a shape larger than MAX_NOISE_ELEMENTS."""
    if not isinstance(spec, Mapping):
        raise InvalidPrivacyParameterError("noise spec must be a mapping")
    name = spec.get("mechanism")
    keys = {
        "discrete_gaussian": {"epsilon", "delta", "sensitivity"},
        "discrete_laplace": {"epsilon", "sensitivity"},
        "cms_vector_laplace": {"epsilon", "sensitivity", "dim"},
    }
    if not isinstance(name, str) or name not in keys:
        raise InvalidPrivacyParameterError(
            f"noise spec: unknown mechanism {name!r}; one of {sorted(keys)}"
        )
    expected = keys[name] | {"mechanism", "shape", "frac_bits"}
    if set(spec) != expected:
        raise InvalidPrivacyParameterError(
            f"noise spec for {name} must have exactly the keys {sorted(expected)}, got "
            f"{sorted(spec)}"
        )
    raw_shape = spec["shape"]
    if not isinstance(raw_shape, list | tuple) or len(raw_shape) > 8:
        raise InvalidPrivacyParameterError("noise spec: shape must be a list of at most 8 ints")
    shape = tuple(_int(v, "shape entry", 0, MAX_NOISE_ELEMENTS) for v in raw_shape)
    if math.prod(shape) > MAX_NOISE_ELEMENTS:
        raise InvalidPrivacyParameterError(
            f"noise spec: {math.prod(shape)} elements, more than {MAX_NOISE_ELEMENTS}"
        )
    frac = _int(spec["frac_bits"], "frac_bits", 0, 52)
    eps = _finite(spec["epsilon"], "epsilon")
    sens = _finite(spec["sensitivity"], "sensitivity")
    mech: RevealMechanism
    if name == "discrete_gaussian":
        mech = DiscreteGaussianMechanism(
            epsilon=eps,
            delta=_finite(spec["delta"], "delta"),
            sensitivity=sens,
            frac_bits=frac,
        )
    elif name == "discrete_laplace":
        mech = DiscreteLaplaceMechanism(epsilon=eps, sensitivity=sens, frac_bits=frac)
    else:
        dim = _int(spec["dim"], "dim", 1, MAX_NOISE_ELEMENTS)
        if shape[-1:] != (dim,):
            raise InvalidPrivacyParameterError(
                f"noise spec: a vector mechanism of dim {dim} needs a shape ending in {dim}, "
                f"got {list(shape)}"
            )
        mech = VectorLaplaceMechanism(epsilon=eps, sensitivity=sens, dim=dim)
    return mech, shape, frac


def _draw(mechanism: RevealMechanism, prg: Prg, shape: tuple[int, ...], frac: int) -> IntArray:
    """One full draw of the mechanism's noise, int64 ulps of 2^-frac, of `shape`."""
    if isinstance(mechanism, VectorLaplaceMechanism):
        return mechanism.noise_fixed(prg, frac, shape[:-1])
    return mechanism.noise(prg, shape)


def sample_noise(spec: Mapping[str, Any], prg: Prg) -> IntArray:
    """One full draw of the noise `spec` describes, from `prg` (the dealer's own): int64 ulps."""
    mechanism, shape, frac = mechanism_from_spec(spec)
    return np.asarray(_draw(mechanism, Prg(prg.bytes(16)), shape, frac), dtype=np.int64)


# ---- accountants ---------------------------------------------------------------------------------


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


# ---- planning a release ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleasePlan:
    """The public description of one noisy release (the same at every party).

    ``cost``: what each accountant is charged; ``noise``: "distributed" or "dealer";
    ``variance_factor``: the released noise variance over the variance of one full draw of the
    mechanism (1 for dealer noise, n/(n - t) for the distributed Gaussian, n for distributed
    pure-ε noise); ``distributed``: the per-party Gaussian calibration when used.
    """

    mechanism: RevealMechanism
    cost: Release
    noise: NoiseMode
    shape: tuple[int, ...]
    frac_bits: int
    n_parties: int
    max_colluding: int
    variance_factor: float
    distributed: DistributedDiscreteGaussian | None = None

    def fingerprint(self, receivers: Sequence[int] | None) -> int:
        """64 bits of SHA-256 of everything the parties must agree on."""
        body = {
            "cost": self.cost.to_json(),
            "noise": self.noise,
            "shape": list(self.shape),
            "frac_bits": self.frac_bits,
            "to": None if receivers is None else sorted(receivers),
        }
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
        return int.from_bytes(digest[:8], "big")

    def party_piece(self, prg: Prg) -> IntArray:
        """This party's distributed noise piece (int64 ulps), from its own PRG."""
        if self.distributed is not None:
            return self.distributed.party_noise(prg, self.shape)
        return _draw(self.mechanism, prg, self.shape, self.frac_bits)


def plan_release(
    mechanism: RevealMechanism,
    *,
    shape: Sequence[int],
    frac_bits: int,
    n_parties: int,
    max_colluding: int,
    noise: NoiseMode = "distributed",
    failure_delta: float = 0.0,
    label: str = "",
) -> ReleasePlan:
    """The plan (cost, noise split) of releasing a value of `shape` with `mechanism`.

    `failure_delta`: the probability that the computation feeding the release failed (e.g. a
    probabilistic truncation, :func:`truncation_failure_delta`); it is added to the release's
    δ and the release is then charged without a zCDP parameter (basic composition).
    """
    if not isinstance(
        mechanism, DiscreteGaussianMechanism | DiscreteLaplaceMechanism | VectorLaplaceMechanism
    ):
        raise TypeError(
            f"dp_reveal needs a discrete mechanism on the fixed-point grid "
            f"(DiscreteGaussianMechanism, DiscreteLaplaceMechanism) or the CMS "
            f"VectorLaplaceMechanism, got {type(mechanism).__name__}: shares are integers, so "
            f"continuous noise would have to be rounded; use the discrete mechanisms"
        )
    if noise not in ("distributed", "dealer"):
        raise ValueError(f"noise must be 'distributed' or 'dealer', got {noise!r}")
    dims = tuple(int(v) for v in shape)
    size = math.prod(dims)
    if size < 1:
        raise InvalidPrivacyParameterError("cannot release an empty value")
    if not isinstance(mechanism, VectorLaplaceMechanism) and mechanism.frac_bits != frac_bits:
        raise InvalidPrivacyParameterError(
            f"the mechanism counts noise in ulps of 2^-{mechanism.frac_bits} but the value has "
            f"{frac_bits} fractional bits: build it with frac_bits={frac_bits}"
        )
    if isinstance(mechanism, VectorLaplaceMechanism) and dims[-1:] != (mechanism.dim,):
        raise InvalidPrivacyParameterError(
            f"the vector mechanism has dim={mechanism.dim} but the value has shape {dims}"
        )
    if n_parties < 1 or not 0 <= max_colluding < n_parties:
        raise InvalidPrivacyParameterError(
            f"need 0 <= max_colluding < n_parties, got max_colluding={max_colluding}, "
            f"n_parties={n_parties}: at least one party must be honest"
        )
    fail = float(failure_delta)
    if not math.isfinite(fail) or not 0.0 <= fail < 1.0:
        raise InvalidPrivacyParameterError(f"failure_delta must be in [0, 1), got {failure_delta}")
    distributed = None
    if noise == "dealer":
        cost, factor = mechanism.cost(label), 1.0
    elif isinstance(mechanism, DiscreteGaussianMechanism):
        distributed = DistributedDiscreteGaussian(
            epsilon=mechanism.epsilon,
            delta=mechanism.delta,
            sensitivity=mechanism.sensitivity,
            dim=size,
            n_parties=n_parties,
            max_colluding=max_colluding,
            frac_bits=frac_bits,
        )
        cost = distributed.cost(label)
        factor = distributed.total_variance / float(mechanism.sigma2)
    else:  # pure epsilon: every party adds a full-scale draw
        cost, factor = mechanism.cost(label), float(n_parties)
    params = {**cost.params, "noise": noise}
    if noise == "distributed":
        params["n_parties"] = n_parties
        params["max_colluding"] = max_colluding
    if fail > 0.0:
        delta = cost.delta + fail
        check_delta(delta, "release delta with the failure probability")
        params["failure_delta"] = fail
        cost = Release(cost.mechanism, cost.epsilon, delta, rho=None, label=label, params=params)
    else:
        cost = Release(
            cost.mechanism, cost.epsilon, cost.delta, rho=cost.rho, label=label, params=params
        )
    return ReleasePlan(
        mechanism, cost, noise, dims, frac_bits, n_parties, max_colluding, factor, distributed
    )


# ---- the release ---------------------------------------------------------------------------------


def _barrier(ctx: PartyContext, words: list[int]) -> dict[int, list[int]]:
    """One round: send `words` to every other party, receive theirs."""
    others = [j for j in range(ctx.n) if j != ctx.rank]
    payload = np.asarray(words, dtype=np.uint64)
    received = ctx.channel.exchange({j: payload for j in others}, others)
    out = {j: [int(v) for v in np.asarray(a).reshape(-1)] for j, a in received.items()}
    out[ctx.rank] = list(words)
    return out


def _receivers(ctx: PartyContext, to: str | Sequence[str] | None) -> list[int] | None:
    if to is None:
        return None
    names = [to] if isinstance(to, str) else list(to)
    if not names:
        raise ValueError("to must name at least one party (or be None for all)")
    return sorted({ctx.rank_of(name) for name in names})


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
        spec = noise_spec(plan.mechanism, plan.shape, plan.frac_bits)
        share = np.asarray(fetch(spec))
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
    mechanism: RevealMechanism,
    *,
    noise: NoiseMode = "distributed",
    max_colluding: int | None = None,
    accountant: AccountantSource = "ledger",
    to: str | Sequence[str] | None = None,
    label: str = "",
    failure_delta: float = 0.0,
) -> npt.NDArray[Any] | None:
    """Open ``secret + noise`` to the parties `to` (all when None), charging every accountant
    first; the value at the receivers (float for fixed point, int64 for integers), None
    elsewhere.  SPMD: every party calls it with the same arguments.

    `mechanism` is calibrated for one full draw (sensitivity in the value's real units; for
    discrete mechanisms ``frac_bits`` equal to the secret's).  `noise` and `max_colluding`
    (default: the session's corruption threshold) choose how the noise is produced (module
    docstring); `accountant` where each party's accountant comes from (default: each party's
    ledger in ``ctx.private["dp_ledger"]``; at least one party must hold one; None: no
    accounting).  Raises BudgetExceededError at a party whose budget refuses the release, which
    aborts the run at every party before anything is revealed.
    """
    if not isinstance(secret, Secret):
        raise TypeError(f"dp_reveal expects a Secret, got {type(secret).__name__}")
    secret._check(ctx)
    receivers = _receivers(ctx, to)
    t = ctx.protocol.t if max_colluding is None else max_colluding
    plan = plan_release(
        mechanism,
        shape=secret.shape if secret.shape else (1,),
        frac_bits=secret.frac,
        n_parties=ctx.n,
        max_colluding=t,
        noise=noise,
        failure_delta=failure_delta,
        label=label,
    )
    scalar = secret.shape == ()
    value = secret.reshape(1) if scalar else secret
    with ctx.channel.operation("dp.charge"):
        acct = party_accountant(ctx, accountant)
        if acct is not None:
            acct.check(plan.cost)  # BudgetExceededError: this party refuses, the run aborts
    fingerprint = plan.fingerprint(receivers)
    with ctx.channel.operation("dp.commit"):
        words = _barrier(ctx, [fingerprint, int(acct is not None)])
    if any(w[0] != fingerprint for w in words.values()):
        raise ConfigurationError(
            "the parties called dp_reveal with different release parameters (mechanism, "
            "epsilon, delta, shape or receivers): every party must release the same thing"
        )
    if accountant == "ledger" and not any(w[1] for w in words.values()):
        raise InvalidPrivacyParameterError(
            f"no party holds a privacy ledger: give each data owner one in its private data "
            f"(private[{LEDGER_KEY!r}] = {{'directory': ..., 'dataset': ..., 'budget': ...}}), "
            f"or pass accountant=None to release without a budget"
        )
    with ctx.channel.operation("dp.charge"):
        if acct is not None:
            acct.spend(plan.cost)
    with ctx.channel.operation("dp.commit"):
        _barrier(ctx, [fingerprint])  # every ledger has recorded the release
    with ctx.channel.operation("dp.noise"):
        noisy = _add_noise(ctx, value, plan)
    with ctx.channel.operation("dp.reveal"):
        opened = ctx.reveal(
            noisy, None if receivers is None else [ctx.parties[r] for r in receivers]
        )
    if opened is None:
        return None
    return opened.reshape(()) if scalar else opened


# ---- logistic-regression model release ---------------------------------------------------------


@dataclass(frozen=True)
class ModelPrivacy:
    """The public privacy analysis of one secure logistic-regression fit (module docstring).

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
    (module docstring): sum of |product| over the truncated elements of one epoch, times
    epochs, over the modulus.  `constants`/`shift`: the encoded update constants."""
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
    ``config.fit`` computes on `n_rows` clipped rows of `n_features` features (module
    docstring).  Public numbers only.  Raises InvalidPrivacyParameterError /
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
        sigmoid_error = 2.0**-f  # the debiased truncation of a z: within one ulp
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
    analysis it is calibrated to: ``delta == 0`` gives the pure-ε CMS vector noise,
    ``delta > 0`` the exact discrete Gaussian; either way the release is charged
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

    ``delta == 0``: pure-ε vector noise; ``delta > 0``: discrete Gaussian.  The charged cost is
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
