"""Public magnitude bounds of shared values (`Secret.bound`, `mpc.bounds`; issue 13, item 1).

A product whose public bound could wrap around the modulus, or whose truncation could fail (or
fail with probability above 2^-failure_bits per element, 20 by default), is refused before it
runs, with a `FixedPointOverflowError` naming the operation. With 16 fractional bits that admits
|x * y| < 2^(62 - 32) = 2^30 with `additive` (the ring's exact truncation takes |x| < 2^62) and
|x * y| <= 2^(61 - 20 - 32) = 512 with the Shamir protocols (field GF(2^61 - 1), probabilistic
truncation); integer products must not wrap. Before the bounds, these products returned wrong
values silently (issue 13: 70000 * 70000 gave about 6.05e8 with `additive`, 2^40 * 2^40 as
integers gave 0, `shamir` 40000 * 40000 was always wrong, 1e6 * 1e6 gave -7.27e8).

Everything runs in-process (`helpers.local_parties`, no Ray). Inputs are multiples of 2^-16, so
their encodings are exact and a product is off by at most one truncation (one ulp, 2^-16).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import local_parties

from mpc.encoding import FixedPoint
from mpc.errors import (
    ConfigurationError,
    FixedPointOverflowError,
    InvalidDataError,
    PartyFailedError,
)
from mpc.parties.local import LocalParties
from mpc.program import InputKind, PartyContext

ULP = 2.0**-16
SHAMIR = ["shamir", "shamir-beaver"]


def _mine(ctx: PartyContext, owner: str, value: Any) -> Any:
    """`value` at its owner, None elsewhere."""
    return value if ctx.me == owner else None


def _failing_run(
    parties: LocalParties, program: Callable[..., Any], private_errors: bool = False
) -> tuple[PartyFailedError, dict[str, BaseException]]:
    """Run a program that fails; return the error the caller gets and each party's own one.

    `private_errors` runs the parties as across organisations (`mpc.federation.run`): a
    party's error text stays with it, its peers are told the type and the operation."""
    seen: dict[str, BaseException] = {}
    for runner in parties.runners:
        runner.private_errors = private_errors
        original = runner.run

        def recording(*args: Any, _run: Any = original, _name: str = runner.name) -> Any:
            try:
                return _run(*args)
            except BaseException as exc:
                seen[_name] = exc
                raise

        runner.run = recording  # type: ignore[method-assign,assignment]
    with pytest.raises(PartyFailedError) as info:
        parties.run(program)
    return info.value, seen


def _assert_refused(error: PartyFailedError, operation: str) -> None:
    assert isinstance(error.__cause__, FixedPointOverflowError), error
    assert error.operation.startswith(operation), error.operation
    assert "FixedPointOverflowError" in error.cause and operation in error.cause
    assert "bound=" in error.cause  # says what to change


# ---- (1) the reproducers of issue 13 are refused --------------------------------------------
@pytest.mark.parametrize(
    ("protocol", "value", "kind"),
    [
        pytest.param("additive", 70000.0, "fixed", id="additive-70000^2"),
        pytest.param("additive", 1e6, "fixed", id="additive-1e6^2"),
        pytest.param("additive", float(2**40), "int", id="additive-int-2^40^2"),
        pytest.param("shamir", 40000.0, "fixed", id="shamir-40000^2"),
        pytest.param("shamir-beaver", 40000.0, "fixed", id="shamir-beaver-40000^2"),
    ],
)
def test_a_product_beyond_the_admitted_range_is_refused(
    protocol: str, value: float, kind: InputKind
) -> None:
    data: Any = np.array([value, -value])
    if kind == "int":
        data = np.array([2**40, -(2**40)], dtype=np.int64)

    def program(ctx: PartyContext) -> Any:
        x = ctx.input("alice", _mine(ctx, "alice", data), kind=kind, bound=value)
        y = ctx.input("bob", _mine(ctx, "bob", data), kind=kind, bound=value)
        return ctx.reveal(x * y)

    error, seen = _failing_run(local_parties(protocol, 3), program)
    _assert_refused(error, "mul")
    # every party refuses by itself, from public bounds, at the same point (not a peer's echo)
    assert set(seen) == {"alice", "bob", "carol"}
    for exc in seen.values():
        assert isinstance(exc, PartyFailedError) and not exc.secondary
        assert isinstance(exc.__cause__, FixedPointOverflowError)


