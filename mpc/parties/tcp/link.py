"""One connection of the TCP transport to one peer (`Link`).

Responsibility: the socket of one authenticated peer with both halves of its record layer, the
locks by which the program thread and the peer's receiver thread share it, what the data path
knows about the peer (bytes sent, messages delivered and claimed, when it last made progress,
its last abort), non-blocking writing of the frame in flight, and control frames (abort, bye,
keepalive) that never wait long for a peer that reads nothing.

Security model: keys and record counters live in `mpc.parties.tcp.records`. This module sees to
it that a frame once started is finished or its connection given up (`abandon`), so that half a
frame never stays on the wire, and that a control frame gives up on a peer that reads nothing
within _CONTROL_WAIT.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Final

from mpc.parties.tcp.io import _NOWAIT_FLAGS, Reader, wait_writable
from mpc.parties.tcp.records import RecordKeys, RecordReceiver, RecordSender

#: How long `abort` and `close` wait for a busy connection, and then for room to write their
#: control frame, before giving up on it (seconds).
_CONTROL_WAIT: Final = 1.0


class Link:
    """One authenticated connection to one peer: socket, record layer, counters, the frame
    being sent and the frame being received (so that either can stop when the socket is not
    ready and resume later; a received frame possibly in another thread).
    """

    def __init__(
        self,
        peer: int,
        name: str,
        sock: socket.socket,
        reader: Reader,
        keys: RecordKeys | None,
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
        if keys is None:
            self.sender, self.receiver = RecordSender(None, b""), RecordReceiver(reader, None, b"")
        else:
            self.sender = RecordSender(keys.send, keys.send_ad)
            self.receiver = RecordReceiver(reader, keys.recv, keys.recv_ad)
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
        self.wrote_at = 0.0
        self.alive_at = 0.0
        #: The last abort the peer sent: (its run, or None for the whole session; its reason).
        self.aborted: tuple[int | None, str] | None = None
        self.thread: threading.Thread | None = None

    @property
    def heard_at(self) -> float:
        return self.receiver.heard_at

    # ---- sending (caller holds send_lock) -------------------------------------------------

    def begin(self, header: bytes, payload: memoryview) -> int:
        """Start writing a data frame (caller holds send_lock and no frame is in flight);
        return the bytes it puts on the wire. `flush` writes it."""
        wire = self.sender.begin(header, payload)
        self.bytes_sent += wire
        return wire

    def flush(self) -> bool:
        """Write as much of the frame in flight as the socket takes without blocking; True
        once all of it is written. Raises OSError if the connection is lost."""
        sender = self.sender
        while True:
            out = sender.pending()
            if not out:
                return True
            try:
                sent = self.sock.sendmsg(out, (), _NOWAIT_FLAGS)
            except BlockingIOError:
                return False
            if sent:
                self.wrote_at = time.monotonic()
            sender.written(sent)
            if sender.out:
                return False  # the socket buffer is full

    def abandon(self) -> None:
        """Forget a frame that cannot be finished (the link is then unusable for sending)."""
        self.sender.drop()
        self.broken = True

    def send_frame(self, header: bytes, timeout: float = _CONTROL_WAIT) -> int:
        """Write one control frame, waiting at most `timeout` s for the peer to make room;
        return its wire bytes. Caller holds send_lock (so no data frame is in flight).

        Raises TimeoutError if the peer does not read: the frame is then dropped if none of it
        was written, else the connection is given up (half a frame must never stay on it).
        """
        wire = self.sender.begin_control(header)
        deadline = time.monotonic() + timeout
        while not self.flush():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                written = wire - self.sender.unwritten()
                self.bytes_sent += written
                self.sender.drop()
                if written:
                    self.abandon()
                    self.shutdown()
                raise TimeoutError(
                    f"party {self.name!r} read nothing for {timeout:g} s (a control frame could "
                    "not be sent)"
                )
            wait_writable(self.fd, remaining)
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
            if wait_writable(self.fd, 0):  # room for far more than one small frame: goes at once
                self.send_frame(header)
        except TimeoutError:
            pass
        except (OSError, ValueError):
            self.broken = True
        finally:
            self.send_lock.release()

    def shutdown(self) -> None:
        """Stop both directions (wakes a reader); the fd is closed later by `close`."""
        self.broken = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
