"""What the parts of the TCP transport share: configuration, peers' keys, links and mailbox.

Responsibility: `TcpState`, the base of `TcpTransport`: it validates the configuration (party
names, rank, session id, this party's key and the pinned keys of all peers, or an explicit
encrypt=False), holds the state that connecting, receiving and the rounds share (links by rank
under one condition, lifecycle flags, the mailbox, the wake-up socketpair) and the small helpers
they all use. The mailbox (`WakingMailbox`) wakes a program thread waiting in poll when it
fails, and bounds what each peer may have in it that no receive has asked for.

Security model: encryption is on unless asked off by name (encrypt=False, which warns with
`PlaintextTransportWarning`: anyone on the path can then read and change shares); with it, every
peer's public key must be pinned, and a pin for this party must match its own key. What an
authenticated peer sends is bounded: at most _MAILBOX_MESSAGES messages and _MAILBOX_BYTES
bytes per peer wait in the mailbox (`mpc.parties.mailbox`).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import warnings
from collections import deque
from collections.abc import Callable
from typing import Final

from mpc.errors import CommunicationError, ConfigurationError, MpcError
from mpc.parties.keys import PartyKey, check_public, fingerprint
from mpc.parties.mailbox import Mailbox
from mpc.parties.tcp.handshake import Handshake
from mpc.parties.tcp.link import Link
from mpc.parties.transport import Transport

#: Most messages and bytes a peer may have in this party's mailbox that no receive has taken
#: yet: at that point this party stops reading from it (TCP flow control then holds the peer
#: back) until a receive takes some; a peer that still pushes more into a waiting receive is
#: refused (`mpc.parties.mailbox`).
_MAILBOX_MESSAGES: Final = 1024
_MAILBOX_BYTES: Final = 128 << 20
#: Most handshakes the listener runs at once (answers to late dialers included, see
#: `Connecting._linger_rejecting`); further connections wait in the listen backlog.
_MAX_HANDSHAKES: Final = 16


class WakingMailbox(Mailbox):
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


class TcpState(Transport):
    """Configuration and shared state of one party's TCP transport (see `TcpTransport`)."""

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
        self._host = host
        self._port = port
        self._connect_timeout = float(connect_timeout)
        pinned: dict[str, bytes] = {}
        if self._encrypt:
            key, pinned = self._check_keys(key, peer_keys)
            self.confidential = True
        else:
            key = None
            warnings.warn(
                f"party {self.name!r}: TcpTransport(encrypt=False): traffic between parties is "
                "not encrypted and not authenticated (plaintext): anyone on the network can read "
                "and alter shares. Use it only on a trusted network; it must be asked for by "
                "name (encrypt=False).",
                PlaintextTransportWarning,
                stacklevel=2,
            )
            self.confidential = False
        self._handshake = Handshake(
            rank,
            self.names,
            encrypt=self._encrypt,
            key=key,
            pinned=pinned,
            session_id=session_id,
            connect_timeout=self._connect_timeout,
        )
        self._sid_digest = self._handshake.sid_digest
        self._cond = threading.Condition()
        self._links: dict[int, Link] = {}
        self._errors: dict[int, MpcError] = {}
        #: why connections that did not authenticate were refused (the latest few; fields the
        #: peer chose are quoted), and how many were; only ever in this party's own timeout
        #: error, never sent to a peer
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
        self._local = threading.local()  # per program thread: its Poller
        self.mailbox = WakingMailbox(self.name, self.names, self._signal)

    def _check_keys(
        self, key: PartyKey | None, peer_keys: dict[str, bytes] | None
    ) -> tuple[PartyKey, dict[str, bytes]]:
        """This party's key and the pinned keys of its peers (by name), checked."""
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
        return key, pinned

    @property
    def bytes_sent(self) -> int:
        """Bytes put on the wire by `send`, `abort` and `close` (prefixes and GCM tags included)."""
        with self._cond:
            links = list(self._links.values())
        return sum(link.bytes_sent for link in links)

    def _link(self, rank: int) -> Link:
        """The link to peer `rank`; CommunicationError if there is none (yet, or any more)."""
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

    def _make_wake(self) -> None:
        """Create the wake-up socketpair (caller holds self._cond)."""
        if self._wake_recv is None:
            self._wake_recv, self._wake_send = socket.socketpair()
            self._wake_recv.setblocking(False)
            self._wake_send.setblocking(False)

    def _fail(self, error: Exception) -> None:
        self.mailbox.fail(error)  # wakes a waiting program thread (see WakingMailbox)

    def _signal(self) -> None:
        """Wake a program thread that waits in poll so that it re-checks the mailbox."""
        wake = self._wake_send
        if wake is not None:
            with contextlib.suppress(OSError):
                wake.send(b"\0")
