"""Denial-of-service bounds of the dealer service `mpc.federation.dealer_service` and of the
seeded dealer's cache (`mpc.dealers.seeded`).

In-process, loopback only: most tests call `DealerService.handle` as its server does (with the
name the channel authenticated); the enclave and message-size tests go over the network.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mpc.dealers.seeded import SeededDealer
from mpc.dealers.streams import Stream
from mpc.errors import CommunicationError, DealerError
from mpc.federation import dealer_service
from mpc.federation.dealer_service import MAX_REQUEST_BYTES, DealerService
from mpc.federation.example import Host, write_deployment
from mpc.federation.policy import DealerPolicy
from mpc.federation.secure_rpc import RemoteError, SecureClient
from mpc.parties.keys import PartyKey
from mpc.protocols.registry import get_protocol
from tests.federation_helpers import free_ports

NAMES = ("east", "north", "south")  # ranks 0, 1, 2; with additive sharing only south gets
SOUTH = 2  # corrections (the last rank)


@contextlib.contextmanager
def dealer(
    tmp_path: Path, *, enclave: bool = False, start: bool = False, **limits: int
) -> Iterator[tuple[DealerService, dict[str, PartyKey]]]:
    """A dealer service from a policy written by `write_deployment` (its [dealer] table extended
    with `enclave = "simulated"` and `limits`), and the parties' keys."""
    ports = free_ports(2 * len(NAMES) + 1)
    hosts = {n: Host("127.0.0.1", ports[2 * i], ports[2 * i + 1]) for i, n in enumerate(NAMES)}
    protocol = {"dealer": "enclave"} if enclave else None
    paths = write_deployment(tmp_path, hosts, Host("127.0.0.1", ports[-1]), [], protocol=protocol)
    extra = "".join(f"{k} = {v}\n" for k, v in limits.items())
    if enclave:
        extra += 'enclave = "simulated"\n'
    text = paths["dealer"].read_text()
    paths["dealer"].write_text(text.replace("[dealer]\n", "[dealer]\n" + extra, 1))
    service = DealerService(DealerPolicy.load(paths["dealer"]))
    keys = {n: PartyKey.load(tmp_path / n / f"{n}.key") for n in NAMES}
    try:
        if start:
            service.start()
        yield service, keys
    finally:
        service.close()


def open_run(service: DealerService, *who: str) -> bytes:
    nonce = secrets.token_bytes(dealer_service.NONCE_BYTES)
    for party in who or NAMES:
        reopen(service, party, nonce)
    return nonce


def reopen(service: DealerService, party: str, nonce: bytes) -> dict[str, Any]:
    params = {"run": nonce, "parties": list(NAMES), "settings": service.policy.settings.describe()}
    return service.handle(party, "open", params)


def corrections(
    service: DealerService, party: str, nonce: bytes, stream: Stream, start: int, count: int
) -> list[list[np.ndarray]]:
    params = {"run": nonce, "stream": list(stream.to_wire()), "start": start, "count": count}
    items: list[list[np.ndarray]] = service.handle(party, "corrections", params)["items"]
    return items


def client(service: DealerService, party: str, key: PartyKey) -> SecureClient:
    address = (service.policy.host, service.policy.port)
    return SecureClient(party, key, "dealer", service.key.public_bytes, address, timeout=10.0)


# ---- D1: what a request really costs ------------------------------------------------------


def test_a_matrix_stream_counts_the_elements_of_its_product(tmp_path: Path) -> None:
    n = 500  # declared shapes [n, 1] x [1, n]: 2n = max_items elements, but C has n * n
    with dealer(tmp_path, max_items=2 * n) as (service, _):
        nonce = open_run(service)
        outer = Stream("matrix", ((n, 1), (1, n)))
        with pytest.raises(DealerError, match=r"request for 251000 elements exceeds .* 1000"):
            corrections(service, "south", nonce, outer, 0, 1)
        # Every component counts (as at least one element): empty items are not free either.
        with pytest.raises(DealerError, match="exceeds"):
            corrections(service, "south", nonce, Stream("triple", ((0,),)), 0, 10**4)
        with pytest.raises(DealerError, match="malformed matrix stream shapes"):
            corrections(service, "south", nonce, Stream("matrix", ((2, 3), (4, 5))), 0, 1)
        # What fits is dealt: 3 items of A, B (10 x 10) and C = A @ B, 900 elements (south
        # gets its share of C; it draws those of A and B from its seed).
        small = Stream("matrix", ((10, 10), (10, 10)))
        items = corrections(service, "south", nonce, small, 0, 3)
        assert [[a.shape for a in item] for item in items] == [[(10, 10)]] * 3
        assert service._item_elements(small) == 300
        assert service.server.max_response >= 8 * service.policy.max_items


