"""Dealer interface: the service that hands out correlated randomness, and its party-side client.

Responsibility: `Dealer` is what a session talks to (seeds at set-up, correction shares on
demand); `DealerClient` is a party's view of it (`CorrelatedRandomness`): it expands the party's
own seed and fetches only the correction shares it cannot derive, in batches that grow
geometrically so that a chain of small operations does not pay one dealer call each; for small
items the next batch is requested as soon as one arrives, and for large ones (with
`lookahead_bytes`) from a stream's second use on, so that dealer generation and transfer
overlap the party's own work. `prefetch` fetches items ahead of a run (the offline phase,
`mpc.session.Session.preprocess`).
Security model: see `mpc.dealers.streams`. A dealer declares `secure`: False means it runs where a
party can read its state (tests only); sessions refuse such a dealer unless the caller passes an
explicit allow-insecure flag.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable

import numpy as np

from mpc.dealers.streams import SeededExpander, Stream, seeded_prefix
from mpc.errors import DealerError
from mpc.protocols.base import ComparisonMask, Need, Shape, SharingScheme
from mpc.rng import Prg

ALL_NEEDS = frozenset(Need)

Items = list[list[np.ndarray]]
#: Ask the dealer for corrections (stream, start, count); returns a function that waits for them.
Fetch = Callable[[Stream, int, int], Callable[[], Items]]
#: Small items are fetched one batch ahead, so the dealer works while the party computes.
SPECULATE_MAX_ELEMENTS = 1 << 20
#: With a dealer in another process (the session's dealer actor), larger items are fetched one
#: batch ahead too, from a stream's second use in a run on, if the batch's corrections for this
#: party take at most this many bytes: the memory a party may hold ahead, per stream.
LOOKAHEAD_BYTES = 64 << 20


class Dealer(ABC):
    """The dealer service for one session."""

    #: False for a dealer that runs where a party can read its state.
    secure: bool = False
    provides: frozenset[Need] = ALL_NEEDS

    @abstractmethod
    def seed_for(self, rank: int) -> bytes:
        """The PRG seed of party `rank` (given to that party only, once)."""

    @abstractmethod
    def corrections(
        self, rank: int, stream: Stream, start: int, count: int
    ) -> list[list[np.ndarray]]:
        """Correction shares of party `rank` for items start..start+count-1 of `stream`."""


def most_used(usage: list[tuple[Stream, int]]) -> list[tuple[Stream, int]]:
    """Per stream (whatever its run), the largest count in `usage`: what a run of the parties
    whose usage this lists took from the dealer (every party takes every item of an SPMD
    program, but only some fetch corrections for it)."""
    most: dict[Stream, int] = {}
    for stream, count in usage:
        key = stream.in_epoch(0)
        most[key] = max(most.get(key, 0), count)
    return list(most.items())


class DealerClient:
    """One party's access to the dealer (implements `CorrelatedRandomness`)."""

    def __init__(
        self,
        rank: int,
        seed: bytes,
        scheme: SharingScheme,
        fetch: Fetch,
        provides: frozenset[Need] = ALL_NEEDS,
        max_batch_elements: int = 1 << 21,
        lookahead_bytes: int = 0,
    ) -> None:
        self.rank = rank
        #: Fetch a batch ahead whose corrections for this party take at most this many bytes
        #: (0: only small items, `SPECULATE_MAX_ELEMENTS`): worth it where the dealer works in
        #: another process or machine, pointless where `fetch` generates when waited for.
        self.lookahead_bytes = lookahead_bytes
        self.scheme = scheme
        self._expander = SeededExpander(scheme.algebra, Prg(seed))
        self._fetch = fetch
        self._provides = provides
        self._max_batch_elements = max_batch_elements
        self._counters: dict[Stream, int] = {}
        self._fetched_until: dict[Stream, int] = {}
        self._batch: dict[Stream, int] = {}
        self._cache: dict[Stream, deque[list[np.ndarray]]] = {}
        self._ahead: dict[Stream, tuple[int, int, Callable[[], Items]]] = {}
        self._plans: dict[Stream, tuple[bool, ...]] = {}
        self._streams: dict[tuple[str, tuple[Shape, ...], int], Stream] = {}
        self.items_used = 0
        self.correction_fetches = 0
        self.epoch = 0

    def begin_run(self, epoch: int) -> None:
        """Start the items of run `epoch` (counters from 0); drop earlier runs' leftovers (the
        items prefetched for later runs stay)."""
        self.epoch = epoch
        self._expander.keep_epoch(epoch)
        tables = (
            self._counters,
            self._fetched_until,
            self._batch,
            self._cache,
            self._ahead,
            self._plans,
        )
        for table in tables:
            for stream in [s for s in table if s.epoch < epoch]:
                del table[stream]

    @property
    def provides(self) -> frozenset[Need]:
        return self._provides

    def _own_components(self, stream: Stream) -> tuple[bool, ...]:
        """Per component of `stream`: True if this party draws it from its seed, False if
        the dealer sends it (cached: this is on the path of every small operation)."""
        plan = self._plans.get(stream)
        if plan is None:
            plan = tuple(self.rank < seeded_prefix(self.scheme, c) for c in stream.components)
            self._plans[stream] = plan
        return plan

    def _needs_corrections(self, stream: Stream) -> bool:
        return not all(self._own_components(stream))

    def prefetch(self, stream: Stream, count: int) -> int:
        """Fetch the corrections of the next `count` items of `stream` now (offline phase);
        return the bytes of corrections this party then holds for `stream` (0 for a party that
        derives all of its shares from its seed: it fetches nothing).

        `stream.epoch` names the run that will use them (see `begin_run`).
        """
        if not self._needs_corrections(stream):
            return 0
        ahead = self._ahead.pop(stream, None)
        if ahead is not None:
            self._store(stream, *ahead)
        start = self._fetched_until.get(stream, self._counters.get(stream, 0))
        self._store(stream, start, count, self._fetch(stream, start, count))
        return sum(int(a.nbytes) for item in self._cache[stream] for a in item)

    def usage(self) -> dict[Stream, int]:
        """The items of each stream the current (or last) run has taken so far."""
        return {s: n for s, n in self._counters.items() if s.epoch == self.epoch}

    def _correction_bytes(self, stream: Stream) -> int:
        """Bytes of the corrections this party receives for one item of `stream`."""
        own = self._own_components(stream)
        return 8 * sum(
            int(np.prod(stream.component_shape(c), dtype=np.int64))
            for c, mine in zip(stream.components, own, strict=True)
            if not mine
        )

    def _store(self, stream: Stream, start: int, count: int, wait: Callable[[], Items]) -> None:
        try:
            items = wait()
        except DealerError:
            raise
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DealerError(
                f"the dealer failed to provide {stream.kind} items: {first_line}"
            ) from exc
        if len(items) != count:
            raise DealerError(f"the dealer sent {len(items)} {stream.kind} items, expected {count}")
        self.correction_fetches += 1
        self._cache.setdefault(stream, deque()).extend(items)
        self._fetched_until[stream] = start + count

    def _take(self, stream: Stream) -> list[np.ndarray]:
        if stream.need not in self._provides:
            raise DealerError(f"this dealer does not provide {stream.need.value}")
        counter = self._counters.get(stream, 0)
        self._counters[stream] = counter + 1
        self.items_used += 1
        corrections: deque[np.ndarray] = deque()
        if self._needs_corrections(stream):
            cache = self._cache.get(stream)
            if not cache:
                self._refill(stream, counter)
                cache = self._cache[stream]
            corrections.extend(cache.popleft())
        seeded = self._expander.item(stream, counter)
        return [
            seeded[component] if own else corrections.popleft()
            for component, own in zip(stream.components, self._own_components(stream), strict=True)
        ]

    def _next_batch(self, stream: Stream) -> int:
        cap = max(1, self._max_batch_elements // max(1, stream.item_elements()))
        batch = min(cap, self._batch.get(stream, 1))
        self._batch[stream] = min(cap, batch * 2)
        return batch

    def _refill(self, stream: Stream, counter: int) -> None:
        ahead = self._ahead.pop(stream, None)
        if ahead is not None:
            self._store(stream, *ahead)
        else:
            batch = self._next_batch(stream)
            self._store(stream, counter, batch, self._fetch(stream, counter, batch))
        batch = self._next_batch(stream)
        if batch * stream.item_elements() <= SPECULATE_MAX_ELEMENTS or (
            counter > 0 and batch * self._correction_bytes(stream) <= self.lookahead_bytes
        ):
            start = self._fetched_until[stream]
            self._ahead[stream] = (start, batch, self._fetch(stream, start, batch))

    # ---- CorrelatedRandomness ---------------------------------------------------------------
    def _stream(self, kind: str, shapes: tuple[Shape, ...], bits: int = 0) -> Stream:
        """The one Stream object of this run for (kind, shapes, bits): dictionary lookups by an
        identical object skip the field-by-field comparison."""
        key = (kind, shapes, bits)
        stream = self._streams.get(key)
        if stream is None or stream.epoch != self.epoch:
            stream = Stream(kind, shapes, bits, self.epoch)
            self._streams[key] = stream
        return stream

    def triple(self, shape: Shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, b, c = self._take(self._stream("triple", (shape,)))
        return a, b, c

    def matrix_triple(
        self, shape_x: Shape, shape_y: Shape
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, b, c = self._take(self._stream("matrix", (shape_x, shape_y)))
        return a, b, c

    def matrix_mask(self, shape: Shape) -> tuple[np.ndarray, int]:
        stream = Stream("mask", (shape,), 0, self.epoch)
        (a,) = self._take(stream)
        return a, self._counters[stream] - 1

    def masked_matrix_triple(
        self, shape_a: Shape, shape_y: Shape, transposed: bool, mask: int
    ) -> tuple[np.ndarray, np.ndarray]:
        b, c = self._take(
            Stream("masked_matrix", (shape_a, shape_y), int(transposed), self.epoch, mask)
        )
        return b, c

    def masked_truncating_triple(
        self, shape_a: Shape, shape_y: Shape, transposed: bool, mask: int, bits: int
    ) -> tuple[np.ndarray, ...]:
        stream = Stream(
            "masked_trunc", (shape_a, shape_y), (bits << 1) | int(transposed), self.epoch, mask
        )
        return tuple(self._take(stream))

    def truncation_pair(self, shape: Shape, bits: int) -> tuple[np.ndarray, np.ndarray]:
        r, r_shifted = self._take(self._stream("trunc", (shape,), bits))
        return r, r_shifted

    def exact_truncation_mask(
        self, shape: Shape, bits: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r, r_low, r_top = self._take(self._stream("trunc_exact", (shape,), bits))
        return r, r_low, r_top

    def truncating_triple(self, shape: Shape, bits: int, both: bool) -> tuple[np.ndarray, ...]:
        kind = "trunc_triple2" if both else "trunc_triple"
        return tuple(self._take(self._stream(kind, (shape,), bits)))

    def comparison_mask(self, shape: Shape, bits: int, wide: bool = False) -> ComparisonMask:
        stream = self._stream("compare_wide" if wide else "compare", (shape,), bits)
        return ComparisonMask(**dict(zip(stream.components, self._take(stream), strict=True)))
