"""Receiving on the TCP transport: frames from the connections into the mailbox.

Responsibility: read and act on the frames that arrive on a link (data into the mailbox, a
peer's keepalive as progress, its abort as a failure of the run or session, its goodbye as the
end of the link), from whichever thread reads it: the program thread during a round, or the
link's daemon receiver thread, which drains the connection whenever the program thread has not
read it for a while (every _DRAIN_MIN to _DRAIN_MAX s), so that early messages reach the
mailbox, a peer's large send never blocks while this party computes, and aborts and lost
connections are noticed during long waits. Whatever the receiver thread delivers, and any
mailbox failure, wakes a polling program thread through the wake-up socket.

Security model: frames come from `mpc.parties.tcp.records`, which authenticated them (encrypted
mode). A rejected record fails the mailbox with `IntegrityError` naming the peer and nothing
more is read from that connection (it stays open so that the abort that follows tells the peer
why): the run cannot continue, but no forged data is ever delivered. What an authenticated peer
sends is bounded: the mailbox checks every tag against the current run, and once the peer's
share of it is full this party stops reading from the peer (TCP then holds it back); a read
returns every _FRAMES_PER_READ frames, so a flood of valid frames cannot hold it past its
deadline.
"""

from __future__ import annotations

import time
from typing import Final

import numpy as np

from mpc.errors import CommunicationError, ConnectionLostError, IntegrityError, PeerFailedError
from mpc.parties import framing
from mpc.parties.mailbox import Tag
from mpc.parties.tcp.link import Link
from mpc.parties.tcp.records import Frame
from mpc.parties.tcp.state import TcpState

#: A waiting receive re-checks the mailbox and its peer's state at least this often (seconds).
_RECV_SLICE: Final = 0.25
#: Frames dispatched per read before the caller checks its deadline and the mailbox's failure
#: again: a flood of frames that fail nothing (keepalives) cannot hold a read without end.
_FRAMES_PER_READ: Final = 256
#: The receiver thread drains its connection every _DRAIN_MIN seconds while there is traffic
#: the program thread does not read, backing off to _DRAIN_MAX when idle.
_DRAIN_MIN: Final = 0.001
_DRAIN_MAX: Final = 0.02


