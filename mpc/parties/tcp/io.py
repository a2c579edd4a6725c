"""Socket I/O of the TCP transport: buffered reads, gathered writes and the poll set.

Responsibility: moving bytes between sockets and buffers. `Reader` reads blocking (the handshake)
or without blocking, keeping partial data so that a frame parser can stop when the socket is
empty and resume later, possibly in another thread; `sendmsg_all` writes a list of buffers
(handshake messages); `Poller` is what one program thread waits on: readable links, links with
a frame in flight, and its wake-up socket.

Security model: none of its own: it never interprets the bytes it moves (that is
`mpc.parties.tcp.records` and `mpc.parties.framing`) and buffers at most _READ_BUFFER bytes per
connection. POSIX only (poll, MSG_DONTWAIT).
"""

from __future__ import annotations

import select
import socket
import time
from typing import TYPE_CHECKING, Final

from mpc.parties.framing import Buffer

if TYPE_CHECKING:
    from mpc.parties.tcp.link import Link

#: Size of the per-connection receive buffer (small frames are parsed straight out of it).
_READ_BUFFER: Final = 256 * 1024
_SEND_FLAGS: Final = getattr(socket, "MSG_NOSIGNAL", 0)
_DONTWAIT: Final = getattr(socket, "MSG_DONTWAIT", 0)
_NOWAIT_FLAGS: Final = _SEND_FLAGS | _DONTWAIT
_READ_EVENTS: Final = select.POLLIN | select.POLLHUP | select.POLLERR | select.POLLNVAL
_WRITE_EVENTS: Final = select.POLLOUT | select.POLLHUP | select.POLLERR | select.POLLNVAL


def sendmsg_all(sock: socket.socket, buffers: list[Buffer], total: int) -> None:
    """Send every buffer (`total` bytes in all), in order, with as few syscalls as possible."""
    sent = sock.sendmsg(buffers, (), _SEND_FLAGS)
    if sent == total:
        return
    views = [memoryview(b) for b in buffers if len(b)]
    while views:
        i = 0
        while i < len(views) and sent >= views[i].nbytes:
            sent -= views[i].nbytes
            i += 1
        views = views[i:]
        if views and sent:
            views[0] = views[0][sent:]
        if views:
            sent = sock.sendmsg(views, (), _SEND_FLAGS)


def wait_writable(fd: int, seconds: float) -> bool:
    """Wait at most `seconds` for room to write on `fd`; True if there is."""
    waiter = select.poll()
    waiter.register(fd, select.POLLOUT)
    return bool(waiter.poll(seconds * 1000.0))


def drain_wake(wake: socket.socket) -> None:
    """Empty the wake-up socket (its bytes only say "look again")."""
    try:
        while wake.recv(4096):
            pass
    except OSError:
        pass


class Reader:
    """Buffered reads from one socket.

    `read` blocks (socket timeout applies; used by the handshake). `fill`, `take` and
    `read_some_into` are the data-path API: they never block, and partial data stays buffered
    (or its count is returned) so that a frame can be resumed later, possibly by another thread.
    Small frames come out of one `recv_into` call; large payloads are received straight into
    their destination. `readable` is cleared when a receive finds the socket drained, so that
    parsing what is buffered costs no failing system call; whoever learns (from poll) that data
    arrived sets it again.
    """

    def __init__(self, sock: socket.socket, size: int = _READ_BUFFER) -> None:
        self._sock = sock
        self._view = memoryview(bytearray(size))
        self._start = 0
        self._end = 0
        self.readable = True
        self.received = 0  # bytes received through the data-path API
        self.answered = False  # `read` has received bytes (the handshake: the peer answered)

    @property
    def buffered(self) -> int:
        return self._end - self._start

    def _make_room(self, n: int) -> None:
        if self._start == self._end:
            self._start = self._end = 0
        elif self._start + n > len(self._view):
            avail = self._end - self._start
            self._view[:avail] = self._view[self._start : self._end]
            self._start, self._end = 0, avail

    def read(self, n: int, deadline: float | None = None) -> memoryview:
        """Blocking: the next `n` bytes (n <= buffer size), valid until the next read. With a
        `deadline` (monotonic), raises TimeoutError once it passes, however the bytes trickle
        in; without one, the socket's timeout applies to each receive."""
        if self._end - self._start < n:
            self._make_room(n)
            while self._end - self._start < n:
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError("deadline passed")
                    self._sock.settimeout(remaining)
                got = self._sock.recv_into(self._view[self._end :])
                if got == 0:
                    raise EOFError("connection closed by the peer")
                self.answered = True
                self._end += got
        return self.take(n)

    def _recv(self, dst: memoryview) -> int:
        """Receive some bytes into `dst` without blocking: > 0, or 0 if none are there."""
        if not self.readable:
            return 0
        try:
            got = self._sock.recv_into(dst, 0, _DONTWAIT)
        except BlockingIOError:
            self.readable = False
            return 0
        if got == 0:
            raise EOFError("connection closed by the peer")
        if got < len(dst):
            self.readable = False  # drained for now; poll says when more arrives
        self.received += got
        return got

    def fill(self, n: int) -> bool:
        """Make `n` bytes (n <= buffer size) available to `take`; False if they are not there."""
        if self._end - self._start >= n:
            return True
        self._make_room(n)
        while self._end - self._start < n:
            got = self._recv(self._view[self._end :])
            if got == 0:
                return False
            self._end += got
        return True

    def take(self, n: int) -> memoryview:
        """Consume `n` buffered bytes; the view is valid until the next read."""
        view = self._view[self._start : self._start + n]
        self._start += n
        return view

    def read_some_into(self, dst: memoryview) -> int:
        """Put up to len(dst) bytes into `dst`; return how many (0 if none are there)."""
        take = min(dst.nbytes, self._end - self._start)
        if take:
            dst[:take] = self._view[self._start : self._start + take]
            self._start += take
            return take
        return self._recv(dst)


class Poller:
    """The poll set of one program thread: every readable link (but those paused because their
    peer's share of the mailbox is full), links with a frame in flight (for writing) and the
    wake-up socket."""

    def __init__(self, links: list[Link], wake: socket.socket) -> None:
        self.poll = select.poll()
        self.wake = wake
        self.wake_fd = wake.fileno()
        self.poll.register(self.wake_fd, select.POLLIN)
        self.links: dict[int, Link] = {}
        self.masks: dict[int, int] = {}
        #: links not polled for reading: their peer's share of the mailbox is full (until the
        #: next `_transfer`, which may take from it or want that peer's next message)
        self.paused: set[int] = set()
        for link in links:
            self.links[link.fd] = link
            self.update(link, False)

    def pause(self, link: Link, writing: bool) -> None:
        self.paused.add(link.fd)
        self.update(link, writing)

    def resume(self) -> None:
        fds, self.paused = self.paused, set()
        for fd in fds:
            self.update(self.links[fd], bool(self.masks.get(fd, 0) & select.POLLOUT))

    def update(self, link: Link, writing: bool) -> None:
        reading = not link.reader_done and link.fd not in self.paused
        mask = (select.POLLIN if reading else 0) | (select.POLLOUT if writing else 0)
        old = self.masks.get(link.fd, 0)
        if mask == old:
            return
        if not mask:
            self.poll.unregister(link.fd)
            del self.masks[link.fd]
        elif old:
            self.poll.modify(link.fd, mask)
            self.masks[link.fd] = mask
        else:
            self.poll.register(link.fd, mask)
            self.masks[link.fd] = mask
