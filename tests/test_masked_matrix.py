"""A matrix opened once under a dealer mask and reused in many products (`Secret.masked`)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import local_parties, protocol_cases

from mpc.errors import PartyFailedError, ShapeMismatchError
from mpc.program import PartyContext

RNG = np.random.default_rng(7)
X = RNG.uniform(-2, 2, (40, 6))
VS = [RNG.uniform(-1, 1, 6) for _ in range(3)]
US = [RNG.uniform(-1, 1, 40) for _ in range(3)]
#: Fixed point with 16 fractional bits: each product sums 6 or 40 terms, each off by at most
#: 2^-16 from encoding, plus one truncation ulp: well inside 1e-3.
TOLERANCE = 1e-3
ULP = 2.0**-16


def _program(ctx: PartyContext) -> dict[str, list[np.ndarray | None]]:
    # the data's ranges: |X| <= 2, |v|, |u| <= 1 (products of 6 or 40 terms: at most 80)
    x = ctx.input("alice", X if ctx.me == "alice" else None, bound=2)
    masked = x.masked()
    forward, backward = [], []
    for v, u in zip(VS, US, strict=True):
        sv = ctx.input("bob", v if ctx.me == "bob" else None, bound=1)
        su = ctx.input("bob", u if ctx.me == "bob" else None, bound=1)
        forward.append(ctx.reveal(masked @ sv))
        backward.append(ctx.reveal(masked.T @ su))
    return {"forward": forward, "backward": backward}


@pytest.mark.parametrize(("protocol", "n"), protocol_cases((2, 3)))
def test_masked_products_match_plaintext(protocol: str, n: int) -> None:
    out = local_parties(protocol, n).run(_program)["alice"].output
    for got, v in zip(out["forward"], VS, strict=True):
        np.testing.assert_allclose(got, X @ v, atol=TOLERANCE)
    for got, u in zip(out["backward"], US, strict=True):
        np.testing.assert_allclose(got, X.T @ u, atol=TOLERANCE)


def test_masked_matrix_is_opened_once() -> None:
    """The first product opens X - A with y - B in one round; later ones open only y - B."""

    def program(ctx: PartyContext) -> None:
        x = ctx.input("alice", X if ctx.me == "alice" else None, bound=2)
        v = ctx.input("bob", VS[0] if ctx.me == "bob" else None, bound=1)
        masked = x.masked()
        for _ in range(5):
            masked @ v

    stats = local_parties("additive", 3).run(program)["bob"].stats.by_kind
    # To 2 peers: 240 elements of X - A once, 6 of v - B per product; then the truncation of
    # the 40 results (the ring's exact truncation) is opened to every party: 40 to each peer.
    assert stats["matmul"].bytes_sent == 2 * 8 * (240 + 5 * 6) + 5 * 2 * 40 * 8
    assert stats["matmul"].rounds == 5 * 2


def test_a_pending_vector_is_truncated_in_the_masked_products_round() -> None:
    """v = a * c awaits its truncation: X @ v opens v's exact-truncation mask instead of a
    Beaver mask, so the truncation costs no round of its own; the same for X^T @ u, and for
    a chain X^T @ (X @ v) where each product's result is the next one's pending vector."""
    c = np.linspace(-0.9, 0.9, 6)

    def program(ctx: PartyContext) -> dict[str, np.ndarray | None]:
        x = ctx.input("alice", X if ctx.me == "alice" else None, bound=2)
        a = ctx.input("bob", VS[0] if ctx.me == "bob" else None, bound=1)
        b = ctx.input("alice", c if ctx.me == "alice" else None, bound=1)
        masked = x.masked()
        v = a * b  # additive: the product's truncation is pending
        assert v._pending
        forward = masked.product(v, deferred=True)
        assert not v._pending  # settled by the product's round, for later uses
        back = masked.T @ forward  # forward's own truncation rides in this product's round
        return {"forward": ctx.reveal(forward), "back": ctx.reveal(back), "v": ctx.reveal(v)}

    outcome = local_parties("additive", 3).run(program)["bob"]
    v = VS[0] * c
    # encodings (half an ulp each) and truncations (below one ulp each), summed over the terms
    np.testing.assert_allclose(outcome.output["v"], v, atol=3 * ULP)
    np.testing.assert_allclose(outcome.output["forward"], X @ v, atol=6 * 2 * 4 * ULP)
    np.testing.assert_allclose(outcome.output["back"], X.T @ (X @ v), atol=40 * 2 * 60 * ULP)
    stats = outcome.stats.by_kind
    # both products, each with its operand's truncation, and back's own truncation
    assert stats["matmul"].rounds == 3
    assert "truncate" not in stats  # nothing was left pending


def test_masked_matrix_view_is_uniform() -> None:
    """The opened X - A is uniform, the same for a zero matrix and a large one."""
    from scipy import stats

    opened = {}
    # |X| <= 10^4 and a vector of 2^-8: the product's bound 50 * 10^4 * 2^-8 is admitted
    small = 2.0**-8
    for label, value in (("zeros", 0.0), ("large", 9999.5)):

        def program(ctx: PartyContext, v: float = value) -> np.ndarray:
            x = ctx.input("alice", np.full((200, 50), v) if ctx.me == "alice" else None, bound=1e4)
            masked = x.masked()
            y = np.full(50, small) if ctx.me == "bob" else None
            masked @ ctx.input("bob", y, bound=small)
            assert masked._operand.opened is not None
            return masked._operand.opened

        opened[label] = local_parties("additive", 3).run(program)["carol"].output
    for values in opened.values():
        buckets = np.bincount((values.ravel() >> np.uint64(58)).astype(np.int64), minlength=64)
        assert stats.chisquare(buckets).pvalue > 1e-7
    as_float = [v.astype(np.float64).ravel() for v in opened.values()]
    assert stats.ks_2samp(*as_float).pvalue > 1e-7


def test_masked_matrix_checks_shapes_and_refuses_escape() -> None:
    def bad_shape(ctx: PartyContext) -> None:
        x = ctx.input("alice", X if ctx.me == "alice" else None)
        w = ctx.input("bob", np.ones(5) if ctx.me == "bob" else None)
        x.masked() @ w

    with pytest.raises(PartyFailedError) as info:
        local_parties("additive", 2).run(bad_shape)
    assert isinstance(info.value.__cause__, ShapeMismatchError)

    def escape(ctx: PartyContext) -> object:
        x = ctx.input("alice", X if ctx.me == "alice" else None)
        return {"kept": x.masked()}

    with pytest.raises(PartyFailedError, match="Secret"):
        local_parties("additive", 2).run(escape)
