"""Blocking, mutually authenticated and encrypted request/response channel over TCP.

Responsibility: let one organisation call named methods of another's service (a party and the
dealer service, a coordinator and its peers' control ports, a run starter and its party).
`SecureServer` accepts connections, authenticates each client against its allow-list and runs the
handler for every request in that connection's thread; `SecureClient` connects, authenticates
the server and makes sequential calls, each bounded by a timeout.

Security model: every byte from the peer is untrusted. Each side has a long-term X25519 key
(`mpc.parties.keys.PartyKey`); the server pins the public key of every client name it accepts and
the client pins the server's. Both derive two AES-256-GCM keys (one per direction) with
HKDF-SHA256 over DH(static_c, static_s) || DH(eph_c, eph_s), salt = label, info = a transcript of
label, version, both names, both static and both ephemeral keys, so only holders of the pinned
private keys derive them and the ephemeral DH gives forward secrecy. A key-confirmation record in
each direction refuses an impostor or a wrongly pinned key at connect time (`ConfigurationError`
naming the peer and key fingerprints), as in `mpc.parties.tcp`. Records carry an implicit nonce:
a per-direction counter that must increase by exactly one, and associated data binding label and
direction, so a modified, replayed, reordered or dropped record raises `IntegrityError` and closes
the connection (a call is never retried: methods need not be idempotent). Messages are msgpack
only (never pickle) with str map keys, bounded nesting and allow-listed array dtypes; decoded
arrays are fresh writable copies. Lengths are bounded before anything is allocated, and a body's
buffer grows only as its bytes arrive (at most 1 MiB ahead), so a length prefix alone costs the
receiver nothing. Every receive has a deadline; a server's answer, and the answer to a call
made with a `stall` limit, may take longer as long as its bytes keep coming (each part within
the server's timeout, or `stall`, of the one before), so that a large answer on a slow link is
not cut short while a stopped peer is still found soon. The server bounds idle connections
(`idle_timeout`) and concurrent authenticated connections (`max_connections`). Anyone who can
reach its port can open connections without a key, so those are kept apart: a handshake must
finish within `hello_timeout` (5 s by default, at most `timeout`), at most `max_handshakes` run
at once, and a connection takes one of the `max_connections` slots only after key confirmation.
When every handshake slot is taken, new connections wait in the listen backlog (in arrival order)
instead of being refused, so a client is served once the idle connections ahead of it time out.
Not hidden: who talks to whom, when, and message sizes. Only the messages of `MpcError`s raised
by a handler reach the client; other errors are reported without details (and logged at the server).

Wire format: every message is a 4-byte big-endian length and a body. The handshake bodies are
plaintext msgpack maps of at most 4 KiB::

    client hello  {"m": "hello", "p": label, "v": 1, "from": client, "to": server,
                   "s": static key, "e": ephemeral key}
    server hello  {"m": "hello", ..., "from": server, "s": ..., "e": ..., "c": confirm}
    client        {"m": "confirm", "c": confirm}
    refusal       {"m": "refused", "why": reason}     (either side, then it closes)

where `confirm` is record 0 of its direction, sealing b"<label> confirm". Then each body is one
record, AES-GCM(msgpack map) of at most max_message + 16 bytes (a server's responses: its
max_response + 16), nonce = counter (96-bit big endian), associated data = label + b" c2s" or
b" s2c". A request is {"id": n, "method": str, "params": map}, its response {"id": n, "ok": map}
or {"id": n, "error": str, "type": str}. A server made with `keepalive` also sends {"id": n,
"wait": true} every quarter `timeout` while its handler runs, so that a client that calls with
a `stall` limit tells a long call (a whole run) from a server that stopped (frozen, or its host
or link down) within that limit. A numpy array is msgpack extension 1: u8 dtype code (as
in `mpc.parties.framing.DTYPE_CODES`) | u8 ndim | ndim x i64 little-endian dimensions | raw
little-endian data.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgpack
import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mpc.errors import (
    CommunicationError,
    ConfigurationError,
    IntegrityError,
    MpcError,
    ReceiveTimeoutError,
)
from mpc.parties import framing
from mpc.parties.keys import PartyKey, check_public, fingerprint

#: (authenticated client name, method, params) -> result.
Handler = Callable[[str, str, dict[str, Any]], dict[str, Any]]

VERSION: Final = 2
HELLO_MAX: Final = 4096
#: Default deadline (seconds) of a server-side handshake, from accept to key confirmation.
HELLO_TIMEOUT: Final = 5.0
#: A keepalive server sends {"id": n, "wait": true} every timeout / KEEPALIVES_PER_TIMEOUT s.
KEEPALIVES_PER_TIMEOUT: Final = 4
GCM_TAG: Final = 16
MAX_DEPTH: Final = 32
MAX_NDIM: Final = 8
#: Longest error message or refusal reason put on the wire (longer ones are truncated).
MAX_TEXT: Final = 2000
ALLOWED_DTYPES: Final = ("<u8", "<i8", "<f8", "<u4", "<i4", "|u1", "|b1")
_ARRAY_EXT: Final = 1
_CODE: Final = {s: framing.DTYPE_CODES.index(s) for s in ALLOWED_DTYPES}
_DTYPE: Final = {c: np.dtype(s) for s, c in _CODE.items()}
_ARRAY_HEAD: Final = struct.Struct("<BB")
_CHUNK: Final = 2**20  # a receive buffer grows by at most this much ahead of the data
_POLL: Final = 0.1  # how often the accept thread looks at the stop flag (seconds)
#: A send with a `stall` limit looks this many times per limit whether the peer took bytes.
_PROGRESS_CHECKS: Final = 8
_JOIN_WAIT: Final = 5.0  # how long close() waits for the server's threads in all (seconds)
_log = logging.getLogger(__name__)


class RemoteError(MpcError):
    """Raised at the client when the server's handler refused or failed a call.

    Carries the server's message."""


