"""The ring's exact truncation (`mpc.protocols.truncation`): no failures up to |x| < 2^62.

Bounds tested: the result is floor(x / 2^m) or one less, for every x with |x| < 2^62 (the
probabilistic dealer pair fails with probability |x| / 2^64: about one in eight at 2^61); the
opened value is uniform whatever x is; a fixed-point product up to |x * y| < 2^30 is right in
every run (the issue's 30000 * 30000, wrong in about one run of three before).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import local_parties, record_traffic

from mpc.algebra import RING64
from mpc.dealers.streams import exact_truncation_parts
from mpc.program import PartyContext

BITS = 16


def _truncate_program(ctx: PartyContext, values: np.ndarray) -> Any:
    """Share the int64 values (alice's input, raw elements) and truncate them by BITS."""
    proto = ctx.protocol
    secret = RING64.from_signed(values) if ctx.me == "alice" else None
    share = proto.input(0, secret)
    opened = proto.open(proto.truncate(share, BITS))
    return None if opened is None else RING64.to_signed(opened).copy()


@pytest.fixture(scope="module")
def additive3() -> Any:
    return local_parties("additive", 3)


def test_values_near_the_limit_are_truncated_exactly_every_time(additive3: Any) -> None:
    top = (1 << 62) - 1
    values = np.array(
        [top, -top - 1, top - 12345, -(1 << 61), 1 << 61, 3, -3, 0] * 250, dtype=np.int64
    )
    got = additive3.run(_truncate_program, values)["bob"].output
    floor = values >> BITS  # floor division for int64
    # floor(x / 2^16) or one less: 2000 values of which ~1/8 to ~1/4 would fail probabilistically
    assert np.all((got == floor) | (got == floor - 1)), got[(got != floor) & (got != floor - 1)]
    assert protocol_is_exact(additive3)


def protocol_is_exact(parties: Any) -> bool:
    outcome = parties.run(lambda ctx: ctx.protocol.exact_truncation())
    return bool(outcome["alice"].output)


def _opened_in_truncation(value: int, size: int) -> np.ndarray:
    """The value bob learns in the truncation round (his share plus the two he receives)."""
    parties = local_parties("additive", 3)
    bob = parties.runners[1]
    sent, received = record_traffic(bob.transport)
    views: list[np.ndarray] = []

    def program(ctx: PartyContext) -> None:
        proto = ctx.protocol
        secret = RING64.from_signed(np.full(size, value)) if ctx.me == "alice" else None
        share = proto.input(0, secret)
        if ctx.me == "bob":
            sent.clear()
            received.clear()
        proto.truncate(share, BITS)
        if ctx.me == "bob":
            (tag,) = received
            total = sent[tag].copy()
            for part in received[tag]:
                total = RING64.add(total, part)
            views.append(total)

    parties.run(program)
    return views[0]


def test_the_opened_value_does_not_depend_on_x() -> None:
    """c = x + 2^62 + r with uniform r: its top bit is a fair coin for x = 0 and x near 2^62,
    and its low bits are uniform too."""
    for value in (0, (1 << 62) - 1, -(1 << 62)):
        opened = _opened_in_truncation(value, 4000)
        tops = np.right_shift(opened, np.uint64(63)).astype(np.float64)
        assert abs(tops.mean() - 0.5) < 0.05  # 4000 fair coins: 6.3 standard deviations
        lows = np.bitwise_and(opened, np.uint64(0xFF)).astype(np.float64)
        assert abs(lows.mean() - 127.5) < 6  # uniform bytes: sd 1.17 for 4000


def test_the_dealer_parts_are_the_mask_split_at_its_top_bit() -> None:
    r = np.array([0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 0x8000_0000_0001_0000], np.uint64)
    low, top = exact_truncation_parts(RING64, r, BITS)
    for value, lo, t in zip(r.tolist(), low.tolist(), top.tolist(), strict=True):
        assert t == value >> 63
        assert lo == -(-(value % (1 << 63)) // (1 << BITS))  # ceil


def test_a_product_up_to_2_to_the_30_is_right_in_every_run(additive3: Any) -> None:
    def program(ctx: PartyContext) -> Any:
        x = ctx.input("alice", np.full(64, 30000.0) if ctx.me == "alice" else None, bound=30000)
        y = ctx.input("bob", np.full(64, -30000.0) if ctx.me == "bob" else None, bound=30000)
        return ctx.reveal((x * y).settle())

    for _ in range(5):
        got = additive3.run(program)["carol"].output
        np.testing.assert_allclose(got, -9e8, rtol=0, atol=2.0**-16)
