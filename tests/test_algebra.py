"""Tests for mpc.algebra against Python big-int arithmetic."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mpc.algebra as alg_mod
from mpc.algebra import FIELD61, RING64, Algebra, MersenneField61, Ring64, algebra_by_name
from mpc.rng import Prg

P = (1 << 61) - 1
R = 1 << 64
ALGEBRAS = [RING64, FIELD61]
SEED = bytes(range(16))

EDGE = {
    "ring64": [0, 1, 2, 3, (1 << 32) - 1, 1 << 32, (1 << 63) - 1, 1 << 63, R - 2, R - 1],
    "field61": [0, 1, 2, 3, (1 << 32) - 1, 1 << 32, (1 << 60) - 1, 1 << 60, P - 2, P - 1],
}


def elements(alg: Algebra) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(EDGE[alg.name]), st.integers(0, alg.modulus - 1))


def arr(values: Any) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


def as_ints(a: np.ndarray) -> list[int]:
    return [int(v) for v in np.asarray(a).reshape(-1)]


def ref_matmul(a: np.ndarray, b: np.ndarray, modulus: int) -> np.ndarray:
    """Python-int matmul (object arrays), reduced mod modulus."""
    prod = np.matmul(a.astype(object), b.astype(object))
    reduced: np.ndarray = np.vectorize(lambda v: int(v) % modulus, otypes=[object])(prod)
    return reduced


pairs = st.sampled_from(ALGEBRAS).flatmap(
    lambda alg: st.tuples(
        st.just(alg),
        st.lists(st.tuples(elements(alg), elements(alg)), min_size=1, max_size=20),
    )
)


# ---- elementwise ops ----------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(pairs)
def test_elementwise_ops_match_python(case: tuple[Algebra, list[tuple[int, int]]]) -> None:
    alg, xs = case
    m = alg.modulus
    a = arr([x for x, _ in xs])
    b = arr([y for _, y in xs])
    a0, b0 = a.copy(), b.copy()
    results = {
        "add": (alg.add(a, b), [(x + y) % m for x, y in xs]),
        "sub": (alg.sub(a, b), [(x - y) % m for x, y in xs]),
        "neg": (alg.neg(a), [(-x) % m for x, _ in xs]),
        "mul": (alg.mul(a, b), [(x * y) % m for x, y in xs]),
    }
    for name, (got, want) in results.items():
        assert got.dtype == np.uint64, name
        assert as_ints(got) == want, name
    np.testing.assert_array_equal(a, a0)  # inputs untouched
    np.testing.assert_array_equal(b, b0)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(ALGEBRAS),
    st.lists(st.integers(0, R - 1), min_size=1, max_size=8),
    st.one_of(st.integers(-(2**100), 2**100), st.sampled_from([0, 1, -1, P, -P, R, R - 1, -R])),
)
def test_public_ops_match_python(alg: Algebra, raw: list[int], k: int) -> None:
    xs = [v % alg.modulus for v in raw]
    a = arr(xs)
    assert as_ints(alg.mul_public(a, k)) == [(x * k) % alg.modulus for x in xs]
    assert as_ints(alg.add_public(a, k)) == [(x + k) % alg.modulus for x in xs]
    assert alg.reduce_int(k) == k % alg.modulus
    assert 0 <= alg.reduce_int(k) < alg.modulus


def test_broadcasting() -> None:
    for alg in ALGEBRAS:
        g = Prg(SEED)
        a = alg.random(g, (4, 3), "a")
        b = alg.random(g, (3,), "b")
        for op in (alg.add, alg.sub, alg.mul):
            got = op(a, b)
            assert got.shape == (4, 3)
            for i in range(4):
                np.testing.assert_array_equal(got[i], op(a[i], b))
        s = arr(5)
        np.testing.assert_array_equal(alg.mul(a, s), alg.mul_public(a, 5))
        np.testing.assert_array_equal(alg.mul(s, a), alg.mul_public(a, 5))


def test_field_mul_worst_case_all_bits() -> None:
    vals = [P - 1, P - 2, (1 << 61) - 2 - (1 << 32), (1 << 32) - 1, 1 << 60, 3, 0]
    a = arr([[x] * len(vals) for x in vals])
    b = arr([vals] * len(vals))
    got = FIELD61.mul(a, b)
    want = [[(x * y) % P for y in vals] for x in vals]
    assert got.tolist() == want


def test_dtype_checked() -> None:
    for alg in ALGEBRAS:
        with pytest.raises(TypeError, match="uint64"):
            alg.add(np.array([1, 2], dtype=np.int64), arr([1, 2]))
        with pytest.raises(TypeError):
            alg.mul(arr([1]), np.array([1.5]))
        with pytest.raises(TypeError):
            alg.matmul(arr([[1]]), np.array([[1]], dtype=np.int64))


# ---- sums ---------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(ALGEBRAS), st.integers(1, 5), st.integers(1, 5), st.data())
def test_sum_matches_python(alg: Algebra, rows: int, cols: int, data: st.DataObject) -> None:
    xs = data.draw(st.lists(elements(alg), min_size=rows * cols, max_size=rows * cols))
    a = arr(xs).reshape(rows, cols)
    m = alg.modulus
    total = alg.sum(a)
    assert isinstance(total, np.ndarray) and total.shape == () and total.dtype == np.uint64
    assert int(total) == sum(xs) % m
    assert as_ints(alg.sum(a, axis=0)) == [
        sum(xs[r * cols + c] for r in range(rows)) % m for c in range(cols)
    ]
    assert as_ints(alg.sum(a, axis=1)) == [
        sum(xs[r * cols : (r + 1) * cols]) % m for r in range(rows)
    ]


def test_field_sum_many_large_values() -> None:
    n = 200_000
    a = np.full(n, P - 1, dtype=np.uint64)
    assert int(FIELD61.sum(a)) == (n * (P - 1)) % P
    b = np.full(n, R - 1, dtype=np.uint64)
    assert int(RING64.sum(b)) == (n * (R - 1)) % R


# ---- matmul -------------------------------------------------------------------------------


@pytest.fixture(params=["default", "forced_limbs"])
def ring_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "forced_limbs":
        monkeypatch.setattr(alg_mod, "_RING_LIMB_MIN_MN", 1)
    yield str(request.param)


matmul_shapes = st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 5))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(ALGEBRAS), matmul_shapes, st.data())
def test_matmul_matches_python(
    alg: Algebra, shape: tuple[int, int, int], data: st.DataObject
) -> None:
    m, k, n = shape
    a = arr(data.draw(st.lists(elements(alg), min_size=m * k, max_size=m * k))).reshape(m, k)
    b = arr(data.draw(st.lists(elements(alg), min_size=k * n, max_size=k * n))).reshape(k, n)
    want = ref_matmul(a, b, alg.modulus)
    for limb_min in (1, 1 << 30):  # force both ring paths
        old = alg_mod._RING_LIMB_MIN_MN
        alg_mod._RING_LIMB_MIN_MN = limb_min
        try:
            got = alg.matmul(a, b)
        finally:
            alg_mod._RING_LIMB_MIN_MN = old
        assert got.dtype == np.uint64
        assert got.tolist() == want.tolist()


@pytest.mark.parametrize(
    ("a_shape", "b_shape"),
    [
        ((5,), (5,)),
        ((5,), (5, 3)),
        ((4, 5), (5,)),
        ((2, 4, 5), (5, 3)),
        ((4, 5), (2, 5, 3)),
        ((2, 1, 4, 5), (3, 5, 2)),
        ((5,), (2, 5, 3)),
        ((0, 5), (5, 3)),
        ((4, 0), (0, 3)),
    ],
)
def test_matmul_shapes_like_numpy(
    ring_path: str, a_shape: tuple[int, ...], b_shape: tuple[int, ...]
) -> None:
    g = Prg(SEED)
    for alg in ALGEBRAS:
        a = alg.random(g, a_shape)
        b = alg.random(g, b_shape)
        got = alg.matmul(a, b)
        want = ref_matmul(a, b, alg.modulus)
        assert isinstance(got, np.ndarray) and got.dtype == np.uint64
        assert got.shape == np.shape(want)
        assert got.tolist() == np.asarray(want).tolist()


def test_matmul_errors() -> None:
    for alg in ALGEBRAS:
        with pytest.raises(ValueError):
            alg.matmul(arr([[1, 2]]), arr([[1, 2]]))
        with pytest.raises(ValueError):
            alg.matmul(arr(1), arr([1]))


@pytest.mark.parametrize(("m", "k", "n"), [(70, 40, 66), (300, 100, 64), (64, 600, 65)])
def test_ring_limb_paths_large(m: int, k: int, n: int) -> None:
    """22-bit limbs (k <= 512), 16-bit limbs (k > 512) and row blocking vs uint64 @."""
    g = Prg(SEED)
    a, b = g.ring((m, k)), g.ring((k, n))
    assert min(m, n) >= alg_mod._RING_LIMB_MIN_MN  # really on the limb path
    np.testing.assert_array_equal(RING64.matmul(a, b), a @ b)
    ones = np.full((m, k), R - 1, dtype=np.uint64)
    np.testing.assert_array_equal(RING64.matmul(ones, ones.T.copy()), ones @ ones.T)


def test_uint64_matmul_reference_is_exact() -> None:
    """The uint64 `@` used as a reference/fallback really is exact mod 2^64."""
    g = Prg(SEED)
    a, b = g.ring((3, 7)), g.ring((7, 2))
    assert (a @ b).tolist() == ref_matmul(a, b, R).tolist()


def test_field_matmul_chunked_inner_dimension() -> None:
    """k > 2048 forces inner-dimension chunking; m = 40 forces several row blocks."""
    g = Prg(SEED)
    k = 2500
    a = FIELD61.random(g, (40, k))
    b = FIELD61.random(g, (k, 3))
    assert FIELD61.matmul(a, b).tolist() == ref_matmul(a, b, P).tolist()
    # 4095 * (2^21 - 1)^2 is odd and > 2^53: any block longer than 2048 would round.
    worst_a = np.full((2, 4095), P - 1, dtype=np.uint64)
    worst_b = np.full((4095, 2), P - 1, dtype=np.uint64)
    assert FIELD61.matmul(worst_a, worst_b).tolist() == ref_matmul(worst_a, worst_b, P).tolist()
    edge = np.full((2, 2048), P - 1, dtype=np.uint64)  # largest single block
    assert FIELD61.matmul(edge, edge.T.copy()).tolist() == ref_matmul(edge, edge.T, P).tolist()


# ---- signed lifts -------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=10))
def test_ring_signed_round_trip(xs: list[int]) -> None:
    x = np.array(xs, dtype=np.int64)
    u = RING64.from_signed(x)
    assert u.dtype == np.uint64
    assert as_ints(u) == [v % R for v in xs]
    np.testing.assert_array_equal(RING64.to_signed(u), x)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-(P // 2) + 1, P // 2 - 1), min_size=1, max_size=10))
def test_field_signed_round_trip(xs: list[int]) -> None:
    x = np.array(xs, dtype=np.int64)
    u = FIELD61.from_signed(x)
    assert u.dtype == np.uint64
    assert as_ints(u) == [v % P for v in xs]
    back = FIELD61.to_signed(u)
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, x)
    assert as_ints(FIELD61.from_signed(xs)) == [v % P for v in xs]  # Python ints


def test_field_to_signed_centered() -> None:
    u = arr([0, 1, P // 2, P // 2 + 1, P - 1])
    assert FIELD61.to_signed(u).tolist() == [0, 1, P // 2, P // 2 + 1 - P, -1]


@pytest.mark.parametrize("bad", [P // 2, -(P // 2), 1 << 62, -(1 << 62), 2**63 - 1, -(2**63)])
def test_field_from_signed_range(bad: int) -> None:
    with pytest.raises(ValueError, match="signed range"):
        FIELD61.from_signed(np.array([0, bad], dtype=np.int64))
    with pytest.raises(ValueError):
        FIELD61.from_signed([bad])


def test_from_signed_python_ints_and_types() -> None:
    assert as_ints(RING64.from_signed([2**63, -1, 2**70 + 5, -(2**70)])) == [
        2**63,
        R - 1,
        5,
        (-(2**70)) % R,
    ]
    assert int(RING64.from_signed(-1)) == R - 1
    assert RING64.from_signed(-1).shape == ()
    assert int(FIELD61.from_signed(-5)) == P - 5
    assert as_ints(FIELD61.from_signed(np.array([3, 4], dtype=np.uint64))) == [3, 4]
    assert as_ints(RING64.from_signed(np.array([True, False]))) == [1, 0]
    for alg in ALGEBRAS:
        with pytest.raises(TypeError):
            alg.from_signed(np.array([1.0]))
        with pytest.raises(TypeError):
            alg.from_signed([1, 2.5])
    x = np.array([-3, 4], dtype=np.int64)
    u = RING64.from_signed(x)
    u[0] = 0
    assert x[0] == -3  # from_signed returns a fresh array


# ---- 0-d arrays under numpy 2 overflow warnings -------------------------------------------


@pytest.mark.filterwarnings("error")
def test_zero_dim_ops_do_not_warn_and_stay_arrays() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for alg in ALGEBRAS:
            m = alg.modulus
            hi, lo = arr(m - 1), arr(0)
            checks = {
                "add": (alg.add(hi, hi), (2 * (m - 1)) % m),
                "sub": (alg.sub(lo, hi), 1),
                "neg": (alg.neg(hi), 1),
                "neg0": (alg.neg(lo), 0),
                "mul": (alg.mul(hi, hi), 1),
                "mul_public": (alg.mul_public(hi, -1), 1),
                "add_public": (alg.add_public(hi, 5), 4),
                "sum": (alg.sum(hi), m - 1),
                "matmul": (alg.matmul(arr([m - 1, m - 1]), arr([m - 1, 1])), 0),
                "from_signed": (alg.from_signed(np.int64(-1)), m - 1),
                "random": (alg.random(Prg(SEED), ()), None),
            }
            for name, (got, want) in checks.items():
                assert type(got) is np.ndarray, name
                assert got.shape == () and got.dtype == np.uint64, name
                if want is not None:
                    assert int(got) == want, name
            signed = alg.to_signed(hi)
            assert type(signed) is np.ndarray and int(signed) == -1
            # chaining results keeps working without scalar-overflow warnings
            assert int(alg.add(alg.mul(hi, hi), hi)) == 0


# ---- randomness, identity, pickling -------------------------------------------------------


def test_random_elements() -> None:
    for alg in ALGEBRAS:
        x = alg.random(Prg(SEED), (1000,), "r")
        assert x.dtype == np.uint64 and x.shape == (1000,)
        np.testing.assert_array_equal(x, alg.random(Prg(SEED), 1000, "r"))
        assert int(x.max()) < alg.modulus
        assert len(set(as_ints(x))) > 990
    assert int(FIELD61.random(Prg(SEED), 20_000, "f").max()) < P


def test_identity_and_pickle() -> None:
    assert algebra_by_name("ring64") is RING64
    assert algebra_by_name("field61") is FIELD61
    with pytest.raises(ValueError, match="ring64"):
        algebra_by_name("gf2")
    assert pickle.loads(pickle.dumps(RING64)) is RING64
    assert pickle.loads(pickle.dumps(FIELD61)) is FIELD61
    assert Ring64() == RING64 and MersenneField61() == FIELD61 and RING64 != FIELD61
    assert len({RING64, Ring64(), FIELD61}) == 2
    assert (RING64.modulus, RING64.bits, RING64.is_field) == (R, 64, False)
    assert (FIELD61.modulus, FIELD61.bits, FIELD61.is_field) == (P, 61, True)


def test_field_mul_chunked_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large inputs go through the chunked kernel (forced here with a tiny chunk)."""
    monkeypatch.setattr(alg_mod, "_MUL_CHUNK", 7)
    g = Prg(SEED)
    a = FIELD61.random(g, (5, 9), "a")
    b = FIELD61.random(g, (5, 9), "b")
    want = [
        [(int(x) * int(y)) % P for x, y in zip(ra, rb, strict=True)]
        for ra, rb in zip(a, b, strict=True)
    ]
    assert FIELD61.mul(a, b).tolist() == want
    assert FIELD61.mul(a[:, ::2], b[:, ::2]).tolist() == [row[::2] for row in want]  # strided
    assert FIELD61.mul_public(a, -3).tolist() == [[(int(x) * -3) % P for x in ra] for ra in a]
    assert FIELD61.mul(a, b[0]).tolist() == [  # broadcast: unchunked fallback
        [(int(x) * int(y)) % P for x, y in zip(ra, b[0], strict=True)] for ra in a
    ]
