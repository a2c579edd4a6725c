"""Statistical tests: truncation error and failure rate, and that a party's view is uniform.

False-alarm rates are below 1e-6 per test: binomial tails and chi-square p-values are compared
against 1e-7, so a correct implementation essentially never fails, while the mutations these
tests target (no masking, wrong shift, biased masks) fail with certainty.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import local_parties, protocol_cases
from scipy import stats

from mpc.program import PartyContext, Secret
from mpc.protocols.base import Protocol
from mpc.protocols.registry import get_protocol

CASES_3 = [case for case in protocol_cases((3,))]
ALPHA = 1e-7


def _truncate_program(values: np.ndarray, bits: int, probabilistic: bool = False) -> Any:
    """Truncate integer inputs at the protocol layer (the protocol's `truncate` on the shares,
    or with `probabilistic` the dealer pair's `Protocol.truncate`): the magnitudes tested here
    are far beyond what `Secret` products admit (`mpc.bounds`)."""
    largest = float(np.max(np.abs(values)))

    def program(ctx: PartyContext) -> np.ndarray | None:
        x = ctx.input("alice", values if ctx.me == "alice" else None, kind="int", bound=largest)
        with ctx.channel.operation("truncate"):
            if probabilistic:
                share = Protocol.truncate(ctx.protocol, x.share, bits)
            else:
                share = ctx.protocol.truncate(x.share, bits)
            y = Secret(ctx, share, 0)
        return ctx.reveal(y)

    return program


@pytest.mark.parametrize(("protocol", "n"), CASES_3)
def test_truncation_error_is_at_most_one_ulp(protocol: str, n: int) -> None:
    """For |x| < 2^40 the result is floor(x / 2^16) or one less, never anything else (exact
    truncation); in a field, whose truncation fails with probability |x| / p, for |x| < 2^29:
    a failure in this test's 40000 elements then has probability below 2^-16 (at 2^39 it was
    about one run in a hundred)."""
    bits = 16
    exact = get_protocol(protocol).exact_truncation()
    step = 27_487_791 if exact else 13_421  # spans about +-2^39, or +-2^28
    base = np.arange(-20000, 20000, dtype=np.int64) * step
    got = local_parties(protocol, n).run(_truncate_program(base, bits))["alice"].output
    floor = base >> bits
    diff = got - floor
    assert set(np.unique(diff)) <= {0, -1}
    # Both outcomes occur (the rounding is probabilistic, not a constant offset).
    assert np.count_nonzero(diff == -1) > 1000 and np.count_nonzero(diff == 0) > 1000


@pytest.mark.parametrize(("protocol", "n"), CASES_3)
def test_truncation_failure_rate_matches_bound(protocol: str, n: int) -> None:
    """The dealer pair's probabilistic truncation (`Protocol.truncate`: the field protocols'
    truncation, and the one the ring fuses into a next product) at |x| = 2^(M_bits - 4):
    failure probability |x|/M = 1/16 per element, as documented."""
    modulus_bits = 64 if protocol == "additive" else 61
    magnitude = 1 << (modulus_bits - 4)
    count = 20000
    values = np.where(np.arange(count) % 2 == 0, magnitude, -magnitude).astype(np.int64)
    program = _truncate_program(values, 16, probabilistic=True)
    got = local_parties(protocol, n).run(program)["alice"].output
    ok = (got == values >> 16) | (got == (values >> 16) - 1)
    failures = int(np.count_nonzero(~ok))
    modulus = 2**64 if protocol == "additive" else 2**61 - 1
    p = magnitude / modulus
    lo = stats.binom.ppf(ALPHA, count, p)
    hi = stats.binom.isf(ALPHA, count, p)
    assert lo <= failures <= hi, (failures, lo, hi)


def test_the_rings_exact_truncation_does_not_fail_below_2_62() -> None:
    """`additive` truncates exactly (`mpc.protocols.truncation`): where the dealer pair fails
    with probability 1/16 (|x| = 2^60) and up to |x| < 2^62 it is floor(x / 2^16) or one less,
    every time."""
    count = 20000
    magnitudes = np.array([1 << 60, (1 << 62) - 1, (1 << 61) + 12345], dtype=np.int64)
    values = np.resize(magnitudes, count) * np.where(np.arange(count) % 2 == 0, 1, -1)
    got = local_parties("additive", 3).run(_truncate_program(values, 16))["alice"].output
    diff = got - (values >> 16)
    assert set(np.unique(diff)) <= {0, -1}
    assert np.count_nonzero(diff == -1) > 1000 and np.count_nonzero(diff == 0) > 1000


def _chi2_uniform(values: np.ndarray, modulus: int, buckets: int = 64) -> float:
    idx = (values.astype(np.float64) / float(modulus) * buckets).astype(np.int64)
    counts = np.bincount(np.clip(idx, 0, buckets - 1), minlength=buckets)
    return float(stats.chisquare(counts).pvalue)


@pytest.mark.parametrize(("protocol", "n"), CASES_3)
def test_single_party_view_is_uniform_and_independent_of_the_secret(protocol: str, n: int) -> None:
    """Bob's view (his input shares and every message he receives while the parties compute
    x * y) is uniform whether the secrets are all zeros or all large values. The large x is
    multiplied by a small y (|y| <= 2^-5) so that the product is admitted (`mpc.bounds`)."""
    size = 20000
    views: dict[str, list[np.ndarray]] = {}
    for label, value in (("zeros", 0.0), ("large", 12345.678)):
        parties = local_parties(protocol, n)
        bob = parties.runners[1]
        seen: list[np.ndarray] = []
        original_recv = bob.transport.recv

        def recording_recv(
            frm: int,
            tag: Any,
            timeout: float,
            label: str = "",
            _orig: Any = original_recv,
            _seen: list[np.ndarray] = seen,
        ) -> np.ndarray:
            array = _orig(frm, tag, timeout, label)
            _seen.append(np.array(array))
            return array

        bob.transport.recv = recording_recv  # type: ignore[method-assign]
        shares: list[np.ndarray] = []

        def program(
            ctx: PartyContext, v: float = value, _shares: list[np.ndarray] = shares
        ) -> None:
            x_data, y_data = np.full(size, v), np.full(size, v * 2.0**-19)
            x = ctx.input("alice", x_data if ctx.me == "alice" else None, bound=12346)
            y = ctx.input("carol", y_data if ctx.me == "carol" else None, bound=2.0**-5)
            if ctx.me == "bob":
                _shares.extend([x.share, y.share])
            x * y

        parties.run(program)
        views[label] = shares + seen
    modulus = parties.runners[1]._protocol_cls.algebra.modulus
    assert len(views["zeros"]) == len(views["large"]) >= 4
    for zeros_part, large_part in zip(views["zeros"], views["large"], strict=True):
        for part in (zeros_part, large_part):
            assert _chi2_uniform(part.reshape(-1), modulus) > ALPHA
        # Two-sample test: the view does not depend on the secret.
        ks = stats.ks_2samp(
            zeros_part.reshape(-1).astype(np.float64), large_part.reshape(-1).astype(np.float64)
        )
        assert ks.pvalue > ALPHA
