"""The seed-compressed dealer: generates correlated randomness from per-party seeds.

Responsibility: hold one PRG seed per party and compute, on request, the correction shares a
party cannot derive itself (see `mpc.dealers.streams`). The same class runs in-process (the
insecure local dealer for tests), inside the trusted-dealer Ray actor, and inside the enclave.
It also deals *noise shares* for differentially private releases (`SeededDealer.noise_share`):
the dealer samples one draw of a named noise mechanism (`mpc.dp.release.sample_noise`, from a
small JSON-able spec: mechanism name and public parameters, never pickled data) with its own
PRG, secret-shares it with the protocol's `SharingScheme.share`, and hands each party its share
once, keyed by (run epoch, counter) like the correlated-randomness streams.
`NoiseDealerClient` is the party side: a `DealerClient` that can also fetch those shares.
Security model: whoever can read this object's memory learns every party's seed and therefore
every triple; it must run where no party can read it. Items are generated on demand, and only for
a rank that receives corrections of that kind (a request from any other rank is refused before
anything is generated); the shares of the other ranks are cached until they fetch them, within
`max_pending_bytes` (oldest dropped first: generation is deterministic in the seeds, so a dropped
item is generated again, identical, if its rank asks). The dealer sees the noise it deals (never the
value it is added to): a dealer that colluded with a party receiving the release would let it
remove the noise. That is the same trust as for triples.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mpc.dealers.base import ALL_NEEDS, Dealer, DealerClient, Fetch, Items
from mpc.dealers.streams import (
    SeededExpander,
    Stream,
    batches_items,
    generate_batch,
    generate_corrections,
    seeded_prefix,
)
from mpc.errors import DealerError
from mpc.protocols.base import Need, SharingScheme
from mpc.rng import Prg, new_seed

#: Key of one dealt noise draw: (run epoch, counter within the run), as streams are keyed.
NoiseKey = tuple[int, int]
#: A party's way to ask the dealer for its noise share: (key, spec) -> share.
NoiseFetch = Callable[[NoiseKey, dict[str, Any]], np.ndarray]
#: Default bound on the bytes of generated shares kept for ranks that have not fetched them, and
#: (apart) on the cached matrices of "mask" items.
MAX_PENDING_BYTES = 256 * 2**20


def _nbytes(shares: Mapping[int, list[np.ndarray]]) -> int:
    return sum(int(a.nbytes) for item in shares.values() for a in item)


class SeededDealer(Dealer):
    """Seed-compressed generation for a given sharing scheme."""

    def __init__(
        self,
        scheme: SharingScheme,
        seeds: list[bytes] | None = None,
        *,
        max_pending_bytes: int = MAX_PENDING_BYTES,
    ) -> None:
        self.scheme = scheme
        self.max_pending_bytes = max_pending_bytes
        self._seeds = seeds if seeds is not None else [new_seed() for _ in range(scheme.n)]
        if len(self._seeds) != scheme.n:
            raise DealerError(f"need one seed per party ({scheme.n}), got {len(self._seeds)}")
        self._expanders = [SeededExpander(scheme.algebra, Prg(s)) for s in self._seeds]
        self._own_prg = Prg(new_seed())  # the dealer's own randomness (noise)
        self._pending: dict[tuple[Stream, int], dict[int, list[np.ndarray]]] = {}
        self._noise: dict[NoiseKey, tuple[str, dict[int, np.ndarray]]] = {}
        #: The A of "mask" items of the current run, for the "masked_matrix" items using it.
        self._masks: dict[tuple[Stream, int], np.ndarray] = {}
        self._pending_bytes = 0
        self._lock = threading.Lock()
        self._latest_epoch = 0
        self.items_generated = 0
        self.noise_draws = 0
        self.bytes_sent = 0

    def seed_for(self, rank: int) -> bytes:
        if not 0 <= rank < self.scheme.n:
            raise DealerError(f"no party of rank {rank} in a {self.scheme.n}-party session")
        return self._seeds[rank]

    def receives_corrections(self, rank: int, stream: Stream) -> bool:
        """Whether party `rank` gets some component of `stream`'s items from the dealer (it
        derives the others, or all of them, from its own seed)."""
        return 0 <= rank < self.scheme.n and any(
            rank >= seeded_prefix(self.scheme, c) for c in stream.components
        )

    def corrections(
        self, rank: int, stream: Stream, start: int, count: int
    ) -> list[list[np.ndarray]]:
        if count < 1 or start < 0:
            raise DealerError(f"bad correction request: start={start}, count={count}")
        if not self.receives_corrections(rank, stream):
            # Checked before anything is generated or cached: a rank that needs no corrections
            # must not make the dealer keep the other ranks' items (memory it never frees).
            raise DealerError(
                f"party rank {rank} does not need corrections of {stream.kind} items (it derives "
                f"them from its seed) in a {self.scheme.n}-party session"
            )
        out: list[list[np.ndarray]] = []
        with self._lock:
            if stream.epoch > self._latest_epoch:
                # Runs are sequential: items of older runs that some rank never fetched (an
                # aborted run) are dropped; generation is deterministic if one is asked again.
                self._latest_epoch = stream.epoch
                self._pending = {
                    k: v for k, v in self._pending.items() if k[0].epoch >= stream.epoch
                }
                self._pending_bytes = sum(_nbytes(v) for v in self._pending.values())
                self._masks = {k: v for k, v in self._masks.items() if k[0].epoch >= stream.epoch}
                for expander in self._expanders:
                    expander.keep_epoch(stream.epoch)
            batch = {}
            if count > 1 and batches_items(stream):
                batch = self._generate_batch(rank, stream, start, count)
            for counter in range(start, start + count):
                mine = batch.get(counter)
                if mine is not None:  # generated just now: the other ranks' shares are cached
                    self.bytes_sent += sum(int(a.nbytes) for a in mine)
                    out.append(mine)
                    continue
                key = (stream, counter)
                pending = self._pending.get(key)
                if pending is None:
                    shares = generate_corrections(
                        self.scheme, self._expanders, stream, counter, self._masks
                    )
                    self.items_generated += 1
                    pending = {r: s for r, s in enumerate(shares) if s}
                    self._pending[key] = pending
                    self._pending_bytes += _nbytes(pending)
                item = pending.pop(rank, None)
                if item is None:
                    raise DealerError(
                        f"party rank {rank} asked twice for, or does not need, corrections of "
                        f"{stream.kind} item {counter}"
                    )
                size = sum(int(a.nbytes) for a in item)
                self._pending_bytes -= size
                if not pending:
                    del self._pending[key]
                self.bytes_sent += size
                out.append(item)
                self._trim(stream)
        return out

    def _generate_batch(
        self, rank: int, stream: Stream, start: int, count: int
    ) -> dict[int, list[np.ndarray]]:
        """Generate the items start..start+count-1 of `stream` that no rank has asked for yet
        at once (`generate_batch`: small element-wise items); return `rank`'s shares of them
        by counter, and cache the other ranks' shares as `corrections` does."""
        mine: dict[int, list[np.ndarray]] = {}
        counter = start
        while counter < start + count:
            if (stream, counter) in self._pending:
                counter += 1
                continue
            end = counter + 1
            while end < start + count and (stream, end) not in self._pending:
                end += 1
            batch = generate_batch(self.scheme, self._expanders, stream, counter, end - counter)
            for k, shares in enumerate(batch):
                mine[counter + k] = shares[rank]
                others = {r: s for r, s in enumerate(shares) if s and r != rank}
                if others:
                    self._pending[(stream, counter + k)] = others
                    self._pending_bytes += _nbytes(others)
            self.items_generated += end - counter
            counter = end
        if mine:
            self._trim(stream)
        return mine

    def _trim(self, stream: Stream) -> None:
        """Drop the oldest cached shares (and mask matrices) beyond `max_pending_bytes`; a
        dropped item is generated again, identical, if its rank asks for it."""
        while self._pending_bytes > self.max_pending_bytes and self._pending:
            oldest = next(iter(self._pending))
            self._pending_bytes -= _nbytes(self._pending.pop(oldest))
        if stream.kind in ("masked_matrix", "masked_trunc"):
            mask_bytes = sum(int(a.nbytes) for a in self._masks.values())
            while mask_bytes > self.max_pending_bytes and self._masks:
                oldest_mask = next(iter(self._masks))
                mask_bytes -= int(self._masks.pop(oldest_mask).nbytes)

    def noise_share(self, rank: int, key: NoiseKey, spec: Mapping[str, Any]) -> np.ndarray:
        """Party `rank`'s share of the noise draw `key` = (run epoch, counter) of `spec`.

        The first request for a key samples the noise with the dealer's own PRG
        (`mpc.dp.release.sample_noise`: int64 units of the value's fixed-point ulp) and shares
        it with the protocol's scheme; every party fetches its share once. All parties must ask
        with the same spec (they compute it from the same public release parameters); a
        different spec, a second request or a bad spec raise `DealerError`. Draws of older runs
        that never completed (a run aborted half-way) are dropped when a newer run asks.
        """
        from mpc.dp.mechanisms import sample_noise  # lazy: mpc.dp imports the program layer

        if not 0 <= rank < self.scheme.n:
            raise DealerError(f"no party of rank {rank} in a {self.scheme.n}-party session")
        if (
            not isinstance(key, tuple)
            or len(key) != 2
            or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in key)
        ):
            raise DealerError(f"a noise key is (run epoch, counter) of ints >= 0, got {key!r}")
        try:
            canonical = json.dumps(dict(spec), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise DealerError(f"the noise spec must be plain JSON data: {exc}") from None
        with self._lock:
            for stale in [k for k in self._noise if k[0] < key[0]]:
                del self._noise[stale]
            entry = self._noise.get(key)
            if entry is None:
                try:
                    noise = sample_noise(json.loads(canonical), self._own_prg)
                except ValueError as exc:
                    raise DealerError(f"bad noise spec: {exc}") from None
                alg = self.scheme.algebra
                shares = self.scheme.share(alg.from_signed(noise), self._own_prg)
                entry = (canonical, dict(enumerate(shares)))
                self._noise[key] = entry
                self.noise_draws += 1
            elif entry[0] != canonical:
                raise DealerError(
                    f"party rank {rank} asked for noise draw {key} with a different spec than "
                    f"another party: the parties disagree about the release"
                )
            share = entry[1].pop(rank, None)
            if share is None:
                raise DealerError(f"party rank {rank} asked twice for noise draw {key}")
            if not entry[1]:
                del self._noise[key]
            self.bytes_sent += int(share.nbytes)
            return share


class NoiseDealerClient(DealerClient):
    """A party's dealer client that can also fetch its share of dealer-sampled noise.

    `noise_share(spec)` keys each request by (run epoch, counter), the counter restarting at
    every run like the correlated-randomness streams, so that the parties of one run, which make
    the same sequence of releases, ask for the same draws.
    """

    def __init__(
        self,
        rank: int,
        seed: bytes,
        scheme: SharingScheme,
        fetch: Fetch,
        fetch_noise: NoiseFetch,
        provides: frozenset[Need] = ALL_NEEDS,
        lookahead_bytes: int = 0,
    ) -> None:
        super().__init__(rank, seed, scheme, fetch, provides, lookahead_bytes=lookahead_bytes)
        self._fetch_noise = fetch_noise
        self._noise_counter = 0
        self.noise_fetches = 0

    def begin_run(self, epoch: int) -> None:
        super().begin_run(epoch)
        self._noise_counter = 0

    def noise_share(self, spec: Mapping[str, Any]) -> np.ndarray:
        """This party's share (algebra elements, shape `spec["shape"]`) of the next noise draw."""
        key = (self.epoch, self._noise_counter)
        self._noise_counter += 1
        try:
            share = self._fetch_noise(key, dict(spec))
        except DealerError:
            raise
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DealerError(f"the dealer failed to provide noise: {first_line}") from exc
        arr = np.asarray(share)
        shape = tuple(int(v) for v in spec.get("shape", ()))
        if arr.shape != shape or arr.dtype != np.uint64:
            raise DealerError(
                f"the dealer sent a noise share of shape {arr.shape} and dtype {arr.dtype}, "
                f"expected {shape} uint64"
            )
        self.noise_fetches += 1
        return arr


def local_noise_client(dealer: SeededDealer, rank: int) -> NoiseDealerClient:
    """The in-process client of party `rank` for an in-process `SeededDealer` (tests, audits):
    corrections and noise shares are plain method calls (generated when the party waits)."""

    def fetch(stream: Stream, start: int, count: int) -> Callable[[], Items]:
        return functools.partial(dealer.corrections, rank, stream, start, count)

    return NoiseDealerClient(
        rank,
        dealer.seed_for(rank),
        dealer.scheme,
        fetch,
        functools.partial(dealer.noise_share, rank),
        provides=dealer.provides,
    )


class InsecureLocalDealer(SeededDealer):
    """The seeded dealer in the parties' own process: every party could read every seed.

    For tests and local experiments only; sessions refuse it unless allow_insecure=True.
    """

    secure = False
