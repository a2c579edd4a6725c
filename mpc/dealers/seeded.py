"""The seed-compressed dealer: generates correlated randomness from per-party seeds.

Responsibility: hold one PRG seed per party and compute, on request, the correction shares a
party cannot derive itself (see `mpc.dealers.streams`). The same class runs in-process (the
insecure local dealer for tests), inside the trusted-dealer Ray actor, and inside the enclave.
Security model: whoever can read this object's memory learns every party's seed and therefore
every triple; it must run where no party can read it. Items are generated on demand, cached only
until the party they belong to has fetched them.
"""

from __future__ import annotations

import threading

import numpy as np

from mpc.dealers.base import Dealer
from mpc.dealers.streams import SeededExpander, Stream, generate_corrections
from mpc.errors import DealerError
from mpc.protocols.base import SharingScheme
from mpc.rng import Prg, new_seed


class SeededDealer(Dealer):
    """Seed-compressed generation for a given sharing scheme."""

    def __init__(self, scheme: SharingScheme, seeds: list[bytes] | None = None) -> None:
        self.scheme = scheme
        self._seeds = seeds if seeds is not None else [new_seed() for _ in range(scheme.n)]
        if len(self._seeds) != scheme.n:
            raise DealerError(f"need one seed per party ({scheme.n}), got {len(self._seeds)}")
        self._expanders = [SeededExpander(scheme.algebra, Prg(s)) for s in self._seeds]
        self._own_prg = Prg(new_seed())  # the dealer's own randomness (random bits)
        self._pending: dict[tuple[Stream, int], dict[int, list[np.ndarray]]] = {}
        self._lock = threading.Lock()
        self.items_generated = 0
        self.bytes_sent = 0

    def seed_for(self, rank: int) -> bytes:
        if not 0 <= rank < self.scheme.n:
            raise DealerError(f"no party of rank {rank} in a {self.scheme.n}-party session")
        return self._seeds[rank]

    def corrections(
        self, rank: int, stream: Stream, start: int, count: int
    ) -> list[list[np.ndarray]]:
        if count < 1 or start < 0:
            raise DealerError(f"bad correction request: start={start}, count={count}")
        out: list[list[np.ndarray]] = []
        with self._lock:
            for counter in range(start, start + count):
                key = (stream, counter)
                pending = self._pending.get(key)
                if pending is None:
                    shares = generate_corrections(
                        self.scheme, self._expanders, stream, counter, self._own_prg
                    )
                    self.items_generated += 1
                    pending = {r: s for r, s in enumerate(shares) if s}
                    self._pending[key] = pending
                item = pending.pop(rank, None)
                if item is None:
                    raise DealerError(
                        f"party rank {rank} asked twice for, or does not need, corrections of "
                        f"{stream.kind} item {counter}"
                    )
                if not pending:
                    del self._pending[key]
                self.bytes_sent += sum(int(a.nbytes) for a in item)
                out.append(item)
        return out


class InsecureLocalDealer(SeededDealer):
    """The seeded dealer in the parties' own process: every party could read every seed.

    For tests and local experiments only; sessions refuse it unless allow_insecure=True.
    """

    secure = False