class Receiving(TcpState):
    """Reading, parsing and dispatching the frames of every link; the receiver threads."""

    def _dispatch_readable(
        self, link: Link, tag: Tag | None, direct: bool = False, label: str = ""
    ) -> np.ndarray | None:
        """Dispatch the frames buffered or readable now on `link`; with a `tag`, stop after the
        data frame that carries it, and if `direct` (and the frame's label is `label`), return
        that frame's array instead of putting it into the mailbox (the caller waits for exactly
        it: this saves a store and a take; a frame of another operation goes to the mailbox,
        whose `take` reports the divergence).

        Unless `direct`, stop when the peer's share of the mailbox is full: the rest waits in
        the socket, so a peer that runs ahead is slowed down by TCP instead of filling memory.
        (A direct read takes what comes; an honest peer's next frame is the one wanted, as both
        sides go through the same tags in the same order, and anything else is refused once
        the share is full.)"""
        link.reader.readable = True
        has_room = self.mailbox.has_room
        for _ in range(_FRAMES_PER_READ):
            if not direct and not has_room(link.peer):
                return None
            if direct and tag is not None and self.mailbox.holds(link.peer, tag):
                # the receiver thread stored the wanted frame meanwhile: let the caller take
                # it from the mailbox rather than read past it (into a share that may be full)
                return None
            frame = self._pump(link)
            if frame is None:
                return None
            header = frame[0]
            if tag is not None and header.tag == tag and header.kind == framing.KIND_DATA:
                if direct and header.label == label:
                    if self.mailbox.record(link.peer, tag):
                        link.delivered += 1
                        link.claimed += 1
                        return frame[1]
                    self._signal()  # a duplicate: the mailbox has failed
                    return None
                self._dispatch(link, frame)
                return None
            self._dispatch(link, frame)
        return None  # more may wait: the caller checks its deadline and failures first

    def _read(self, link: Link, tag: Tag, direct: bool, label: str = "") -> np.ndarray | None:
        """Read and dispatch the frames that have arrived on `link`, up to one with `tag` (the
        rest waits in the socket: a large next message is not allocated while this round's
        arrays are still being used); that one is returned if `direct` (see
        `_dispatch_readable`)."""
        if not link.read_lock.acquire(timeout=_RECV_SLICE):
            return None  # the receiver thread is reading it; it signals what it delivers
        try:
            return self._dispatch_readable(link, tag, direct, label)
        finally:
            link.last_read = time.monotonic()
            link.read_lock.release()

    def _pump(self, link: Link) -> Frame | None:
        """One frame from `link` (caller holds its read_lock), or None; failures are reported."""
        if link.reader_done:
            return None
        try:
            return link.receiver.pump()
        except IntegrityError as e:
            # Nothing more is read from this peer, but the connection stays open for sending,
            # so that the abort that follows tells the peer why (`close` ends it).
            link.reader_done = True
            self._fail(
                IntegrityError(
                    f"party {self.name!r}: rejected data from party {link.name!r}: {e} "
                    "(tampered, replayed, reordered or truncated traffic); nothing more is read "
                    "from it"
                )
            )
            return None
        except (OSError, EOFError, ValueError) as e:
            link.reader_done = True
            if not self._closed:
                self._fail(
                    ConnectionLostError(
                        f"party {self.name!r}: connection to party {link.name!r} closed "
                        f"unexpectedly ({type(e).__name__}: {e})"
                    )
                )
        link.shutdown()
        return None

    def _dispatch(self, link: Link, frame: Frame) -> None:
        """Act on one received frame (caller holds link.read_lock)."""
        header, array = frame
        if header.kind == framing.KIND_DATA:
            assert array is not None
            if self.mailbox.put(link.peer, header.tag, array, header.label):
                link.delivered += 1
            elif self.mailbox.failure is not None:  # refused: the mailbox failed
                self._signal()
        elif header.kind == framing.KIND_ALIVE:
            link.alive_at = max(link.alive_at, time.monotonic() - header.age)
        elif header.kind == framing.KIND_ABORT:
            link.aborted = (header.run, header.reason)
            failed = PeerFailedError(f"party {link.name!r} aborted: {header.reason}")
            self.mailbox.fail(failed, header.run)
            with self._cond:
                if not self._connected:  # a peer gave up while this party was connecting
                    self._errors.setdefault(link.peer, failed)
                    self._cond.notify_all()
        else:
            link.bye_received = True
            link.reader_done = True
            self._signal()

    def _receive_loop(self, link: Link) -> None:
        """Receiver thread of one connection: drains it whenever the program thread does not
        read it, so that messages that arrive early reach the mailbox, peers never block on a
        full socket buffer, and aborts and lost connections are noticed."""
        try:
            self._drain_forever(link)
        except Exception as e:  # never leave a connection undrained without telling anyone
            link.reader_done = True
            self._fail(
                CommunicationError(
                    f"party {self.name!r}: receiver of party {link.name!r} failed: "
                    f"{type(e).__name__}: {e}"
                )
            )
            link.shutdown()

    def _drain_forever(self, link: Link) -> None:
        interval = _DRAIN_MIN
        while not self._stop.wait(interval) and not link.reader_done:
            if time.monotonic() - link.last_read < _DRAIN_MAX or not link.read_lock.acquire(
                blocking=False
            ):
                # The program thread reads this connection (now or recently): leave it alone,
                # competing for the GIL would only slow it down.
                interval = _DRAIN_MAX
                continue
            before = link.reader.received
            delivered = link.delivered
            try:
                self._dispatch_readable(link, None)
            finally:
                link.read_lock.release()
            if link.delivered != delivered or link.reader_done:
                self._signal()  # a program thread may be polling for exactly this message
            # Poll quickly while data flows (e.g. a large message), back off when idle.
            busy = link.reader.received != before
            interval = _DRAIN_MIN if busy else min(2 * interval, _DRAIN_MAX)