def test_the_requests_of_one_run_are_bounded_in_all(tmp_path: Path) -> None:
    with dealer(tmp_path, max_items=1000) as (service, _):
        nonce = open_run(service)
        triples = Stream("triple", ((100,),))  # 300 elements an item, 900 a request
        for k in range(64000 // 900):
            corrections(service, "south", nonce, triples, 3 * k, 3)
        with pytest.raises(DealerError, match="more than 64000 elements in all"):
            corrections(service, "south", nonce, triples, 3 * 71, 3)
        assert service.max_run_items == dealer_service.RUN_ITEMS_FACTOR * 1000 == 64000
        # Another run has its own budget.
        other = open_run(service)
        assert len(corrections(service, "south", other, triples, 0, 3)) == 3


# ---- D2: nothing generated or cached for a rank that does not need it ----------------------


def test_a_rank_that_needs_no_corrections_makes_the_dealer_generate_nothing() -> None:
    scheme = get_protocol("additive").make_scheme(3, 1)
    seeded = SeededDealer(scheme)
    big = Stream("matrix", ((128, 128), (128, 128)))
    for counter in range(20):
        for rank in (0, 1):
            with pytest.raises(DealerError, match=f"rank {rank} .*does not need"):
                seeded.corrections(rank, big, counter, 1)
    assert seeded.items_generated == 0
    assert seeded._pending == {}
    with pytest.raises(DealerError, match="does not need"):
        seeded.corrections(3, big, 0, 1)  # no such rank
    # The rank that does need them is served, and nothing stays behind.
    (item,) = seeded.corrections(SOUTH, big, 0, 1)
    assert [a.shape for a in item] == [(128, 128)]
    assert seeded.items_generated == 1 and seeded._pending == {}


def test_the_cache_of_items_other_ranks_have_not_fetched_is_bounded() -> None:
    scheme = get_protocol("shamir").make_scheme(3, 1)  # ranks 1 and 2 get corrections
    assert all(scheme.seeded_prefix(f) < 3 for f in (False, True))
    seeds = [secrets.token_bytes(32) for _ in range(3)]
    bounded = SeededDealer(scheme, list(seeds), max_pending_bytes=64 * 2**10)
    reference = SeededDealer(scheme, list(seeds))
    triples = Stream("triple", ((1000,),))
    for k in range(50):  # rank 2 runs far ahead of rank 1
        bounded.corrections(2, triples, k, 1)
        reference.corrections(2, triples, k, 1)
        assert bounded._pending_bytes <= 64 * 2**10
    assert reference._pending_bytes == 50 * 8000
    # Dropped items are generated again when rank 1 asks, identical to the ones never dropped.
    got = bounded.corrections(1, triples, 0, 50)
    want = reference.corrections(1, triples, 0, 50)
    for mine, theirs in zip(got, want, strict=True):
        for a, b in zip(mine, theirs, strict=True):
            np.testing.assert_array_equal(a, b)
    assert bounded.items_generated > 50 == reference.items_generated


# ---- D3: a party cannot push out the runs of the others ------------------------------------


def test_one_party_opening_many_runs_does_not_evict_a_run_of_the_others(tmp_path: Path) -> None:
    with dealer(tmp_path, max_runs=2) as (service, _):
        honest = open_run(service)  # every party opened it
        # north opens run after run (each one ends its previous one for north) ...
        floods = [open_run(service, "north") for _ in range(20)]
        assert len(service._runs) == 2  # `honest` and north's latest
        # ... but the run the others are in goes on: south still gets its corrections, ...
        triples = Stream("triple", ((4,),))
        assert len(corrections(service, "south", honest, triples, 0, 2)) == 2
        with pytest.raises(DealerError, match="unknown run"):
            corrections(service, "north", honest, triples, 0, 1)  # north left it
        with pytest.raises(DealerError, match="unknown run"):
            service.handle("north", "seed", {"run": floods[0]})  # and its own earlier floods
        assert isinstance(service.handle("north", "seed", {"run": floods[-1]})["seed"], bytes)
    # With room for a run per party, a run that only some parties have opened yet stays too.
    with dealer(tmp_path / "second", max_runs=len(NAMES)) as (service, _):
        partial = open_run(service, "east")
        for _ in range(20):
            open_run(service, "north")
        assert reopen(service, "south", partial)["rank"] == SOUTH
        assert isinstance(service.handle("south", "seed", {"run": partial})["seed"], bytes)
        # A party that closes a run early (it failed) leaves it to those that have not opened
        # it yet; it goes when every party has closed it.
        service.handle("east", "close", {"run": partial})
        assert reopen(service, "north", partial)["rank"] == 1
        for party in ("north", "south"):
            service.handle(party, "close", {"run": partial})
        assert partial not in service._runs


def test_a_full_dealer_refuses_a_new_run_instead_of_evicting_an_opened_one(
    tmp_path: Path,
) -> None:
    with dealer(tmp_path, max_runs=1) as (service, _):
        honest = open_run(service)
        with pytest.raises(DealerError, match="already serves 1 runs"):
            open_run(service, "east")  # east leaves `honest` for it, but the others are in it
        triples = Stream("triple", ((4,),))
        assert len(corrections(service, "south", honest, triples, 0, 1)) == 1


def test_remembered_nonces_are_bounded_and_a_forgotten_one_gets_fresh_seeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dealer_service, "MAX_SEEN_NONCES", 4)
    with dealer(tmp_path) as (service, _):
        first = open_run(service, "east")
        seed = service.handle("east", "seed", {"run": first})["seed"]
        nonces = [open_run(service, "east")]  # ends `first` for east; no one uses it: dropped
        with pytest.raises(DealerError, match="replay"):
            reopen(service, "north", first)
        nonces += [open_run(service, "east") for _ in range(10)]
        assert len(service._seen) == 4
        with pytest.raises(DealerError, match="replay"):
            reopen(service, "north", nonces[-2])  # dropped, still remembered
        # Forgotten: it opens as a new run, whose seeds are fresh (never the old run's).
        assert reopen(service, "north", first)["rank"] == 1
        assert service.handle("north", "seed", {"run": first})["seed"] != seed
        assert reopen(service, "east", first)["rank"] == 0
        assert service.handle("east", "seed", {"run": first})["seed"] != seed


