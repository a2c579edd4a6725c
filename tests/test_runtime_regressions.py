"""Regressions found in review: message-tag alignment, early aborts, dealer item reuse."""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers import NAMES, local_parties, run

from mpc.dealers.seeded import InsecureLocalDealer
from mpc.encoding import FixedPoint
from mpc.errors import PeerFailedError
from mpc.parties.local import LocalParties
from mpc.parties.mailbox import Mailbox
from mpc.parties.party import SessionConfig
from mpc.program import PartyContext
from mpc.protocols.registry import get_protocol


def test_a_local_operation_at_one_party_does_not_shift_message_tags() -> None:
    def program(ctx: PartyContext) -> np.ndarray | None:
        x = ctx.input("alice", np.array([1.5, -2.0]) if ctx.me == "alice" else None, bound=2)
        if ctx.me == "alice":  # local-only work that the other parties do not do
            _ = (x + 1.0).sum()
        return ctx.reveal(x * x)

    out = local_parties("additive", 3, timeout=5).run(program)
    np.testing.assert_allclose(out["carol"].output, [2.25, 4.0], atol=2 * 2.0**-16)


def test_an_abort_that_arrives_before_the_run_begins_still_ends_it() -> None:
    box = Mailbox("alice")
    box.begin_run(1)
    box.fail(PeerFailedError("bob aborted run 2"), run=2)  # bob failed before alice started
    box.fail(PeerFailedError("late abort of run 1"), run=1)  # applies to the current run 1
    box.begin_run(2)
    start = time.monotonic()
    with pytest.raises(PeerFailedError, match="run 2"):
        box.get(1, (2, 1, 0), timeout=20)
    assert time.monotonic() - start < 5
    box.begin_run(3)  # a stale failure of run 0 does not break run 3
    box.fail(PeerFailedError("ancient"), run=0)
    box.put(1, (3, 1, 0), np.zeros(1))
    assert box.get(1, (3, 1, 0), timeout=1).shape == (1,)


def test_one_dealer_object_shared_by_two_executors_never_repeats_items() -> None:
    cls = get_protocol("additive")
    dealer = InsecureLocalDealer(cls.make_scheme(3, 2))
    config = SessionConfig(tuple(NAMES[:3]), "additive", 2, FixedPoint(), timeout=5)

    def first_triple_share(ctx: PartyContext) -> np.ndarray:
        assert ctx.protocol.dealer is not None
        a, _, _ = ctx.protocol.dealer.triple((8,))
        return np.array(a)

    first = LocalParties(config, dealer).run(first_triple_share)["bob"].output
    second = LocalParties(config, dealer).run(first_triple_share)["bob"].output
    assert not np.array_equal(first, second)


def test_constants_and_concat_at_a_wider_fixed_point_scale() -> None:
    """Intermediates at more fractional bits than the session's (e.g. an untruncated product)
    take constants and join other values at their own scale (both used to assume 16 bits)."""
    from mpc.program import Secret

    def program(ctx: PartyContext) -> tuple[np.ndarray | None, np.ndarray | None]:
        x = ctx.input("alice", np.array([1.25, -2.0]) if ctx.me == "alice" else None, bound=2)
        share = ctx.protocol.mul_public(x.share, np.array(1 << 18, np.uint64))
        wide = Secret(ctx, share, 34, bound=x.bound)  # the same value at 34 fractional bits
        shifted = wide + 0.5
        joined = ctx.concat([shifted, x])
        return ctx.reveal(shifted), ctx.reveal(joined)

    shifted, joined = run("additive", 3, program)["alice"]
    np.testing.assert_array_equal(shifted, [1.75, -1.5])
    np.testing.assert_array_equal(joined, [1.75, -1.5, 1.25, -2.0])


def test_products_of_scalars_and_integer_sessions() -> None:
    """0-d secrets multiply (the in-place ring product once turned them into numpy scalars),
    and with 0 fractional bits revealed integers stay integers."""

    def program(ctx: PartyContext) -> np.ndarray | None:
        a = ctx.input("alice", np.float64(1.5) if ctx.me == "alice" else None, bound=1.5)
        b = ctx.input("bob", np.float64(-2.25) if ctx.me == "bob" else None, bound=2.25)
        return ctx.reveal(a * b)

    for n in (2, 3):
        got = run("additive", n, program)["alice"]
        assert got.shape == () and abs(got + 3.375) <= 2**-16  # one truncation: 1 ulp

    def integers(ctx: PartyContext) -> np.ndarray | None:
        x = ctx.input("alice", np.array([3, -4]) if ctx.me == "alice" else None, kind="int")
        return ctx.reveal(x * x)

    parties = local_parties("additive", 3, fixed_point=FixedPoint(frac_bits=0, int_bits=30))
    got = parties.run(integers)["bob"].output
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [9, 16])


def test_streams_pickle_by_their_fields() -> None:
    """A Stream caches its hash; a pickled one must not carry another process's hash."""
    import pickle

    from mpc.dealers.streams import Stream

    stream = Stream("triple", ((3,),), 0, 5)
    copy = pickle.loads(pickle.dumps(stream))
    object.__setattr__(stream, "_hash", 12345)  # as if hashed in another process
    assert pickle.loads(pickle.dumps(stream)) == copy
    assert hash(pickle.loads(pickle.dumps(stream))) == hash(copy) != 12345


def test_a_malformed_stream_is_refused_where_it_is_named() -> None:
    """A wrong prefetch argument fails at once with a message, not later inside an actor."""
    from mpc.dealers.streams import Stream

    with pytest.raises(ValueError, match="bits must be an int"):
        Stream("triple", ((3,),), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shapes must be tuples"):
        Stream("triple", ([3],))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown stream kind"):
        Stream("triples", ((3,),))
