"""Deferred truncation: a fixed-point product is truncated at its next use, and a next product
absorbs that truncation into its own Beaver round (additive protocol; `mul_settling`).

Error bound used throughout: inputs are multiples of 2^-16 (exact encodings); every
probabilistic truncation is off by 0 or -1 ulp (2^-16), and no factor exceeds 1 in magnitude,
so a value after k truncations is within k ulps of the float result.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import local_parties, record_traffic
from scipy import stats

from mpc.dealers.seeded import InsecureLocalDealer, local_noise_client
from mpc.program import PartyContext
from mpc.protocols.additive import AdditiveScheme

ULP = 2.0**-16
X = np.array([0.75, -0.5, 1 - ULP, -1.0, 0.0625, 0.3125])
Y = np.array([0.984375, -0.875, 0.5, 0.25, -0.75, -1.0])
W = np.array([0.5, 0.625, -0.99609375, 0.875, 0.125, -0.5])


def _inputs(ctx: PartyContext) -> tuple[object, object, object]:
    # every factor is in [-1, 1] (see the module docstring): the bound that admits long chains
    x = ctx.input("alice", X if ctx.me == "alice" else None, bound=1)
    y = ctx.input("bob", Y if ctx.me == "bob" else None, bound=1)
    w = ctx.input("carol", W if ctx.me == "carol" else None, bound=1)
    return x, y, w


def test_a_chain_takes_one_round_per_product_and_matches_plaintext() -> None:
    chain = 25

    def program(ctx: PartyContext) -> np.ndarray | None:
        x, y, _ = _inputs(ctx)
        z = x
        for _ in range(chain):
            z = z * y
        return ctx.reveal(z)

    outcome = local_parties("additive", 3).run(program)["bob"]
    expected = X * Y**chain
    assert np.max(np.abs(outcome.output - expected)) <= chain * ULP
    kinds = outcome.stats.by_kind
    assert (kinds["mul"].calls, kinds["mul"].rounds) == (chain, chain)
    # every truncation rode in the next product's round, but the last one: reveal truncates
    assert (kinds["truncate"].calls, kinds["truncate"].rounds) == (1, 1)


def test_a_settled_operand_keeps_one_value_for_every_later_use() -> None:
    """p = x*y is truncated once, by the first product that uses it; later uses see that same
    truncated value: a = p*w and b = p*w are truncations of reveal(p) * w."""

    def program(ctx: PartyContext) -> dict[str, np.ndarray | None]:
        x, y, w = _inputs(ctx)
        p = x * y
        a = p * w  # settles p in a's round
        b = p * w  # p is settled now: a plain product with a fresh triple
        return {"p": ctx.reveal(p), "a": ctx.reveal(a), "b": ctx.reveal(b)}

    outcome = local_parties("additive", 3).run(program)["carol"]
    p, a, b = (outcome.output[k] for k in ("p", "a", "b"))

    def truncated(exact: np.ndarray, got: np.ndarray) -> bool:
        floor = np.floor(exact / ULP) * ULP  # exact: a multiple of 2^-32, floor is exact too
        return bool(np.all((got == floor) | (got == floor - ULP)))

    assert truncated(X * Y, p)
    assert truncated(p * W, a) and truncated(p * W, b)
    # p: settled by a's round; a and b: by their reveals (p's reveal needs no truncation)
    assert outcome.stats.by_kind["truncate"].calls == 2


def test_both_operands_pending_a_square_and_mixed_uses() -> None:
    def program(ctx: PartyContext) -> dict[str, np.ndarray | None]:
        x, y, w = _inputs(ctx)
        both = (x * y) * (w * y)  # both pending: one dealer item masks both truncations
        p = x * w
        square = p * p  # a square of a pending value: truncated first, then squared
        q = x * y
        mixed = ctx.concat([q + 0.25, (x * w).sum(axis=0).reshape(1), -(y * w)])
        compare = (x * y).ltz()
        return {
            "both": ctx.reveal(both),
            "square": ctx.reveal(square),
            "mixed": ctx.reveal(mixed),
            "compare": ctx.reveal(compare),
            "to_one": ctx.reveal(x * y * w, to="alice"),
        }

    outcomes = local_parties("additive", 3).run(program)
    out = outcomes["alice"].output
    assert np.max(np.abs(out["both"] - X * Y * W * Y)) <= 3 * ULP
    assert np.max(np.abs(out["square"] - (X * W) ** 2)) <= 2 * ULP
    mixed = np.concatenate([X * Y + 0.25, [np.sum(X * W)], -(Y * W)])
    assert np.max(np.abs(out["mixed"] - mixed)) <= len(X) * ULP
    # the sign of the truncated product (0 or -1 ulp below x*y; none of them is near 0)
    np.testing.assert_array_equal(out["compare"], (X * Y < 0).astype(np.int64))
    assert np.max(np.abs(out["to_one"] - X * Y * W)) <= 2 * ULP
    assert outcomes["bob"].output["to_one"] is None
    assert outcomes["alice"].stats.by_kind["truncate"].rounds >= 4  # add, sum, neg, compare


def test_views_keep_a_truncation_pending_and_local() -> None:
    """Reshaping, indexing, transposing and negating a pending product send nothing; the view
    is truncated at its own next use."""

    def program(ctx: PartyContext) -> dict[str, np.ndarray | None]:
        x, y, w = _inputs(ctx)
        p = (x * y).reshape(2, 3)
        before = ctx.channel.stats.kind("truncate").rounds
        views = [p[0], p.T, -p, p.reshape(6)]
        local = ctx.channel.stats.kind("truncate").rounds == before
        assert all(v._pending for v in views)
        return {
            "local": np.array(local),
            "row": ctx.reveal(views[0] * w[:3]),
            "neg": ctx.reveal(views[2]),
        }

    out = local_parties("additive", 3).run(program)["bob"].output
    assert bool(out["local"])
    assert np.max(np.abs(out["row"] - (X * Y)[:3] * W[:3])) <= 2 * ULP
    assert np.max(np.abs(out["neg"] + (X * Y).reshape(2, 3))) <= 2 * ULP


def test_shamir_truncates_each_product_at_once() -> None:
    def program(ctx: PartyContext) -> np.ndarray | None:
        x, y, _ = _inputs(ctx)
        return ctx.reveal((x * y) * y)

    outcome = local_parties("shamir-beaver", 3).run(program)["alice"]
    assert np.max(np.abs(outcome.output - X * Y * Y)) <= 2 * ULP
    assert "truncate" not in outcome.stats.by_kind
    assert outcome.stats.by_kind["mul"].rounds == 4  # two products, each with its truncation


@pytest.mark.parametrize("both", [False, True])
def test_dealer_truncating_triples_are_consistent(both: bool) -> None:
    """Shares combine to r' = floor(r_s / 2^f) (and s') and c = r' * b (or r' * s'), with r,
    b, s uniform; the dealer sends one party two words per element (r' and c; three if both)."""
    n, size, bits = 3, 4000, 16
    dealer = InsecureLocalDealer(AdditiveScheme(n, n - 1))
    items = [
        local_noise_client(dealer, rank).truncating_triple((size,), bits, both) for rank in range(n)
    ]
    total = [sum(parts[1:], parts[0]) for parts in zip(*items, strict=True)]
    if both:
        r, s, r_shifted, s_shifted, c = total
        np.testing.assert_array_equal(s_shifted.view(np.int64), s.view(np.int64) >> bits)
        np.testing.assert_array_equal(c, r_shifted * s_shifted)
        uniform = (r, s)
    else:
        r, b, r_shifted, c = total
        np.testing.assert_array_equal(c, r_shifted * b)
        uniform = (r, b)
    np.testing.assert_array_equal(r_shifted.view(np.int64), r.view(np.int64) >> bits)
    for value in uniform:
        ones = np.unpackbits(value.view(np.uint8))
        assert stats.binomtest(int(ones.sum()), ones.size, 0.5).pvalue > 1e-7
    assert dealer.bytes_sent == (3 if both else 2) * 8 * size


def _fused_view(value: float, size: int) -> np.ndarray:
    """What bob learns in the round of z = p * y with p = x * y pending: the opened message
    (his part plus the two he receives), for inputs all equal to `value`."""
    parties = local_parties("additive", 3)
    bob = parties.runners[1]
    sent, received = record_traffic(bob.transport)

    def program(ctx: PartyContext) -> None:
        data = np.full(size, value)
        x = ctx.input("alice", data if ctx.me == "alice" else None, bound=1)
        y = ctx.input("bob", data if ctx.me == "bob" else None, bound=1)
        p = x * y
        if ctx.me == "bob":
            sent.clear()
            received.clear()
        p * y  # the fused round is what is observed

    parties.run(program)
    (tag,) = received
    parts = [sent[tag], *received[tag]]
    opened: np.ndarray = sum(parts[1:], parts[0])
    return opened


def test_the_fused_round_reveals_only_uniformly_masked_values() -> None:
    """The fused round opens x - r and y - b; both must look uniform whatever the inputs. A
    leak (e.g. opening the pending product without its mask r) makes the opened words
    constant for constant inputs and fails the test."""
    size = 3000
    for value in (0.0, 0.5, -0.75):
        opened = _fused_view(value, size)
        assert opened.size == 2 * size
        assert len(np.unique(opened)) > 2 * size - 5  # no repeated (constant) words
        ones = np.unpackbits(opened.view(np.uint8))
        assert stats.binomtest(int(ones.sum()), ones.size, 0.5).pvalue > 1e-7