def _to_wire(obj: Any, depth: int = 0) -> Any:
    """`obj` with arrays as msgpack extensions; ConfigurationError for anything not allowed."""
    if depth > MAX_DEPTH:
        raise ConfigurationError(f"message nests deeper than {MAX_DEPTH} levels")
    if obj is None or isinstance(obj, bool | int | float | str | bytes):
        return obj
    if isinstance(obj, dict):
        if not all(type(k) is str for k in obj):
            raise ConfigurationError(f"message maps need str keys, got {list(obj)[:5]!r}")
        return {k: _to_wire(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_wire(v, depth + 1) for v in obj]
    if isinstance(obj, np.generic) and obj.dtype.str in _CODE:
        return obj.item()
    if not isinstance(obj, np.ndarray):
        raise ConfigurationError(
            f"cannot send a value of type {type(obj).__name__}; messages hold None, bool, int, "
            "float, str, bytes, lists, maps with str keys and numpy arrays"
        )
    dtype = obj.dtype.newbyteorder("<") if obj.dtype.byteorder == ">" else obj.dtype
    if dtype.str not in _CODE or obj.ndim > MAX_NDIM:
        raise ConfigurationError(
            f"cannot send an array of dtype {obj.dtype} with {obj.ndim} dimensions; allowed are "
            f"{list(ALLOWED_DTYPES)} with at most {MAX_NDIM} dimensions"
        )
    wire = obj.astype(dtype, order="C", copy=False)
    shape = struct.pack(f"<{wire.ndim}q", *wire.shape)
    head = _ARRAY_HEAD.pack(_CODE[dtype.str], wire.ndim) + shape
    return msgpack.ExtType(_ARRAY_EXT, head + wire.tobytes())


def _ext_hook(code: int, data: bytes) -> np.ndarray:
    if code != _ARRAY_EXT or len(data) < _ARRAY_HEAD.size:
        raise IntegrityError(f"unknown msgpack extension type {code}")
    dtype_code, ndim = _ARRAY_HEAD.unpack_from(data)
    dtype = _DTYPE.get(dtype_code)
    start = _ARRAY_HEAD.size + 8 * ndim
    if dtype is None or ndim > MAX_NDIM or len(data) < start:
        raise IntegrityError(f"malformed array (dtype code {dtype_code}, {ndim} dimensions)")
    shape = struct.unpack_from(f"<{ndim}q", data, _ARRAY_HEAD.size)
    nbytes = dtype.itemsize
    for n in shape:
        nbytes *= n
    if min(shape, default=0) < 0 or nbytes != len(data) - start:
        raise IntegrityError(f"array of shape {shape} does not match its {len(data)} bytes")
    header = framing.Header(framing.KIND_DATA, (), dtype.str, shape, nbytes)
    return framing.decode_array(header, memoryview(data)[start:])  # a writable copy


def _check(obj: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise IntegrityError(f"message nests deeper than {MAX_DEPTH} levels")
    if isinstance(obj, dict):
        for k, v in obj.items():
            if type(k) is not str:
                raise IntegrityError("message map with a key that is not a str")
            _check(v, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _check(v, depth + 1)
    elif not (obj is None or isinstance(obj, bool | int | float | str | bytes | np.ndarray)):
        raise IntegrityError(f"message holds a value of type {type(obj).__name__}")


def _encode(message: dict[str, Any], limit: int) -> bytes:
    try:
        data: bytes = msgpack.packb(_to_wire(message), use_bin_type=True)
    except (OverflowError, TypeError, ValueError) as e:  # e.g. an int beyond 64 bits
        raise ConfigurationError(f"cannot encode message: {e}") from e
    if len(data) > limit:
        raise ConfigurationError(f"message of {len(data)} bytes exceeds the limit of {limit}")
    return data


def _decode(data: framing.Buffer) -> dict[str, Any]:
    """Decode and validate a message from the peer (msgpack only); IntegrityError if malformed."""
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_ext_hook)
    except IntegrityError:
        raise
    except Exception as e:  # msgpack and numpy raise many types for malformed input
        raise IntegrityError(f"undecodable message ({type(e).__name__})") from None
    if type(obj) is not dict:
        raise IntegrityError("message is not a map")
    _check(obj)
    return obj


def _unsent(sock: socket.socket) -> int | None:
    """Bytes in `sock`'s send queue that the peer has not acknowledged (Linux SIOCOUTQ), or
    None where that cannot be read."""
    try:
        import fcntl
        import termios

        answer = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (ImportError, AttributeError, OSError):
        return None
    count: int = struct.unpack("i", answer)[0]
    return count


def _send_body(
    sock: socket.socket, body: bytes, deadline: float, stall: float | None = None
) -> None:
    """Send one length-prefixed body, all of it by `deadline`; with `stall`, also with progress
    at least every `stall` s, so that a large answer on a slow link is sent as long as the peer
    takes it. Progress is a write, or the peer acknowledging queued bytes: on a slow link the
    kernel lets a full socket take more only once much of its queue has gone (seconds)."""
    data = framing.length_prefix(len(body)) + body
    if stall is None:
        sock.settimeout(max(deadline - time.monotonic(), 1e-3))
        sock.sendall(data)
        return
    view = memoryview(data)
    last = time.monotonic()
    queued = None
    while view:
        now = time.monotonic()
        remaining = min(deadline, last + stall) - now
        if remaining <= 0:
            raise TimeoutError("timed out")
        sock.settimeout(min(remaining, stall / _PROGRESS_CHECKS))
        try:
            view = view[sock.send(view) :]
        except TimeoutError:
            unsent = _unsent(sock)
            if unsent is not None and queued is not None and unsent < queued:
                last = time.monotonic()  # the peer took some: the link is slow, not dead
            queued = unsent
            continue
        last, queued = time.monotonic(), None


def _recv_exact(
    sock: socket.socket,
    n: int,
    deadline: float,
    stall: float | None = None,
    progress: Callable[[], None] | None = None,
) -> bytearray:
    """Exactly `n` bytes by `deadline`; with `stall`, also each part within `stall` s of the one
    before. `progress` is called as parts arrive. The result grows as bytes arrive, read through
    a buffer of at most `_CHUNK` bytes: memory follows what the peer sent, not the length it
    declared."""
    buf = bytearray()
    scratch = memoryview(bytearray(min(n, _CHUNK)))
    while len(buf) < n:
        remaining = deadline - time.monotonic()
        if stall is not None:
            remaining = min(remaining, stall)
        if remaining <= 0:
            raise TimeoutError("timed out")
        sock.settimeout(remaining)
        k = sock.recv_into(scratch, min(n - len(buf), len(scratch)))
        if k == 0:
            raise EOFError("the connection closed")
        buf += scratch[:k]
        if progress is not None:
            progress()
    return buf


def _recv_body(
    sock: socket.socket,
    limit: int,
    deadline: float,
    rest: float | None = None,
    *,
    stall: float | None = None,
    cap: float | None = None,
    progress: Callable[[], None] | None = None,
) -> bytearray:
    """One length-prefixed body; the prefix by `deadline`, the rest within `rest` s if given,
    else, with `stall`, each part of the rest within `stall` s of the one before and all of it
    by `cap` (a transfer that goes on is not cut short), else by `deadline`."""
    prefix = _recv_exact(sock, framing.LENGTH_PREFIX_BYTES, deadline, progress=progress)
    size = framing.parse_length(prefix, limit)
    if rest is not None:
        return _recv_exact(sock, size, time.monotonic() + rest)
    if stall is not None:
        end = deadline if cap is None else cap
        return _recv_exact(sock, size, end, stall, progress)
    return _recv_exact(sock, size, deadline)


def _send_plain(sock: socket.socket, message: dict[str, Any], deadline: float) -> None:
    _send_body(sock, _encode(message, HELLO_MAX), deadline)


def _refuse(sock: socket.socket, reason: str, **extra: Any) -> None:
    """Tell the peer why it is refused (best effort; the caller closes)."""
    with contextlib.suppress(OSError, MpcError):
        _send_plain(sock, {"m": "refused", "why": reason[:500], **extra}, time.monotonic() + 1.0)


class _Channel:
    """The record layer of one connection after the key exchange."""

    def __init__(
        self, sock: socket.socket, label: str, client: bool, dh: bytes, transcript: list[bytes]
    ) -> None:
        info = bytearray(label.encode() + b" keys")
        for part in transcript:
            info += len(part).to_bytes(4, "big") + part
        okm = HKDF(hashes.SHA256(), 64, salt=label.encode(), info=bytes(info)).derive(dh)
        ad = (label.encode() + b" c2s", label.encode() + b" s2c")
        keys = (AESGCM(okm[:32]), AESGCM(okm[32:]))
        i = 0 if client else 1
        self.sock = sock
        self._seal_key, self._open_key = keys[i], keys[1 - i]
        self._seal_ad, self._open_ad = ad[i], ad[1 - i]
        self._sent = self._received = 0
        self.confirm = label.encode() + b" confirm"

    def seal(self, plain: bytes) -> bytes:
        sealed = self._seal_key.encrypt(self._sent.to_bytes(12, "big"), plain, self._seal_ad)
        self._sent += 1
        return sealed

    def open(self, record: framing.Buffer) -> bytes:
        try:
            nonce = self._received.to_bytes(12, "big")
            plain = self._open_key.decrypt(nonce, record, self._open_ad)
        except InvalidTag:
            raise IntegrityError(
                "a record failed authentication (modified, replayed, reordered or dropped)"
            ) from None
        self._received += 1
        return plain

    def confirmed(self, record: Any) -> bool:
        with contextlib.suppress(IntegrityError):
            return isinstance(record, bytes) and self.open(record) == self.confirm
        return False

    def send(self, plain: bytes, deadline: float, stall: float | None = None) -> None:
        _send_body(self.sock, self.seal(plain), deadline, stall)

    def recv(
        self,
        limit: int,
        deadline: float,
        rest: float | None = None,
        *,
        stall: float | None = None,
        cap: float | None = None,
        progress: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """One record (see `_recv_body` for `rest`, `stall`, `cap` and `progress`)."""
        body = _recv_body(
            self.sock, limit + GCM_TAG, deadline, rest, stall=stall, cap=cap, progress=progress
        )
        return _decode(self.open(body))


def _session(
    sock: socket.socket,
    label: str,
    client: bool,
    key: PartyKey,
    eph: PartyKey,
    peer_static: bytes,
    peer_eph: Any,
    names: tuple[str, str],
) -> _Channel:
    """The channel keyed by both DHs; `names` and the key order are (client, server)."""
    if not isinstance(peer_eph, bytes):
        raise ConfigurationError("the hello carries no ephemeral key")
    dh = key.exchange(peer_static) + eph.exchange(peer_eph)
    statics = (key.public_bytes, peer_static) if client else (peer_static, key.public_bytes)
    ephs = (eph.public_bytes, peer_eph) if client else (peer_eph, eph.public_bytes)
    transcript = [VERSION.to_bytes(4, "big"), names[0].encode(), names[1].encode(), *statics, *ephs]
    return _Channel(sock, label, client, dh, transcript)


def _check_limits(timeout: float, max_message: int) -> None:
    if not timeout > 0 or not 0 < max_message < 2**32 - GCM_TAG:
        raise ConfigurationError(
            f"need timeout > 0 and 0 < max_message < 2**32 - {GCM_TAG}, got {timeout}, "
            f"{max_message}"
        )


class SecureServer:
    """Serves `handler` to the clients of an allow-list {name: pinned public key}.

    `max_message` bounds a request, `max_response` (default: `max_message`) a response this
    server sends. `max_connections` bounds authenticated connections; connections still in their
    handshake are bounded apart, by `max_handshakes` (default: `max_connections`), and each must
    finish its handshake within min(`timeout`, `hello_timeout`) seconds. With `keepalive`, a
    handler that runs longer than a quarter `timeout` is announced to its client as still
    running every quarter `timeout` (see `SecureClient.call`'s `stall`).
    """

    def __init__(
        self,
        name: str,
        key: PartyKey,
        clients: Mapping[str, bytes],
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        timeout: float = 30.0,
        max_message: int = 256 * 2**20,
        max_connections: int = 32,
        label: str = "mpc.rpc",
        idle_timeout: float = 600.0,
        hello_timeout: float = HELLO_TIMEOUT,
        max_handshakes: int | None = None,
        max_response: int | None = None,
        keepalive: bool = False,
    ) -> None:
        max_response = max_message if max_response is None else max_response
        self.keepalive = keepalive
        max_handshakes = max_connections if max_handshakes is None else max_handshakes
        _check_limits(min(timeout, idle_timeout, hello_timeout), min(max_message, max_response))
        _check_limits(timeout, max(max_message, max_response))
        if max_connections < 1 or max_handshakes < 1:
            raise ConfigurationError(
                f"max_connections and max_handshakes must be at least 1, got {max_connections}, "
                f"{max_handshakes}"
            )
        self.name, self.key, self.handler, self.label = name, key, handler, label
        self.host, self.port, self.timeout, self.idle_timeout = host, port, timeout, idle_timeout
        self.hello_timeout = min(timeout, hello_timeout)
        self.max_message, self.max_response = max_message, max_response
        self.max_connections, self.max_handshakes = max_connections, max_handshakes
        self._lock = threading.Lock()
        self._clients: dict[str, bytes] = {}
        self.set_clients(clients)
        self._conns: dict[socket.socket, threading.Thread] = {}
        #: One permit per handshake in progress; the acceptor waits for one before accepting.
        self._hello_slots = threading.Semaphore(max_handshakes)
        self._authenticated = 0  # connections holding one of the max_connections slots
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._count = 0

    def set_clients(self, clients: Mapping[str, bytes]) -> None:
        """Replace the allow-list (open connections keep the identity they authenticated)."""
        checked = {str(n): check_public(k) for n, k in clients.items()}
        with self._lock:
            self._clients = checked

    def start(self) -> tuple[str, int]:
        """Bind, listen and start accepting; return the bound (host, port)."""
        if self._listener is not None:
            raise ConfigurationError(f"server {self.name!r} is already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            self._listener = socket.create_server((self.host, self.port), family=family)
        except OSError as e:
            raise ConfigurationError(
                f"server {self.name!r} cannot listen on {self.host}:{self.port}: {e}"
            ) from e
        self._listener.settimeout(_POLL)
        address: tuple[str, int] = self._listener.getsockname()[:2]
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"mpc-rpc-accept-{self.name}", daemon=True
        )
        self._acceptor.start()
        return address

    def close(self) -> None:
        """Stop accepting, close every connection and wait (bounded) for the threads."""
        self._stop.set()
        deadline = time.monotonic() + _JOIN_WAIT
        if self._acceptor is not None:
            self._acceptor.join(_JOIN_WAIT)
        with self._lock:
            conns = list(self._conns.items())
        for sock, _ in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes its thread; the thread closes it
        for _, thread in conns:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> SecureServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        with self._listener:
            while not self._stop.is_set():
                # Unauthenticated connections get their own bounded slots: when all are taken,
                # new connections wait in the listen backlog (in order) until one frees up,
                # which takes at most hello_timeout; they never take authenticated slots.
                if not self._hello_slots.acquire(timeout=_POLL):
                    continue
                try:
                    sock, address = self._listener.accept()
                except TimeoutError:
                    self._hello_slots.release()
                    continue
                except OSError:
                    self._hello_slots.release()
                    return
                with self._lock:
                    self._count += 1
                    thread = threading.Thread(
                        target=self._serve,
                        args=(sock, address),
                        daemon=True,
                        name=f"mpc-rpc-{self.name}-{self._count}",
                    )
                    self._conns[sock] = thread
                thread.start()

    def _handshake(self, sock: socket.socket, where: str) -> tuple[str, _Channel]:
        """Authenticate the client; on success it holds one of the `max_connections` slots."""
        deadline = time.monotonic() + self.hello_timeout
        try:
            hello = _decode(_recv_body(sock, HELLO_MAX, deadline))
        except IntegrityError as e:
            _refuse(sock, f"malformed hello: {e}")
            raise
        client, static = hello.get("from"), hello.get("s")
        with self._lock:
            pinned = self._clients.get(client) if isinstance(client, str) else None
        if (hello.get("m"), hello.get("p"), hello.get("v")) != ("hello", self.label, VERSION):
            reason = (
                f"it speaks {hello.get('p')!r} version {hello.get('v')!r}, server "
                f"{self.name!r} {self.label!r} version {VERSION}"
            )
        elif pinned is None:
            reason = f"client name {client!r} is not on the allow-list of server {self.name!r}"
        elif static != pinned:
            shown = fingerprint(static) if isinstance(static, bytes) else "none"
            reason = (
                f"client {client!r} presents public key {shown} but server {self.name!r} "
                f"pins {fingerprint(pinned)} for it (wrong key file or an impostor)"
            )
        elif hello.get("to") != self.name:
            reason = f"it expects server {hello.get('to')!r}, this is {self.name!r}"
        else:
            reason = ""
        if pinned is None or reason or not isinstance(client, str):
            _refuse(sock, reason)
            raise ConfigurationError(f"refused a client at {where}: {reason}")
        with self._lock:
            busy = self._authenticated >= self.max_connections
        if busy:
            _refuse(
                sock,
                f"server {self.name!r} is busy ({self.max_connections} connections)",
                busy=True,
            )
            raise CommunicationError(f"turned away client {client!r} at {where}: busy")
        channel = self._confirm(sock, client, pinned, hello.get("e"), where, deadline)
        # A slot is taken only after key confirmation: one who merely names a pinned client
        # (public keys are public) never holds one. Others may have taken the last slot since
        # the check above; then this connection closes.
        with self._lock:
            busy = self._authenticated >= self.max_connections
            if not busy:
                self._authenticated += 1
        if busy:
            raise CommunicationError(f"turned away client {client!r} at {where}: busy")
        return client, channel

    def _confirm(
        self,
        sock: socket.socket,
        client: str,
        pinned: bytes,
        peer_eph: Any,
        where: str,
        deadline: float,
    ) -> _Channel:
        eph = PartyKey.generate()
        try:
            channel = _session(
                sock, self.label, False, self.key, eph, pinned, peer_eph, (client, self.name)
            )
        except ConfigurationError as e:
            _refuse(sock, str(e))
            raise
        _send_plain(
            sock,
            {
                "m": "hello",
                "p": self.label,
                "v": VERSION,
                "from": self.name,
                "s": self.key.public_bytes,
                "e": eph.public_bytes,
                "c": channel.seal(channel.confirm),
            },
            deadline,
        )
        if not channel.confirmed(_decode(_recv_body(sock, HELLO_MAX, deadline)).get("c")):
            _refuse(sock, "key confirmation failed")
            raise IntegrityError(f"client {client!r} at {where} failed key confirmation")
        return channel

    def _serve(self, sock: socket.socket, address: Any) -> None:
        where = f"{address[0]}:{address[1]}"
        authenticated = False
        try:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                client, channel = self._handshake(sock, where)
                authenticated = True
            finally:
                self._hello_slots.release()
            while not self._stop.is_set():
                request = channel.recv(
                    self.max_message, time.monotonic() + self.idle_timeout, self.timeout
                )
                if self.keepalive:
                    self._respond_alive(channel, client, request)
                else:
                    self._answer(channel, self._respond(client, request))
        except (MpcError, OSError, EOFError) as e:
            if not self._stop.is_set():
                _log.info("server %r: connection from %s ended: %s", self.name, where, e)
        finally:
            with self._lock:
                self._conns.pop(sock, None)
                if authenticated:
                    self._authenticated -= 1
            sock.close()

    def _respond_alive(self, channel: _Channel, client: str, request: dict[str, Any]) -> None:
        """Answer `request`, telling the client every quarter timeout that it is still being
        handled (a thread sends those while the handler runs)."""
        done = threading.Event()
        sending = threading.Lock()  # one record at a time: the nonces are a counter
        every = self.timeout / KEEPALIVES_PER_TIMEOUT
        waiting = _encode({"id": request.get("id"), "wait": True}, HELLO_MAX)

        def beat() -> None:
            with contextlib.suppress(OSError, MpcError):  # the answer's send reports the rest
                while not done.wait(every):
                    with sending:
                        if done.is_set():
                            return
                        channel.send(waiting, time.monotonic() + self.timeout)

        beating = threading.Thread(target=beat, name=f"mpc-rpc-alive-{self.name}", daemon=True)
        beating.start()
        try:
            answer = self._respond(client, request)
        finally:
            done.set()
        with sending:
            self._answer(channel, answer)

    def _answer(self, channel: _Channel, answer: bytes) -> None:
        """Send `answer` as long as the client keeps reading it (a large answer on a slow link
        takes longer than `timeout`): each part within `timeout` s of the one before, all of it
        within `idle_timeout` (at least `timeout`)."""
        channel.send(answer, time.monotonic() + max(self.timeout, self.idle_timeout), self.timeout)

    def _respond(self, client: str, request: dict[str, Any]) -> bytes:
        rid, method, params = request.get("id"), request.get("method"), request.get("params")
        if type(rid) is not int or type(method) is not str or type(params) is not dict:
            raise IntegrityError(f"malformed request from {client!r}")
        try:
            result = self.handler(client, method, params)
            if type(result) is not dict:
                raise TypeError(f"the handler of {method!r} returned {type(result).__name__}")
            return _encode({"id": rid, "ok": result}, self.max_response)
        except MpcError as e:
            error, kind = str(e)[:MAX_TEXT], type(e).__name__
        except Exception as e:
            _log.exception("server %r: %s from %r failed", self.name, method[:100], client)
            kind = type(e).__name__
            error = f"internal error in {method[:100]} ({kind})"
        return _encode({"id": rid, "error": error, "type": kind}, self.max_response)


class SecureClient:
    """A connection to one server whose public key is pinned; `call` makes one request."""

    def __init__(
        self,
        name: str,
        key: PartyKey,
        server_name: str,
        server_key: bytes,
        address: tuple[str, int],
        *,
        timeout: float = 30.0,
        max_message: int = 256 * 2**20,
        label: str = "mpc.rpc",
        connect_timeout: float | None = None,
    ) -> None:
        _check_limits(timeout, max_message)
        self.name, self.key, self.server_name, self.label = name, key, server_name, label
        self.server_key = check_public(server_key)
        self.address = (str(address[0]), int(address[1]))
        self.timeout, self.max_message = timeout, max_message
        self._who = f"server {server_name!r} at {self.address[0]}:{self.address[1]}"
        self._lock = threading.Lock()
        self._next_id = 0
        self._broken = ""
        #: When the call in progress (or the latest one) last showed progress (monotonic).
        self.progress_at = time.monotonic()
        self._channel: _Channel | None = self._connect(
            time.monotonic() + (timeout if connect_timeout is None else connect_timeout)
        )

    def _dial(self, deadline: float) -> socket.socket:
        while True:
            try:
                return socket.create_connection(
                    self.address, timeout=max(deadline - time.monotonic(), 0.01)
                )
            except ConnectionRefusedError as e:
                if time.monotonic() + 0.05 >= deadline:
                    raise CommunicationError(f"cannot connect to {self._who}: {e}") from None
                time.sleep(0.05)
            except OSError as e:
                raise CommunicationError(f"cannot connect to {self._who}: {e}") from None

    def _connect(self, connect_deadline: float) -> _Channel:
        sock = self._dial(connect_deadline)
        deadline = time.monotonic() + self.timeout
        eph = PartyKey.generate()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _send_plain(
                sock,
                {
                    "m": "hello",
                    "p": self.label,
                    "v": VERSION,
                    "from": self.name,
                    "to": self.server_name,
                    "s": self.key.public_bytes,
                    "e": eph.public_bytes,
                },
                deadline,
            )
            reply = _decode(_recv_body(sock, HELLO_MAX, deadline))
            if reply.get("m") == "refused":
                kind = CommunicationError if reply.get("busy") is True else ConfigurationError
                why = str(reply.get("why"))[:500]
                raise kind(f"{self._who} refused client {self.name!r}: {why}")
            static = reply.get("s")
            if (reply.get("m"), reply.get("p"), reply.get("v")) != ("hello", self.label, VERSION):
                reason = f"it speaks {reply.get('p')!r} version {reply.get('v')!r}"
            elif reply.get("from") != self.server_name:
                reason = f"it is server {reply.get('from')!r}"
            elif static != self.server_key:
                shown = fingerprint(static) if isinstance(static, bytes) else "none"
                reason = (
                    f"it presents public key {shown} but client {self.name!r} pins "
                    f"{fingerprint(self.server_key)} for {self.server_name!r}"
                )
            else:
                channel = _session(
                    sock,
                    self.label,
                    True,
                    self.key,
                    eph,
                    self.server_key,
                    reply.get("e"),
                    (self.name, self.server_name),
                )
                if channel.confirmed(reply.get("c")):
                    confirm = {"m": "confirm", "c": channel.seal(channel.confirm)}
                    _send_plain(sock, confirm, deadline)
                    sock.settimeout(None)
                    return channel
                reason = (
                    f"key confirmation failed: it does not hold the private key of the "
                    f"pinned public key {fingerprint(self.server_key)}, or it pins another "
                    f"key for client {self.name!r}"
                )
            _refuse(sock, reason)
            raise ConfigurationError(f"{self._who} is refused by client {self.name!r}: {reason}")
        except BaseException as e:
            sock.close()
            if isinstance(e, MpcError) and self._who in str(e):
                raise
            if isinstance(e, TimeoutError):
                raise ReceiveTimeoutError(
                    f"{self._who} did not complete the handshake within {self.timeout:g} s"
                ) from None
            if isinstance(e, MpcError):
                raise type(e)(f"handshake with {self._who} failed: {e}") from None
            if isinstance(e, OSError | EOFError):
                raise CommunicationError(f"handshake with {self._who} failed: {e}") from None
            raise

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        stall: float | None = None,
    ) -> dict[str, Any]:
        """Call `method` on the server and return its result; RemoteError if it refused.

        The answer must come within `timeout` s (default: the client's); with `stall`, also
        begin within `stall` s of the server's last sign that it still handles the call (a
        server with `keepalive` sends one every quarter of its timeout), and each part of it
        arrive within `stall` s of the one before, so that a long call, or a large answer on a
        slow link, goes on while a call fails soon once the server stops (frozen, or its host
        or link down). `progress_at` is the time (monotonic) of the latest sign of the call in
        progress: its start, a "still running" message, or a part of its answer."""
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        what = f"call {method!r} to {self._who}"
        if not self._lock.acquire(timeout=max(wait, 0.0)):
            raise ReceiveTimeoutError(f"{what}: other calls held the connection for {wait:g} s")
        try:
            channel = self._channel
            if channel is None:
                raise CommunicationError(f"{what}: the connection is closed{self._broken}")
            rid = self._next_id = self._next_id + 1
            plain = _encode({"id": rid, "method": method, "params": params or {}}, self.max_message)
            try:
                self.progress_at = time.monotonic()
                channel.send(plain, deadline, stall)
                heard = self.progress_at = time.monotonic()
                while True:
                    until = deadline if stall is None else min(deadline, heard + stall)
                    response = channel.recv(
                        self.max_message, until, stall=stall, cap=deadline, progress=self._progress
                    )
                    if _is_wait(response, rid):  # still handled there
                        heard = time.monotonic()
                        continue
                    break
                ok, error = response.get("ok"), response.get("error")
                if response.get("id") != rid or not (type(ok) is dict or type(error) is str):
                    raise IntegrityError("malformed response")
            except BaseException as e:
                self._broken = f" (after: {type(e).__name__}: {e})"
                self._shut()
                stalled = stall is not None and time.monotonic() < deadline
                if isinstance(e, TimeoutError) and stalled:
                    raise ReceiveTimeoutError(
                        f"{what}: no answer, and no sign that it is still handled for "
                        f"{stall:g} s: the server is frozen, or its host or link is down"
                    ) from None
                if isinstance(e, TimeoutError):
                    raise ReceiveTimeoutError(f"{what}: no answer within {wait:g} s") from None
                if isinstance(e, IntegrityError):
                    raise IntegrityError(f"{what}: {e}; connection closed") from None
                if isinstance(e, OSError | EOFError):
                    raise CommunicationError(f"{what} failed: connection lost ({e})") from None
                raise
            if type(ok) is dict:
                return ok
            raise RemoteError(f"{self.server_name} refused {method}: {error}")
        finally:
            self._lock.release()

    def _progress(self) -> None:
        self.progress_at = time.monotonic()

    def _shut(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            with contextlib.suppress(OSError):
                channel.sock.shutdown(socket.SHUT_RDWR)
            channel.sock.close()

    def close(self) -> None:
        """Close the connection (a call in progress in another thread fails)."""
        self._broken = self._broken or " (closed by this client)"
        self._shut()

    def __enter__(self) -> SecureClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_wait(response: Any, rid: int) -> bool:
    """Whether `response` (decoded from the server, untrusted) is exactly a "still running"
    message for request `rid`: compared by type first, so that no odd value can raise."""
    return (
        type(response) is dict
        and set(response) == {"id", "wait"}
        and type(response["id"]) is int
        and response["id"] == rid
        and response["wait"] is True
    )
