"""Exact comparison (sign bit) for the additive protocol, and its refusal elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import local_parties, record_traffic
from scipy import stats

from mpc.errors import PartyFailedError, UnsupportedOperationError
from mpc.program import PartyContext

# Edge values of the signed 64-bit range plus values around 0 and fixed-point magnitudes.
EDGES = np.array(
    [0, 1, -1, 2, -2, 2**62, -(2**62), 2**63 - 1, -(2**63), 12345, -12345, 2**40, -(2**40)],
    dtype=np.int64,
)


def _raw_ltz(values: np.ndarray, n: int, wide: bool = False) -> np.ndarray:
    """[v < 0] of signed 64-bit values, through the protocol directly (ctx.input refuses
    integers beyond 2^62, headroom for products; the sign bit is exact on the whole range)."""

    def raw(ctx: PartyContext) -> np.ndarray | None:
        alg = ctx.protocol.algebra
        secret = alg.from_signed(values) if ctx.me == "alice" else None
        with ctx.channel.operation("input"):
            share = ctx.protocol.input(0, secret)
        with ctx.channel.operation("compare"):
            bit = ctx.protocol.less_than_zero(share, wide)
        return ctx.protocol.open(bit)

    got: np.ndarray = local_parties("additive", n).run(raw)["bob"].output
    return got


@pytest.mark.parametrize("n", [2, 3, 5])
def test_ltz_is_exact_on_integers(n: int) -> None:
    np.testing.assert_array_equal(_raw_ltz(EDGES, n), (EDGES < 0).astype(np.uint64))


@pytest.mark.parametrize("n", [2, 3])
def test_the_wide_tree_is_exact_on_integers(n: int) -> None:
    """The two-level tree of fan-in 8 (`WIDE_TREE`): the same exact sign on the edges of the
    range and on random 64-bit values, whose every bit position decides some comparison."""
    import secrets

    rand = np.frombuffer(secrets.token_bytes(8 * 300), dtype=np.int64)
    values = np.concatenate([EDGES, rand, rand >> 40, -(rand >> 40)])
    np.testing.assert_array_equal(_raw_ltz(values, n, wide=True), (values < 0).astype(np.uint64))


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


def test_comparison_costs_five_rounds() -> None:
    def program(ctx: PartyContext) -> np.ndarray | None:
        x = ctx.input("alice", np.arange(-5, 5) if ctx.me == "alice" else None, kind="int")
        return ctx.reveal(x.ltz())

    outcome = local_parties("additive", 3).run(program)["alice"]
    np.testing.assert_array_equal(outcome.output, (np.arange(-5, 5) < 0).astype(np.int64))
    assert outcome.stats.by_kind["compare"].rounds == 5


def test_ltz_times_with_fewer_rounds_takes_four() -> None:
    x = np.linspace(-3, 3, 61)
    y = np.linspace(10, -20, 61)

    def program(ctx: PartyContext) -> tuple[np.ndarray | None, np.ndarray | None]:
        sx = ctx.input("alice", x if ctx.me == "alice" else None)
        sy = ctx.input("bob", y if ctx.me == "bob" else None)
        bit, product = sx.ltz_times(sy, fewer_rounds=True)
        return ctx.reveal(bit), ctx.reveal(product)

    outcome = local_parties("additive", 3).run(program)["carol"]
    bit, product = outcome.output
    np.testing.assert_array_equal(bit, (x < 0).astype(np.int64))
    np.testing.assert_array_equal(product, np.where(x < 0, np.round(y * 2**16) / 2**16, 0.0))
    assert outcome.stats.by_kind["compare"].rounds == 4


@pytest.mark.parametrize("protocol", ["shamir", "shamir-beaver"])
def test_shamir_comparison_is_refused_clearly(protocol: str) -> None:
    def program(ctx: PartyContext) -> np.ndarray | None:
        x = ctx.input("alice", np.arange(3) if ctx.me == "alice" else None, kind="int")
        return ctx.reveal(x.ltz())

    with pytest.raises(PartyFailedError) as info:
        local_parties(protocol, 3).run(program)
    assert isinstance(info.value.__cause__, UnsupportedOperationError)
    assert "additive" in str(info.value)


@pytest.mark.parametrize("size", [1, 63, 64, 65, 1000])
def test_ltz_on_random_words_of_every_packing_size(size: int) -> None:
    # Sizes around the 64-element word of the packed bit planes, random signed 64-bit values.
    values = np.random.default_rng(size).integers(-(2**63), 2**63 - 1, size, dtype=np.int64)
    np.testing.assert_array_equal(_raw_ltz(values, 3), (values < 0).astype(np.uint64))


def _compare_view(sign: int, size: int) -> tuple[list[np.ndarray], int]:
    """What bob learns in each round while the parties compare `size` values of one sign (his
    own message combined with the two he receives: the opened value), and the bytes he sends."""
    parties = local_parties("additive", 3)
    bob = parties.runners[1]
    sent, received = record_traffic(bob.transport)

    def program(ctx: PartyContext) -> None:
        data = np.full(size, 3.25 * sign)
        x = ctx.input("alice", data if ctx.me == "alice" else None)
        if ctx.me == "bob":
            sent.clear()
            received.clear()
        x.ltz()

    outcome = parties.run(program)["bob"]
    opened = []
    for i, tag in enumerate(sorted(received)):  # tags (run, op, round) sort by round
        parts = [sent[tag], *received[tag]]
        # Round 0 opens c = x + r in the ring, the others open XOR-shared bit words.
        opened.append(sum(parts[1:], parts[0]) if i == 0 else np.bitwise_xor.reduce(parts))
    return opened, outcome.stats.by_kind["compare"].bytes_sent


def test_comparison_view_is_uniform_and_independent_of_the_sign() -> None:
    """What bob learns in every round of a comparison (c, every AND gate's e and d, the daBit
    opening) is uniform whether all inputs are positive or all negative. A leak such as an
    unmasked opening (no daBit) makes the last value constant and fails the test."""
    size = 64 * 200
    positive, _ = _compare_view(+1, size)
    negative, _ = _compare_view(-1, size)
    assert len(positive) == len(negative) == 5
    alpha = 1e-7
    for pos, neg in zip(positive, negative, strict=True):
        for value in (pos, neg):
            bits = np.unpackbits(value.view(np.uint8))
            assert stats.binomtest(int(bits.sum()), bits.size, 0.5).pvalue > alpha
        ks = stats.ks_2samp(
            np.unpackbits(pos.view(np.uint8)).reshape(-1, 64).sum(axis=1),
            np.unpackbits(neg.view(np.uint8)).reshape(-1, 64).sum(axis=1),
        )
        assert ks.pvalue > alpha


def test_comparison_traffic_is_bit_packed() -> None:
    # Per element and peer: c (8 bytes), the 147 masked tree inputs per 64 elements (147 bits)
    # and one daBit bit. Ring-valued AND gates would take over 4000 bytes.
    size = 64 * 100
    _, sent = _compare_view(+1, size)
    assert sent / size == pytest.approx(2 * (8 + 147 / 8 + 1 / 8))


@pytest.mark.parametrize("wide", [False, True], ids=["tree", "wide-tree"])
def test_dealer_comparison_mask_is_consistent(wide: bool) -> None:
    """The shares of the parties combine to r = sum 2^i r_i, the products of the tree masks and
    one daBit s in both sharings; the dealer sends under 10 words per element (one party's
    corrections: r, s and 462 rows of mask products per 64 elements; the wide tree's 4446 rows,
    under 80 words)."""
    from mpc.bitpack import planes_value, unpack_plane
    from mpc.dealers.seeded import InsecureLocalDealer, local_noise_client
    from mpc.protocols import comparison
    from mpc.protocols.additive import AdditiveScheme
    from mpc.protocols.comparison import mask_monomials

    n, size = 3, 1000
    dealer = InsecureLocalDealer(AdditiveScheme(n, n - 1))
    tree = comparison.WIDE_TREE if wide else comparison.TREE
    masks = [
        local_noise_client(dealer, rank).comparison_mask((size,), 64, wide) for rank in range(n)
    ]

    def xor(field: str) -> np.ndarray:
        out = np.zeros_like(getattr(masks[0], field))
        for m in masks:
            out ^= getattr(m, field)
        return out

    def ring_sum(field: str) -> np.ndarray:
        out = np.zeros(size, dtype=np.uint64)
        for m in masks:
            out += getattr(m, field)
        return out

    np.testing.assert_array_equal(ring_sum("mask"), planes_value(xor("mask_bits"), size))
    tree_masks = xor("and_masks")
    monomials = xor("and_monomials")
    np.testing.assert_array_equal(monomials, mask_monomials(tree_masks, tree))
    # Spot check of the layout: the first monomial of the first level is the product of two
    # variables' masks of its groups (16 of them, 8 in the wide tree).
    g = tree.groups[0]
    first, second = (tree_masks[v * g : v * g + g] for v in sorted(tree.monomials[0]))
    np.testing.assert_array_equal(monomials[:g], first & second)
    np.testing.assert_array_equal(ring_sum("dabit"), unpack_plane(xor("dabit_bits"), size))
    # Random, not constant: about half of the dealt bits are ones.
    assert 0.45 < np.unpackbits(xor("mask_bits").view(np.uint8)).mean() < 0.55
    assert 0.4 < ring_sum("dabit").mean() < 0.6
    assert dealer.bytes_sent / size < (80 if wide else 10) * 8


def test_ltz_times_gives_the_bit_and_its_product_in_five_rounds() -> None:
    x = np.linspace(-3, 3, 61)
    y = np.linspace(10, -20, 61)

    def program(ctx: PartyContext) -> tuple[np.ndarray | None, np.ndarray | None]:
        sx = ctx.input("alice", x if ctx.me == "alice" else None)
        sy = ctx.input("bob", y if ctx.me == "bob" else None)
        bit, product = sx.ltz_times(sy)
        return ctx.reveal(bit), ctx.reveal(product)

    outcome = local_parties("additive", 3).run(program)["carol"]
    bit, product = outcome.output
    np.testing.assert_array_equal(bit, (x < 0).astype(np.int64))
    # The product of a 0/1 integer with a fixed-point value is exact: y as encoded, or 0.
    np.testing.assert_array_equal(product, np.where(x < 0, np.round(y * 2**16) / 2**16, 0.0))
    assert outcome.stats.by_kind["compare"].rounds == 5


def test_a_comparison_override_without_the_wide_hint_still_works() -> None:
    """A plug-in written to the older signature less_than_zero_times(x, y) is called without
    `wide` (it would raise TypeError if it were passed)."""
    from mpc.program import _takes_wide
    from mpc.protocols.additive import AdditiveBeaver

    class Older(AdditiveBeaver):
        def less_than_zero_times(
            self, x: np.ndarray, y: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray]:
            return super().less_than_zero_times(x, y)

    assert not _takes_wide(Older.less_than_zero_times)
    assert _takes_wide(AdditiveBeaver.less_than_zero_times)
