"""The handshake of the TCP transport: hello exchange, key agreement and key confirmation.

Responsibility: on a fresh connection, learn and check who the peer is (protocol, version, party
list, rank, name, encryption, session), agree on the record keys of both directions, confirm
that the peer holds them, and return the `Link`; answer peers that dial after a failed connect.
Order: dialer hello -> acceptor hello -> dialer confirm -> acceptor confirm; a peer that fails a
check is sent a "reject" with the reason. Messages are length-prefixed msgpack maps with a
validated schema, at most _HANDSHAKE_MAX bytes; nothing is unpickled.

Security model (encrypt=True): every party has a long-term X25519 key (`mpc.parties.keys`) and
pins the public key of every peer, distributed out of band. Each hello carries the sender's
static key and a fresh ephemeral X25519 key; both sides derive one AES-256-GCM key per direction
with HKDF-SHA256 over DH(static, static) || DH(ephemeral, ephemeral), salt = session id, info = a
transcript of the party list and both parties' ranks, names, static and ephemeral keys (ordered
by rank). Only a party holding the private key of the pinned public key derives the same keys,
and one who later steals a static key cannot decrypt recorded traffic (the ephemeral DH gives
forward secrecy). The key-confirmation records (record 0 of each direction) refuse an impostor
or a wrongly pinned key at connect time. The dialer's errors name the peer it dialed; an accepted
peer is only a claim until it confirms its key, so fields it chose are quoted with repr() and cut
short (`_quote`) and its failures are anonymous (see `mpc.parties.tcp.connect`). As with every
static-static scheme, a party whose own private key leaks can be impersonated *to* by the thief.
With encrypt=False the hellos are exchanged without keys and nothing is authenticated.
Reference: X25519, RFC 7748; HKDF, RFC 5869; the pattern (static and ephemeral DH, then key
confirmation) of the C(2e, 2s) schemes of NIST SP 800-56A Rev. 3 (sections 6.1.1 and 5.9).
This is wire protocol version 4; the handshake refuses peers that speak another version.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import time
from typing import Any, Final

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from mpc.channel_crypto import counter_nonce, derive_aeads, ephemeral_key, raw_public, x25519
from mpc.errors import CommunicationError, ConfigurationError, IntegrityError, MpcError
from mpc.parties import framing
from mpc.parties.keys import PUBLIC_KEY_BYTES, PartyKey, fingerprint
from mpc.parties.tcp.io import Reader, sendmsg_all
from mpc.parties.tcp.link import Link
from mpc.parties.tcp.records import RecordKeys

PROTOCOL: Final = "mpc-tcp"
VERSION: Final = 4
_LABEL: Final = b"mpc-tcp/2"
_CONFIRM: Final = _LABEL + b" confirm"
_HANDSHAKE_MAX: Final = 64 * 1024
#: The whole exchange with one late dialer (read its hello, answer, wait for it to close) ends
#: after this long (seconds).
_LATE_DEADLINE: Final = 2.0
#: Longest reason sent to a late dialer, and longest quote of a field an unauthenticated peer
#: chose in an error message (characters).
_REASON_CHARS: Final = 500
_QUOTE_CHARS: Final = 80


def _quote(value: object) -> str:
    """repr() of a value a peer chose (escapes control characters), cut to _QUOTE_CHARS."""
    text = repr(value)
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 3] + "..."


def _printable(text: str, limit: int = _REASON_CHARS) -> str:
    """`text` without non-printable characters, cut to `limit` characters."""
    return "".join(c for c in text[: 4 * limit] if c.isprintable())[:limit]


class _Refused(Exception):
    """A handshake failed; `peer` is the rank it is attributed to, if known. `retry`: the party
    dialed closed the connection without answering (it may be a listener that is going away,
    e.g. one that lingers after another session's failed connect): dial again."""

    def __init__(self, peer: int | None, error: MpcError, retry: bool = False) -> None:
        super().__init__(str(error))
        self.peer = peer
        self.error = error
        self.retry = retry


def send_msg(sock: socket.socket, message: dict[str, Any]) -> None:
    """Send one handshake message (blocking; the socket's timeout applies)."""
    data: bytes = msgpack.packb(message, use_bin_type=True)
    sendmsg_all(sock, [framing.length_prefix(len(data)), data], 4 + len(data))


def recv_msg(reader: Reader, deadline: float) -> dict[str, Any]:
    """Receive one handshake message by `deadline`; IntegrityError if it is malformed."""
    size = framing.parse_length(reader.read(4, deadline), _HANDSHAKE_MAX)
    try:
        message = msgpack.unpackb(reader.read(size, deadline), raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises many types for malformed input
        raise IntegrityError(f"undecodable handshake message ({type(e).__name__})") from None
    if not isinstance(message, dict) or not isinstance(message.get("m"), str):
        raise IntegrityError("malformed handshake message")
    return message


class Handshake:
    """The handshake of one party (rank `rank` of `names`) with any of its peers: its identity,
    its key and the peers' pinned keys (None and {} with encrypt=False), the session."""

    def __init__(
        self,
        rank: int,
        names: list[str],
        *,
        encrypt: bool,
        key: PartyKey | None,
        pinned: dict[str, bytes],
        session_id: bytes,
        connect_timeout: float,
    ) -> None:
        self.rank = rank
        self.names = names
        self.n = len(names)
        self.name = names[rank]
        self._encrypt = encrypt
        self._key = key
        self._pinned = pinned
        self._session_id = session_id
        self._connect_timeout = connect_timeout
        #: what a hello says of the session (the session id itself is never sent)
        self.sid_digest = hashlib.sha256(_LABEL + b" session " + session_id).digest()[:16]

    def hello(self, to: int, eph_public: bytes | None) -> dict[str, Any]:
        """This party's hello to rank `to`, with its ephemeral public key (encrypted mode)."""
        hello: dict[str, Any] = {
            "m": "hello",
            "p": PROTOCOL,
            "v": VERSION,
            "rank": self.rank,
            "name": self.name,
            "names": self.names,
            "to": to,
            "enc": self._encrypt,
            "sid": self.sid_digest,
        }
        if self._key is not None and eph_public is not None:
            hello["static"] = self._key.public_bytes
            hello["eph"] = eph_public
        return hello

    def check_hello(self, hello: dict[str, Any], expected: int | None, where: str) -> int:
        """Validate a peer's hello; return its rank. Raises _Refused (attributed if possible).
        Fields the peer chose appear in the reason only through `_quote`."""
        claimed = hello.get("name")
        peer: int | None = None
        if isinstance(claimed, str) and claimed in self.names and claimed != self.name:
            peer = self.names.index(claimed)
        if expected is not None:
            peer = expected
            who = f"party {self.names[peer]!r}"
        elif peer is not None:  # unauthenticated: only a claim (see `Connecting`)
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
        if hello.get("sid") != self.sid_digest:
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

    def derive(self, peer: int, eph_private: X25519PrivateKey, eph_peer: bytes) -> RecordKeys:
        """The record keys of the connection with `peer` (see the module docstring)."""
        assert self._key is not None
        static_dh = self._key.exchange(self._pinned[self.names[peer]])
        try:
            eph_dh = x25519(eph_private, eph_peer)
        except ValueError as e:
            raise IntegrityError(f"ephemeral key exchange failed: {e}") from e
        eph_mine = raw_public(eph_private)
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
        low_to_high, high_to_low = derive_aeads(
            static_dh + eph_dh, salt=self._session_id, info=bytes(info), count=2
        )
        send, recv = (low_to_high, high_to_low) if self.rank < peer else (high_to_low, low_to_high)
        return RecordKeys(send, recv, self._ad(self.rank, peer), self._ad(peer, self.rank))

    def _ad(self, sender: int, receiver: int) -> bytes:
        return _LABEL + sender.to_bytes(4, "big") + receiver.to_bytes(4, "big") + self._session_id

    def run(
        self,
        sock: socket.socket,
        expected: int | None,
        deadline: float,
        where: str,
        hello_wait: float | None = None,
    ) -> Link:
        """Run the handshake on a fresh socket; `expected` is the dialed rank (None: accepted).
        Everything ends by `deadline`; the peer's hello must come within `hello_wait` s too.

        Order: dialer hello -> acceptor hello -> dialer confirm -> acceptor confirm. Each confirm
        is record 0 of its direction; a peer that fails a check gets a "reject" with the reason.
        """
        reader = Reader(sock)
        peer: int | None = expected
        hello_deadline = deadline
        if hello_wait is not None:
            hello_deadline = min(deadline, time.monotonic() + hello_wait)
        eph = ephemeral_key() if self._encrypt else None
        eph_public = raw_public(eph) if eph is not None else None

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
            send_msg(sock, message)

        def reject(reason: str) -> None:
            with contextlib.suppress(OSError):
                send({"m": "reject", "why": reason[:_REASON_CHARS]})

        def receive(what: str, until: float = deadline) -> dict[str, Any]:
            try:
                message = recv_msg(reader, until)
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

        def confirm_record(keys: RecordKeys | None) -> dict[str, Any]:
            if keys is None:
                return {"m": "confirm"}
            return {
                "m": "confirm",
                "c": keys.send.encrypt(counter_nonce(0), _CONFIRM, keys.send_ad),
            }

        def check_confirm(message: dict[str, Any], keys: RecordKeys | None) -> None:
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
                plain = keys.recv.decrypt(counter_nonce(0), record, keys.recv_ad)
                if plain != _CONFIRM:
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
                send(self.hello(expected, eph_public))
            hello = receive("hello", hello_deadline)
            try:
                rank = self.check_hello(hello, expected, where)
            except _Refused as refused:
                reject(str(refused.error))
                raise
            peer = rank
            keys = None
            if eph is not None:
                try:
                    keys = self.derive(rank, eph, hello["eph"])
                except MpcError as e:
                    reject(str(e))
                    raise fail(str(e), IntegrityError) from None
            if expected is None:
                send(self.hello(rank, eph_public))
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
        return Link(rank, self.names[rank], sock, reader, keys)

    def answer_late(self, sock: socket.socket, reason: str) -> None:
        """Answer a peer that dialed after this party gave up connecting (see
        `Connecting._linger_rejecting`): read its hello, and only if it belongs to this session
        (its `sid`) tell it `reason` (a "reject" message), else just hang up, so that a dialer
        of another run (a retry on the same port) is not told this run's reason. One deadline,
        _LATE_DEADLINE, bounds the whole exchange, which holds a handshake slot meanwhile."""
        deadline = time.monotonic() + _LATE_DEADLINE
        try:
            hello = recv_msg(Reader(sock), deadline)
            if hello.get("m") != "hello" or hello.get("sid") != self.sid_digest:
                return
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            send_msg(sock, {"m": "reject", "why": _printable(reason)})
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
