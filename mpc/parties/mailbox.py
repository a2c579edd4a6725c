"""Keyed mailbox: holds messages that arrive before their receiver asks for them.

Responsibility: match each incoming message to the receive that wants it by (sender, tag), with a
timeout on every wait, and turn a peer's failure into an error at every waiting receive.
Security model: the mailbox stores arrays that a transport has already authenticated; it never
parses or unpickles anything. It still checks what a peer sends against the run this party is
in (`begin_run`; tags start with the run id): a message of an earlier run is dropped (a late
message of a run that failed), one of the current run or the next (which a faster peer may
start first) is kept, and an empty tag or a later run is refused with `IntegrityError` naming
the peer. A refusal fails the current run only; the next `begin_run` starts clean. Before the
first `begin_run` any non-empty tag is kept. A second message with the same (sender, tag) is
refused as a replay. With `max_messages` / `max_bytes`, the messages a peer has sent and no
receive has taken yet are bounded: a message beyond them is refused, and `has_room` tells a
transport to stop reading from that peer before (TCP then slows the peer down). At most
`MAX_EARLY_FAILURES` failures of runs not begun yet are kept, and none for a run after the next.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import Final

import numpy as np

from mpc.errors import IntegrityError, ReceiveTimeoutError

Tag = tuple[int, ...]

#: Most failures of runs that have not begun yet that a mailbox keeps.
MAX_EARLY_FAILURES: Final = 4


class Mailbox:
    """Thread-safe store of received arrays keyed by (sender rank, tag).

    `names` (party names by rank) are used in error messages; `max_messages` and `max_bytes`
    bound what each sender may have stored and not yet taken (None: no bound).
    """

    def __init__(
        self,
        owner: str = "",
        names: Sequence[str] = (),
        *,
        max_messages: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self._owner = owner
        self._names = tuple(names)
        self._max_messages = sys.maxsize if max_messages is None else max_messages
        self._max_bytes = sys.maxsize if max_bytes is None else max_bytes
        self._cond = threading.Condition()
        self._messages: dict[tuple[int, Tag], np.ndarray] = {}
        self._held: dict[int, list[int]] = {}  # sender -> [messages, bytes] stored, not taken
        self._seen: set[tuple[int, Tag]] = set()
        self._failure: Exception | None = None
        self._run: int | None = None
        self._early: dict[int, Exception] = {}
        self._waiting = 0  # threads blocked in `get` (only they need a notify)

    def _who(self, sender: int) -> str:
        if 0 <= sender < len(self._names):
            return f"party {self._names[sender]!r}"
        return f"party {sender}"

    def put(self, sender: int, tag: Tag, array: np.ndarray) -> bool:
        """Store a message for the receive that will ask for it; True if it was stored.

        False if it was dropped (a late message of an earlier run) or refused: an empty tag, a
        run after the next, a replay, or more than this sender may hold; a refusal fails the
        mailbox with `IntegrityError` naming the sender.
        """
        key = (sender, tag)
        with self._cond:
            run = self._run
            if not tag or (run is not None and not run <= tag[0] <= run + 1):
                return self._refuse_tag(sender, tag)
            held = self._held.get(sender)
            if held is None:
                held = self._held[sender] = [0, 0]
            if held[0] >= self._max_messages or held[1] >= self._max_bytes:
                return self._refuse(
                    f"{self._who(sender)} has {held[0]} messages ({held[1]} bytes) here that no "
                    "receive asked for, the most this party keeps for one peer (a flood, or a "
                    "protocol bug)"
                )
            if not self._first(key):
                return False
            self._messages[key] = array
            held[0] += 1
            held[1] += array.nbytes
            if self._waiting:
                self._cond.notify_all()
            return True

    def _refuse_tag(self, sender: int, tag: Tag) -> bool:
        """Drop or refuse a message whose tag is not of the current run (caller holds the
        lock); False."""
        run = self._run
        if not tag:
            return self._refuse(f"{self._who(sender)} sent a message with an empty tag")
        assert run is not None
        if tag[0] < run:
            return False  # a late message of an earlier (failed) run: nobody will ask for it
        return self._refuse(
            f"{self._who(sender)} sent a message for run {tag[0]} (tag {tag}) while this party "
            f"is in run {run}"
        )

    def _refuse(self, what: str) -> bool:
        """Fail the current run with an IntegrityError about `what` (caller holds the lock)."""
        if self._failure is None:
            self._failure = IntegrityError(f"{self._owner}: {what}; message refused, run aborted")
        self._cond.notify_all()
        return False

    def record(self, sender: int, tag: Tag) -> bool:
        """Note that the message (sender, tag) went straight to its receiver without being
        stored (a transport that reads for a waiting receive); False, and the mailbox failed,
        if it is a duplicate."""
        with self._cond:
            first = self._first((sender, tag))
            if not first and self._waiting:
                self._cond.notify_all()
            return first

    def _first(self, key: tuple[int, Tag]) -> bool:
        """Record `key` as seen (caller holds the lock); False and fail if it was seen."""
        if key in self._seen:
            self._failure = self._failure or IntegrityError(
                f"{self._owner}: duplicate message from {self._who(key[0])} with tag {key[1]} "
                "(replayed or re-sent); run aborted"
            )
            return False
        self._seen.add(key)
        return True

    def has_room(self, sender: int) -> bool:
        """Whether `sender` may have one more message stored (no lock: a hint for readers)."""
        held = self._held.get(sender)
        return held is None or (held[0] < self._max_messages and held[1] < self._max_bytes)

    def held(self, sender: int) -> tuple[int, int]:
        """(messages, bytes) that `sender` has stored here and no receive has taken yet."""
        with self._cond:
            held = self._held.get(sender, [0, 0])
            return held[0], held[1]

    def fail(self, error: Exception, run: int | None = None) -> None:
        """Make every current and future receive raise `error` (first failure wins).

        `run` names the run that failed, if known. A failure of an older run (a late abort of a
        finished run) is ignored, so it cannot break the current one; a failure of the next run
        (a peer that failed before this party started it) is kept and applied when that run
        begins (at most `MAX_EARLY_FAILURES` of them before the first run); one of a later run
        cannot be real and is ignored.
        """
        with self._cond:
            current = self._run
            if run is not None and current is not None and run < current:
                return
            if run is not None and (current is None or run > current):
                if current is not None and run > current + 1:
                    return
                if run in self._early or len(self._early) < MAX_EARLY_FAILURES:
                    self._early.setdefault(run, error)
                return
            if self._failure is None:
                self._failure = error
            self._cond.notify_all()

    @property
    def failure(self) -> Exception | None:
        return self._failure

    def _taken(self, sender: int, msg: np.ndarray) -> None:
        held = self._held[sender]
        held[0] -= 1
        held[1] -= msg.nbytes

    def take(self, sender: int, tag: Tag) -> np.ndarray | None:
        """Remove and return the message (sender, tag) if it is here, else None (no wait)."""
        with self._cond:
            msg = self._messages.pop((sender, tag), None)
            if msg is not None:
                self._taken(sender, msg)
            return msg

    def get(self, sender: int, tag: Tag, timeout: float, sender_name: str = "") -> np.ndarray:
        """Wait up to `timeout` seconds for the message (sender, tag) and remove it."""
        key = (sender, tag)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                msg = self._messages.pop(key, None)
                if msg is not None:
                    self._taken(sender, msg)
                    return msg
                if self._failure is not None:
                    raise self._failure
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    who = sender_name or f"party {sender}"
                    raise ReceiveTimeoutError(
                        f"{self._owner}: no message from {who} for tag {tag} within {timeout:g} s; "
                        "the peer is slow, stuck or gone (raise the receive timeout if it is slow)"
                    )
                self._waiting += 1
                try:
                    self._cond.wait(remaining)
                finally:
                    self._waiting -= 1

    def begin_run(self, run: int) -> None:
        """Start run `run` (run ids only grow): apply a failure already reported for it, and
        drop the failure, messages and replay records of earlier runs (and anything stored
        before the first run that belongs to neither this run nor the next)."""

        def keep(tag: Tag) -> bool:
            return bool(tag) and run <= tag[0] <= run + 1

        with self._cond:
            self._run = run
            self._failure = self._early.pop(run, None)
            self._early = {r: e for r, e in self._early.items() if r == run + 1}
            self._messages = {k: v for k, v in self._messages.items() if keep(k[1])}
            self._seen = {k for k in self._seen if keep(k[1])}
            self._held = {}
            for (sender, _), msg in self._messages.items():
                held = self._held.setdefault(sender, [0, 0])
                held[0] += 1
                held[1] += msg.nbytes
            self._cond.notify_all()
