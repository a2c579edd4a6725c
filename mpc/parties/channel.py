"""Party channel: deterministic message tags, rounds and cost counters over a transport.

Responsibility: give protocols `exchange` (one round) with tags (run id, op counter, round)
that every party derives identically from the same program, and record rounds, bytes sent and
time per operation kind. Every message carries a short label of its operation (its kind, and the
operand shapes when the caller declares them), so that parties that run different operations at
the same point (a branch on `ctx.me`) fail at once with a `DivergenceError` naming both
operations, also when a peer has already ended its program (`finish`). The operation in progress
is remembered, and the one an exception escaped from, so that a failure can name it.
Security model: tags and labels are not secret (kinds and public shapes); they only let the
mailbox match messages. A peer's label is checked by the transport (short, printable ASCII) and
quoted, never interpreted. Authentication of what arrives is the transport's job.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np

from mpc.errors import CommunicationError, DivergenceError
from mpc.parties.framing import MAX_LABEL_BYTES
from mpc.parties.mailbox import END_LABEL, END_OP
from mpc.parties.transport import Transport
from mpc.stats import PartyStats

#: Op number of the end-of-program message (`finish`); real operations count from 1.


def contiguous(a: np.ndarray) -> np.ndarray:
    """`a` as a C-contiguous array of the same shape (0-d stays 0-d); copies only if needed."""
    arr = np.asarray(a)
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def printable_ascii(text: str, limit: int = MAX_LABEL_BYTES) -> str:
    """`text` cut to `limit` characters, each outside printable ASCII replaced by '?'."""
    return "".join(c if " " <= c <= "~" else "?" for c in text[:limit])


#: What an operation label of this runtime looks like: a kind, then its operands' shapes.
_OPERATION = re.compile(r"[a-z_.]+( \((\d+, ?)*\d*\))*")


def operation_label(kind: str, shapes: Sequence[Sequence[int]] = ()) -> str:
    """The label messages of operation `kind` carry: e.g. 'mul (3,) (3,)' (printable ASCII, at
    most `MAX_LABEL_BYTES` characters; other characters become '?')."""
    text = kind
    if shapes:
        text += " " + " ".join(str(tuple(int(d) for d in s)) for s in shapes)
    return printable_ascii(text) or "?"


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
        self._outer = "setup"  # the kind of the outermost operation in progress
        self._shapes: Sequence[Sequence[int]] = ()
        self._label: str | None = None  # computed at the operation's first message
        self._numbered = False
        self._last = ""  # e.g. 'mul #12': the last operation that sent or received
        self._failure: tuple[BaseException, str] | None = None
        self._sent: dict[int, int] = {}  # messages sent to each peer in this run

    @property
    def rank(self) -> int:
        return self.transport.rank

    @property
    def n(self) -> int:
        return self.transport.n

    @property
    def current_operation(self) -> str:
        """Name of the operation in progress, e.g. 'mul #12', or 'linear (local, after
        mul #12)' for one that sent nothing (yet), for error messages."""
        if self._numbered:
            return f"{self._kind} #{self._op}"
        return self.local_label(self._kind)

    @property
    def last_operation(self) -> str:
        """The last operation that sent or received, e.g. 'mul #12' ('' before any)."""
        return self._last

    def local_label(self, what: str) -> str:
        """'`what` (local, after mul #12)': a step that sent nothing, placed after the last
        operation that did."""
        return f"{what} (local, after {self._last})" if self._last else f"{what} (local)"

    def failed_operation(self, exc: BaseException) -> str | None:
        """The operation that `exc` (or an exception it was raised from or while handling)
        escaped from, named as `current_operation` named it then; None if it was raised
        outside every operation."""
        if self._failure is None:
            return None
        seen: set[int] = set()
        e: BaseException | None = exc
        while e is not None and id(e) not in seen:
            if e is self._failure[0]:
                return self._failure[1]
            seen.add(id(e))
            e = e.__cause__ or e.__context__
        return None

    def _note_failure(self, exc: BaseException) -> None:
        """Remember the innermost operation that `exc` escapes from."""
        if self._failure is None or self._failure[0] is not exc:
            self._failure = (exc, self.current_operation)

    @contextmanager
    def operation(
        self, kind: str, own_stats: bool = False, *, shapes: Sequence[Sequence[int]] = ()
    ) -> Iterator[None]:
        """Scope one (possibly nested) operation; the outermost one is counted under `kind`.

        With `own_stats`, a nested operation counts its rounds, bytes and time under its own
        `kind` (e.g. a deferred truncation that some other operation triggers; its time is also
        part of the enclosing operation's); the message tags are the same either way. `shapes`
        (of the operands: public, the same at every party) go into the operation's label, so
        that parties that run the same kind on different shapes are told apart too.
        """
        if self._depth and own_stats and kind != self._kind:
            outer, outer_label = self._kind, self._label
            self._kind = kind
            self._label = operation_label(f"{self._outer}/{kind}", self._shapes)
            stats = self.stats.kind(kind)
            start = time.perf_counter()
            try:
                yield
            except BaseException as exc:
                self._note_failure(exc)
                raise
            finally:
                self._kind = outer
                self._label = outer_label
                stats.calls += 1
                stats.seconds += time.perf_counter() - start
            return
        if self._depth:
            self._depth += 1
            try:
                yield
            except BaseException as exc:
                self._note_failure(exc)
                raise
            finally:
                self._depth -= 1
            return
        # The op number is taken at the operation's first message, so that operations that
        # turn out to be local never shift the tags. (Which operations are local can depend on
        # the data's state, e.g. a product whose truncation is pending: programs run the same
        # operations at every party.)
        self._numbered = False
        self._round = 0
        self._kind = self._outer = kind
        self._shapes = shapes
        self._label = None
        self._depth = 1
        stats = self.stats.kind(kind)
        start = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            self._note_failure(exc)
            raise
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
            self._last = f"{self._outer} #{self._op}"
        label = self._label
        if label is None:
            label = self._label = operation_label(self._kind, self._shapes)
        tag = (self.run_id, self._op, self._round)
        self._round += 1
        stats = self.stats.kind(self._kind)
        stats.rounds += 1
        sent_to = self._sent
        for to in outgoing:
            sent_to[to] = sent_to.get(to, 0) + 1
        try:
            received, sent = self.transport.exchange(
                tag,
                {to: contiguous(array) for to, array in outgoing.items()},
                expect,
                self.timeout,
                label,
            )
        except DivergenceError as exc:
            if not exc.peer:
                raise
            raise self._diverged(exc, label) from None  # what the mailbox saw, named
        stats.bytes_sent += sent
        return received

    def _diverged(self, exc: DivergenceError, mine: str) -> DivergenceError:
        """The error of this party for a receive that met another operation (or none)."""
        op = exc.tag[1] if len(exc.tag) > 1 else self._op
        rnd = exc.tag[2] if len(exc.tag) > 2 else 0
        where = f"operation {op}" + (f" (round {rnd + 1})" if rnd else "")
        peer = printable_ascii(exc.peer)
        if exc.theirs is None:
            if exc.last_op > 0:
                theirs = f"{peer} had ended its program after operation {exc.last_op}"
            else:
                theirs = f"{peer} had ended its program without any operation that communicates"
        else:
            label = printable_ascii(exc.theirs)
            # a peer's own label: quoted unless it reads as one operation (kind and shapes), so
            # that it cannot pass for more of the message (e.g. blame a third party)
            theirs = f"{peer} did {label if _OPERATION.fullmatch(label) else repr(label)}"
        return DivergenceError(
            f"parties diverged at {where}: {self.transport.name} did {mine}, {theirs}; every "
            "party must run the same operations on secrets in the same order (do not branch "
            "on ctx.me or on private data around them)"
        )

    def finish(self) -> None:
        """Tell every peer that this party's program has ended: how many messages it sent that
        peer in this run and its last operation number (one tiny message each, best effort),
        so that a peer still waiting for this party fails at once instead of at its timeout."""
        outgoing = {
            to: np.array([self._sent.get(to, 0), self._op], dtype=np.uint64)
            for to in range(self.n)
            if to != self.rank
        }
        with contextlib.suppress(CommunicationError):  # a peer that is gone cannot wait
            self.transport.exchange((self.run_id, END_OP, 0), outgoing, (), self.timeout, END_LABEL)
