"""Tests for mpc.rng: determinism, domain separation, exact ranges, uniformity."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from mpc.rng import SEED_BYTES, Prg, Tag, encode_tag, new_seed

SEED = bytes(range(16))
P61 = (1 << 61) - 1
HARD_MODULUS = 5 * (1 << 60) + 3  # acceptance rate ~0.625 with a 63-bit mask
ALPHA = 1e-6  # chi-square false-alarm rate (and the seeds are fixed: no flakiness)


def reference_stream(seed: bytes, tag: Tag, n: int) -> bytes:
    """The documented construction, written independently of mpc.rng."""
    key = hashlib.blake2b(encode_tag(tag), key=seed, digest_size=16, person=b"mpc.rng").digest()
    enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    return enc.update(bytes(n)) + enc.finalize()


# ---- seeds and construction ---------------------------------------------------------------


def test_new_seed_length_and_freshness() -> None:
    seeds = {new_seed() for _ in range(8)}
    assert len(seeds) == 8
    assert all(len(s) == SEED_BYTES == 16 for s in seeds)


@pytest.mark.parametrize("length", [0, 8, 15, 17, 24, 31, 33, 64])
def test_bad_seed_length(length: int) -> None:
    with pytest.raises(ValueError, match="16 or 32 bytes"):
        Prg(bytes(length))


def test_seed_type_checked() -> None:
    with pytest.raises(TypeError):
        Prg("0" * 16)  # type: ignore[arg-type]


def test_32_byte_seed_accepted_and_distinct() -> None:
    g16 = Prg(SEED)
    g32 = Prg(SEED + SEED)
    assert g16.bytes(32, "x") != g32.bytes(32, "x")


def test_matches_reference_construction() -> None:
    kat_tags: list[Tag] = ["x", 7, b"\x00", ("a", (1, b"b")), -3]
    for tag in kat_tags:
        assert Prg(SEED).bytes(1000, tag) == reference_stream(SEED, tag, 1000)
    words = np.frombuffer(reference_stream(SEED, "w", 8 * 12), dtype="<u8").reshape(3, 4)
    np.testing.assert_array_equal(Prg(SEED).ring((3, 4), "w"), words)


def test_derive_matches_reference_construction() -> None:
    child_seed = hashlib.blake2b(
        encode_tag(("run", 3)), key=SEED, digest_size=16, person=b"mpc.rng.derive"
    ).digest()
    assert Prg(SEED).derive(("run", 3)).bytes(64, "x") == reference_stream(child_seed, "x", 64)
    # separate domain: the child seed is not the AES key of the parent's stream for that tag
    parent_key = hashlib.blake2b(
        encode_tag(("run", 3)), key=SEED, digest_size=16, person=b"mpc.rng"
    ).digest()
    assert child_seed != parent_key


def test_repr_hides_seed() -> None:
    assert SEED.hex() not in repr(Prg(SEED))


# ---- determinism and domain separation ----------------------------------------------------


def test_determinism_across_instances() -> None:
    a, b = Prg(SEED), Prg(SEED)
    assert a.bytes(100, "t") == b.bytes(100, "t")
    np.testing.assert_array_equal(a.ring((5, 3), ("r", 1)), b.ring((5, 3), ("r", 1)))
    np.testing.assert_array_equal(a.below_bits(50, 13, "bb"), b.below_bits(50, 13, "bb"))
    np.testing.assert_array_equal(a.field(500, HARD_MODULUS, "f"), b.field(500, HARD_MODULUS, "f"))
    assert a.derive("d").bytes(64, 0) == b.derive("d").bytes(64, 0)


def test_auto_tags_fresh_and_reproducible() -> None:
    a, b = Prg(SEED), Prg(SEED)
    first, second = a.ring(8), a.ring(8)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(b.ring(8), first)
    np.testing.assert_array_equal(b.ring(8), second)
    # The auto tag is ("auto", k).
    np.testing.assert_array_equal(Prg(SEED).ring(8, ("auto", 1)), second)


def test_different_tags_differ() -> None:
    g = Prg(SEED)
    tags: list[Tag] = ["1", 1, b"1", (1,), ("1",), (b"1",), ((1,),), "", b"", (), 0, -1, 256]
    outputs = {g.bytes(16, t) for t in tags}
    assert len(outputs) == len(tags)


def test_prefix_consistency() -> None:
    g = Prg(SEED)
    assert g.bytes(100, "p")[:37] == g.bytes(37, "p")
    # Streams longer than the internal 1 MiB chunk are still one CTR stream.
    long = g.bytes((1 << 20) + 100, "long")
    assert long == reference_stream(SEED, "long", (1 << 20) + 100)


def test_derive_domain_separated() -> None:
    g = Prg(SEED)
    child = g.derive("c")
    assert child.bytes(32, "c") != g.bytes(32, "c")
    assert child.bytes(32, "x") != g.bytes(32, "x")
    assert g.derive("c").bytes(32, "x") == child.bytes(32, "x")
    assert g.derive("c2").bytes(32, "x") != child.bytes(32, "x")
    assert g.derive(("c",)).bytes(32, "x") != child.bytes(32, "x")


# ---- tag encoding -------------------------------------------------------------------------

atoms = st.one_of(st.text(max_size=4), st.binary(max_size=4), st.integers(-(2**70), 2**70))
tags = st.recursive(atoms, lambda kids: st.lists(kids, max_size=3).map(tuple), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(tags, tags)
def test_encode_tag_injective(a: Tag, b: Tag) -> None:
    assert (encode_tag(a) == encode_tag(b)) == (a == b and _same_types(a, b))


def _same_types(a: object, b: object) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same_types(x, y) for x, y in zip(a, b, strict=True))
    return True


def test_encode_tag_numpy_int_like_python_int() -> None:
    assert encode_tag(np.int64(-5)) == encode_tag(-5)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [1.0, None, True, [1], {"a": 1}, ("ok", 2.5), ("ok", (False,))])
def test_encode_tag_rejects(bad: object) -> None:
    with pytest.raises(TypeError):
        encode_tag(bad)  # type: ignore[arg-type]
    if bad is not None:  # None means "auto tag" for the Prg methods
        with pytest.raises(TypeError):
            Prg(SEED).bytes(4, bad)  # type: ignore[arg-type]


# ---- shapes and ranges --------------------------------------------------------------------


def test_shapes_and_layout() -> None:
    g = Prg(SEED)
    assert g.ring(()).shape == ()
    assert g.ring(0).shape == (0,)
    assert g.ring((3, 0, 2)).shape == (3, 0, 2)
    r = g.ring((4, 5), "lay")
    assert r.dtype == np.uint64 and r.flags.c_contiguous and r.flags.writeable
    r[0, 0] = 1  # writeable for real
    assert g.bytes(0, "z") == b""
    for method in (g.ring, lambda s: g.below_bits(s, 3), lambda s: g.field(s, 7)):
        with pytest.raises(ValueError, match="negative"):
            method((2, -1))
        with pytest.raises(ValueError, match="negative"):
            method(-1)
    with pytest.raises(ValueError):
        g.bytes(-1)


def test_below_bits_range() -> None:
    g = Prg(SEED)
    assert not g.below_bits(100, 0, "b").any()
    np.testing.assert_array_equal(g.below_bits(10, 64, "b"), g.ring(10, "b"))
    for bits in (1, 7, 33, 63):
        x = g.below_bits(5000, bits, ("bits", bits))
        assert int(x.max()) < 1 << bits
        assert int(x.max()) >= 1 << (bits - 1)  # top bit is actually used
    for bits in (-1, 65):
        with pytest.raises(ValueError):
            g.below_bits(3, bits)


def test_field_range_and_edge_moduli() -> None:
    g = Prg(SEED)
    for m in (2, 3, 7, 1000, P61, HARD_MODULUS, (1 << 64) - 59):
        x = g.field(20_000, m, ("range", m))
        assert x.dtype == np.uint64
        assert int(x.max()) < m
    assert not g.field(10, 1, "one").any()
    np.testing.assert_array_equal(g.field(10, 1 << 64, "t"), g.ring(10, "t"))
    np.testing.assert_array_equal(g.field(10, 1 << 40, "t"), g.below_bits(10, 40, "t"))
    for m in (0, -5, (1 << 64) + 1):
        with pytest.raises(ValueError):
            g.field(3, m)


def test_field_rejection_uses_documented_retry_streams() -> None:
    g = Prg(SEED)
    n = 4000
    x = g.field(n, HARD_MODULUS, "rej")
    base = g.ring(n, "rej") & np.uint64((1 << 63) - 1)
    accepted = base < np.uint64(HARD_MODULUS)
    assert 0.5 < accepted.mean() < 0.75  # rejection really happens
    np.testing.assert_array_equal(x[accepted], base[accepted])
    retry1 = g.ring(int((~accepted).sum()), ("rej", "retry", 1)) & np.uint64((1 << 63) - 1)
    ok1 = retry1 < np.uint64(HARD_MODULUS)
    np.testing.assert_array_equal(x[~accepted][ok1], retry1[ok1])


# ---- uniformity ---------------------------------------------------------------------------


def test_bytes_uniform() -> None:
    data = np.frombuffer(Prg(SEED).bytes(1 << 20, "u"), dtype=np.uint8)
    counts = np.bincount(data, minlength=256)
    assert chisquare(counts).pvalue > ALPHA


def test_ring_top_and_bottom_bits_uniform() -> None:
    x = Prg(SEED).ring(1 << 17, "u")
    top = (x >> np.uint64(56)).astype(np.int64)
    bottom = (x & np.uint64(255)).astype(np.int64)
    assert chisquare(np.bincount(top, minlength=256)).pvalue > ALPHA
    assert chisquare(np.bincount(bottom, minlength=256)).pvalue > ALPHA


@pytest.mark.parametrize("modulus", [3, 7, 10, 1000])
def test_field_small_modulus_uniform(modulus: int) -> None:
    x = Prg(SEED).field(1 << 16, modulus, ("small", modulus))
    counts = np.bincount(x.astype(np.int64), minlength=modulus)
    assert counts.size == modulus
    assert chisquare(counts).pvalue > ALPHA


@pytest.mark.parametrize("modulus", [P61, HARD_MODULUS])
def test_field_large_modulus_uniform_buckets(modulus: int) -> None:
    n_buckets = 64
    x = Prg(SEED).field(1 << 17, modulus, ("big", modulus))
    # Bucket sizes differ by at most one element out of ~2^55: exact enough.
    buckets = [(int(v) * n_buckets) // modulus for v in x]
    counts = np.bincount(buckets, minlength=n_buckets)
    assert counts.size == n_buckets
    assert chisquare(counts).pvalue > ALPHA


def test_chisquare_detects_bias() -> None:
    """Sanity check that the uniformity tests can fail: naive `% m` reduction is biased."""
    m = 3 * (1 << 62) // 2  # 2^64 mod m is large: x % m over-weights the low half
    x = Prg(SEED).ring(1 << 16, "bias")
    buckets = [(int(v) % m) * 4 // m for v in x]
    assert chisquare(np.bincount(buckets, minlength=4)).pvalue < ALPHA
