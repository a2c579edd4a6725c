"""Encrypted, authenticated TCP transport between parties that run in separate processes or hosts.

Responsibility: one TCP connection per pair of parties (the higher rank dials the lower one), a
mutually authenticated key exchange on each, and delivery of whole numpy arrays keyed by tag into
the party's mailbox, with peer failures (abort, lost connection, rejected record) turned into
errors at every pending receive.

Security model (encrypt=True, the default):

* Every party has a long-term X25519 key (`mpc.parties.keys.PartyKey`) and pins the public key of
  every peer, distributed out of band. The handshake sends each side's name and a fresh ephemeral
  X25519 key; both derive keys with HKDF-SHA256 over DH(static, static) || DH(ephemeral, ephemeral),
  salt = session id, info = a transcript of the party list and both parties' ranks, names, static
  and ephemeral keys (ordered by rank). Only a party holding the private key of the pinned public
  key derives the same keys, and an eavesdropper who later steals a static key cannot decrypt
  recorded traffic (the ephemeral DH gives forward secrecy). The handshake ends with a
  key-confirmation record in each direction, so an impostor or a wrongly pinned key is refused at
  connect time. The dialing party's error names the peer it dialed; the party that was dialed
  cannot tell a misconfigured peer from a stranger that claims its name, so whatever fails
  before key confirmation there is anonymous: it neither aborts `connect` nor blames the party
  named, and is only listed in this party's own error if `connect` times out (what the stranger
  sent is quoted with repr() and cut short, and never passed on to other parties). The dialer
  must send its hello within _HELLO_DEADLINE, and at most _MAX_HANDSHAKES handshakes run at once
  (further connections wait in the listen backlog). After a failed connect the listener stays
  _REJECT_LINGER s to tell peers that dial late why (only those whose hello names this session;
  each answer ends within _LATE_DEADLINE and takes a handshake slot). A dialer of a new run on
  that port is hung up on, and dials again (as after a refused connection) until its deadline.
  (As with every static-static scheme, a party whose own private key leaks can be impersonated
  *to* by the thief; protect key files.)
* Records are AES-256-GCM with one key per direction and a 96-bit nonce equal to a per-direction
  record counter that the receiver expects to increase by exactly one, so a replayed, reordered,
  dropped or modified record fails authentication. The associated data binds sender rank,
  receiver rank and session id. A frame's first record holds its header and, up to 64 KiB, its
  payload (one record per small message); larger payloads follow as records of at most 1 MiB.
  The only unauthenticated bytes are the first record's length prefix, which is bounded before
  anything is allocated and then checked by decryption; every other length follows from the
  authenticated header. Any failure fails the mailbox with `IntegrityError` naming the peer, and
  nothing more is read from that connection (the abort that follows still tells the peer why):
  the run cannot continue, but no forged data is ever delivered. (This
  is wire protocol version 4; the handshake refuses peers that speak another version.)
* What an authenticated peer sends is bounded too: the mailbox checks every tag against the
  current run and keeps at most _MAILBOX_MESSAGES messages / _MAILBOX_BYTES bytes per peer that no
  receive has asked for (beyond that this party stops reading from the peer, and refuses more
  pushed into a waiting receive), and a payload above _EAGER_ALLOC is allocated piece by piece as
  its bytes arrive, so a header alone cannot reserve up to 1 GiB.
* What is not hidden: who talks to whom, when, and message sizes. Nothing protects availability: a
  network attacker can always cut connections (which surfaces as `PeerFailedError`).

With encrypt=False the same framing is sent in the clear without any authentication: anyone on the
path can read and change shares. It must be asked for by name and emits
`PlaintextTransportWarning`.

No bytes from a peer are ever unpickled: data headers are fixed binary structs and control
headers msgpack, both with a validated schema, and payloads are raw bytes of allow-listed numeric
dtypes (`mpc.parties.framing`).

Threads and latency: the program thread does the I/O of a round itself, because a thread
hand-off per message costs more than the message. `exchange` (one round; `send` and `recv` are
its one-message cases) starts every outgoing frame with non-blocking writes, then polls all
connections: it writes what a full socket did not take when there is room again (so large sends
to several peers proceed together) and reads and parses every frame that arrives (frames are
parsed by a resumable state machine, so reading can stop whenever the socket is empty and resume
later, in either thread). A frame once started is always finished, or its connection given up,
so a failure never leaves half a frame on the wire. Each connection also has a daemon receiver
thread that drains it whenever the program thread has not read it for a while (every 1-20 ms),
so that early messages reach the mailbox, a peer's large send never blocks while this party
computes, and aborts and lost connections are noticed during long waits. Any mailbox failure,
and anything the receiver thread delivers, wakes a polling program thread through a socketpair.
A wait first polls without blocking for up to 100 us (yielding the CPU in between: `_SPIN_WAIT`)
before it sleeps in poll.

Timeouts measure lack of progress, not the length of a transfer: a round fails when a peer it
waits for has made no progress for the receive timeout, where progress is a byte of a data
frame from (or to) that peer, the start of the round, or that peer's keepalive. While a round
waits, this party sends every peer a keepalive every quarter timeout stating the age of the
latest progress of what it waits for (its own round start, or bytes or keepalives of the peers
it waits for); the peer counts that as progress as old as stated. So a third party that waits
for a party slowed down by a slow but live link is not failed, while a frozen, dead or stuck
party still is after one timeout (its peers' ages only grow), and parties that wait for each
other without any progress time out as before. Whatever progress is reported, a round fails
after ROUND_LIMIT_TIMEOUTS (20) receive timeouts, so that a peer's keepalives cannot keep a party
waiting without end. A send gives up on a peer that reads nothing
for 300 s (`send`) or for the receive timeout (`exchange`), and an abort or goodbye on one that
reads nothing for _CONTROL_WAIT (1 s).
POSIX only (poll, MSG_DONTWAIT, sched_yield).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import select
import socket
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import msgpack
import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mpc.errors import (
    CommunicationError,
    ConfigurationError,
    ConnectionLostError,
    IntegrityError,
    MpcError,
    PeerFailedError,
    ReceiveTimeoutError,
)
from mpc.parties import framing
from mpc.parties.framing import Buffer, Header
from mpc.parties.keys import PUBLIC_KEY_BYTES, PartyKey, check_public, fingerprint
from mpc.parties.mailbox import Mailbox, Tag
from mpc.parties.transport import Transport

PROTOCOL: Final = "mpc-tcp"
VERSION: Final = 4
_LABEL: Final = b"mpc-tcp/2"

#: Plaintext bytes per payload record (larger payloads are split into several records).
RECORD_CHUNK: Final = 1 << 20
#: AES-GCM authentication tag length.
GCM_TAG: Final = 16
#: Payloads up to this size are encrypted into one fresh buffer and sent with the header.
_SMALL_PAYLOAD: Final = 64 * 1024
#: Size of the per-connection receive buffer (small frames are parsed straight out of it).
_READ_BUFFER: Final = 256 * 1024
#: Reads at least this large go straight into their destination instead of the buffer.
_DIRECT_READ: Final = 64 * 1024
_HANDSHAKE_MAX: Final = 64 * 1024
#: A waiting receive re-checks the mailbox and its peer's state at least this often (seconds).
_RECV_SLICE: Final = 0.25
#: While a round waits, it sends every peer a keepalive every timeout / _KEEPALIVES_PER_TIMEOUT
#: seconds (at least _MIN_KEEPALIVE apart).
_KEEPALIVES_PER_TIMEOUT: Final = 4
_MIN_KEEPALIVE: Final = 0.01
#: A round fails after this many receive timeouts whatever progress its peers report: a peer's
#: keepalives (or a byte now and then) cannot keep a party waiting without end.
ROUND_LIMIT_TIMEOUTS: Final = 20
#: Frames dispatched per read before the caller checks its deadline and the mailbox's failure
#: again: a flood of frames that fail nothing (keepalives) cannot hold a read without end.
_FRAMES_PER_READ: Final = 256
#: The receiver thread drains its connection every _DRAIN_MIN seconds while there is traffic
#: the program thread does not read, backing off to _DRAIN_MAX when idle.
_DRAIN_MIN: Final = 0.001
_DRAIN_MAX: Final = 0.02
#: How long `abort` and `close` wait for a busy connection, and then for room to write their
#: control frame, before giving up on it (seconds).
_CONTROL_WAIT: Final = 1.0
#: Most messages and bytes a peer may have in this party's mailbox that no receive has taken
#: yet: at that point this party stops reading from it (TCP flow control then holds the peer
#: back) until a receive takes some; a peer that still pushes more into a waiting receive is
#: refused (`mpc.parties.mailbox`).
_MAILBOX_MESSAGES: Final = 1024
_MAILBOX_BYTES: Final = 128 << 20
#: A payload up to this size is received into an array allocated when its header arrives; a
#: larger one into pieces of _PIECE_BYTES allocated as its bytes arrive (then joined, one copy),
#: so that a header alone cannot make this party reserve up to 1 GiB. _PIECE_BYTES is a multiple
#: of RECORD_CHUNK (a record never spans two pieces).
_EAGER_ALLOC: Final = 64 << 20
_PIECE_BYTES: Final = 16 * RECORD_CHUNK
#: Most handshakes the listener runs at once (answers to late dialers included, see
#: _REJECT_LINGER); further connections wait in the listen backlog.
_MAX_HANDSHAKES: Final = 16
#: How long the party that is dialed waits for the dialer's hello (seconds): an honest dialer
#: sends it at once, so a silent connection gives its handshake slot back soon; the rest of the
#: handshake has the connect deadline.
_HELLO_DEADLINE: Final = 3.0
#: After a failed connect, how long the listener stays open to tell late peers why (seconds).
_REJECT_LINGER: Final = 5.0
#: The whole exchange with one late dialer (read its hello, answer, wait for it to close) ends
#: after this long (seconds).
_LATE_DEADLINE: Final = 2.0
#: Longest reason sent to a late dialer, and longest quote of a field an unauthenticated peer
#: chose in an error message (characters).
_REASON_CHARS: Final = 500
_QUOTE_CHARS: Final = 80
#: Listeners that still answer late peers with the reason a connect failed, by (host, port).
_LINGERING: dict[tuple[str, int], TcpTransport] = {}
_LINGERING_LOCK = threading.Lock()
#: Before a receive blocks in poll, it polls without blocking (yielding the CPU in between) for up
#: to this long: a reply that comes within it is read without the sleep and wake-up, which
#: cost more than the message itself on a busy machine (a chain of products: 0.38-0.42 ->
#: 0.33-0.35 ms per product, 3 parties on 2 cores). It costs at most this much CPU per wait.
_SPIN_WAIT: Final = 100e-6
#: After a failed send, how long to wait for the abort that says why the peer stopped (it may
#: come over another link, e.g. from the party whose failure made this peer stop).
_ABORT_GRACE: Final = 1.0
_SEND_FLAGS: Final = getattr(socket, "MSG_NOSIGNAL", 0)
_DONTWAIT: Final = getattr(socket, "MSG_DONTWAIT", 0)
_NOWAIT_FLAGS: Final = _SEND_FLAGS | _DONTWAIT
#: How long a send may wait for a peer that does not read (seconds); receives have their own.
_SEND_TIMEOUT: Final = 300.0
_READ_EVENTS: Final = select.POLLIN | select.POLLHUP | select.POLLERR | select.POLLNVAL
_WRITE_EVENTS: Final = select.POLLOUT | select.POLLHUP | select.POLLERR | select.POLLNVAL


class _WakingMailbox(Mailbox):
    """A mailbox whose `fail` also wakes a program thread that waits on a socket in `recv`
    (whoever calls it: a receiver thread, or the party runtime reporting a peer's failure), and
    that holds at most _MAILBOX_MESSAGES / _MAILBOX_BYTES per peer."""

    def __init__(self, owner: str, names: list[str], wake: Callable[[], None]) -> None:
        super().__init__(
            owner=owner, names=names, max_messages=_MAILBOX_MESSAGES, max_bytes=_MAILBOX_BYTES
        )
        self._wake = wake

    def fail(self, error: Exception, run: int | None = None) -> None:
        super().fail(error, run)
        self._wake()


class PlaintextTransportWarning(UserWarning):
    """The TCP transport was created with encrypt=False: traffic is readable and forgeable."""


def _quote(value: object) -> str:
    """repr() of a value a peer chose (escapes control characters), cut to _QUOTE_CHARS."""
    text = repr(value)
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 3] + "..."


def _printable(text: str, limit: int = _REASON_CHARS) -> str:
    """`text` without non-printable characters, cut to `limit` characters."""
    return "".join(c for c in text[: 4 * limit] if c.isprintable())[:limit]


def _nonce(counter: int) -> bytes:
    return counter.to_bytes(12, "big")


def _sendmsg_all(sock: socket.socket, buffers: list[Buffer], total: int) -> None:
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


class _Reader:
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


def _stalled(
    missing: Iterable[_Link], flying: Iterable[_Link], start: float
) -> tuple[float, _Link | None, bool]:
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


def _drain_wake(wake: socket.socket) -> None:
    try:
        while wake.recv(4096):
            pass
    except OSError:
        pass


Frame = tuple[Header, np.ndarray | None]


class _Link:
    """One authenticated connection to one peer: socket, keys, counters, the frame being sent
    and the frame being received (so that either can stop when the socket is not ready and
    resume later; a received frame possibly in another thread).
    """

    def __init__(
        self,
        peer: int,
        name: str,
        sock: socket.socket,
        reader: _Reader,
        keys: tuple[AESGCM, AESGCM, bytes, bytes] | None,
    ) -> None:
        self.peer = peer
        self.name = name
        self.sock = sock
        self.fd = sock.fileno()
        self.reader = reader
        #: Held from the start to the end of writing one frame (by the program thread across
        #: waits, or by `send_control`).
        self.send_lock = threading.Lock()
        #: Held by whichever thread reads from the socket (program thread or receiver thread).
        self.read_lock = threading.Lock()
        self.send_key: AESGCM | None = None
        self.recv_key: AESGCM | None = None
        self.send_ad = b""
        self.recv_ad = b""
        if keys is not None:
            self.send_key, self.recv_key, self.send_ad, self.recv_ad = keys
        self.send_counter = 1  # record 0 of each direction is the key confirmation
        self.recv_counter = 1
        self.bytes_sent = 0
        self.broken = False  # the send side cannot be used any more
        self.reader_done = False  # the receive side has ended (bye, EOF or error)
        self.bye_received = False
        self.delivered = 0  # data messages put into the mailbox (written under read_lock)
        self.claimed = 0  # of those, taken by `recv`
        self.last_read = 0.0  # when the program thread last read the socket (monotonic)
        #: When the peer last made progress (monotonic): bytes of a data frame came from it
        #: (`heard_at`), bytes of a frame to it were written (`wrote_at`), or its keepalive
        #: said so (`alive_at`: the time of receipt minus the age it stated).
        self.heard_at = 0.0
        self.wrote_at = 0.0
        self.alive_at = 0.0
        #: The last abort the peer sent: (its run, or None for the whole session; its reason).
        self.aborted: tuple[int | None, str] | None = None
        self.thread: threading.Thread | None = None
        self._first_limit = framing.MAX_FIRST_RECORD + (GCM_TAG if keys is not None else 0)
        # state of the frame being sent: buffers still to write, then (encrypted mode) the
        # part of a large payload still to encrypt
        self._out: list[Buffer] = []
        self._rest: memoryview | None = None
        self._rest_offset = 0
        self._send_scratch: memoryview | None = None
        self._recv_scratch: memoryview | None = None
        # state of the frame being received
        self._record_len: int | None = None
        self._header: Header | None = None
        self._array: np.ndarray | None = None  # None while a large payload comes in pieces
        self._pieces: list[np.ndarray] = []
        self._dst: memoryview | None = None  # receives payload bytes _base.. of the frame
        self._base = 0
        self._offset = 0
        self._record_pos = 0

    # ---- sending (caller holds send_lock) -------------------------------------------------

    def _next_send_nonce(self) -> bytes:
        nonce = _nonce(self.send_counter)
        self.send_counter += 1
        return nonce

    def _seal(self, plain: Buffer) -> bytearray:
        """Length prefix and AEAD record of `plain`, in one buffer."""
        assert self.send_key is not None
        size = len(plain) + GCM_TAG
        record = bytearray(framing.LENGTH_PREFIX_BYTES + size)
        record[: framing.LENGTH_PREFIX_BYTES] = framing.length_prefix(size)
        self.send_key.encrypt_into(
            self._next_send_nonce(),
            plain,
            self.send_ad,
            memoryview(record)[framing.LENGTH_PREFIX_BYTES :],
        )
        return record

    def begin(self, header: bytes, payload: memoryview) -> int:
        """Start writing a data frame (caller holds send_lock and no frame is in flight);
        return the bytes it puts on the wire. `flush` writes it."""
        total = payload.nbytes
        inline = total <= framing.INLINE_MAX
        if self.send_key is None:
            self._out = framing.frame_buffers(header, payload)
            wire = framing.LENGTH_PREFIX_BYTES + len(header) + total
        else:
            first = self._seal(header + payload if inline and total else header)
            self._out = [first]
            wire = len(first)
            if not inline:
                self._rest, self._rest_offset = payload, 0
                wire += total + GCM_TAG * -(-total // RECORD_CHUNK)
        self.bytes_sent += wire
        return wire

    def flush(self) -> bool:
        """Write as much of the frame in flight as the socket takes without blocking; True
        once all of it is written. Raises OSError if the connection is lost."""
        out = self._out
        while True:
            if not out:
                rest = self._rest
                if rest is None:
                    return True
                assert self.send_key is not None
                if self._send_scratch is None:
                    self._send_scratch = memoryview(bytearray(RECORD_CHUNK + GCM_TAG))
                offset = self._rest_offset
                size = min(RECORD_CHUNK, rest.nbytes - offset)
                record = self._send_scratch[: size + GCM_TAG]
                self.send_key.encrypt_into(
                    self._next_send_nonce(), rest[offset : offset + size], self.send_ad, record
                )
                self._rest_offset = offset = offset + size
                if offset == rest.nbytes:
                    self._rest = None
                out = self._out = [record]
            try:
                sent = self.sock.sendmsg(out, (), _NOWAIT_FLAGS)
            except BlockingIOError:
                return False
            if sent:
                self.wrote_at = time.monotonic()
            while sent:
                size = len(out[0])
                if sent >= size:
                    sent -= size
                    del out[0]
                else:
                    out[0] = memoryview(out[0])[sent:]
                    sent = 0
            if out:
                return False  # the socket buffer is full

    def abandon(self) -> None:
        """Forget a frame that cannot be finished (the link is then unusable for sending)."""
        self._out = []
        self._rest = None
        self.broken = True

    def send_frame(self, header: bytes, timeout: float = _CONTROL_WAIT) -> int:
        """Write one control frame, waiting at most `timeout` s for the peer to make room;
        return its wire bytes. Caller holds send_lock (so no data frame is in flight).

        Raises TimeoutError if the peer does not read: the frame is then dropped if none of it
        was written, else the connection is given up (half a frame must never stay on it).
        """
        sealed: list[Buffer] = [self._seal(header)] if self.send_key is not None else []
        buffers = sealed or framing.frame_buffers(header)
        wire = sum(len(b) for b in buffers)
        self._out = list(buffers)
        deadline = time.monotonic() + timeout
        while not self.flush():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                written = wire - sum(len(b) for b in self._out)
                self.bytes_sent += written
                self._out = []
                if written:
                    self.abandon()
                    self.shutdown()
                raise TimeoutError(
                    f"party {self.name!r} read nothing for {timeout:g} s (a control frame could "
                    "not be sent)"
                )
            waiter = select.poll()
            waiter.register(self.fd, select.POLLOUT)
            waiter.poll(remaining * 1000.0)
        self.bytes_sent += wire
        return wire

    def send_control(self, header: bytes) -> None:
        """Best-effort abort/bye frame: never raises, never waits long for a busy connection or
        for a peer that does not read (at most _CONTROL_WAIT for each)."""
        if not self.send_lock.acquire(timeout=_CONTROL_WAIT):
            return
        try:
            if not self.broken:
                self.send_frame(header)
        except TimeoutError:
            pass  # dropped, or the connection given up if part of the frame was written
        except (OSError, ValueError):
            self.broken = True
        finally:
            self.send_lock.release()

    def try_control(self, header: bytes) -> None:
        """Send a control frame only if that costs no wait: the connection is free (no frame in
        flight) and its socket has room (a keepalive; it never raises)."""
        if not self.send_lock.acquire(blocking=False):
            return
        try:
            if self.broken:
                return
            waiter = select.poll()
            waiter.register(self.fd, select.POLLOUT)
            if waiter.poll(0):  # room for far more than one small frame: it goes out at once
                self.send_frame(header)
        except TimeoutError:
            pass
        except (OSError, ValueError):
            self.broken = True
        finally:
            self.send_lock.release()

    # ---- receiving (caller holds read_lock) -----------------------------------------------

    def _open_into(self, record: memoryview, out: Buffer) -> None:
        assert self.recv_key is not None
        nonce = _nonce(self.recv_counter)
        self.recv_counter += 1
        try:
            self.recv_key.decrypt_into(nonce, record, self.recv_ad, out)
        except InvalidTag:
            raise IntegrityError("record failed authentication") from None

    def pump(self) -> Frame | None:
        """Parse one complete frame out of what has arrived and return it, or return None when
        more bytes are needed (never blocks), keeping the partial frame for the next call.
        Caller holds read_lock.

        Raises IntegrityError on a rejected record or header, EOFError/OSError on a lost
        connection.
        """
        reader = self.reader
        if self._header is None:
            if self._record_len is None:
                if not reader.fill(framing.LENGTH_PREFIX_BYTES):
                    return None
                self._record_len = framing.parse_length(
                    reader.take(framing.LENGTH_PREFIX_BYTES), self._first_limit
                )
                if self.recv_key is not None and self._record_len <= GCM_TAG:
                    raise IntegrityError("record shorter than its authentication tag")
            if not reader.fill(self._record_len):
                return None
            raw = reader.take(self._record_len)
            self._record_len = None
            plain: Buffer
            if self.recv_key is not None:
                plain = bytearray(len(raw) - GCM_TAG)
                self._open_into(raw, plain)
            else:
                plain = raw
            if plain[0] != framing.DATA_MARKER:
                return framing.parse_header(plain), None
            header, size = framing.parse_data_header(plain)
            self.heard_at = time.monotonic()
            total = header.nbytes
            extra = len(plain) - size
            if total <= framing.INLINE_MAX:
                if extra != total:
                    raise IntegrityError(
                        f"frame carries {extra} payload bytes, its header says {total}"
                    )
                if type(plain) is bytearray and total:
                    array = framing.view_array(header, plain, size)  # owns the fresh buffer
                else:
                    array = framing.allocate(header)
                    if total:
                        framing.byte_view(array)[:] = plain[size:]
                return header, framing.check_values(array)
            if extra:
                raise IntegrityError(
                    f"frame of a {total}-byte payload carries {extra} bytes in its header record"
                )
            if total <= _EAGER_ALLOC:
                fresh = framing.allocate(header)
                self._array, self._dst = fresh, framing.byte_view(fresh)
            else:  # pieces, allocated as the bytes arrive (see _EAGER_ALLOC)
                self._array, self._dst = None, memoryview(b"")
            self._header = header
            self._offset = self._record_pos = self._base = 0
        header, dst = self._header, self._dst
        assert header is not None and dst is not None
        total = header.nbytes
        aead = self.recv_key
        if aead is None:
            while self._offset < total:
                local = self._offset - self._base
                if local == dst.nbytes:  # only in pieces: the current piece is full
                    dst, local = self._next_piece(total), 0
                got = reader.read_some_into(dst[local:])
                if got == 0:
                    return None
                self._offset += got
                self.heard_at = time.monotonic()
        else:
            while self._offset < total:
                size = min(RECORD_CHUNK, total - self._offset)
                record_len = size + GCM_TAG
                if record_len < _DIRECT_READ:
                    if not reader.fill(record_len):
                        return None
                    record = reader.take(record_len)
                else:
                    if self._recv_scratch is None:
                        self._recv_scratch = memoryview(bytearray(RECORD_CHUNK + GCM_TAG))
                    record = self._recv_scratch[:record_len]
                    while self._record_pos < record_len:
                        got = reader.read_some_into(record[self._record_pos :])
                        if got == 0:
                            return None
                        self._record_pos += got
                        self.heard_at = time.monotonic()
                    self._record_pos = 0
                local = self._offset - self._base
                if local == dst.nbytes:  # only in pieces: the current piece is full
                    dst, local = self._next_piece(total), 0
                self._open_into(record, dst[local : local + size])
                self._offset += size
                self.heard_at = time.monotonic()
        array = self._array if self._array is not None else self._join(header)
        self._header = self._array = self._dst = None
        return header, framing.check_values(array)

    def _next_piece(self, total: int) -> memoryview:
        """Allocate the next piece of a large payload, from the current offset on."""
        piece = np.empty(min(_PIECE_BYTES, total - self._offset), dtype=np.uint8)
        self._pieces.append(piece)
        self._base = self._offset
        self._dst = piece.data
        return self._dst

    def _join(self, header: Header) -> np.ndarray:
        """The array of a payload received in pieces (all of it has arrived)."""
        array = framing.allocate(header)
        out = framing.byte_view(array)
        position = 0
        pieces, self._pieces = self._pieces, []
        while pieces:
            piece = pieces.pop(0)  # freed once copied
            out[position : position + piece.nbytes] = piece.data
            position += piece.nbytes
        return array

    def shutdown(self) -> None:
        """Stop both directions (wakes a reader); the fd is closed later by `close`."""
        self.broken = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class _Poller:
    """The poll set of one program thread: every readable link (but those paused because their
    peer's share of the mailbox is full), links with a frame in flight (for writing) and the
    wake-up socket."""

    def __init__(self, links: list[_Link], wake: socket.socket) -> None:
        self.poll = select.poll()
        self.wake = wake
        self.wake_fd = wake.fileno()
        self.poll.register(self.wake_fd, select.POLLIN)
        self.links: dict[int, _Link] = {}
        self.masks: dict[int, int] = {}
        #: links not polled for reading: their peer's share of the mailbox is full (until the
        #: next `_transfer`, which may take from it or want that peer's next message)
        self.paused: set[int] = set()
        for link in links:
            self.links[link.fd] = link
            self.update(link, False)

    def pause(self, link: _Link, writing: bool) -> None:
        self.paused.add(link.fd)
        self.update(link, writing)

    def resume(self) -> None:
        fds, self.paused = self.paused, set()
        for fd in fds:
            self.update(self.links[fd], bool(self.masks.get(fd, 0) & select.POLLOUT))

    def update(self, link: _Link, writing: bool) -> None:
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


class _Refused(Exception):
    """Internal: a handshake failed; `peer` is the rank it is attributed to, if known. `retry`:
    the party dialed closed the connection without answering (it may be a listener that is
    going away, e.g. one that lingers after another session's failed connect): dial again."""

    def __init__(self, peer: int | None, error: MpcError, retry: bool = False) -> None:
        super().__init__(str(error))
        self.peer = peer
        self.error = error
        self.retry = retry


class TcpTransport(Transport):
    """Point-to-point transport over TCP, AES-256-GCM encrypted and mutually authenticated.

    Usage: ``address = t.listen()``; exchange addresses (and public keys) out of band;
    ``t.connect({name: (host, port), ...})``; then `send`/`recv`; finally `close`.
    """

    def __init__(
        self,
        rank: int,
        names: list[str],
        *,
        key: PartyKey | None,
        peer_keys: dict[str, bytes] | None,
        session_id: bytes,
        encrypt: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout: float = 30.0,
    ) -> None:
        if len(set(names)) != len(names) or len(names) < 2:
            raise ConfigurationError(f"party names must be at least two distinct names: {names!r}")
        if not 0 <= rank < len(names):
            raise ConfigurationError(f"rank {rank} is outside 0..{len(names) - 1}")
        super().__init__(rank, names)
        if not isinstance(session_id, bytes) or not 1 <= len(session_id) <= 1024:
            raise ConfigurationError(
                "session_id must be 1 to 1024 bytes (ideally 16+ random bytes)"
            )
        if connect_timeout <= 0:
            raise ConfigurationError("connect_timeout must be positive")
        self._encrypt = bool(encrypt)
        self._session_id = session_id
        self._host = host
        self._port = port
        self._connect_timeout = float(connect_timeout)
        self._key: PartyKey | None = None
        self._pinned: dict[str, bytes] = {}
        if self._encrypt:
            self._check_keys(key, peer_keys)
            self.confidential = True
        else:
            warnings.warn(
                f"party {self.name!r}: TcpTransport(encrypt=False): traffic between parties is "
                "not encrypted and not authenticated (plaintext): anyone on the network can read "
                "and alter shares. Use it only on a trusted network; it must be asked for by "
                "name (encrypt=False).",
                PlaintextTransportWarning,
                stacklevel=2,
            )
            self.confidential = False
        self._sid_digest = hashlib.sha256(_LABEL + b" session " + session_id).digest()[:16]
        self._cond = threading.Condition()
        self._links: dict[int, _Link] = {}
        self._errors: dict[int, MpcError] = {}
        #: why connections that did not authenticate were refused (the latest few; fields the
        #: peer chose are quoted by `_quote`), and how many were; only ever in this party's own
        #: timeout error, never sent to a peer
        self._anonymous_errors: deque[str] = deque(maxlen=8)
        self._anonymous_count = 0
        self._handshake_slots = threading.BoundedSemaphore(_MAX_HANDSHAKES)
        self._dial_errors: dict[int, str] = {}
        self._listener: socket.socket | None = None
        self._linger_key: tuple[str, int] | None = None  # (host, bound port), for _LINGERING
        self._accept_thread: threading.Thread | None = None
        self._accepting = False
        self._reject_reason: str | None = None
        self._connected = False
        self._closed = False
        self._stop = threading.Event()
        # wakes a program thread waiting on a socket; created by listen()/connect()
        self._wake_recv: socket.socket | None = None
        self._wake_send: socket.socket | None = None
        self._local = threading.local()  # per program thread: its _Poller
        self.mailbox = _WakingMailbox(self.name, self.names, self._signal)

    def _check_keys(self, key: PartyKey | None, peer_keys: dict[str, bytes] | None) -> None:
        if key is None or peer_keys is None:
            raise ConfigurationError(
                f"party {self.name!r}: encrypt=True needs this party's key (PartyKey) and the "
                "pinned public keys of all peers (peer_keys={name: public key}); pass "
                "encrypt=False explicitly to run without encryption"
            )
        unknown = sorted(set(peer_keys) - set(self.names))
        if unknown:
            raise ConfigurationError(f"peer_keys has keys for unknown parties {unknown}")
        missing = [n for i, n in enumerate(self.names) if i != self.rank and n not in peer_keys]
        if missing:
            raise ConfigurationError(f"party {self.name!r}: no pinned public key for {missing}")
        pinned = {n: check_public(bytes(k)) for n, k in peer_keys.items()}
        own = pinned.pop(self.name, None)
        if own is not None and own != key.public_bytes:
            raise ConfigurationError(
                f"party {self.name!r}: peer_keys pins {fingerprint(own)} for this party but its "
                f"key is {key.fingerprint}; wrong key file?"
            )
        self._key = key
        self._pinned = pinned

    # ---- properties -----------------------------------------------------------------------

    @property
    def bytes_sent(self) -> int:
        """Bytes put on the wire by `send`, `abort` and `close` (prefixes and GCM tags included)."""
        with self._cond:
            links = list(self._links.values())
        return sum(link.bytes_sent for link in links)

    # ---- setup ----------------------------------------------------------------------------

    def listen(self) -> tuple[str, int]:
        """Bind the listening socket and start accepting peers; return the bound (host, port)."""
        with _LINGERING_LOCK:
            earlier = _LINGERING.pop((self._host, self._port), None) if self._port else None
        if earlier is not None:  # a failed run of this process still holds the port
            earlier._stop_listening()
        with self._cond:
            if self._closed:
                raise CommunicationError(f"party {self.name!r}: transport is closed")
            if self._listener is not None:
                raise ConfigurationError(f"party {self.name!r}: listen() was already called")
            self._make_wake()
            try:
                info = socket.getaddrinfo(
                    self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
                )[0]
                listener = socket.socket(info[0], socket.SOCK_STREAM)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(info[4])
                listener.listen(max(8, 2 * self.n))
            except OSError as e:
                raise ConfigurationError(
                    f"party {self.name!r} cannot listen on {self._host}:{self._port}: {e}"
                ) from e
            listener.settimeout(0.2)
            self._listener = listener
            self._linger_key = (self._host, int(listener.getsockname()[1]))
            self._accepting = True
            self._accept_thread = threading.Thread(
                target=self._accept_loop, name=f"mpc-tcp-accept-{self.name}", daemon=True
            )
            self._accept_thread.start()
            bound = listener.getsockname()
            return str(bound[0]), int(bound[1])

    def connect(self, addresses: dict[str, tuple[str, int]]) -> None:
        """Connect to and authenticate every peer; return when all n-1 links are up.

        `addresses` maps party names to the (host, port) their `listen()` returned; this party
        dials every lower rank and waits for every higher rank to dial it.
        """
        with self._cond:
            if self._closed:
                raise CommunicationError(f"party {self.name!r}: transport is closed")
            if self._connected:
                raise ConfigurationError(f"party {self.name!r}: connect() was already called")
            if self.rank < self.n - 1 and self._listener is None:
                raise ConfigurationError(
                    f"party {self.name!r}: call listen() before connect(); parties of higher "
                    "rank dial this one"
                )
            self._make_wake()
        missing = [self.names[p] for p in range(self.rank) if self.names[p] not in addresses]
        if missing:
            raise ConfigurationError(f"party {self.name!r}: no address for parties {missing}")
        deadline = time.monotonic() + self._connect_timeout
        for peer in range(self.rank):
            host, port = addresses[self.names[peer]]
            threading.Thread(
                target=self._dial,
                args=(peer, str(host), int(port), deadline),
                name=f"mpc-tcp-dial-{self.name}->{self.names[peer]}",
                daemon=True,
            ).start()
        error: MpcError | None = None
        reason = ""  # what peers are told: `error` without what unauthenticated peers said
        with self._cond:
            while True:
                if self._errors:
                    error = self._errors[min(self._errors)]
                    reason = str(error)
                    break
                if len(self._links) == self.n - 1:
                    self._connected = True
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    error, reason = self._timeout_error(addresses)
                    break
                self._cond.wait(remaining)
        if error is not None:
            with self._cond:  # links that complete from now on are told why, then closed
                self._reject_reason = reason
            self.abort(reason)  # peers already linked learn why, instead of a reset
            self._linger_rejecting(reason)
            self.close()
            raise error
        self._stop_listening()

    def _make_wake(self) -> None:
        """Create the wake-up socketpair (caller holds self._cond)."""
        if self._wake_recv is None:
            self._wake_recv, self._wake_send = socket.socketpair()
            self._wake_recv.setblocking(False)
            self._wake_send.setblocking(False)

    def _timeout_error(
        self, addresses: dict[str, tuple[str, int]]
    ) -> tuple[CommunicationError, str]:
        """The error of a connect that timed out, and the reason peers are told: the same
        without the connections refused before they authenticated (what a stranger sent stays
        in this party's own error; peers only learn how many there were)."""
        parts = []
        for peer in range(self.n):
            if peer == self.rank or peer in self._links:
                continue
            name = self.names[peer]
            if peer < self.rank:
                host, port = addresses[name]
                last = self._dial_errors.get(peer, "no answer")
                parts.append(f"{name!r} not reachable at {host}:{port} ({last})")
            else:
                parts.append(f"{name!r} did not connect to this party")
        message = (
            f"party {self.name!r}: timed out after {self._connect_timeout:g} s connecting to "
            f"peers: {'; '.join(parts)}"
        )
        note = public = ""
        if self._anonymous_errors:
            note = f"; rejected unidentified connections: {list(self._anonymous_errors)[-3:]}"
            public = f"; it refused {self._anonymous_count} connection(s) that did not authenticate"
        return CommunicationError(message + note), message + public

    def _linger_rejecting(self, reason: str) -> None:
        """Keep the listener _REJECT_LINGER s after a failed connect, answering every peer of
        this session that dials late with `reason` (a "reject" message, see `_answer_late`)
        instead of a refused connection; so every party learns why the run could not start, not
        only the ones already linked."""
        with self._cond:
            if self._listener is None or self._linger_key is None:
                return
            self._reject_reason = reason
            key = self._linger_key
        with _LINGERING_LOCK:
            _LINGERING[key] = self
        timer = threading.Timer(_REJECT_LINGER, self._stop_lingering)
        timer.daemon = True
        timer.start()

    def _stop_lingering(self) -> None:
        key = self._linger_key
        with _LINGERING_LOCK:
            if key is not None and _LINGERING.get(key) is self:
                del _LINGERING[key]
        self._stop_listening()

    def _stop_listening(self) -> None:
        with self._cond:
            self._accepting = False
            listener, self._listener = self._listener, None
            thread, self._accept_thread = self._accept_thread, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        if listener is not None:
            listener.close()

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        slots = self._handshake_slots
        while self._accepting:
            # At most _MAX_HANDSHAKES at once (one thread each, answers to late dialers
            # included); further connections wait in the listen backlog until one ends (each
            # ends by its deadline at the latest).
            if not slots.acquire(timeout=0.2):
                continue
            try:
                sock, address = listener.accept()
            except TimeoutError:
                slots.release()
                continue
            except OSError:
                slots.release()
                return
            if not self._accepting:
                slots.release()
                sock.close()
                return
            try:
                threading.Thread(
                    target=self._accept_one,
                    args=(sock, address),
                    name=f"mpc-tcp-handshake-{self.name}",
                    daemon=True,
                ).start()
            except RuntimeError:  # no thread to be had: refuse this one, keep listening
                slots.release()
                sock.close()

    def _accept_one(self, sock: socket.socket, address: Any) -> None:
        try:
            self._accept_handshake(sock, address)
        finally:
            self._handshake_slots.release()

    def _accept_handshake(self, sock: socket.socket, address: Any) -> None:
        """Handshake with a peer that dialed this party. Whatever fails before the peer has
        proven its key (key confirmation) is anonymous: anyone can connect and claim a name, so
        such a failure never aborts `connect` nor blames the party named; it is only noted
        (`_anonymous_errors`, shown in this party's own error if `connect` times out, never sent
        to a peer). So is a connection lost while this party sends its own confirmation (the
        dialer reports that one). The dialer's hello must come within _HELLO_DEADLINE."""
        deadline = time.monotonic() + self._connect_timeout
        reason = self._reject_reason
        if reason is not None:
            self._answer_late(sock, reason)
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = self._handshake(
                sock, None, deadline, f"{address[0]}:{address[1]}", _HELLO_DEADLINE
            )
        except _Refused as refused:
            sock.close()
            with self._cond:
                self._note_anonymous(str(refused.error))
                self._cond.notify_all()
            return
        except OSError:
            sock.close()
            return
        self._register(link)

    def _note_anonymous(self, error: str) -> None:
        """Note why a connection that did not authenticate was refused (caller holds _cond)."""
        self._anonymous_errors.append(error)
        self._anonymous_count += 1

    def _answer_late(self, sock: socket.socket, reason: str) -> None:
        """Answer a peer that dialed after this party gave up connecting (see
        `_linger_rejecting`): read its hello, and only if it belongs to this session (its `sid`)
        tell it `reason` (a "reject" message), else just hang up, so that a dialer of another
        run (a retry on the same port) is not told this run's reason. One deadline,
        _LATE_DEADLINE, bounds the whole exchange, which holds a handshake slot meanwhile."""
        deadline = time.monotonic() + _LATE_DEADLINE
        try:
            hello = self._recv_msg(_Reader(sock), deadline)
            if hello.get("m") != "hello" or hello.get("sid") != self._sid_digest:
                return
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            self._send_msg(sock, {"m": "reject", "why": _printable(reason)})
            sock.shutdown(socket.SHUT_WR)
            # Wait for it to close (closing first could reset the connection before it reads
            # the reason), but no longer than the deadline.
            while (remaining := deadline - time.monotonic()) > 0:
                sock.settimeout(remaining)
                if not sock.recv(65536):
                    break
        except (OSError, EOFError, MpcError):
            pass
        finally:
            sock.close()

    def _dial(self, peer: int, host: str, port: int, deadline: float) -> None:
        name = self.names[peer]
        where = f"{host}:{port}"
        while True:
            remaining = deadline - time.monotonic()
            # after a failed connect keep dialing until the deadline: the peer is told why
            # (`_register` sends it the abort) instead of waiting out its own timeout
            if remaining <= 0 or (self._closed and self._reject_reason is None):
                with self._cond:
                    last = self._dial_errors.get(peer, "no answer")
                    self._errors.setdefault(
                        peer,
                        CommunicationError(
                            f"party {self.name!r}: could not connect to party {name!r} at "
                            f"{where} within {self._connect_timeout:g} s ({last}); is it running "
                            "and listening there?"
                        ),
                    )
                    self._cond.notify_all()
                return
            try:
                sock = socket.create_connection((host, port), timeout=min(remaining, 5.0))
            except OSError as e:
                with self._cond:
                    self._dial_errors[peer] = f"{type(e).__name__}: {e}"
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                continue
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                link = self._handshake(sock, peer, deadline, where)
            except _Refused as refused:
                sock.close()
                with self._cond:
                    if refused.retry:  # closed unanswered: like a refused connection, retry
                        self._dial_errors[peer] = "it closed the connection without answering"
                    else:
                        self._errors.setdefault(peer, refused.error)
                        self._cond.notify_all()
                if refused.retry:
                    time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                    continue
                return
            self._register(link)
            return

    def _register(self, link: _Link) -> None:
        with self._cond:
            reason = self._reject_reason
        if reason is not None:  # this party gave up connecting: say why, then hang up
            link.send_control(framing.encode_abort(reason, None))
            link.shutdown()
            link.sock.close()
            return
        with self._cond:
            if self._closed or link.peer in self._links:
                duplicate = link.peer in self._links
                link.sock.close()
                if duplicate:
                    self._note_anonymous(f"second connection claiming {link.name!r}")
                return
            self._links[link.peer] = link
            link.thread = threading.Thread(
                target=self._receive_loop,
                args=(link,),
                name=f"mpc-tcp-recv-{self.name}<-{link.name}",
                daemon=True,
            )
            link.thread.start()
            self._cond.notify_all()

    # ---- handshake ------------------------------------------------------------------------

    def _hello(self, to: int, eph_public: bytes | None) -> dict[str, Any]:
        hello: dict[str, Any] = {
            "m": "hello",
            "p": PROTOCOL,
            "v": VERSION,
            "rank": self.rank,
            "name": self.name,
            "names": self.names,
            "to": to,
            "enc": self._encrypt,
            "sid": self._sid_digest,
        }
        if self._key is not None and eph_public is not None:
            hello["static"] = self._key.public_bytes
            hello["eph"] = eph_public
        return hello

    @staticmethod
    def _send_msg(sock: socket.socket, message: dict[str, Any]) -> None:
        data: bytes = msgpack.packb(message, use_bin_type=True)
        _sendmsg_all(sock, [framing.length_prefix(len(data)), data], 4 + len(data))

    @staticmethod
    def _recv_msg(reader: _Reader, deadline: float) -> dict[str, Any]:
        size = framing.parse_length(reader.read(4, deadline), _HANDSHAKE_MAX)
        try:
            message = msgpack.unpackb(reader.read(size, deadline), raw=False, strict_map_key=True)
        except Exception as e:  # msgpack raises many types for malformed input
            raise IntegrityError(f"undecodable handshake message ({type(e).__name__})") from None
        if not isinstance(message, dict) or not isinstance(message.get("m"), str):
            raise IntegrityError("malformed handshake message")
        return message

    def _check_hello(self, hello: dict[str, Any], expected: int | None, where: str) -> int:
        """Validate a peer's hello; return its rank. Raises _Refused (attributed if possible).
        Fields the peer chose appear in the reason only through `_quote`."""
        claimed = hello.get("name")
        peer: int | None = None
        if isinstance(claimed, str) and claimed in self.names and claimed != self.name:
            peer = self.names.index(claimed)
        if expected is not None:
            peer = expected
            who = f"party {self.names[peer]!r}"
        elif peer is not None:  # unauthenticated: only a claim (see `_accept_handshake`)
            who = f"a peer at {where} that claims to be {claimed!r}"
        else:
            who = f"a peer at {where}"

        def refuse(reason: str, kind: type[MpcError] = ConfigurationError) -> _Refused:
            return _Refused(
                peer, kind(f"party {self.name!r}: handshake with {who} failed: {reason}")
            )

        if hello.get("m") != "hello" or hello.get("p") != PROTOCOL or hello.get("v") != VERSION:
            raise refuse(
                f"it speaks {_quote(hello.get('p'))} version {_quote(hello.get('v'))}, this party "
                f"{PROTOCOL!r} version {VERSION}"
            )
        if hello.get("names") != self.names:
            raise refuse(
                f"it has the party list {_quote(hello.get('names'))}, this party {self.names!r}"
            )
        rank = hello.get("rank")
        if type(rank) is not int or not 0 <= rank < self.n or self.names[rank] != claimed:
            raise refuse(
                f"it claims rank {_quote(rank)} and name {_quote(claimed)}, which do not match"
            )
        if expected is not None and rank != expected:
            raise refuse(
                f"the address given for {self.names[expected]!r} reached party {claimed!r}"
            )
        if expected is None and rank <= self.rank:
            raise refuse(f"party {claimed!r} dialed this party, but only higher ranks dial it")
        if hello.get("to") != self.rank:
            raise refuse(f"it dialed this address expecting rank {_quote(hello.get('to'))}")
        if hello.get("enc") is not self._encrypt:
            mine = "on" if self._encrypt else "off"
            theirs = "on" if hello.get("enc") else "off"
            raise refuse(f"it has encryption {theirs}, this party has it {mine}")
        if hello.get("sid") != self._sid_digest:
            raise refuse("it belongs to a different session (session ids differ)")
        if self._encrypt:
            static, eph = hello.get("static"), hello.get("eph")
            if not isinstance(static, bytes) or not isinstance(eph, bytes):
                raise refuse("its hello carries no keys")
            if len(eph) != PUBLIC_KEY_BYTES:
                raise refuse("its ephemeral key is not 32 bytes", IntegrityError)
            pinned = self._pinned[self.names[rank]]
            if static != pinned:
                raise refuse(
                    f"it presents public key {fingerprint(static)} but this party pins "
                    f"{fingerprint(pinned)} for {self.names[rank]!r} (wrong key file, wrong "
                    "pinned key, or an impostor)"
                )
        return rank

    def _derive(
        self, peer: int, eph_private: X25519PrivateKey, eph_peer: bytes
    ) -> tuple[AESGCM, AESGCM, bytes, bytes]:
        assert self._key is not None
        static_dh = self._key.exchange(self._pinned[self.names[peer]])
        try:
            eph_dh = eph_private.exchange(X25519PublicKey.from_public_bytes(eph_peer))
        except ValueError as e:
            raise IntegrityError(f"ephemeral key exchange failed: {e}") from e
        eph_mine = eph_private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        entries = {
            self.rank: (self.name, self._key.public_bytes, eph_mine),
            peer: (self.names[peer], self._pinned[self.names[peer]], eph_peer),
        }
        info = bytearray(_LABEL + b" keys")
        for name in self.names:
            encoded = name.encode()
            info += len(encoded).to_bytes(4, "big") + encoded
        for rank in sorted(entries):
            name, static, eph = entries[rank]
            encoded = name.encode()
            info += rank.to_bytes(4, "big") + len(encoded).to_bytes(4, "big") + encoded
            info += static + eph
        okm = HKDF(
            algorithm=hashes.SHA256(), length=64, salt=self._session_id, info=bytes(info)
        ).derive(static_dh + eph_dh)
        low_to_high, high_to_low = okm[:32], okm[32:]
        send, recv = (low_to_high, high_to_low) if self.rank < peer else (high_to_low, low_to_high)
        return AESGCM(send), AESGCM(recv), self._ad(self.rank, peer), self._ad(peer, self.rank)

    def _ad(self, sender: int, receiver: int) -> bytes:
        return _LABEL + sender.to_bytes(4, "big") + receiver.to_bytes(4, "big") + self._session_id

    def _handshake(
        self,
        sock: socket.socket,
        expected: int | None,
        deadline: float,
        where: str,
        hello_wait: float | None = None,
    ) -> _Link:
        """Run the handshake on a fresh socket; `expected` is the dialed rank (None: accepted).
        Everything ends by `deadline`; the peer's hello must come within `hello_wait` s too.

        Order: dialer hello -> acceptor hello -> dialer confirm -> acceptor confirm. Each confirm
        is record 0 of its direction; a peer that fails a check gets a "reject" with the reason.
        """
        reader = _Reader(sock)
        peer: int | None = expected
        hello_deadline = deadline
        if hello_wait is not None:
            hello_deadline = min(deadline, time.monotonic() + hello_wait)
        eph = X25519PrivateKey.generate() if self._encrypt else None
        eph_public = (
            eph.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            if eph is not None
            else None
        )

        def label() -> str:
            if peer is None:
                return f"a peer at {where}"
            if expected is None:  # accepted: who it is stays a claim until it is refused or in
                return f"a peer at {where} that claims to be {self.names[peer]!r}"
            return f"party {self.names[peer]!r}"

        def fail(reason: str, kind: type[MpcError] = CommunicationError) -> _Refused:
            return _Refused(
                peer, kind(f"party {self.name!r}: handshake with {label()} failed: {reason}")
            )

        def send(message: dict[str, Any]) -> None:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            self._send_msg(sock, message)

        def reject(reason: str) -> None:
            with contextlib.suppress(OSError):
                send({"m": "reject", "why": reason[:_REASON_CHARS]})

        def receive(what: str, until: float = deadline) -> dict[str, Any]:
            try:
                message = self._recv_msg(reader, until)
            except IntegrityError as e:
                raise fail(str(e), IntegrityError) from None
            except (EOFError, ConnectionError) as e:
                refused = fail(
                    f"the connection closed while waiting for its {what} ({e}); it may have "
                    "rejected this party"
                )
                # a dialer that got no answer at all tries again (see `_Refused`)
                refused.retry = expected is not None and not reader.answered
                raise refused from None
            except TimeoutError:
                if until < deadline and hello_wait is not None:
                    raise fail(f"no {what} within {hello_wait:g} s") from None
                raise fail(f"no {what} within {self._connect_timeout:g} s") from None
            if message["m"] == "reject":
                why = str(message.get("why", ""))[:_REASON_CHARS]
                if expected is None:  # from a peer that did not authenticate: quote it briefly
                    raise fail(f"it refused this party: {_quote(why)}", ConfigurationError)
                raise fail(f"it refused this party: {why!r}", ConfigurationError)
            return message

        def confirm_record(keys: tuple[AESGCM, AESGCM, bytes, bytes] | None) -> dict[str, Any]:
            if keys is None:
                return {"m": "confirm"}
            return {"m": "confirm", "c": keys[0].encrypt(_nonce(0), _LABEL + b" confirm", keys[2])}

        def check_confirm(
            message: dict[str, Any], keys: tuple[AESGCM, AESGCM, bytes, bytes] | None
        ) -> None:
            if message["m"] != "confirm":
                raise fail(
                    f"expected its key confirmation, got {_quote(message['m'])}", IntegrityError
                )
            if keys is None:
                return
            record = message.get("c")
            try:
                if not isinstance(record, bytes):
                    raise InvalidTag
                plain = keys[1].decrypt(_nonce(0), record, keys[3])
                if plain != _LABEL + b" confirm":
                    raise InvalidTag
            except InvalidTag:
                assert peer is not None
                pinned = fingerprint(self._pinned[self.names[peer]])
                reason = (
                    f"key confirmation failed: it does not hold the private key of the pinned "
                    f"public key {pinned} (an impostor), or it pins a different key for "
                    f"{self.name!r}"
                )
                reject(reason)
                raise fail(reason, IntegrityError) from None

        try:
            if expected is not None:
                send(self._hello(expected, eph_public))
            hello = receive("hello", hello_deadline)
            try:
                rank = self._check_hello(hello, expected, where)
            except _Refused as refused:
                reject(str(refused.error))
                raise
            peer = rank
            keys = None
            if eph is not None:
                try:
                    keys = self._derive(rank, eph, hello["eph"])
                except MpcError as e:
                    reject(str(e))
                    raise fail(str(e), IntegrityError) from None
            if expected is None:
                send(self._hello(rank, eph_public))
                check_confirm(receive("key confirmation"), keys)
                send(confirm_record(keys))
            else:
                send(confirm_record(keys))
                check_confirm(receive("key confirmation"), keys)
        except TimeoutError:
            raise fail(f"timed out after {self._connect_timeout:g} s") from None
        except OSError as e:
            lost = fail(f"{type(e).__name__}: {e}")
            # e.g. reset while sending the hello: a dialer that got no answer at all tries again
            lost.retry = (
                expected is not None and not reader.answered and isinstance(e, ConnectionError)
            )
            raise lost from None
        sock.settimeout(None)
        return _Link(rank, self.names[rank], sock, reader, keys)

    # ---- data path ------------------------------------------------------------------------

    def _link(self, rank: int) -> _Link:
        if not 0 <= rank < self.n or rank == self.rank:
            raise ConfigurationError(f"party {self.name!r}: no peer with rank {rank}")
        link = self._links.get(rank)
        if link is None:
            if self._closed:
                raise CommunicationError(f"party {self.name!r}: transport is closed")
            raise CommunicationError(
                f"party {self.name!r}: not connected to party {self.names[rank]!r}; call "
                "listen() and connect() first"
            )
        return link

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

    def _poller(self) -> _Poller:
        poller: _Poller | None = getattr(self._local, "poller", None)
        if poller is None:
            with self._cond:
                wake = self._wake_recv
                links = list(self._links.values())
            if wake is None or self._closed:
                raise CommunicationError(f"party {self.name!r}: transport is closed")
            poller = self._local.poller = _Poller(links, wake)
        elif poller.paused:
            poller.resume()
        return poller

    def _transfer(
        self,
        tag: Tag,
        sends: list[tuple[_Link, bytes, memoryview]],
        wanted: list[_Link],
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
        flying: list[_Link] = []
        sent = 0
        mailbox = self.mailbox
        poller: _Poller | None = None
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
                    reason = mailbox.wait_failure(_ABORT_GRACE)
                    if reason is not None:  # a peer stopped first and said why
                        raise reason from e
                    raise CommunicationError(
                        f"party {self.name!r}: sending to party {link.name!r} failed: {e}"
                    ) from e
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
                        _drain_wake(poller.wake)
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
                            reason = mailbox.wait_failure(_ABORT_GRACE)
                            if reason is not None:  # a peer stopped first and said why
                                raise reason from e
                            raise CommunicationError(
                                f"party {self.name!r}: sending to party {link.name!r} failed: {e}"
                            ) from e
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

    def _ended(self, link: _Link, tag: Tag) -> PeerFailedError:
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

    def _dispatch_readable(
        self, link: _Link, tag: Tag | None, direct: bool = False, label: str = ""
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

    def _read(self, link: _Link, tag: Tag, direct: bool, label: str = "") -> np.ndarray | None:
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

    def _settle(self, flying: list[_Link], poller: _Poller | None) -> None:
        """After a failure: finish the frames in flight within _CONTROL_WAIT (so that the
        connections stay usable for later runs) or give their connections up."""
        deadline = time.monotonic() + _CONTROL_WAIT
        for link in flying:
            try:
                while not link.flush():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError
                    waiter = select.poll()
                    waiter.register(link.fd, select.POLLOUT)
                    waiter.poll(remaining * 1000.0)
            except (OSError, ValueError):
                link.abandon()
                link.shutdown()
            finally:
                link.send_lock.release()
                if poller is not None:
                    with contextlib.suppress(Exception):
                        poller.update(link, False)
        flying.clear()

    def _pump(self, link: _Link) -> Frame | None:
        """One frame from `link` (caller holds its read_lock), or None; failures are reported."""
        if link.reader_done:
            return None
        try:
            return link.pump()
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

    def _dispatch(self, link: _Link, frame: Frame) -> None:
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

    def _fail(self, error: Exception) -> None:
        self.mailbox.fail(error)  # wakes a waiting program thread (see _WakingMailbox)

    def _signal(self) -> None:
        """Wake a program thread that waits in poll so that it re-checks the mailbox."""
        wake = self._wake_send
        if wake is not None:
            with contextlib.suppress(OSError):
                wake.send(b"\0")

    def _receive_loop(self, link: _Link) -> None:
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

    def _drain_forever(self, link: _Link) -> None:
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

    # ---- failure and shutdown ---------------------------------------------------------------

    def _broadcast_control(self, header: bytes) -> None:
        with self._cond:
            links = list(self._links.values())
        threads = [
            threading.Thread(target=link.send_control, args=(header,), daemon=True)
            for link in links
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 2 * _CONTROL_WAIT
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def abort(self, reason: str, run: int | None = None) -> None:
        """Tell every peer that this party failed (best effort; never raises)."""
        with contextlib.suppress(Exception):
            self._broadcast_control(framing.encode_abort(reason, run))

    def close(self) -> None:
        """Say goodbye to every peer, close sockets and join threads. Idempotent."""
        with self._cond:
            if self._closed:
                return
            links = list(self._links.values())
        with contextlib.suppress(Exception):
            self._broadcast_control(framing.encode_bye())
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._stop.set()
        self._signal()
        if self._reject_reason is None:
            self._stop_listening()  # else the linger timer stops it
        for link in links:
            link.shutdown()
        deadline = time.monotonic() + 2.0
        for link in links:
            if link.thread is not None and link.thread is not threading.current_thread():
                link.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for link in links:
            if link.send_lock.acquire(timeout=_CONTROL_WAIT):
                if link.read_lock.acquire(timeout=_CONTROL_WAIT):
                    link.sock.close()
                    link.read_lock.release()
                link.send_lock.release()
        with self._cond:
            wakes, self._wake_recv, self._wake_send = [self._wake_recv, self._wake_send], None, None
        for wake in wakes:
            if wake is not None:
                wake.close()

    def __enter__(self) -> TcpTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
