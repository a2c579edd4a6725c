"""Rounds on the TCP transport: `send`, `recv` and `exchange`, done by the program thread.

Responsibility: the data path of one round. The program thread does the I/O of a round itself,
because a thread hand-off per message costs more than the message. `exchange` (one round; `send`
and `recv` are its one-message cases) starts every outgoing frame with non-blocking writes, then
polls all connections: it writes what a full socket did not take when there is room again (so
large sends to several peers proceed together) and reads and parses every frame that arrives. A
frame once started is always finished, or its connection given up, so a failure never leaves
half a frame on the wire. A wait first polls without blocking for up to _SPIN_WAIT (yielding the
CPU in between) before it sleeps in poll.

Timeouts measure lack of progress, not the length of a transfer: a round fails when a peer it
waits for has made no progress for the receive timeout, where progress is a byte of a data
frame from (or to) that peer, the start of the round, or that peer's keepalive. While a round
waits, this party sends every peer a keepalive every quarter timeout stating the age of the
latest progress of what it waits for (its own round start, or bytes or keepalives of the peers
it waits for); the peer counts that as progress as old as stated. So a third party that waits
for a party slowed down by a slow but live link is not failed, while a frozen, dead or stuck
party still is after one timeout (its peers' ages only grow), and parties that wait for each
other without any progress time out as before. Whatever progress is reported, a round fails
after ROUND_LIMIT_TIMEOUTS receive timeouts. A send gives up on a peer that reads nothing for
_SEND_TIMEOUT (`send`) or for the receive timeout (`exchange`).

Security model: availability only: every wait is bounded (above), so a peer's keepalives or
trickled bytes cannot keep a party waiting without end; what is received was authenticated by
`mpc.parties.tcp.records` and is checked by the mailbox (`mpc.parties.tcp.receiver`).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterable, Mapping
from typing import Final

import numpy as np

from mpc.errors import CommunicationError, ConnectionLostError, PeerFailedError, ReceiveTimeoutError
from mpc.parties import framing
from mpc.parties.mailbox import Tag
from mpc.parties.tcp.io import _READ_EVENTS, _WRITE_EVENTS, Poller, drain_wake, wait_writable
from mpc.parties.tcp.link import _CONTROL_WAIT, Link
from mpc.parties.tcp.receiver import _RECV_SLICE, Receiving

#: While a round waits, it sends every peer a keepalive every timeout / _KEEPALIVES_PER_TIMEOUT
#: seconds (at least _MIN_KEEPALIVE apart).
_KEEPALIVES_PER_TIMEOUT: Final = 4
_MIN_KEEPALIVE: Final = 0.01
#: A round fails after this many receive timeouts whatever progress its peers report: a peer's
#: keepalives (or a byte now and then) cannot keep a party waiting without end.
ROUND_LIMIT_TIMEOUTS: Final = 20
#: Before a receive blocks in poll, it polls without blocking (yielding the CPU in between) for up
#: to this long: a reply that comes within it is read without the sleep and wake-up, which
#: cost more than the message itself on a busy machine (see "Transport measurements" in
#: benchmarks/README.md). It costs at most this much CPU per wait.
_SPIN_WAIT: Final = 100e-6
#: After a failed send, how long to wait for the abort that says why the peer stopped (it may
#: come over another link, e.g. from the party whose failure made this peer stop).
_ABORT_GRACE: Final = 1.0
#: How long a send may wait for a peer that does not read (seconds); receives have their own.
_SEND_TIMEOUT: Final = 300.0


def _stalled(
    missing: Iterable[Link], flying: Iterable[Link], start: float
) -> tuple[float, Link | None, bool]:
    """Of the peers a round still waits for (a message from each of `missing`, the end of a
    frame to each of `flying`), the one whose latest progress is the oldest: (its time, the
    link, whether a receive waits for it). Progress counts from the round's `start`."""
    oldest, stalled, receiving = math.inf, None, False
    for link in missing:
        at = max(start, link.heard_at, link.alive_at)
        if at < oldest:
            oldest, stalled, receiving = at, link, True
    for link in flying:
        at = max(start, link.wrote_at, link.alive_at)
        if at < oldest:
            oldest, stalled, receiving = at, link, False
    return oldest, stalled, receiving


