"""Exact comparison (sign bit) for the additive protocol, and its refusal elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import local_parties

from mpc.errors import PartyFailedError, UnsupportedOperationError
from mpc.program import PartyContext

# Edge values of the signed 64-bit range plus values around 0 and fixed-point magnitudes.
EDGES = np.array(
    [0, 1, -1, 2, -2, 2**62, -(2**62), 2**63 - 1, -(2**63), 12345, -12345, 2**40, -(2**40)],
    dtype=np.int64,
)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_ltz_is_exact_on_integers(n: int) -> None:
    # ctx.input refuses integers beyond 2^62 (headroom for products); the sign bit is exact on
    # the whole signed range, so the extreme values go through the protocol directly.
    parties = local_parties("additive", n)

    def raw(ctx: PartyContext) -> np.ndarray | None:
        alg = ctx.protocol.algebra
        secret = alg.from_signed(EDGES) if ctx.me == "alice" else None
        with ctx.channel.operation("input"):
            share = ctx.protocol.input(0, secret)
        with ctx.channel.operation("compare"):
            bit = ctx.protocol.less_than_zero(share)
        return ctx.protocol.open(bit)

    got = parties.run(raw)["bob"].output
    np.testing.assert_array_equal(got, (EDGES < 0).astype(np.uint64))


def test_comparisons_on_fixed_point_values() -> None:
    x = np.linspace(-3, 3, 61)
    y = np.full(61, 0.5)

    def program(ctx: PartyContext) -> dict[str, np.ndarray | None]:
        sx = ctx.input("alice", x if ctx.me == "alice" else None)
        sy = ctx.input("bob", y if ctx.me == "bob" else None)
        return {"lt": ctx.reveal(sx < sy), "gt": ctx.reveal(sx > 0.25), "ltz": ctx.reveal(sx.ltz())}

    out = local_parties("additive", 3).run(program)["carol"].output
    np.testing.assert_array_equal(out["lt"], (x < y).astype(np.int64))
    np.testing.assert_array_equal(out["gt"], (x > 0.25).astype(np.int64))
    np.testing.assert_array_equal(out["ltz"], (x < 0).astype(np.int64))


def test_comparison_costs_eight_rounds() -> None:
    def program(ctx: PartyContext) -> np.ndarray | None:
        x = ctx.input("alice", np.arange(-5, 5) if ctx.me == "alice" else None, kind="int")
        return ctx.reveal(x.ltz())

    outcome = local_parties("additive", 3).run(program)["alice"]
    np.testing.assert_array_equal(outcome.output, (np.arange(-5, 5) < 0).astype(np.int64))
    assert outcome.stats.by_kind["compare"].rounds == 8


@pytest.mark.parametrize("protocol", ["shamir", "shamir-beaver"])
def test_shamir_comparison_is_refused_clearly(protocol: str) -> None:
    def program(ctx: PartyContext) -> np.ndarray | None:
        x = ctx.input("alice", np.arange(3) if ctx.me == "alice" else None, kind="int")
        return ctx.reveal(x.ltz())

    with pytest.raises(PartyFailedError) as info:
        local_parties(protocol, 3).run(program)
    assert isinstance(info.value.__cause__, UnsupportedOperationError)
    assert "additive" in str(info.value)
