"""Secure sigmoid approximations against scipy.special.expit (in-process, 3 parties).

These tests measure the max errors documented in `mpc.ml.sigmoid` on dense grids in secure runs
and assert the documented bounds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import local_parties
from scipy.special import expit

from mpc.errors import PartyFailedError
from mpc.ml import sigmoid as sig
from mpc.program import PartyContext

# (method, half-width of the grid, points): the grids the documented errors were measured on.
GRIDS = [
    ("piecewise", 40.0, 8001),
    ("poly", sig.POLY_INTERVAL, 20001),
    ("accurate", sig.ACCURATE_RANGE, 20001),
    ("accurate-clamped", 200.0, 6001),
]


def _secure_sigmoid(ctx: PartyContext, z: np.ndarray, method: str) -> Any:
    x = ctx.input("alice", z if ctx.me == "alice" else None, bound=float(np.abs(z).max()))
    return ctx.reveal(sig.sigmoid(x, method), to="alice")


@pytest.fixture(scope="module")
def additive3() -> Any:
    return local_parties("additive", 3)


@pytest.mark.parametrize(("method", "half_width", "points"), GRIDS)
def test_documented_max_error(additive3: Any, method: str, half_width: float, points: int) -> None:
    z = np.linspace(-half_width, half_width, points)
    got = additive3.run(_secure_sigmoid, z, method)["alice"].output
    bound, valid = sig.max_error_bound(method)
    assert valid >= half_width or valid == float("inf")
    error = np.abs(got - expit(z))
    assert error.max() <= bound, (method, float(error.max()), float(z[np.argmax(error)]))
    # The float64 model of the approximation is what the secure one computes, up to fixed point.
    model = sig.sigmoid_plain(z, method)
    assert np.abs(model - expit(z)).max() <= bound
    fixed_point_tolerance = 7e-4 if method.startswith("accurate") else 1e-4
    assert np.abs(got - model).max() <= fixed_point_tolerance


def test_documented_constants_are_optimal() -> None:
    """The slope and the polynomial are what the docstrings say they are."""
    z = np.linspace(-40, 40, 400001)
    best = np.abs(sig.sigmoid_plain(z, "piecewise") - expit(z)).max()
    assert best == pytest.approx(sig.PIECEWISE_MAX_ERROR, abs=1e-4)
    for slope in (sig.PIECEWISE_SLOPE * 0.99, sig.PIECEWISE_SLOPE * 1.01, 0.25, 0.125):
        other = np.abs(np.clip(0.5 + slope * z, 0, 1) - expit(z)).max()
        assert other > best
    grid = np.linspace(-sig.POLY_INTERVAL, sig.POLY_INTERVAL, 200001)
    t = grid / sig.POLY_INTERVAL
    basis = np.stack([t, t**3, t**5], axis=1)
    fit, *_ = np.linalg.lstsq(basis, expit(grid) - 0.5, rcond=None)
    assert np.allclose(fit, sig.POLY_COEFFICIENTS, atol=1e-5)


def test_accurate_is_wrong_beyond_its_range_and_clamped_is_not(additive3: Any) -> None:
    z = np.array([-1e4, -500.0, -130.0, 130.0, 500.0, 1e4])
    clamped = additive3.run(_secure_sigmoid, z, "accurate-clamped")["alice"].output
    assert np.abs(clamped - expit(z)).max() <= sig.ACCURATE_MAX_ERROR
    # Documented: invalid beyond |z| = 112; beyond 128 its squarings would leave the range, so
    # with inputs declared up to 1e4 it is refused before any round instead of wrong.
    with pytest.raises(PartyFailedError, match="FixedPointOverflowError: sigmoid #"):
        additive3.run(_secure_sigmoid, z, "accurate")


def test_shape_and_integer_input(additive3: Any) -> None:
    def program(ctx: PartyContext) -> Any:
        x = ctx.input(
            "bob", np.array([[-3, 0], [2, 7]]) if ctx.me == "bob" else None, kind="int", bound=7
        )
        return {m: ctx.reveal(sig.sigmoid(x, m)) for m in ("piecewise", "poly", "accurate")}

    out = additive3.run(program)["carol"].output
    expected = expit(np.array([[-3.0, 0.0], [2.0, 7.0]]))
    for method, value in out.items():
        assert value.shape == (2, 2)
        assert np.abs(value - expected).max() <= sig.max_error_bound(method)[0]


def test_poly_runs_with_shamir_and_comparisons_do_not() -> None:
    parties = local_parties("shamir", 3)
    z = np.linspace(-10, 10, 101)
    got = parties.run(_secure_sigmoid, z, "poly")["alice"].output
    assert np.abs(got - expit(z)).max() <= sig.POLY_MAX_ERROR
    with pytest.raises(PartyFailedError, match="UnsupportedOperationError"):
        parties.run(_secure_sigmoid, z, "piecewise")


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown sigmoid 'tanh'"):
        sig.check_name("tanh")
    with pytest.raises(ValueError, match="unknown sigmoid"):
        sig.sigmoid_plain(np.zeros(2), "tanh")


def test_debiased_products_and_precise_constants(additive3: Any) -> None:
    """`mul` is unbiased (mean error ~0 instead of -1 ulp); `scale` keeps small constants."""
    values = np.linspace(-2, 2, 20001)
    sums = np.linspace(-2000, 2000, 2001)  # e.g. a gradient sum, to be divided by 455 rows
    ulp = 2.0**-16

    def program(ctx: PartyContext) -> Any:
        x = ctx.input("alice", values if ctx.me == "alice" else None, bound=2)
        s = ctx.input("alice", sums if ctx.me == "alice" else None, bound=2000)
        return {
            "square": ctx.reveal(sig.mul(x, x), to="alice"),
            "half": ctx.reveal(sig.mul(x, x, shift=1), to="alice"),
            "scaled": ctx.reveal(sig.scale(s, 1.0 / 455.0), to="alice"),
            "naive": ctx.reveal(s * (1.0 / 455.0), to="alice"),
        }

    out = additive3.run(program)["alice"].output
    x = np.round(values / ulp) * ulp
    square_error = (out["square"] - x * x) / ulp
    assert abs(square_error.mean()) < 0.05 and np.abs(square_error).max() <= 1.5
    assert np.abs(out["half"] - x * x / 2).max() <= 1.5 * ulp
    exact = sums / 455.0
    assert np.abs(out["scaled"] - exact).max() <= 1.5 * ulp
    # A plain product by a public real below 1 now also gets extra fractional bits (it used to
    # encode 1/455 with 16 bits, a 2e-4 relative error: ~15 ulp here); it is still one
    # ordinary truncation, so up to 1 ulp further towards -inf than `scale`.
    assert np.abs(out["naive"] - exact).max() <= 2.5 * ulp