# ---- D4: the enclave seed of another rank --------------------------------------------------


def test_a_party_cannot_ask_for_the_enclave_seed_of_another_rank(tmp_path: Path) -> None:
    from mpc.tee import SeedHandshake
    from mpc.tee.channel import SeedRequest
    from mpc.tee.verify import policy_for_dealer

    with dealer(tmp_path, enclave=True, start=True) as (service, keys):
        nonce = secrets.token_bytes(dealer_service.NONCE_BYTES)
        with (
            client(service, "east", keys["east"]) as east,
            client(service, "north", keys["north"]) as north,
        ):
            for c in (east, north):
                settings = service.policy.settings.describe()
                c.call("open", {"run": nonce, "parties": list(NAMES), "settings": settings})
            # north asks for east's seed (east's public key is public): refused, nothing used up.
            stolen = SeedRequest(
                rank=0,
                session_id=nonce,
                nonce=secrets.token_bytes(32),
                party_ephemeral_public=PartyKey.generate().public_bytes,
                party_static_public=keys["east"].public_bytes,
            )
            message = re.escape(
                "party 'north' (rank 1) asked for the enclave seed of rank 0 ('east')"
            )
            with pytest.raises(RemoteError, match=message):
                north.call("attested_seed", {"run": nonce, "request": stolen.to_bytes()})
            with pytest.raises(RemoteError, match="malformed enclave seed request"):
                north.call("attested_seed", {"run": nonce, "request": b"\x93\x01\x02\x03"})
            # east still gets its own seed, attested by the simulated enclave.
            handshake = SeedHandshake(0, nonce, keys["east"])
            answer = east.call(
                "attested_seed", {"run": nonce, "request": handshake.request_bytes()}
            )
            policy = policy_for_dealer(
                service.policy.settings.protocol,
                len(NAMES),
                service.threshold,
                trusted_platform_keys=[service.platform_key],
                allow_simulated=True,
                allow_debug=True,
            )
            seed = handshake.finish(answer["answer"], policy).seed
            assert seed == service._runs[nonce].dealer.seed_for(0)
            # and north its own.
            mine = SeedHandshake(1, nonce, keys["north"])
            assert north.call("attested_seed", {"run": nonce, "request": mine.request_bytes()})


# ---- R1: request and response sizes --------------------------------------------------------


def test_the_dealer_reads_small_requests_and_sends_responses_sized_to_max_items(
    tmp_path: Path,
) -> None:
    with dealer(tmp_path, start=True, max_items=1 << 20) as (service, keys):
        assert service.server.max_message == MAX_REQUEST_BYTES == 2**20
        with (
            client(service, "south", keys["south"]) as south,
            pytest.raises(CommunicationError),
        ):
            south.call("open", {"run": b"x" * (MAX_REQUEST_BYTES + 100)})
        nonce = open_run(service, "east", "north")
        with client(service, "south", keys["south"]) as south:
            settings = service.policy.settings.describe()
            south.call("open", {"run": nonce, "parties": list(NAMES), "settings": settings})
            stream = Stream("matrix", ((400, 400), (400, 400)))  # C alone is 1.28 MB
            params = {"run": nonce, "stream": list(stream.to_wire()), "start": 0, "count": 1}
            (item,) = south.call("corrections", params)["items"]
            assert [a.shape for a in item] == [(400, 400)]