# ---- (2) admissible products are right ------------------------------------------------------
@pytest.mark.parametrize(
    ("protocol", "x", "y"),
    [
        pytest.param(
            "additive",
            [60.0, -60.0, 59.5, 0.25, -13.125, 64.0],
            [60.0, 60.0, -59.75, 3.5, 64.0, -64.0],
            id="additive-60x60",
        ),
        pytest.param(
            "shamir",
            [15.0, -16.0, 3.25, 0.5, 16.0],
            [15.5, 16.0, -12.0, -16.0, 16.0],
            id="shamir-16x16",
        ),
    ],
)
def test_products_within_the_default_bounds_match_plaintext(
    protocol: str, x: list[float], y: list[float]
) -> None:
    """Inputs without a declared bound (`PartyContext.input`'s defaults); the product's bound
    is b1 * b2 plus the truncation's error (below 2 ulp), and covers the value."""
    xs, ys = np.array(x), np.array(y)

    def program(ctx: PartyContext) -> dict[str, Any]:
        a = ctx.input("alice", _mine(ctx, "alice", xs))
        b = ctx.input("bob", _mine(ctx, "bob", ys))
        z = a * b
        return {"z": ctx.reveal(z), "bounds": (a.bound, b.bound, z.bound)}

    out = local_parties(protocol, 3).run(program)["carol"].output
    np.testing.assert_allclose(out["z"], xs * ys, rtol=0, atol=2.0**-15)
    a_bound, b_bound, z_bound = out["bounds"]
    assert np.abs(xs).max() <= a_bound and np.abs(ys).max() <= b_bound
    assert z_bound == a_bound * b_bound + 2 * ULP
    assert np.all(np.abs(xs * ys) <= z_bound)


def test_a_large_value_times_a_small_one_with_declared_bounds() -> None:
    """3000 * 1.3 with declared bounds (3900: admitted with every limit the library has had)."""
    big, small = np.array([3000.0, -2999.5, 1024.0]), np.array([1.3, 1.25, -1.3])

    def program(ctx: PartyContext) -> dict[str, Any]:
        a = ctx.input("alice", _mine(ctx, "alice", big), bound=3000)
        b = ctx.input("bob", _mine(ctx, "bob", small), bound=1.3)
        z = a * b
        return {"z": ctx.reveal(z), "bound": z.bound}

    out = local_parties("additive", 3).run(program)["alice"].output
    # 1.3 is encoded as round(1.3 * 2^16) / 2^16: the product of the encodings, truncated once
    encoded = np.rint(small * 2**16) / 2**16
    np.testing.assert_allclose(out["z"], big * encoded, rtol=0, atol=2.0**-15)
    np.testing.assert_allclose(out["z"], big * small, rtol=0, atol=3000 * 2.0**-17 + ULP)
    # 3000 * 1.3, each input rounded (half an ulp), and the truncation's 2 ulp
    assert 3900 - 1e-9 <= out["bound"] <= (3000 + ULP / 2) * (1.3 + ULP / 2) + 2 * ULP + 1e-9


# ---- (3) an owner refuses its own value beyond the declared bound ----------------------------
def test_an_input_beyond_its_declared_bound_is_refused_at_its_owner() -> None:
    secret = 123.4567

    def program(ctx: PartyContext) -> Any:
        x = ctx.input("alice", _mine(ctx, "alice", np.array([1.0, secret, -2.0])), bound=100)
        return ctx.reveal(x)

    error, seen = _failing_run(local_parties("additive", 3), program, private_errors=True)
    assert error.party == "alice" and not error.secondary
    assert error.operation.startswith("input")
    assert isinstance(error.__cause__, InvalidDataError)
    assert "123.457" in str(seen["alice"])  # the owner's own error says which value
    for peer in ("bob", "carol"):
        told = seen[peer]
        assert isinstance(told, PartyFailedError) and told.secondary
        text = f"{told} {told.__cause__!r}"
        assert "InvalidDataError" in text and "alice" in text
        assert "123.4" not in text, text  # what the peers are told does not quote the value


def test_a_bound_must_be_a_positive_number_within_the_encoding() -> None:
    for bad in (0, -1.0, float(2**24) * 2, "64", True):

        def program(ctx: PartyContext, bound: Any = bad) -> Any:
            return ctx.reveal(ctx.input("alice", _mine(ctx, "alice", 1.0), bound=bound))

        error, _ = _failing_run(local_parties("additive", 2), program)
        assert isinstance(error.__cause__, ConfigurationError), (bad, error)
        assert "bound" in error.cause, (bad, error)


