"""The dealer off the critical path (issue 15 item 3): the offline phase `Session.preprocess`,
the dealer client's look-ahead, seeded shares drawn only where used, small items generated in
batches, and the exact truncation of a large vector opened to one party.

Each test can fail: a preprocessed run that still asks the dealer, a look-ahead that asks for
an item too early or not at all, a batch or a lazily drawn share that differs from the
item-by-item one, a truncation that is wrong or shows more than it should.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
from helpers import local_parties, record_traffic

from mpc.algebra import RING64
from mpc.bench import bench_data, check_product
from mpc.dealers.base import LOOKAHEAD_BYTES, DealerClient
from mpc.dealers.seeded import SeededDealer
from mpc.dealers.streams import LazyItem, SeededExpander, Stream, generate_corrections
from mpc.errors import ConfigurationError
from mpc.program import PartyContext
from mpc.protocols.base import Protocol
from mpc.protocols.registry import get_protocol
from mpc.rng import Prg, new_seed
from mpc.session import Session

BITS = 16


def settled_product(ctx: PartyContext, size: int) -> Any:
    """x * y of `size` fixed-point values, truncated at once, revealed to alice."""
    x_value, y_value = bench_data(size)
    x = ctx.input("alice", x_value if ctx.me == "alice" else None, bound=1.0)
    y = ctx.input("bob", y_value if ctx.me == "bob" else None, bound=1.0)
    return ctx.reveal((x * y).settle(), to="alice")


# ---- Session.preprocess ---------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.usefixtures("ray_local")
def test_a_preprocessed_run_asks_the_dealer_for_nothing_and_is_right() -> None:
    size = 1000
    x, y = bench_data(size)
    with Session(["alice", "bob", "carol"], timeout=30) as session:
        check_product(x, y, session.run(settled_product, size)["alice"])
        held = session.preprocess(settled_product, runs=2)
        # additive sharing: only the last party receives corrections, 8 bytes an element for
        # the triple's c and 16 for the exact truncation's r_low and r_top, per run
        assert held == {"alice": 0, "bob": 0, "carol": 2 * 24 * size}
        generated = session.dealer_stats()["items"]
        for _ in range(2):
            check_product(x, y, session.run(settled_product, size)["alice"])
        assert session.dealer_stats()["items"] == generated
        check_product(x, y, session.run(settled_product, size)["alice"])  # nothing prepared
        assert session.dealer_stats()["items"] > generated  # generated on demand again
        with pytest.raises(ConfigurationError, match="run it once first"):
            session.preprocess(test_a_preprocessed_run_asks_the_dealer_for_nothing_and_is_right)
        streams = [(Stream("triple", ((size,),)), 1), (Stream("trunc_exact", ((size,),), BITS), 1)]
        assert session.preprocess(streams)["carol"] == 24 * size
        generated = session.dealer_stats()["items"]
        check_product(x, y, session.run(settled_product, size)["alice"])
        assert session.dealer_stats()["items"] == generated


def test_preprocess_in_process_fetches_everything_before_the_run() -> None:
    with Session(
        ["alice", "bob", "carol"], runtime="local", dealer="local-insecure", allow_insecure=True
    ) as session:
        session.run(settled_product, 300)
        session.preprocess(settled_product)
        clients = session._backend.dealer_clients  # type: ignore[union-attr]
        fetches = sum(c.correction_fetches for c in clients)
        x, y = bench_data(300)
        check_product(x, y, session.run(settled_product, 300)["alice"])
        assert sum(c.correction_fetches for c in clients) == fetches
        with pytest.raises(ConfigurationError, match="runs must be at least 1"):
            session.preprocess(settled_product, runs=0)


# ---- the dealer client's look-ahead ---------------------------------------------------------


def _client(lookahead: int) -> tuple[DealerClient, list[tuple[int, int]]]:
    scheme = get_protocol("additive").make_scheme(3, 2)
    dealer = SeededDealer(scheme)
    requests: list[tuple[int, int]] = []

    def fetch(stream: Stream, start: int, count: int) -> Any:
        requests.append((start, count))
        return functools.partial(dealer.corrections, 2, stream, start, count)

    client = DealerClient(2, dealer.seed_for(2), scheme, fetch, lookahead_bytes=lookahead)
    client.begin_run(1)
    return client, requests


def test_a_large_stream_is_fetched_one_item_ahead_from_its_second_use() -> None:
    shape = (400_000,)  # 1.2e6 elements a triple: beyond the small items' speculation
    client, requests = _client(LOOKAHEAD_BYTES)
    client.triple(shape)
    assert requests == [(0, 1)]  # a single use asks for nothing more
    client.triple(shape)
    assert requests == [(0, 1), (1, 1), (2, 1)]  # its own item, then the next one ahead
    client.triple(shape)
    assert requests == [(0, 1), (1, 1), (2, 1), (3, 1)]  # took the one ahead, asked the next
    plain, requests = _client(0)
    for _ in range(3):
        plain.triple(shape)
    assert requests == [(0, 1), (1, 1), (2, 1)]
    small, requests = _client(8 * 400_000 - 1)  # one item's corrections (c) do not fit
    for _ in range(3):
        small.triple(shape)
    assert requests == [(0, 1), (1, 1), (2, 1)]


def test_items_prefetched_for_a_later_run_survive_the_runs_before_it() -> None:
    client, requests = _client(0)
    later = Stream("triple", ((10,),), 0, 3)
    assert client.prefetch(later, 2) == 2 * 8 * 10
    client.begin_run(2)
    client.begin_run(3)
    client.triple((10,))
    client.triple((10,))
    assert requests == [(0, 2)]


# ---- seeded shares drawn where used, batches of small items -----------------------------


def test_ring_words_drawn_from_an_offset_equal_the_whole_draw() -> None:
    prg = Prg(new_seed())
    whole = prg.ring((1000,), tag=("t", 1))
    for start in (0, 1, 2, 3, 15, 16, 17, 511, 999, 1000):
        for count in (0, 1, 2, 7, 1000 - start):
            if start + count <= 1000:
                part = prg.ring_at(("t", 1), start, count)
                assert np.array_equal(part, whole[start : start + count]), (start, count)


def test_a_large_item_draws_only_the_components_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed = new_seed()
    stream = Stream("triple", ((50_000,),), 0, 4)
    whole = Prg(seed).ring((150_000,), tag=stream.tag(7, "block"))
    drawn: list[tuple[int, int]] = []
    original = Prg.ring_at

    def recording(prg: Prg, tag: Any, start: int, count: int) -> np.ndarray:
        drawn.append((start, count))
        return original(prg, tag, start, count)

    monkeypatch.setattr(Prg, "ring_at", recording)
    item = SeededExpander(RING64, Prg(seed)).item(stream, 7)
    assert isinstance(item, LazyItem) and drawn == []
    assert np.array_equal(item["b"], whole[50_000:100_000])
    assert drawn == [(50_000, 50_000)]  # b alone: not a, not c


@pytest.mark.parametrize(("protocol", "n"), [("additive", 3), ("additive", 2), ("shamir", 5)])
def test_small_items_generated_in_a_batch_equal_those_generated_one_by_one(
    protocol: str, n: int
) -> None:
    cls = get_protocol(protocol)
    scheme = cls.make_scheme(n, cls.check_parties(n, None))
    ring_only = ("trunc_exact", "trunc_triple", "trunc_triple2")
    kinds = [("triple", 0, (3,)), ("trunc", BITS, (2, 2)), ("trunc_exact", BITS, ())]
    kinds += [("trunc_triple", BITS, (1,)), ("trunc_triple2", BITS, (1,))]
    for kind, bits, shape in kinds:
        if kind in ring_only and protocol != "additive":
            continue
        dealer = SeededDealer(scheme)
        stream = Stream(kind, (shape,), bits, 1)
        ranks = [r for r in range(n) if dealer.receives_corrections(r, stream)]
        batched = {r: dealer.corrections(r, stream, 5, 3000) for r in ranks}  # several blocks
        for counter in range(5, 3005):
            one = generate_corrections(scheme, dealer._expanders, stream, counter)
            for r in ranks:
                got = batched[r][counter - 5]
                assert [a.shape for a in got] == [b.shape for b in one[r]]
                assert all(isinstance(a, np.ndarray) for a in got)
                assert all(np.array_equal(a, b) for a, b in zip(got, one[r], strict=True))


# ---- the exact truncation of a large vector ---------------------------------------------


def _truncate_program(
    ctx: PartyContext, values: np.ndarray, recorders: dict[str, Any], views: dict[str, Any]
) -> Any:
    """Truncate alice's raw ring elements by BITS; what each party sent and received during
    the truncation goes to `views` (from its live `recorders`, cleared just before)."""
    proto: Protocol = ctx.protocol
    share = proto.input(0, RING64.from_signed(values) if ctx.me == "alice" else None)
    sent, received = recorders[ctx.me]
    sent.clear()
    received.clear()
    with ctx.channel.operation("truncate"):
        truncated = proto.truncate(share, BITS)
    views[ctx.me] = (dict(sent), dict(received))
    opened = proto.open(truncated)
    return RING64.to_signed(opened).copy() if opened is not None else None


def test_a_large_truncation_is_exact_and_opens_c_to_party_0_alone() -> None:
    parties = local_parties("additive", 3)
    recorders = {r.name: record_traffic(r.transport) for r in parties.runners}
    views: dict[str, Any] = {}
    top = (1 << 62) - 1
    edges = np.array([top, -top - 1, top - 12345, -(1 << 61), 1 << 61, 3, -3, 0], np.int64)
    count = (1 << 20) // 8 + 3  # at least Protocol.split_open_bytes, not a multiple of 8
    values = np.resize(edges, count)
    values[8::3] = np.arange(8, count, 3, dtype=np.int64) * 123456789 - (1 << 61)
    outcome = parties.run(_truncate_program, values, recorders, views)
    got = outcome["bob"].output
    floor = values >> BITS
    assert np.all((got == floor) | (got == floor - 1))
    stats = {name: outcome[name].stats.by_kind["truncate"] for name in ("alice", "bob", "carol")}
    assert all(s.rounds == 2 for s in stats.values())
    # alice receives bob's and carol's shares of c; they receive only c's top bits, packed
    alice_received = [a for arrays in views["alice"][1].values() for a in arrays]
    assert sorted((a.dtype.str, a.shape) for a in alice_received) == [("<u8", (count,))] * 2
    for name in ("bob", "carol"):
        (bits,) = [a for arrays in views[name][1].values() for a in arrays]
        assert bits.dtype == np.uint8 and bits.shape == ((count + 7) // 8,)
        assert stats[name].bytes_sent < 8 * count + 4096  # one share of c
    assert stats["alice"].bytes_sent < 2 * (count + 7) // 8 + 4096  # the bits only


def test_the_top_bits_the_others_learn_are_fair_coins_whatever_x_is() -> None:
    parties = local_parties("additive", 3)
    recorders = {r.name: record_traffic(r.transport) for r in parties.runners}
    views: dict[str, Any] = {}
    count = (1 << 20) // 8
    for value in (0, (1 << 62) - 1, -(1 << 62)):
        parties.run(_truncate_program, np.full(count, value, np.int64), recorders, views)
        (bits,) = [a for arrays in views["carol"][1].values() for a in arrays]
        tops = np.unpackbits(bits, count=count).astype(np.float64)
        assert abs(tops.mean() - 0.5) < 0.01  # sd 0.0014 for 131072 fair coins
