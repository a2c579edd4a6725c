"""Bad configurations and bad inputs fail early, clearly, and at every party promptly.

Everything runs in-process: `Session(..., runtime="local", dealer="local-insecure",
allow_insecure=True)`. A failure inside a program surfaces at the caller as `PartyFailedError`
naming the party and the operation, with the original exception as `__cause__` and its type and
message in `.cause`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import local_parties

from mpc.dealers.seeded import InsecureLocalDealer
from mpc.encoding import FixedPoint, FixedPointRangeError
from mpc.errors import (
    ConfigurationError,
    InsecureDealerError,
    PartyFailedError,
    ShapeMismatchError,
    UnsupportedOperationError,
)
from mpc.program import PartyContext
from mpc.protocols.additive import AdditiveScheme
from mpc.session import Session

PARTIES = ["alice", "bob", "carol"]
LOCAL: dict[str, Any] = {"runtime": "local", "dealer": "local-insecure", "allow_insecure": True}


def session(parties: list[str] | None = None, **kw: Any) -> Session:
    return Session(parties or PARTIES, **{**LOCAL, **kw})


def run_failing(program: Callable[..., Any], **kw: Any) -> PartyFailedError:
    with session(**kw) as s, pytest.raises(PartyFailedError) as info:
        s.run(program)
    return info.value


# ---- configuration ------------------------------------------------------------------------
def test_insecure_dealer_needs_allow_insecure() -> None:
    with pytest.raises(InsecureDealerError, match="allow_insecure=True"):
        Session(PARTIES, runtime="local", dealer="local-insecure")
    dealer = InsecureLocalDealer(AdditiveScheme(3, 2))
    with pytest.raises(InsecureDealerError, match="allow_insecure=True"):
        Session(PARTIES, runtime="local", dealer=dealer)


def test_trusted_dealer_with_local_runtime_is_refused() -> None:
    with pytest.raises(ConfigurationError) as info:
        Session(PARTIES, runtime="local", dealer="trusted", allow_insecure=True)
    assert not isinstance(info.value, InsecureDealerError)
    assert "runtime='ray'" in str(info.value) and "local-insecure" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        pytest.param(
            {"protocol": "no-such-protocol"}, ["no-such-protocol", "additive"], id="protocol"
        ),
        pytest.param({"transport": "carrier-pigeon"}, ["carrier-pigeon", "memory"], id="transport"),
        pytest.param({"transport": "tcp"}, ["'tcp'", "memory"], id="transport-of-other-runtime"),
        pytest.param({"runtime": "quantum"}, ["quantum", "local"], id="runtime"),
        pytest.param({"dealer": "santa"}, ["santa", "trusted"], id="dealer"),
    ],
)
def test_unknown_names_are_refused(kwargs: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ConfigurationError) as info:
        session(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_duplicate_party_names() -> None:
    with pytest.raises(ConfigurationError, match="unique"):
        session(["alice", "bob", "alice"])


@pytest.mark.parametrize("name", ["", "bob smith", "eve;rm", 7])
def test_bad_party_names(name: Any) -> None:
    with pytest.raises(ConfigurationError, match="party names"):
        session(["alice", name])


def test_private_data_for_unknown_party() -> None:
    with pytest.raises(ConfigurationError) as info:
        session(private={"alice": {"x": 1.0}, "mallory": {"x": 2.0}})
    assert "mallory" in str(info.value) and "alice" in str(info.value)


def test_additive_without_dealer_refused_at_construction() -> None:
    with pytest.raises(ConfigurationError) as info:
        Session(PARTIES, runtime="local", dealer="none", protocol="additive")
    assert "triples" in str(info.value) and "dealer=" in str(info.value)


# ---- inputs ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(np.array([1.0, 2.0**24]), id="too-large"),
        pytest.param(np.array([-3e9]), id="too-negative"),
        pytest.param(np.array([1.0, np.nan]), id="nan"),
        pytest.param(np.array([np.inf, 0.0]), id="inf"),
        pytest.param(np.array([-np.inf]), id="-inf"),
    ],
)
def test_fixed_point_out_of_range(value: np.ndarray) -> None:
    def program(ctx: PartyContext) -> Any:
        x = ctx.input("bob", value if ctx.me == "bob" else None)
        return ctx.reveal(x)

    start = time.monotonic()
    err = run_failing(program, timeout=30)
    assert time.monotonic() - start < 10, "the other parties waited for their receive timeout"
    assert err.party == "bob"
    assert "FixedPointRangeError" in err.cause
    assert isinstance(err.__cause__, FixedPointRangeError)


def test_fixed_point_range_follows_the_session_format() -> None:
    def program(ctx: PartyContext) -> Any:
        # declared bound: the most the session's format holds, so the encoding is what refuses
        bound = ctx.fixed_point.max_abs
        return ctx.reveal(ctx.input("alice", 300.0 if ctx.me == "alice" else None, bound=bound))

    with session(fixed_point=FixedPoint(frac_bits=16, int_bits=8)) as s:  # |v| < 256
        with pytest.raises(PartyFailedError) as info:
            s.run(program)
        assert "2**8" in info.value.cause
    with session(fixed_point=FixedPoint(frac_bits=16, int_bits=9)) as s:  # |v| < 512
        assert s.run(program)["alice"] == 300.0


@pytest.mark.parametrize("op", ["mul", "matmul"])
def test_shape_mismatch(op: str) -> None:
    def program(ctx: PartyContext) -> Any:
        x = ctx.input("alice", np.ones((2, 3)) if ctx.me == "alice" else None)
        y = ctx.input("bob", np.ones((2, 4)) if ctx.me == "bob" else None)
        return ctx.reveal(x * y if op == "mul" else x @ y)

    err = run_failing(program)
    assert isinstance(err.__cause__, ShapeMismatchError)
    assert "ShapeMismatchError" in err.cause
    assert "(2, 3)" in err.cause and "(2, 4)" in err.cause


def test_reveal_to_unknown_party() -> None:
    def program(ctx: PartyContext) -> Any:
        x = ctx.input("alice", np.ones(3) if ctx.me == "alice" else None)
        return ctx.reveal(x, to="mallory")

    err = run_failing(program)
    assert isinstance(err.__cause__, ConfigurationError)
    assert "mallory" in err.cause


def test_input_from_unknown_party() -> None:
    def program(ctx: PartyContext) -> Any:
        return ctx.reveal(ctx.input("mallory", 1.0))

    err = run_failing(program)
    assert isinstance(err.__cause__, ConfigurationError)
    assert "mallory" in err.cause


# ---- failures during a run ------------------------------------------------------------------
def test_failure_at_one_party_aborts_all_promptly() -> None:
    def program(ctx: PartyContext) -> Any:
        x = ctx.input("alice", np.arange(4.0) if ctx.me == "alice" else None, bound=3)
        if ctx.me == "bob":
            raise RuntimeError("boom")
        return ctx.reveal(x * x)  # alice and carol wait for bob here

    with session(timeout=30) as s:
        start = time.monotonic()
        with pytest.raises(PartyFailedError) as info:
            s.run(program)
        elapsed = time.monotonic() - start
        err = info.value
        assert elapsed < 10, f"the run took {elapsed:.1f} s: the abort did not reach the peers"
        assert err.party == "bob"
        assert not err.secondary
        assert "input" in err.operation  # the last operation bob started
        assert "RuntimeError" in err.cause and "boom" in err.cause
        assert "'bob'" in str(err) and err.operation in str(err)
        assert isinstance(err.__cause__, RuntimeError)

        # The session is usable again after a failed run.
        def fine(ctx: PartyContext) -> Any:
            return ctx.reveal(ctx.input("carol", 2.5 if ctx.me == "carol" else None))

        assert s.run(fine)["alice"] == 2.5


def test_returning_a_secret_is_refused() -> None:
    def program(ctx: PartyContext) -> Any:
        x = ctx.input("alice", np.ones(2) if ctx.me == "alice" else None)
        return {"leak": [x]}

    err = run_failing(program)
    assert isinstance(err.__cause__, ConfigurationError)
    assert "Secret" in err.cause and "reveal" in err.cause


def test_program_must_be_callable() -> None:
    with session() as s, pytest.raises(TypeError, match="program"):
        s.run("not a program")  # type: ignore[arg-type]


def test_shamir_without_dealer_cannot_truncate() -> None:
    """Degree reduction needs no dealer, but a fixed-point product needs truncation pairs."""

    def integers(ctx: PartyContext) -> Any:
        a = ctx.input(
            "alice", np.array([3, -4]) if ctx.me == "alice" else None, kind="int", bound=4
        )
        return ctx.reveal(a * a)

    def fixed(ctx: PartyContext) -> Any:
        x = ctx.input("alice", np.array([1.5, -2.0]) if ctx.me == "alice" else None)
        return ctx.reveal(x * x)

    parties = local_parties("shamir", 3, dealer=False)
    np.testing.assert_array_equal(parties.run(integers)["bob"].output, [9, 16])
    with pytest.raises(PartyFailedError) as info:
        parties.run(fixed)
    assert isinstance(info.value.__cause__, UnsupportedOperationError)
    assert "truncation pairs" in info.value.cause
    assert info.value.operation.startswith("mul")


def test_shamir_session_without_dealer_reports_truncation_pairs() -> None:
    """Refused at construction or at the fixed-point product: either way about truncation pairs."""

    def fixed(ctx: PartyContext) -> Any:
        x = ctx.input("alice", np.array([1.5, -2.0]) if ctx.me == "alice" else None)
        return ctx.reveal(x * x)

    try:
        s = Session(PARTIES, runtime="local", dealer="none", protocol="shamir")
    except ConfigurationError as exc:
        assert "truncation pairs" in str(exc) and "dealer=" in str(exc)
        return
    with s, pytest.raises(PartyFailedError) as info:
        s.run(fixed)
    assert "truncation pairs" in info.value.cause


# ---- cost counters --------------------------------------------------------------------------
def test_fixed_point_mul_counters() -> None:
    """additive, n=3: a fixed-point product is a Beaver opening; its truncation is deferred.

    Beaver: e = x - a and d = y - b are opened together (one round, one message of 2k elements
    to every peer). The truncation waits for the product's next use: here an addition, which
    truncates first (the ring's exact truncation, `mpc.protocols.truncation`: c = z + 2^62 + r
    is opened to every party, each needing c's top bit; one round, k elements to every peer),
    counted as "truncate". The in-memory transport counts raw array bytes.
    """
    k = 7
    n = len(PARTIES)
    element = np.dtype(np.uint64).itemsize
    peers = n - 1
    beaver_arrays, truncation_arrays = 2, 1
    beaver_bytes = peers * beaver_arrays * element * k
    truncation_bytes = dict.fromkeys(PARTIES, peers * truncation_arrays * element * k)

    def program(ctx: PartyContext) -> Any:
        x = ctx.input("alice", np.linspace(-1, 1, k) if ctx.me == "alice" else None, bound=1)
        y = ctx.input("bob", np.linspace(2, 3, k) if ctx.me == "bob" else None, bound=3)
        return ctx.reveal(x * y + 0.5)

    with session(protocol="additive") as s:
        result = s.run(program)
    np.testing.assert_allclose(
        result["carol"], np.linspace(-1, 1, k) * np.linspace(2, 3, k) + 0.5, atol=2.0**-14
    )
    for party in PARTIES:
        mul = result.stats[party].by_kind["mul"]
        assert (mul.calls, mul.rounds, mul.bytes_sent) == (1, 1, beaver_bytes)
        truncate = result.stats[party].by_kind["truncate"]
        assert (truncate.calls, truncate.rounds) == (1, 1)
        assert truncate.bytes_sent == truncation_bytes[party]
        assert result.stats[party].by_kind["linear"].rounds == 0
    assert beaver_bytes + truncation_bytes["carol"] == (2 * 2 * 8 * k) + (2 * 8 * k)
