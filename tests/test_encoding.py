"""Tests for mpc.encoding.FixedPoint."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc.algebra import FIELD61, RING64
from mpc.encoding import FixedPoint, FixedPointRangeError

FORMATS = [FixedPoint(), FixedPoint(0, 30), FixedPoint(8, 8), FixedPoint(32, 20), FixedPoint(20, 1)]


def values_for(fp: FixedPoint) -> st.SearchStrategy[float]:
    bound = fp.max_abs
    return st.floats(
        min_value=-bound, max_value=bound, exclude_min=True, exclude_max=True, allow_nan=False
    )


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(FORMATS).flatmap(
        lambda fp: st.tuples(st.just(fp), st.lists(values_for(fp), min_size=1, max_size=20))
    )
)
def test_round_trip_error_bound(case: tuple[FixedPoint, list[float]]) -> None:
    fp, vs = case
    enc = fp.encode(vs)
    assert enc.dtype == np.int64 and enc.shape == (len(vs),)
    dec = fp.decode(enc)
    assert dec.dtype == np.float64
    err = np.abs(dec - np.array(vs))
    assert float(err.max()) <= 2.0 ** -(fp.frac_bits + 1)
    # encodings stay within the documented integer range
    assert int(np.abs(enc).max()) <= 1 << (fp.int_bits + fp.frac_bits)


@settings(max_examples=100, deadline=None)
@given(st.integers(-(2**23) + 1, 2**23 - 1))
def test_integers_exact(v: int) -> None:
    fp = FixedPoint()
    assert int(fp.encode(v)) == v * fp.scale
    assert float(fp.decode(fp.encode(v))) == v


def test_rounding_to_nearest() -> None:
    fp = FixedPoint(frac_bits=2, int_bits=10)
    # 0.3 * 4 = 1.2 -> 1; 0.4 * 4 = 1.6 -> 2; -0.4 * 4 = -1.6 -> -2; half to even
    assert fp.encode([0.3, 0.4, -0.4, 0.125, 0.375]).tolist() == [1, 2, -2, 0, 2]
    assert int(FixedPoint().encode(0.3)) == round(0.3 * 65536)


def test_shapes_and_scalars() -> None:
    fp = FixedPoint()
    s = fp.encode(1.5)
    assert isinstance(s, np.ndarray) and s.shape == () and int(s) == 3 << 15
    m = fp.encode(np.ones((2, 3), dtype=np.float32))
    assert m.shape == (2, 3) and m.dtype == np.int64
    assert fp.encode([]).shape == (0,)
    assert fp.encode(np.array([1, 2], dtype=np.int32)).tolist() == [65536, 131072]
    assert fp.encode([True, False]).tolist() == [65536, 0]


@pytest.mark.parametrize("fp", FORMATS)
def test_range_bounds(fp: FixedPoint) -> None:
    below = math.nextafter(fp.max_abs, 0.0)
    fp.encode([below, -below])  # largest admissible magnitudes
    for bad in (fp.max_abs, -fp.max_abs, 2 * fp.max_abs, 1e300):
        with pytest.raises(FixedPointRangeError, match=rf"2\*\*{fp.int_bits}") as info:
            fp.encode([0.0, bad])
        msg = str(info.value)
        assert "int_bits" in msg and "rescale" in msg


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_rejected(bad: float) -> None:
    with pytest.raises(FixedPointRangeError, match="NaN"):
        FixedPoint().encode([1.0, bad])
    with pytest.raises(ValueError):  # FixedPointRangeError is a ValueError
        FixedPoint().encode(bad)


def test_huge_python_int_rejected() -> None:
    with pytest.raises(FixedPointRangeError):
        FixedPoint().encode(10**400)
    with pytest.raises(FixedPointRangeError):
        FixedPoint().encode([1, 2**24])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"frac_bits": -1}, "frac_bits"),
        ({"int_bits": 0}, "int_bits"),
        ({"frac_bits": 30, "int_bits": 23}, "52"),
    ],
)
def test_format_validation(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FixedPoint(**kwargs)


def test_format_properties() -> None:
    fp = FixedPoint(frac_bits=12, int_bits=40)
    assert fp.scale == 4096 and isinstance(fp.scale, int)
    assert fp.max_abs == 2.0**40
    assert FixedPoint() == FixedPoint(16, 24)
    with pytest.raises(AttributeError):
        fp.frac_bits = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        FixedPoint(frac_bits=1.5)  # type: ignore[arg-type]


def test_decode_rejects_floats() -> None:
    with pytest.raises(TypeError):
        FixedPoint().decode(np.array([1.5]))
    assert FixedPoint(frac_bits=1).decode([3, -3]).tolist() == [1.5, -1.5]


@settings(max_examples=50, deadline=None)
@given(st.lists(values_for(FixedPoint()), min_size=1, max_size=10))
def test_through_both_algebras(vs: list[float]) -> None:
    fp = FixedPoint()
    for alg in (RING64, FIELD61):
        back = fp.decode(alg.to_signed(alg.from_signed(fp.encode(vs))))
        assert float(np.abs(back - np.array(vs)).max()) <= 2.0 ** -(fp.frac_bits + 1)