# ---- (4) Secret.clip ----------------------------------------------------------------------
def test_clip_clamps_exactly_and_admits_a_later_product() -> None:
    xs = np.array([-300.0, -30.0, -5.5, 0.0, 2.5, 29.984375, 30.0, 70.0, 1.5e7])
    ys = np.array([100.0, -100.0, 3.0, 1.5, -2.25, 64.0, 99.5, -64.0, 0.5])

    def unclipped(ctx: PartyContext) -> Any:
        x = ctx.input("alice", _mine(ctx, "alice", xs), bound=1.6e7)
        y = ctx.input("bob", _mine(ctx, "bob", ys), bound=100)
        return ctx.reveal(x * y)  # 1.6e9 > 2^30: refused

    error, _ = _failing_run(local_parties("additive", 3), unclipped)
    _assert_refused(error, "mul")

    def clipped(ctx: PartyContext) -> dict[str, Any]:
        x = ctx.input("alice", _mine(ctx, "alice", xs), bound=1.6e7)
        y = ctx.input("bob", _mine(ctx, "bob", ys), bound=100)
        c = x.clip(30)
        z = c * y  # (30 + ulp) * 100: admitted
        return {"c": ctx.reveal(c), "z": ctx.reveal(z), "bound": c.bound}

    out = local_parties("additive", 3).run(clipped)["bob"].output
    np.testing.assert_array_equal(out["c"], np.clip(xs, -30, 30))  # exact
    np.testing.assert_allclose(out["z"], np.clip(xs, -30, 30) * ys, rtol=0, atol=2.0**-15)
    assert 30 <= out["bound"] <= 30 + ULP


# ---- (5) the deferred product path refuses before any round ------------------------------------
def test_a_chained_product_is_refused_before_any_round() -> None:
    """additive: x * y is pending (its truncation waits for its next use); the next product
    (x * y) * z, with bound 1000 * 1000 * 2000 >= 2^30, is refused before it sends anything,
    and leaves x * y pending and intact. The parties catch the refusal (every party refuses at
    the same point, from public bounds) and go on."""
    xs, ys, zs = np.array([1000.0, -1.5]), np.array([999.5, 2.0]), np.array([2000.0, 0.75])

    def traffic(ctx: PartyContext) -> tuple[int, int]:
        total = ctx.channel.stats.total
        return total.rounds, total.bytes_sent

    def program(ctx: PartyContext) -> dict[str, Any]:
        x = ctx.input("alice", _mine(ctx, "alice", xs), bound=1000)
        y = ctx.input("bob", _mine(ctx, "bob", ys), bound=1000)
        z = ctx.input("carol", _mine(ctx, "carol", zs), bound=2000)
        p = x * y
        before = traffic(ctx)
        try:
            p * z
        except FixedPointOverflowError as exc:
            refused = str(exc)
        else:
            refused = ""
        return {
            "refused": refused,
            "quiet": traffic(ctx) == before,
            "pending": p._pending,
            "p": ctx.reveal(p),
        }

    outcomes = local_parties("additive", 3).run(program)
    for outcome in outcomes.values():
        out = outcome.output
        assert out["refused"].startswith("mul") and "bound=" in out["refused"]
        assert out["quiet"]  # no round, no byte: refused before the fused round
        assert out["pending"] == 16
        np.testing.assert_allclose(out["p"], xs * ys, rtol=0, atol=ULP)


@pytest.mark.parametrize(("failure_bits", "fused"), [(20, True), (30, False)])
def test_a_chain_fuses_a_truncation_only_where_its_failure_is_admitted(
    failure_bits: int, fused: bool
) -> None:
    """additive: the truncation a next product absorbs is the dealer pair's probabilistic one.
    p = x * y with |p| <= 64 (encoded 2^38) fails with probability <= 2^-26: admitted with
    failure_bits 20, fused into p * z's round; with 30 (limit 2^34 encoded) p is truncated
    exactly in a round of its own first. The result is right either way."""
    xs, ys, zs = (
        np.array([8.0, -2.5, 0.125]),
        np.array([7.75, 3.0, -8.0]),
        np.array([8.0, 1.5, 2.0]),
    )

    def program(ctx: PartyContext) -> Any:
        x = ctx.input("alice", _mine(ctx, "alice", xs), bound=8)
        y = ctx.input("bob", _mine(ctx, "bob", ys), bound=8)
        z = ctx.input("carol", _mine(ctx, "carol", zs), bound=8)
        return ctx.reveal((x * y) * z)

    fp = FixedPoint(failure_bits=failure_bits)
    outcome = local_parties("additive", 3, fixed_point=fp).run(program)["alice"]
    np.testing.assert_allclose(outcome.output, xs * ys * zs, rtol=0, atol=9 * ULP)
    truncations = outcome.stats.by_kind["truncate"].rounds  # the reveal's, and p's if not fused
    assert truncations == (1 if fused else 2)
    assert outcome.stats.by_kind["mul"].rounds == 2


