"""Conformance tests run for every registered protocol and every party count it supports.

A protocol plug-in that fails to load is left out of the parameters (the others are still
collected and run) and named by `test_every_installed_plugin_loads`.

Error bounds (frac bits f = 16, ulp = 2^-16):
- round trip of integers: exact; of reals: |decoded - x| <= 2^-17 (encoding rounds to nearest);
- linear operations on encoded values: exact on the encodings;
- fixed-point product / matrix product: the result is within 1 of floor(X*Y / 2^16), where X, Y
  are the integer encodings (one truncation, error at most 1 ulp; the built-in dealer truncation
  only errs towards -inf, which test_truncation_and_views checks).
Products use data inside the range every protocol admits (|x * y| <= 2^9 with GF(2^61 - 1),
`mpc.bounds`), with declared input bounds; values up to 1000 are only added and scaled.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import NAMES, local_parties, protocol_cases, run

from mpc.encoding import FixedPoint
from mpc.errors import (
    CheatingDetectedError,
    PartyFailedError,
)
from mpc.program import PartyContext, Secret
from mpc.protocols.registry import available_protocols, broken_plugins

CASES = protocol_cases()
FXP = FixedPoint()
ULP = 2.0**-FXP.frac_bits

# Fixed data, not random shares: determinism of test inputs keeps failures reproducible.
X = np.array([1.5, -2.25, 0.0, 1000.125, -0.0078125, 3.3333, -77.5, 12.0])
Y = np.array([-4.0, 0.5, 7.75, 0.001, -1000.0, 2.0, -0.3, 0.0])
# For products: |x| <= 16 and |y| <= 16, so |x * y| <= 256 is admitted by every protocol.
XS = np.array([1.5, -2.25, 0.0, 15.125, -0.0078125, 3.3333, -7.5, 12.0])
YS = np.array([-4.0, 0.5, 7.75, 0.001, -16.0, 2.0, -0.3, 0.0])
A_INT = np.array([[3, -5, 7], [0, 11, -13]], dtype=np.int64)
B_INT = np.array([[2, 4], [-6, 8], [10, -12]], dtype=np.int64)


def enc(v: np.ndarray) -> np.ndarray:
    return FXP.encode(v).astype(object)


def expected_product(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """floor(X*Y/2^f) + 1 and - 1, decoded: the admissible range (1 ulp either way)."""
    pairs = zip(enc(x), enc(y), strict=True)
    exact = np.array([int(a) * int(b) >> FXP.frac_bits for a, b in pairs])
    return (exact + 1) * ULP, (exact - 1) * ULP


@pytest.mark.parametrize(("protocol", "n"), CASES)
def test_round_trip(protocol: str, n: int) -> None:
    def program(ctx: PartyContext) -> dict[str, np.ndarray | None]:
        x = ctx.input("alice", X if ctx.me == "alice" else None, bound=1001)
        k = ctx.input(NAMES[n - 1], A_INT if ctx.rank == n - 1 else None, kind="int")
        return {"x": ctx.reveal(x), "k": ctx.reveal(k, to="alice")}

    out = run(protocol, n, program)
    for name in NAMES[:n]:
        np.testing.assert_allclose(out[name]["x"], X, rtol=0, atol=2.0**-17)
    np.testing.assert_array_equal(out["alice"]["k"], A_INT)
    assert all(out[name]["k"] is None for name in NAMES[1:n])


@pytest.mark.parametrize(("protocol", "n"), CASES)
def test_linearity(protocol: str, n: int) -> None:
    def program(ctx: PartyContext) -> dict[str, np.ndarray | None]:
        x = ctx.input("alice", X if ctx.me == "alice" else None, bound=1001)
        y = ctx.input("bob", Y if ctx.me == "bob" else None, bound=1000)
        k = ctx.input("bob", A_INT if ctx.me == "bob" else None, kind="int")
        return {
            "lin": ctx.reveal(3 * x - y + 2.5 - (-x)),
            "int": ctx.reveal(k * 4 - 7 + k),
            "sum": ctx.reveal((x + y).sum()),
        }

    out = run(protocol, n, program)["alice"]
    expect = (3 * enc(X) - enc(Y) + enc(np.full(8, 2.5)) + enc(X)).astype(np.float64) * ULP
    np.testing.assert_array_equal(out["lin"], expect)
    np.testing.assert_array_equal(out["int"], A_INT * 5 - 7)
    assert out["sum"] == pytest.approx(float((enc(X) + enc(Y)).sum()) * ULP, abs=0)


@pytest.mark.parametrize(("protocol", "n"), CASES)
def test_mul_int_and_fixed(protocol: str, n: int) -> None:
    def program(ctx: PartyContext) -> dict[str, np.ndarray | None]:
        x = ctx.input("alice", XS if ctx.me == "alice" else None, bound=16)
        y = ctx.input(ctx.parties[-1], YS if ctx.rank == n - 1 else None, bound=16)
        a = ctx.input("alice", A_INT[0] if ctx.me == "alice" else None, kind="int", bound=20)
        b = ctx.input("bob", A_INT[1] if ctx.me == "bob" else None, kind="int", bound=20)
        return {"xy": ctx.reveal(x * y), "ab": ctx.reveal(a * b), "xa": ctx.reveal(x[:3] * a)}

    out = run(protocol, n, program)["bob"]
    hi, lo = expected_product(XS, YS)
    assert np.all((out["xy"] <= hi) & (out["xy"] >= lo)), (out["xy"], hi)
    np.testing.assert_array_equal(out["ab"], A_INT[0] * A_INT[1])
    np.testing.assert_array_equal(out["xa"], enc(XS[:3]).astype(np.float64) * A_INT[0] * ULP)


@pytest.mark.parametrize(("protocol", "n"), CASES)
def test_matmul(protocol: str, n: int) -> None:
    xm = XS.reshape(2, 4)
    ym = (YS / 2).reshape(4, 2)

    def program(ctx: PartyContext) -> dict[str, np.ndarray | None]:
        a = ctx.input("alice", A_INT if ctx.me == "alice" else None, kind="int", bound=20)
        b = ctx.input("bob", B_INT if ctx.me == "bob" else None, kind="int", bound=20)
        x = ctx.input("alice", xm if ctx.me == "alice" else None, bound=15.2)
        y = ctx.input("bob", ym if ctx.me == "bob" else None, bound=8)  # 4 * 15.2 * 8 < 512
        return {"ab": ctx.reveal(a @ b), "xy": ctx.reveal(x @ y), "xv": ctx.reveal(x @ y[:, 0])}

    out = run(protocol, n, program)["alice"]
    np.testing.assert_array_equal(out["ab"], A_INT @ B_INT)
    exact = np.array(enc(xm).dot(enc(ym)), dtype=object)
    floor = np.vectorize(lambda v: int(v) >> FXP.frac_bits)(exact).astype(np.float64)
    got = out["xy"] / ULP
    assert np.all(np.abs(got - floor) <= 1), (got, floor)
    got_v = out["xv"] / ULP
    assert np.all(np.abs(got_v - floor[:, 0]) <= 1)


@pytest.mark.parametrize(("protocol", "n"), CASES)
def test_fixed_point_error_against_float64(protocol: str, n: int) -> None:
    """End to end against float64: |secure - x*y| <= |x| 2^-17 + |y| 2^-17 + 2^-34 + 1 ulp."""
    x = np.linspace(-100, 100, 201)
    y = np.linspace(3, -5, 201)

    def program(ctx: PartyContext) -> np.ndarray | None:
        sx = ctx.input("alice", x if ctx.me == "alice" else None, bound=100)
        sy = ctx.input("bob", y if ctx.me == "bob" else None, bound=5)
        return ctx.reveal(sx * sy)

    got = run(protocol, n, program)["alice"]
    bound = (np.abs(x) + np.abs(y)) * 2.0**-17 + 2.0**-34 + ULP
    assert np.all(np.abs(got - x * y) <= bound)


@pytest.mark.parametrize(("protocol", "n"), CASES)
def test_chain_and_broadcast(protocol: str, n: int) -> None:
    def program(ctx: PartyContext) -> np.ndarray | None:
        x = ctx.input("alice", np.array([0.5, -1.25]) if ctx.me == "alice" else None, bound=1.25)
        s = ctx.input("bob", np.array(2.0) if ctx.me == "bob" else None, bound=2)
        z = x
        for _ in range(5):
            z = z * s
        return ctx.reveal(z / 4)

    got = run(protocol, n, program)["carol" if n > 2 else "bob"]
    # Each truncation loses at most 1 ulp and each later doubling doubles earlier errors:
    # 1+2+4+8+16 = 31 ulp after the chain, ceil(31/4) + 1 = 9 ulp after the division by 4.
    np.testing.assert_allclose(got, np.array([0.5, -1.25]) * 32 / 4, rtol=0, atol=9 * ULP)


@pytest.mark.parametrize(
    "protocol", [p for p, c in available_protocols().items() if c.security.detects_wrong_shares]
)
def test_wrong_share_is_detected(protocol: str) -> None:
    """A party that sends a wrong share in an opening is caught by the others."""

    def program(ctx: PartyContext) -> np.ndarray | None:
        x = ctx.input("alice", np.arange(4) if ctx.me == "alice" else None, kind="int")
        if ctx.me == "bob":  # bob cheats: shifts its share before the opening
            x = Secret(ctx, ctx.protocol.algebra.add_public(x.share, 1), 0, bound=x.bound)
        return ctx.reveal(x)

    parties = local_parties(protocol, 3)
    with pytest.raises(PartyFailedError) as info:
        parties.run(program)
    assert isinstance(info.value.__cause__, CheatingDetectedError)


@pytest.mark.parametrize(("protocol", "n"), CASES)
def test_small_public_factors_keep_their_precision(protocol: str, n: int) -> None:
    """x / 1e5 and x * 1e-6 (a mean over many rows): within 3 ulp of the exact value, not
    off by the whole value as when 1e-6 is encoded with 16 fractional bits (it rounds to 0).
    x up to 12345 is beyond what a product with a real of magnitude 1 admits in the field
    (2^9): the factor gets fewer extra bits there, still within 3 ulp."""
    x = np.array([1000.0, -3.5, 12345.0, 0.25])

    def program(ctx: PartyContext) -> dict[str, np.ndarray | None]:
        s = ctx.input("alice", x if ctx.me == "alice" else None, bound=12345)
        k = ctx.input(
            "alice",
            np.array([1000, 7, -5, 0]) if ctx.me == "alice" else None,
            kind="int",
            bound=1000,
        )
        return {
            "div": ctx.reveal(s / 100000),
            "mul": ctx.reveal(s * 1e-6),
            "int": ctx.reveal(k * 0.001),
        }

    out = run(protocol, n, program)["alice"]
    np.testing.assert_allclose(out["div"], x / 100000, rtol=0, atol=3 * ULP)
    np.testing.assert_allclose(out["mul"], x * 1e-6, rtol=0, atol=3 * ULP)
    np.testing.assert_allclose(out["int"], np.array([1000, 7, -5, 0]) * 0.001, rtol=0, atol=3 * ULP)


def test_every_installed_plugin_loads() -> None:
    """Names each broken protocol plug-in (entry point); only this test fails for it."""
    broken = broken_plugins()
    assert not broken, "\n".join(broken.values())