class Rounds(Receiving):
    """The program thread's side of the data path: rounds of sends and receives."""

    def send(self, to: int, tag: Tag, array: np.ndarray, label: str = "") -> int:
        """Send `array` to party `to` from operation `label`; return the bytes put on the wire.

        While the socket is full, this thread reads incoming frames (so two parties that send
        large arrays to each other never wait for each other). Gives up after _SEND_TIMEOUT s
        if the peer does not read.
        """
        link = self._link(to)
        header, payload = framing.encode_data(tag, array, label)
        _, sent = self._transfer(tag, [(link, header, payload)], [], _SEND_TIMEOUT, label)
        return sent

    def recv(self, frm: int, tag: Tag, timeout: float, label: str = "") -> np.ndarray:
        """Receive the array that party `frm` sent with `tag`, waiting at most `timeout` s
        (`DivergenceError` if it came from another operation than `label`, see `Mailbox.take`).

        While it waits, the calling thread reads the connections itself (saving a thread
        hand-off per message); the receiver threads drain them at other times.
        """
        link = self._link(frm)
        if link.delivered != link.claimed:
            array = self.mailbox.take(frm, tag, label)
            if array is not None:
                link.claimed += 1
                return array
        got, _ = self._transfer(tag, [], [link], timeout, label)
        return got[frm]

    def exchange(
        self,
        tag: Tag,
        outgoing: Mapping[int, np.ndarray],
        expect: Iterable[int],
        timeout: float,
        label: str = "",
    ) -> tuple[dict[int, np.ndarray], int]:
        """One round: send every outgoing array and receive from every rank in `expect`, all
        with `tag`, in one loop that writes to and reads from all peers as their sockets allow
        (large sends to several peers proceed together, interleaved with receives)."""
        sends = []
        for to, array in outgoing.items():
            header, payload = framing.encode_data(tag, array, label)
            sends.append((self._link(to), header, payload))
        wanted = [self._link(frm) for frm in expect]
        return self._transfer(tag, sends, wanted, timeout, label)

    def _poller(self) -> Poller:
        poller: Poller | None = getattr(self._local, "poller", None)
        if poller is None:
            with self._cond:
                wake = self._wake_recv
                links = list(self._links.values())
            if wake is None or self._closed:
                raise CommunicationError(f"party {self.name!r}: transport is closed")
            poller = self._local.poller = Poller(links, wake)
        elif poller.paused:
            poller.resume()
        return poller

    def _transfer(
        self,
        tag: Tag,
        sends: list[tuple[Link, bytes, memoryview]],
        wanted: list[Link],
        timeout: float,
        label: str = "",
    ) -> tuple[dict[int, np.ndarray], int]:
        """Write `sends` and receive `tag` (of operation `label`) from every link in `wanted`,
        failing once a peer still waited for has made no progress for `timeout` s (`_stalled`;
        keepalives tell the peers how fresh this round's own progress is meanwhile).

        Frames go out without blocking; whatever a socket does not take at once is written when
        poll says it has room, while every readable connection is read. A frame once started is
        always finished (or its connection given up), so that a failure never leaves half a
        frame on the wire. Returns the received arrays by rank and the bytes sent.
        """
        results: dict[int, np.ndarray] = {}
        flying: list[Link] = []
        sent = 0
        mailbox = self.mailbox
        poller: Poller | None = None
        start = time.monotonic()
        keepalive_every = max(timeout / _KEEPALIVES_PER_TIMEOUT, _MIN_KEEPALIVE)
        next_keepalive = start + keepalive_every
        try:
            for link, header, payload in sends:
                if not link.send_lock.acquire(timeout=timeout):
                    raise CommunicationError(
                        f"party {self.name!r}: connection to party {link.name!r} stayed busy"
                    )
                try:
                    if link.broken or self._closed:
                        if mailbox.failure is not None:  # the peer said why it left
                            raise mailbox.failure
                        raise CommunicationError(
                            f"party {self.name!r}: connection to party {link.name!r} is closed"
                        )
                    sent += link.begin(header, payload)
                    done = link.flush()
                except OSError as e:
                    link.abandon()
                    link.send_lock.release()
                    raise self._send_failure(link, e) from e
                except BaseException:
                    link.send_lock.release()
                    raise
                if done:
                    link.send_lock.release()
                if not done:
                    flying.append(link)
                    if poller is None:
                        poller = self._poller()
                    poller.update(link, True)
            missing = wanted
            while True:
                if missing:
                    still = []
                    for link in missing:
                        if link.peer in results:  # read for this round (see `_read`)
                            continue
                        if link.delivered != link.claimed:
                            array = mailbox.take(link.peer, tag, label)
                            if array is not None:
                                link.claimed += 1
                                results[link.peer] = array
                                continue
                        still.append(link)
                    missing = still
                if not missing and not flying:
                    return results, sent
                if self._closed:
                    raise CommunicationError(f"party {self.name!r}: transport is closed")
                if missing:
                    failure = mailbox.failure
                    if failure is not None:
                        raise failure
                    progress = False
                    for link in missing:
                        if link.reader_done:
                            raise self._ended(link, tag)
                        if link.reader.buffered:
                            # Bytes already taken from the socket (poll cannot report them) may
                            # hold the frame this round waits for.
                            delivered = link.delivered
                            array = self._read(link, tag, True, label)
                            if array is not None:
                                results[link.peer] = array
                            progress = progress or link.delivered != delivered
                    if progress:
                        continue
                now = time.monotonic()
                if now - start > ROUND_LIMIT_TIMEOUTS * timeout:
                    waited = ", ".join(repr(link.name) for link in (missing or flying))
                    raise ReceiveTimeoutError(
                        f"{self.name}: the round for tag {tag} took more than "
                        f"{ROUND_LIMIT_TIMEOUTS} x {timeout:g} s; still waiting for {waited} "
                        "(a link far too slow for this timeout, or a peer that keeps the round "
                        "open without finishing it)"
                    )
                oldest, stalled, receiving = _stalled(missing, flying, start)
                remaining = oldest + timeout - now
                if stalled is not None and remaining <= 0:
                    if stalled.alive_at > 0.0:
                        # its keepalives said it is alive, waiting on someone else: its own
                        # timeout, due about now, names that one; wait briefly for it
                        reason = mailbox.wait_failure(min(_ABORT_GRACE, timeout))
                        if reason is not None:
                            raise reason
                    if receiving:
                        raise ReceiveTimeoutError(
                            f"{self.name}: no message from {stalled.name!r} for tag {tag}, and no "
                            f"progress from it for {timeout:g} s; the peer is stuck, frozen or "
                            "gone, or its link is down (raise the receive timeout if it is slow)"
                        )
                    raise CommunicationError(
                        f"party {self.name!r}: could not send to party {stalled.name!r}: it read "
                        f"nothing for {timeout:g} s (stuck, frozen or gone, or its link is down)"
                    )
                if now >= next_keepalive:
                    next_keepalive = now + keepalive_every
                    self._keepalive(now - oldest)
                remaining = min(
                    remaining, next_keepalive - now, start + ROUND_LIMIT_TIMEOUTS * timeout - now
                )
                if poller is None:
                    poller = self._poller()
                events = poller.poll.poll(0)
                if not events:
                    spin_end = time.monotonic() + _SPIN_WAIT
                    while not events and time.monotonic() < spin_end:
                        os.sched_yield()
                        events = poller.poll.poll(0)
                if not events:
                    events = poller.poll.poll(min(remaining, _RECV_SLICE) * 1000.0)
                for fd, event in events:
                    link_or_none = poller.links.get(fd)
                    if link_or_none is None:
                        drain_wake(poller.wake)
                        continue
                    link = link_or_none
                    if link in flying and event & _WRITE_EVENTS:
                        try:
                            done = link.flush()
                        except OSError as e:
                            link.abandon()
                            done = True
                            flying.remove(link)
                            link.send_lock.release()
                            raise self._send_failure(link, e) from e
                        if done:
                            flying.remove(link)
                            link.send_lock.release()
                            poller.update(link, False)
                    if event & _READ_EVENTS and link.reader_done:
                        # ended by the receiver thread (or a rejected record, which leaves
                        # the socket open to send the abort): poll would spin on it
                        poller.update(link, link in flying)
                    elif event & _READ_EVENTS:
                        wanted_here = link in missing
                        array = self._read(link, tag, wanted_here, label)
                        if array is not None:
                            results[link.peer] = array
                        if link.reader_done:
                            poller.update(link, link in flying)
                        elif not wanted_here and not mailbox.has_room(link.peer):
                            poller.pause(link, link in flying)  # else poll would spin on it
        finally:
            if flying:
                self._settle(flying, poller)

    def _send_failure(self, link: Link, error: OSError) -> Exception:
        """What to raise after a send to `link` failed with `error` (its frame abandoned): the
        failure a peer that stopped first reports within _ABORT_GRACE (it says why), else a
        CommunicationError."""
        reason = self.mailbox.wait_failure(_ABORT_GRACE)
        if reason is not None:  # a peer stopped first and said why
            return reason
        return CommunicationError(
            f"party {self.name!r}: sending to party {link.name!r} failed: {error}"
        )

    def _ended(self, link: Link, tag: Tag) -> PeerFailedError:
        """The error of a receive from `link` that has ended: the peer's abort (of this run or
        of the whole session) if it sent one, which the mailbox may not hold any more (one that
        came before the run began), else the connection lost."""
        aborted = link.aborted
        if aborted is not None and (aborted[0] is None or (tag and aborted[0] == tag[0])):
            return PeerFailedError(f"party {link.name!r} aborted: {aborted[1]}")
        return ConnectionLostError(
            f"party {self.name!r}: party {link.name!r} closed its connection before sending "
            f"the message with tag {tag}"
        )

    def _keepalive(self, age: float) -> None:
        """Tell every peer (whose connection is free) that this party waits on the network and
        that what it waits for last made progress `age` seconds ago."""
        header = framing.encode_alive(age)
        with self._cond:
            links = list(self._links.values())
        for link in links:
            if not link.broken:
                link.try_control(header)

    def _settle(self, flying: list[Link], poller: Poller | None) -> None:
        """After a failure: finish the frames in flight within _CONTROL_WAIT (so that the
        connections stay usable for later runs) or give their connections up."""
        deadline = time.monotonic() + _CONTROL_WAIT
        for link in flying:
            try:
                while not link.flush():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError
                    wait_writable(link.fd, remaining)
            except (OSError, ValueError):
                link.abandon()
                link.shutdown()
            finally:
                link.send_lock.release()
                if poller is not None:
                    with contextlib.suppress(Exception):
                        poller.update(link, False)
        flying.clear()