# ---- (6) matrix products: k * b1 * b2 -------------------------------------------------------
@pytest.mark.parametrize(
    ("protocol", "left", "right", "k_admitted"),
    [
        pytest.param("additive", 1024.0, 1024.0, 1023, id="additive-1023*2^10*2^10<2^30"),
        pytest.param("shamir", 16.0, 15.5, 2, id="shamir-2*16*15.5=496<=512"),
    ],
)
@pytest.mark.parametrize("public", [False, True], ids=["secret", "public"])
def test_matmul_bound_is_k_times_b1_times_b2_at_the_boundary(
    protocol: str, left: float, right: float, k_admitted: int, public: bool
) -> None:
    """k terms admitted, k + 1 refused (additive: 1024 * 2^10 * 2^10 = 2^30 is the limit
    itself, which the exact truncation does not take; Shamir: 3 * 16 * 15.5 > 512)."""
    gen = np.random.default_rng(13)

    def data(k: int) -> tuple[np.ndarray, np.ndarray]:
        a = np.rint(gen.uniform(-left, left, (3, k)) * 256) / 256
        b = np.rint(gen.uniform(-right, right, (k, 2)) * 256) / 256
        a[0, :] = left  # reach the bounds
        b[:, 0] = right
        return a, b

    def program_for(a: np.ndarray, b: np.ndarray) -> Callable[[PartyContext], Any]:
        def program(ctx: PartyContext) -> dict[str, Any]:
            sa = ctx.input("alice", _mine(ctx, "alice", a), bound=left)
            sb = b if public else ctx.input("bob", _mine(ctx, "bob", b), bound=right)
            product = sa @ sb
            return {"z": ctx.reveal(product), "bound": product.bound}

        return program

    a, b = data(k_admitted)
    out = local_parties(protocol, 3).run(program_for(a, b))["alice"].output
    np.testing.assert_allclose(out["z"], a @ b, rtol=0, atol=2.0**-15)
    half = ULP / 2  # each input's encoding rounds by half an ulp
    exact = k_admitted * left * right
    assert exact <= out["bound"] <= k_admitted * (left + half) * (right + half) + 2 * ULP

    a, b = data(k_admitted + 1)
    error, _ = _failing_run(local_parties(protocol, 3), program_for(a, b))
    _assert_refused(error, "matmul_public" if public else "matmul")


# ---- (7) bounds of sums and additions -------------------------------------------------------
def test_bounds_of_sums_and_additions() -> None:
    xs = np.full((4, 20), 997.25)
    xs[1, 3] = -1000.0
    ys = np.linspace(-7, 7, 80).reshape(4, 20)
    ws = np.full(4, 59999.5)

    def program(ctx: PartyContext) -> dict[str, Any]:
        x = ctx.input("alice", _mine(ctx, "alice", xs), bound=1000)
        y = ctx.input("bob", _mine(ctx, "bob", ys), bound=7)
        w = ctx.input("carol", _mine(ctx, "carol", ws), bound=60000)
        rows, columns = x.sum(axis=1), x.sum(axis=0)
        bounds = {
            "x.sum(axis=0)": columns.bound,
            "x.sum(axis=1)": rows.bound,
            "x.sum()": x.sum().bound,
            "x + y": (x + y).bound,
            "x - y": (x - y).bound,
            "x + 2.5": (x + 2.5).bound,
            "ctx.sum": ctx.sum([x, y, x]).bound,
        }
        try:  # 20000 * 60000 > 2^30: the rows' sum is too large to multiply by w
            rows * w
        except FixedPointOverflowError:
            refused = True
        else:
            refused = False
        admitted = columns[:4] * w  # 4000 * 60000 < 2^30
        return {
            "bounds": bounds,
            "refused": refused,
            "rows": ctx.reveal(rows),
            "admitted": ctx.reveal(admitted),
        }

    out = local_parties("additive", 3).run(program)["alice"].output
    bx, by = 1000.0 + ULP / 2, 7.0 + ULP / 2  # each input's encoding rounds by half an ulp
    assert out["bounds"] == {
        "x.sum(axis=0)": 4 * bx,
        "x.sum(axis=1)": 20 * bx,
        "x.sum()": 80 * bx,
        "x + y": bx + by,
        "x - y": bx + by,
        "x + 2.5": bx + 2.5 + ULP / 2,  # the constant is encoded too
        "ctx.sum": bx + by + bx,
    }
    assert out["refused"]
    np.testing.assert_array_equal(out["rows"], xs.sum(axis=1))  # sums are exact
    np.testing.assert_allclose(out["admitted"], xs.sum(axis=0)[:4] * ws, rtol=0, atol=2.0**-15)


