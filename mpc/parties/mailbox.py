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
Messages carry the label of the operation that sent them (`mpc.parties.channel`): a receive
that expects another label raises `DivergenceError` (the parties ran different operations), and so
does a receive from a peer whose end-of-program message (`END_LABEL`: how many messages it sent
this party in the run, and its last operation) says that it will send nothing more. Labels are
only compared and quoted (a transport has checked that they are short and printable).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import Final

import numpy as np

from mpc.errors import DivergenceError, IntegrityError, ReceiveTimeoutError

Tag = tuple[int, ...]

#: Most failures of runs that have not begun yet that a mailbox keeps.
MAX_EARLY_FAILURES: Final = 4
#: Label of the message a party sends every peer when its program has ended: a uint64 array
#: [messages it sent that peer in the run, its last operation number].
END_LABEL: Final = "<end>"
#: The operation number of the end-of-program message: its tag is (run, END_OP, 0).
END_OP: Final = -1


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
        self._messages: dict[tuple[int, Tag], tuple[np.ndarray, str]] = {}
        self._arrived: dict[tuple[int, int], int] = {}  # (sender, run) -> messages that came
        self._ended: dict[tuple[int, int], tuple[int, int]] = {}  # -> (messages sent, last op)
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

    def _name(self, sender: int) -> str:
        return self._names[sender] if 0 <= sender < len(self._names) else str(sender)

    def put(self, sender: int, tag: Tag, array: np.ndarray, label: str = "") -> bool:
        """Store a message (sent by operation `label`) for the receive that will ask for it;
        True if it was stored (or was an end-of-program message, `END_LABEL`).

        False if it was dropped (a late message of an earlier run) or refused: an empty tag, a
        run after the next, a replay, or more than this sender may hold; a refusal fails the
        mailbox with `IntegrityError` naming the sender.
        """
        key = (sender, tag)
        with self._cond:
            run = self._run
            if not tag or (run is not None and not run <= tag[0] <= run + 1):
                return self._refuse_tag(sender, tag)
            if label == END_LABEL:
                return self._end(sender, tag, array)
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
            self._count(sender, tag)
            self._messages[key] = (array, label)
            held[0] += 1
            held[1] += array.nbytes
            if self._waiting:
                self._cond.notify_all()
            return True

    def _count(self, sender: int, tag: Tag) -> None:
        """Count a message that arrived from `sender` in the run of `tag` (caller holds the
        lock)."""
        if tag:
            key = (sender, tag[0])
            self._arrived[key] = self._arrived.get(key, 0) + 1

    def _end(self, sender: int, tag: Tag, array: np.ndarray) -> bool:
        """Note `sender`'s end-of-program message (caller holds the lock)."""
        if array.dtype != np.uint64 or array.shape != (2,) or tuple(tag[1:]) != (END_OP, 0):
            return self._refuse(f"{self._who(sender)} sent a malformed end-of-program message")
        if (sender, tag[0]) in self._ended:  # one per peer and run: no flood of them
            return self._refuse(f"{self._who(sender)} sent a second end-of-program message")
        self._ended[(sender, tag[0])] = (int(array[0]), int(array[1]))
        if self._waiting:
            self._cond.notify_all()
        return True

    def _check_ended(self, sender: int, tag: Tag, label: str) -> None:
        """Raise `DivergenceError` if `sender` has ended the run of `tag` and everything it sent
        this party has arrived: the message (sender, tag) will never come (caller holds the
        lock)."""
        if not tag:
            return
        ended = self._ended.get((sender, tag[0]))
        if ended is not None and self._arrived.get((sender, tag[0]), 0) >= ended[0]:
            raise DivergenceError(
                f"{self._owner}: {self._who(sender)} has ended its program (after its operation "
                f"#{ended[1]}) while this party waits for its message with tag {tag}"
                + (f" ({label})" if label else ""),
                peer=self._name(sender),
                tag=tag,
                last_op=ended[1],
            )

    def _check_label(self, sender: int, tag: Tag, label: str, theirs: str) -> None:
        """Raise `DivergenceError` if the message (sender, tag) came from another operation."""
        if label and theirs and label != theirs:
            raise DivergenceError(
                f"{self._owner}: {self._who(sender)} sent the message with tag {tag} from "
                f"operation {theirs!r}, where this party does {label!r}",
                peer=self._name(sender),
                tag=tag,
                theirs=theirs,
            )

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
            if first:
                self._count(sender, tag)
            elif self._waiting:
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

    def holds(self, sender: int, tag: Tag) -> bool:
        """Whether the message (sender, tag) is stored here, not yet taken."""
        with self._cond:
            return (sender, tag) in self._messages

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

    def wait_failure(self, timeout: float) -> Exception | None:
        """The failure a peer reported, waiting up to `timeout` seconds for one (e.g. after a
        send failed because that peer's party already stopped: its abort says why)."""
        with self._cond:
            self._cond.wait_for(lambda: self._failure is not None, timeout)
            return self._failure

    def _taken(self, sender: int, msg: np.ndarray) -> None:
        held = self._held[sender]
        held[0] -= 1
        held[1] -= msg.nbytes

    def take(self, sender: int, tag: Tag, label: str = "") -> np.ndarray | None:
        """Remove and return the message (sender, tag) if it is here, else None (no wait).

        With a `label`, raise `DivergenceError` if the message came from another operation, or if
        it can never come (`sender` has ended its program)."""
        with self._cond:
            entry = self._messages.pop((sender, tag), None)
            if entry is None:
                self._check_ended(sender, tag, label)
                return None
            msg, theirs = entry
            self._taken(sender, msg)
            self._check_label(sender, tag, label, theirs)
            return msg

    def get(
        self, sender: int, tag: Tag, timeout: float, sender_name: str = "", label: str = ""
    ) -> np.ndarray:
        """Wait up to `timeout` seconds for the message (sender, tag) and remove it (checking
        its `label` as `take` does)."""
        key = (sender, tag)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                entry = self._messages.pop(key, None)
                if entry is not None:
                    msg, theirs = entry
                    self._taken(sender, msg)
                    self._check_label(sender, tag, label, theirs)
                    return msg
                if self._failure is not None:
                    raise self._failure
                self._check_ended(sender, tag, label)
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
            self._arrived = {k: v for k, v in self._arrived.items() if keep((k[1],))}
            self._ended = {k: v for k, v in self._ended.items() if keep((k[1],))}
            self._held = {}
            for (sender, _), (msg, _label) in self._messages.items():
                held = self._held.setdefault(sender, [0, 0])
                held[0] += 1
                held[1] += msg.nbytes
            self._cond.notify_all()
