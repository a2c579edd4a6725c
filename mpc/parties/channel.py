"""Party channel: deterministic message tags, rounds and cost counters over a transport.

Responsibility: give protocols `exchange` (one round) with tags (run id, op counter, round)
that every party derives identically from the same program, and record rounds, bytes sent and
time per operation kind. The operation in progress is remembered so that a failure can name it.
Security model: tags are not secret; they only let the mailbox match messages. Authentication of
what arrives is the transport's job.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np

from mpc.parties.transport import Transport
from mpc.stats import PartyStats


def contiguous(a: np.ndarray) -> np.ndarray:
    """`a` as a C-contiguous array of the same shape (0-d stays 0-d); copies only if needed."""
    arr = np.asarray(a)
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


class PartyChannel:
    """One party's view of the network for one run."""

    def __init__(self, transport: Transport, run_id: int, timeout: float) -> None:
        self.transport = transport
        self.run_id = run_id
        self.timeout = timeout
        self.stats = PartyStats()
        self._op = 0
        self._round = 0
        self._depth = 0
        self._kind = "setup"
        self._numbered = False

    @property
    def rank(self) -> int:
        return self.transport.rank

    @property
    def n(self) -> int:
        return self.transport.n

    @property
    def current_operation(self) -> str:
        """Name of the operation in progress, e.g. 'mul #12', for error messages."""
        return f"{self._kind} #{self._op}" if self._numbered else f"{self._kind} (local)"

    @contextmanager
    def operation(self, kind: str, own_stats: bool = False) -> Iterator[None]:
        """Scope one (possibly nested) operation; the outermost one is counted under `kind`.

        With `own_stats`, a nested operation counts its rounds, bytes and time under its own
        `kind` (e.g. a deferred truncation that some other operation triggers; its time is also
        part of the enclosing operation's); the message tags are the same either way.
        """
        if self._depth and own_stats and kind != self._kind:
            outer = self._kind
            self._kind = kind
            stats = self.stats.kind(kind)
            start = time.perf_counter()
            try:
                yield
            finally:
                self._kind = outer
                stats.calls += 1
                stats.seconds += time.perf_counter() - start
            return
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        # The op number is taken at the operation's first message, so that operations that
        # turn out to be local never shift the tags. (Which operations are local can depend on
        # the data's state, e.g. a product whose truncation is pending: programs run the same
        # operations at every party.)
        self._numbered = False
        self._round = 0
        self._kind = kind
        self._depth = 1
        stats = self.stats.kind(kind)
        start = time.perf_counter()
        try:
            yield
        finally:
            self._depth = 0
            stats.calls += 1
            stats.seconds += time.perf_counter() - start

    def exchange(
        self, outgoing: Mapping[int, np.ndarray], expect: Iterable[int]
    ) -> dict[int, np.ndarray]:
        if not self._depth:
            with self.operation("comm"):
                return self.exchange(outgoing, expect)
        if not self._numbered:
            self._op += 1
            self._numbered = True
        tag = (self.run_id, self._op, self._round)
        self._round += 1
        stats = self.stats.kind(self._kind)
        stats.rounds += 1
        received, sent = self.transport.exchange(
            tag, {to: contiguous(array) for to, array in outgoing.items()}, expect, self.timeout
        )
        stats.bytes_sent += sent
        return received
