"""Keyed mailbox: holds messages that arrive before their receiver asks for them.

Responsibility: match each incoming message to the receive that wants it by (sender, tag), with a
timeout on every wait, and turn a peer's failure into an error at every waiting receive.
Security model: the mailbox stores arrays that a transport has already authenticated; it never
parses or unpickles anything. A second message with the same (sender, tag) is refused as a replay.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from mpc.errors import IntegrityError, ReceiveTimeoutError

Tag = tuple[int, ...]


class Mailbox:
    """Thread-safe store of received arrays keyed by (sender rank, tag)."""

    def __init__(self, owner: str = "") -> None:
        self._owner = owner
        self._cond = threading.Condition()
        self._messages: dict[tuple[int, Tag], np.ndarray] = {}
        self._seen: set[tuple[int, Tag]] = set()
        self._failure: Exception | None = None
        self._run: int | None = None
        self._early: dict[int, Exception] = {}
        self._waiting = 0  # threads blocked in `get` (only they need a notify)

    def put(self, sender: int, tag: Tag, array: np.ndarray) -> None:
        key = (sender, tag)
        with self._cond:
            if self._first(key):
                self._messages[key] = array
            if self._waiting:
                self._cond.notify_all()

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
                f"{self._owner}: duplicate message from party {key[0]} with tag {key[1]} "
                "(replayed or re-sent); run aborted"
            )
            return False
        self._seen.add(key)
        return True

    def fail(self, error: Exception, run: int | None = None) -> None:
        """Make every current and future receive raise `error` (first failure wins).

        `run` names the run that failed, if known. A failure of an older run (a late abort of a
        finished run) is ignored, so it cannot break the current one; a failure of a run this
        party has not begun yet (a peer that failed before this party started) is kept and
        applied when that run begins.
        """
        with self._cond:
            if run is not None and self._run is not None and run < self._run:
                return
            if run is not None and (self._run is None or run > self._run):
                self._early.setdefault(run, error)
                return
            if self._failure is None:
                self._failure = error
            self._cond.notify_all()

    @property
    def failure(self) -> Exception | None:
        return self._failure

    def take(self, sender: int, tag: Tag) -> np.ndarray | None:
        """Remove and return the message (sender, tag) if it is here, else None (no wait)."""
        with self._cond:
            return self._messages.pop((sender, tag), None)

    def get(self, sender: int, tag: Tag, timeout: float, sender_name: str = "") -> np.ndarray:
        """Wait up to `timeout` seconds for the message (sender, tag) and remove it."""
        key = (sender, tag)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                msg = self._messages.pop(key, None)
                if msg is not None:
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
        drop the failure, messages and replay records of earlier runs."""
        with self._cond:
            self._run = run
            self._failure = self._early.pop(run, None)
            self._early = {r: e for r, e in self._early.items() if r > run}
            self._messages = {k: v for k, v in self._messages.items() if k[1][0] >= run}
            self._seen = {k for k in self._seen if k[1][0] >= run}
            self._cond.notify_all()