# ---- (8) the accepted failure probability ---------------------------------------------------
@pytest.mark.parametrize("protocol", SHAMIR)
def test_more_failure_bits_are_stricter(protocol: str) -> None:
    """Shamir (probabilistic truncation): 16 * 16 = 256 is admitted with 2^-20 (limit
    2^(61 - 20 - 32) = 512) and refused with 2^-30 (limit 2^-1); 0.5 * 0.5 is admitted with
    both."""
    large = (np.array([16.0, -1.5]), np.array([15.5, 1.5]))
    small = (np.array([0.5, -0.25]), np.array([0.5, 0.375]))

    def program_for(xs: np.ndarray, ys: np.ndarray) -> Callable[[PartyContext], Any]:
        bound = float(max(np.abs(xs).max(), np.abs(ys).max()))

        def program(ctx: PartyContext) -> Any:
            x = ctx.input("alice", _mine(ctx, "alice", xs), bound=bound)
            y = ctx.input("bob", _mine(ctx, "bob", ys), bound=bound)
            return ctx.reveal(x * y)

        return program

    strict = FixedPoint(failure_bits=30)
    assert FixedPoint().failure_bits == 20
    got = local_parties(protocol, 3).run(program_for(*large))["bob"].output
    np.testing.assert_allclose(got, large[0] * large[1], rtol=0, atol=2.0**-15)
    error, _ = _failing_run(local_parties(protocol, 3, fixed_point=strict), program_for(*large))
    _assert_refused(error, "mul")
    assert "2^-30" in error.cause
    got = local_parties(protocol, 3, fixed_point=strict).run(program_for(*small))["bob"].output
    np.testing.assert_allclose(got, small[0] * small[1], rtol=0, atol=2.0**-15)


def test_default_bounds_square_to_an_admitted_product() -> None:
    """The documented defaults (`PartyContext.input`): the square of a default-bound input is
    an admitted product, for reals and integers, with every protocol."""
    for protocol in ("additive", *SHAMIR):
        kinds: tuple[InputKind, ...] = ("fixed", "int")
        for kind in kinds:

            def program(ctx: PartyContext, kind: InputKind = kind) -> Any:
                one = np.array([1]) if kind == "int" else np.array([1.0])
                x = ctx.input("alice", _mine(ctx, "alice", one), kind=kind)
                return {"bound": x.bound, "square": ctx.reveal(x * x)}

            out = local_parties(protocol, 3).run(program)["alice"].output
            assert abs(out["square"][0] - 1) <= ULP, (protocol, kind)


# ---- review findings: no unchecked claims -------------------------------------------------------
def test_concat_lifting_a_large_integer_to_fixed_point_is_refused() -> None:
    """An integer of 2^50 lifted to 16 fractional bits would wrap: concat refuses it (it used
    to return 0 for it, and a wrong comparison)."""

    def program(ctx: PartyContext) -> Any:
        big = ctx.input("alice", _mine(ctx, "alice", np.array([2**50])), kind="int", bound=2**50)
        real = ctx.input("bob", _mine(ctx, "bob", np.array([0.5])), bound=1)
        return ctx.reveal(ctx.concat([big, real]))

    error, _ = _failing_run(local_parties("additive", 3), program)
    assert "FixedPointOverflowError" in str(error) and "concat" in str(error)


def test_a_dataset_cannot_claim_a_tighter_feature_bound_than_its_shares() -> None:
    """`fit` trusts a SharedDataset's feature_limit only as far as its shares' bound shows."""
    from dataclasses import replace

    from mpc.ml import LogisticRegression

    config = LogisticRegression(epochs=2, learning_rate=10.0, feature_limit=1.0)

    def program(ctx: PartyContext) -> Any:
        rows = np.array([[16000.0, -16000.0], [15000.0, 12000.0]])
        data = LogisticRegression(feature_limit=16000.0, standardize=False).share_horizontal(
            ctx,
            rows if ctx.me == "alice" else np.zeros((0, 2)),
            np.array([1, 0]) if ctx.me == "alice" else np.zeros(0, dtype=np.int64),
            owners=["alice"],
        )
        return config.fit(ctx, replace(data, feature_limit=1.0)).reveal()

    error, _ = _failing_run(local_parties("additive", 3), program)
    assert "ConfigurationError" in str(error) and "beyond its feature_limit 1" in str(error)
