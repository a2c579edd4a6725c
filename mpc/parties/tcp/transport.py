"""The TCP transport of a party: `TcpTransport`, tying its parts together.

Responsibility: the public object: construction and validation (`mpc.parties.tcp.state`),
`listen`/`connect` (`connect`), `send`/`recv`/`exchange` (`rounds`), receiver threads
(`receiver`), and here what ends a transport: `abort` (tell every peer why this party stops) and
`close` (say goodbye, close sockets, join threads). Aborts and goodbyes are control frames sent
to all peers at once, each given up on a peer that reads nothing for _CONTROL_WAIT.

Security model: see `mpc.parties.tcp` (the package) and each part's docstring; ending a
transport sends no data, and a frame once started is finished or its connection given up.
"""

from __future__ import annotations

import contextlib
import threading
import time

from mpc.parties import framing
from mpc.parties.tcp.connect import Connecting
from mpc.parties.tcp.link import _CONTROL_WAIT
from mpc.parties.tcp.rounds import Rounds


class TcpTransport(Connecting, Rounds):
    """Point-to-point transport over TCP, AES-256-GCM encrypted and mutually authenticated.

    Usage: ``address = t.listen()``; exchange addresses (and public keys) out of band;
    ``t.connect({name: (host, port), ...})``; then `send`/`recv`; finally `close`.
    """

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
