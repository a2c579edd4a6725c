"""Connecting the TCP transport: listening, dialing, and what follows a failed connect.

Responsibility: one TCP connection per pair of parties: the higher rank dials the lower one.
`listen` binds the listening socket and accepts peers (each in a handshake thread, at most
_MAX_HANDSHAKES at once; further connections wait in the listen backlog); `connect` dials every
lower rank (again until its deadline after a refused or unanswered connection), waits until all
n-1 links are up, and registers each link (starting its receiver thread). After a failed connect
the listener stays _REJECT_LINGER s to tell peers that dial late why (only those whose hello
names this session; each answer ends within _LATE_DEADLINE and takes a handshake slot); a dialer
of a new run on that port is hung up on, and dials again until its deadline.

Security model: the party that is dialed cannot tell a misconfigured peer from a stranger that
claims its name, so whatever fails before key confirmation there is anonymous: it neither aborts
`connect` nor blames the party named, and is only listed in this party's own error if `connect`
times out (never passed on to other parties, which only learn how many there were). The dialer
must send its hello within _HELLO_DEADLINE, so silent connections give their handshake slot back
soon. The dialing party's error names the peer it dialed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any, Final

from mpc.errors import CommunicationError, ConfigurationError, MpcError
from mpc.parties import framing
from mpc.parties.tcp.handshake import _Refused
from mpc.parties.tcp.link import Link
from mpc.parties.tcp.receiver import Receiving

#: How long the party that is dialed waits for the dialer's hello (seconds): an honest dialer
#: sends it at once, so a silent connection gives its handshake slot back soon; the rest of the
#: handshake has the connect deadline.
_HELLO_DEADLINE: Final = 3.0
#: After a failed connect, how long the listener stays open to tell late peers why (seconds).
_REJECT_LINGER: Final = 5.0
#: Listeners that still answer late peers with the reason a connect failed, by (host, port).
_LINGERING: dict[tuple[str, int], Connecting] = {}
_LINGERING_LOCK = threading.Lock()


class Connecting(Receiving):
    """Setting up the links: listener, dialers, handshakes, lingering after a failure."""

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
        this session that dials late with `reason` (a "reject" message, see `Handshake.answer_late`)
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
            self._handshake.answer_late(sock, reason)
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = self._handshake.run(
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
                link = self._handshake.run(sock, peer, deadline, where)
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

    def _register(self, link: Link) -> None:
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
