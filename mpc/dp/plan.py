"""The public plan of one noisy release: its cost, how its noise is split, what parties agree on.

A pure function of public numbers (mechanism, shape, number of parties, colluders, noise mode):
every party computes the same plan, and a fingerprint of it is what the parties compare before
anything is charged.  See docs/dp.md ("Releasing under MPC").
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mpc.dp.accountant import InvalidPrivacyParameterError, Release, check_delta
from mpc.dp.distributed import DistributedDiscreteGaussian
from mpc.dp.mechanisms import DiscreteGaussianMechanism, IntArray, Mechanism
from mpc.rng import Prg

__all__ = ["NoiseMode", "ReleasePlan", "plan_release"]

NoiseMode = Literal["distributed", "dealer"]


@dataclass(frozen=True)
class ReleasePlan:
    """The public description of one noisy release (the same at every party).

    ``cost``: what each accountant is charged; ``noise``: "distributed" or "dealer";
    ``variance_factor``: the released noise variance over that of one full draw of the mechanism
    (1 for dealer noise, n/(n - t) for the distributed Gaussian, n for distributed pure-ε noise);
    ``distributed``: the per-party Gaussian calibration when used.
    """

    mechanism: Mechanism
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
        return self.mechanism.noise(prg, self.shape)


def plan_release(
    mechanism: Mechanism,
    *,
    shape: Sequence[int],
    frac_bits: int,
    n_parties: int,
    max_colluding: int,
    noise: NoiseMode = "distributed",
    failure_delta: float = 0.0,
    label: str = "",
) -> ReleasePlan:
    """The plan (cost, noise split) of releasing a value of `shape` and `frac_bits` with
    `mechanism`.  Distributed noise: the discrete Gaussian is split (:class:`~mpc.dp.distributed.
    DistributedDiscreteGaussian`); pure-ε noise cannot be split, so each party adds a full draw.

    `failure_delta`: the probability that the computation feeding the release failed (e.g. a
    probabilistic truncation); it is added to the release's δ and the release is then charged
    without a zCDP parameter (basic composition).
    """
    if not isinstance(mechanism, Mechanism):
        raise TypeError(
            f"dp_reveal needs a discrete mechanism on the fixed-point grid (a mpc.dp.mechanisms."
            f"Mechanism: DiscreteGaussianMechanism, DiscreteLaplaceMechanism, "
            f"VectorLaplaceMechanism), got {type(mechanism).__name__}: shares are integers and "
            f"floating-point noise is unsafe (for a continuous mechanism use its .discrete())"
        )
    if noise not in ("distributed", "dealer"):
        raise ValueError(f"noise must be 'distributed' or 'dealer', got {noise!r}")
    dims = tuple(int(v) for v in shape)
    size = math.prod(dims)
    if size < 1:
        raise InvalidPrivacyParameterError("cannot release an empty value")
    if mechanism.frac_bits != frac_bits:
        raise InvalidPrivacyParameterError(
            f"the mechanism counts noise in ulps of 2^-{mechanism.frac_bits} but the value has "
            f"{frac_bits} fractional bits: build it with frac_bits={frac_bits}"
        )
    mechanism.check_shape(dims)
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
