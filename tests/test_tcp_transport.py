"""Tests of the encrypted TCP transport, its framing and party keys (loopback only)."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest

from mpc.errors import (
    CommunicationError,
    ConfigurationError,
    IntegrityError,
    MpcError,
    PeerFailedError,
    ReceiveTimeoutError,
)
from mpc.parties import framing
from mpc.parties.keys import PartyKey, load_public
from mpc.parties.tcp import PlaintextTransportWarning, TcpTransport

SESSION = b"test-session-0123456789"
TIMEOUT = 10.0


# ---- helpers -------------------------------------------------------------------------------


class Relay:
    """A TCP relay between a dialing party and the party it dials, able to tamper and replay."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.lock = threading.Lock()
        self.captured = bytearray()  # everything forwarded client -> server
        self.flip_at: int | None = None  # stream offset (client -> server) of a byte to flip
        self.client: socket.socket | None = None
        self.server: socket.socket | None = None
        threading.Thread(target=self._run, daemon=True).start()

    @property
    def forwarded(self) -> int:
        with self.lock:
            return len(self.captured)

    def _run(self) -> None:
        self.client, _ = self.listener.accept()
        self.server = socket.create_connection(self.target)
        threading.Thread(
            target=self._pump, args=(self.client, self.server, True), daemon=True
        ).start()
        threading.Thread(
            target=self._pump, args=(self.server, self.client, False), daemon=True
        ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while True:
                data = bytearray(src.recv(1 << 16))
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                with self.lock:
                    if record:
                        start = len(self.captured)
                        if self.flip_at is not None and start <= self.flip_at < start + len(data):
                            data[self.flip_at - start] ^= 0x01
                            self.flip_at = None
                        self.captured += data
                    dst.sendall(data)
        except OSError:
            return

    def inject(self, data: bytes) -> None:
        assert self.server is not None
        with self.lock:
            self.server.sendall(data)

    def cut(self) -> None:
        """Drop both connections abruptly, as if the dialing party's host died."""
        for sock in (self.client, self.server):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        self.listener.close()


def make_transports(
    n: int = 3,
    *,
    encrypt: bool = True,
    keys: list[PartyKey] | None = None,
    pins: list[dict[str, bytes]] | None = None,
    session_ids: list[bytes] | None = None,
    connect_timeout: float = 5.0,
) -> list[TcpTransport]:
    names = [chr(ord("a") + i) for i in range(n)]
    keys = keys or [PartyKey.generate() for _ in names]
    if pins is None:
        pins = [{names[j]: keys[j].public_bytes for j in range(n) if j != i} for i in range(n)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PlaintextTransportWarning)
        return [
            TcpTransport(
                i,
                names,
                key=keys[i] if encrypt else None,
                peer_keys=pins[i] if encrypt else None,
                session_id=session_ids[i] if session_ids else SESSION,
                encrypt=encrypt,
                connect_timeout=connect_timeout,
            )
            for i in range(n)
        ]


def connect_all(
    transports: list[TcpTransport], route: dict[tuple[int, int], tuple[str, int]] | None = None
) -> list[BaseException | None]:
    """listen + connect every transport concurrently; `route[(dialer, target)]` overrides an
    address. Returns the exception of each party's connect (None on success)."""
    return connect_listening(transports, {t.name: t.listen() for t in transports}, route)


def connect_listening(
    transports: list[TcpTransport],
    addresses: dict[str, tuple[str, int]],
    route: dict[tuple[int, int], tuple[str, int]] | None = None,
) -> list[BaseException | None]:
    """connect (concurrently) transports that already listen at `addresses`; as connect_all."""
    errors: list[BaseException | None] = [None] * len(transports)

    def run(i: int) -> None:
        own = dict(addresses)
        for (dialer, target), address in (route or {}).items():
            if dialer == i:
                own[transports[target].name] = address
        try:
            transports[i].connect(own)
        except BaseException as e:
            errors[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(transports))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return errors


def close_all(transports: list[TcpTransport]) -> None:
    threads = [threading.Thread(target=t.close) for t in transports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)


@pytest.fixture
def mesh() -> Iterator[list[TcpTransport]]:
    transports = make_transports(3)
    assert connect_all(transports) == [None, None, None]
    yield transports
    close_all(transports)


def relayed_pair(encrypt: bool = True) -> tuple[list[TcpTransport], Relay]:
    """Parties a and b; b dials a through a relay (relay stream client->server is b -> a)."""
    transports = make_transports(2, encrypt=encrypt)
    a_address = transports[0].listen()
    relay = Relay(a_address)
    errors: list[BaseException | None] = [None, None]

    def run(i: int, addresses: dict[str, tuple[str, int]]) -> None:
        try:
            transports[i].connect(addresses)
        except BaseException as e:
            errors[i] = e

    threads = [
        threading.Thread(target=run, args=(0, {})),
        threading.Thread(target=run, args=(1, {"a": relay.address})),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [None, None]
    return transports, relay


# ---- round trips ----------------------------------------------------------------------------


def sample_arrays() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [
        rng.integers(0, 2**63, size=(3, 4), dtype=np.uint64),
        np.array(-7, dtype=np.int64),  # 0-d
        rng.standard_normal(5),
        rng.integers(0, 2, size=(2, 3)).astype(bool),
        np.zeros((0,), dtype=np.uint8),
        np.zeros((2, 0, 3), dtype=np.float64),
        rng.integers(0, 256, size=(70_000,), dtype=np.uint8),  # above the small-payload path
        np.arange(12, dtype=np.int64).reshape(3, 4).T,  # not C-contiguous
        np.arange(4, dtype=">u8"),  # big-endian: converted on the wire
        rng.integers(0, 2**64 - 1, size=(2 * 1024 * 1024,), dtype=np.uint64),  # 16 MiB
    ]


@pytest.mark.parametrize("encrypt", [True, False])
def test_round_trip_dtypes_and_shapes(encrypt: bool) -> None:
    transports = make_transports(3, encrypt=encrypt)
    try:
        assert connect_all(transports) == [None, None, None]
        arrays = sample_arrays()
        for i, array in enumerate(arrays):
            sender, receiver = i % 3, (i + 1) % 3
            wire = transports[sender].send(receiver, (0, i), array)
            assert wire >= array.nbytes
            got = transports[receiver].recv(sender, (0, i), TIMEOUT)
            assert got.shape == array.shape
            assert got.dtype == array.dtype.newbyteorder("=")
            np.testing.assert_array_equal(got, array)
        assert transports[0].confidential is encrypt
        assert sum(t.bytes_sent for t in transports) > sum(a.nbytes for a in arrays)
    finally:
        close_all(transports)


def test_full_mesh_rounds(mesh: list[TcpTransport]) -> None:
    results: list[list[int]] = [[], [], []]

    def party(i: int) -> None:
        t = mesh[i]
        for r in range(50):
            for j in range(3):
                if j != i:
                    t.send(j, (1, r), np.array([i, r], dtype=np.uint64))
            total = 0
            for j in range(3):
                if j != i:
                    got = t.recv(j, (1, r), TIMEOUT)
                    assert int(got[1]) == r
                    total += int(got[0])
            results[i].append(total)

    threads = [threading.Thread(target=party, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [[3] * 50, [2] * 50, [1] * 50]


def test_messages_arriving_before_recv_wait_in_mailbox(mesh: list[TcpTransport]) -> None:
    a, b, _ = mesh
    for k in range(5):
        b.send(0, (2, k), np.full(3, k, dtype=np.int64))
    time.sleep(0.1)
    for k in reversed(range(5)):
        np.testing.assert_array_equal(a.recv(1, (2, k), TIMEOUT), np.full(3, k))


@pytest.mark.parametrize("encrypt", [True, False])
def test_simultaneous_large_sends_do_not_deadlock(encrypt: bool) -> None:
    """Both parties send 32 MB to each other before either receives: the receiver threads must
    drain the sockets or both sends would block forever on full socket buffers."""
    transports = make_transports(2, encrypt=encrypt)
    try:
        assert connect_all(transports) == [None, None]
        big = [np.full(4 * 1024 * 1024, i + 1, dtype=np.uint64) for i in range(2)]
        errors: list[BaseException] = []

        def send(i: int) -> None:
            try:
                transports[i].send(1 - i, (9, i), big[i])
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        assert not any(thread.is_alive() for thread in threads), "sends deadlocked"
        assert errors == []
        for i in range(2):
            np.testing.assert_array_equal(
                transports[i].recv(1 - i, (9, 1 - i), TIMEOUT), big[1 - i]
            )
    finally:
        close_all(transports)


def test_send_returns_wire_bytes_and_counts_them(mesh: list[TcpTransport]) -> None:
    a = mesh[0]
    before = a.bytes_sent
    wire = a.send(1, (3, 0), np.zeros(2, dtype=np.uint64))
    # length prefix + encrypted header + 16-byte payload + two GCM tags
    assert wire > 4 + 16 + 2 * 16
    assert a.bytes_sent - before == wire
    mesh[1].recv(0, (3, 0), TIMEOUT)


def test_unsupported_dtype_is_refused_at_send(mesh: list[TcpTransport]) -> None:
    with pytest.raises(ConfigurationError, match="dtype"):
        mesh[0].send(1, (4, 0), np.array(["x"], dtype=object))


# ---- configuration and authentication -------------------------------------------------------


def test_plaintext_must_be_asked_for_and_warns() -> None:
    names = ["a", "b"]
    with pytest.warns(PlaintextTransportWarning, match="not encrypted"):
        TcpTransport(0, names, key=None, peer_keys=None, session_id=SESSION, encrypt=False)
    with pytest.raises(ConfigurationError, match="encrypt=False"):
        TcpTransport(0, names, key=None, peer_keys=None, session_id=SESSION)


def test_plaintext_transport_works() -> None:
    transports = make_transports(2, encrypt=False)
    try:
        assert connect_all(transports) == [None, None]
        assert not transports[0].confidential
        transports[1].send(0, (0,), np.arange(5, dtype=np.float64))
        np.testing.assert_array_equal(transports[0].recv(1, (0,), TIMEOUT), np.arange(5.0))
    finally:
        close_all(transports)


def test_wrong_pinned_key_is_refused_at_connect() -> None:
    keys = [PartyKey.generate() for _ in range(3)]
    pins = [{n: keys[j].public_bytes for j, n in enumerate("abc") if j != i} for i in range(3)]
    pins[0]["b"] = PartyKey.generate().public_bytes  # a pins the wrong key for b
    transports = make_transports(3, keys=keys, pins=pins)
    errors = connect_all(transports)
    assert isinstance(errors[0], MpcError)
    assert "'b'" in str(errors[0]) and "pins" in str(errors[0])
    assert isinstance(errors[1], MpcError)
    assert "'a'" in str(errors[1])  # b learns that a refused it
    close_all(transports)


def test_every_party_learns_why_a_connect_failed_even_if_it_dials_late() -> None:
    """a gives up (it pins a wrong key for b) before c dials it: c is told why, at once, and
    not left with a refused connection until its timeout (the listeners linger to say so): by a
    (it timed out waiting for b; what b's connection sent a before it authenticated stays in
    a's own error) or by b (a refused it: a pins another key)."""
    keys = [PartyKey.generate() for _ in range(3)]
    pins = [{n: keys[j].public_bytes for j, n in enumerate("abc") if j != i} for i in range(3)]
    pins[0]["b"] = PartyKey.generate().public_bytes
    transports = make_transports(3, keys=keys, pins=pins, connect_timeout=20.0)
    # a cannot blame b for a key it never proved (anyone may claim to be b): a gives up when
    # its own connect timeout ends, here a short one
    transports[0] = make_transports(3, keys=keys, pins=pins, connect_timeout=3.0)[0]
    addresses = {t.name: t.listen() for t in transports}
    try:
        errors = connect_listening(transports[:2], addresses)
        assert isinstance(errors[0], MpcError) and "pins" in str(errors[0])
        started = time.monotonic()
        with pytest.raises(MpcError, match="refused this party") as late:  # c dials only now
            transports[2].connect(addresses)
        assert time.monotonic() - started < 10.0, "c waited for its timeout"
        told = str(late.value)
        assert ("party 'a' failed" in told and "'b' did not connect" in told) or (
            "party 'b' failed" in told and "pins" in told
        ), told
    finally:
        close_all(transports)


class LyingKey(PartyKey):
    """A key that claims another party's public key without holding its private key."""

    def __init__(self, claimed: bytes) -> None:
        super().__init__(PartyKey.generate()._private)
        self._claimed = claimed

    @property
    def public_bytes(self) -> bytes:
        return self._claimed


# A party that is dialed cannot tell a misconfigured peer from a stranger that claims its name
# before key confirmation: it refuses the connection without aborting (it keeps waiting for the
# real peer, see tests/test_peer_input.py) and names the claim when it times out; the party that
# dialed is told why at once.


def test_impostor_without_private_key_fails_key_confirmation() -> None:
    keys = [PartyKey.generate() for _ in range(2)]
    pins = [{"b": keys[1].public_bytes}, {"a": keys[0].public_bytes}]
    impostor = LyingKey(keys[1].public_bytes)  # claims to be b
    transports = make_transports(2, keys=[keys[0], impostor], pins=pins, connect_timeout=2.0)
    errors = connect_all(transports)
    assert isinstance(errors[0], CommunicationError) and "timed out" in str(errors[0])
    assert "claims to be 'b'" in str(errors[0]) and "confirmation" in str(errors[0])
    assert isinstance(errors[1], MpcError) and "confirmation" in str(errors[1])
    close_all(transports)


def test_different_session_is_refused() -> None:
    transports = make_transports(2, session_ids=[SESSION, b"another session"], connect_timeout=2.0)
    errors = connect_all(transports)
    assert isinstance(errors[1], ConfigurationError) and "'a'" in str(errors[1])
    assert "session" in str(errors[1])
    assert isinstance(errors[0], CommunicationError) and "claims to be 'b'" in str(errors[0])
    assert "session" in str(errors[0])
    close_all(transports)


def test_encryption_mismatch_is_refused() -> None:
    keys = [PartyKey.generate() for _ in range(2)]
    enc = make_transports(2, keys=keys, connect_timeout=2.0)
    plain = make_transports(2, encrypt=False, connect_timeout=2.0)
    transports = [enc[0], plain[1]]
    errors = connect_all(transports)
    assert isinstance(errors[1], ConfigurationError) and "encryption" in str(errors[1])
    assert isinstance(errors[0], CommunicationError) and "encryption" in str(errors[0])
    close_all(enc + plain)


def test_unreachable_peer_times_out_naming_it() -> None:
    transports = make_transports(2, connect_timeout=0.5)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = unused.getsockname()[:2]
    transports[1].listen()
    with pytest.raises(CommunicationError, match="'a'"):
        transports[1].connect({"a": dead})
    close_all(transports)


# ---- tampering, replay, confidentiality -------------------------------------------------------


def test_flipped_payload_byte_is_rejected() -> None:
    (a, b), relay = relayed_pair()
    try:
        array = np.arange(1000, dtype=np.uint64)
        wire = b.send(0, (0, 0), array)
        np.testing.assert_array_equal(a.recv(1, (0, 0), TIMEOUT), array)
        # The next frame has the same size; flip the last ciphertext byte of its payload record.
        relay.flip_at = relay.forwarded + wire - 17
        b.send(0, (0, 1), array)
        with pytest.raises(IntegrityError, match=r"'b'.*authentication"):
            a.recv(1, (0, 1), TIMEOUT)
        assert relay.flip_at is None  # the relay did flip a byte
    finally:
        close_all([a, b])
        relay.cut()


def test_replayed_record_is_rejected() -> None:
    (a, b), relay = relayed_pair()
    try:
        start = relay.forwarded
        b.send(0, (0, 0), np.arange(10, dtype=np.int64))
        a.recv(1, (0, 0), TIMEOUT)
        recorded = bytes(relay.captured[start:])
        relay.inject(recorded)  # the same frame again, with its old record counters
        with pytest.raises(IntegrityError, match=r"'b'.*authentication"):
            a.recv(1, (0, 1), TIMEOUT)
    finally:
        close_all([a, b])
        relay.cut()


PATTERN = b"THIS-IS-A-SECRET-SHARE-PATTERN!!" * 8


@pytest.mark.parametrize("encrypt", [True, False])
def test_ciphertext_hides_known_plaintext(encrypt: bool) -> None:
    (a, b), relay = relayed_pair(encrypt=encrypt)
    try:
        array = np.frombuffer(PATTERN, dtype=np.uint8).copy()
        b.send(0, (0, 0), array)
        np.testing.assert_array_equal(a.recv(1, (0, 0), TIMEOUT), array)
        assert (PATTERN in relay.captured) is not encrypt
        assert (b"THIS-IS-A-SECRET" in relay.captured) is not encrypt
    finally:
        close_all([a, b])
        relay.cut()


# ---- failures ---------------------------------------------------------------------------------


def test_abort_reaches_a_peer_blocked_in_recv(mesh: list[TcpTransport]) -> None:
    a, b, _ = mesh
    caught: list[BaseException] = []

    def wait() -> None:
        try:
            a.recv(1, (5, 0), TIMEOUT)
        except BaseException as e:
            caught.append(e)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.1)
    b.abort("out of memory in layer 3")
    thread.join(TIMEOUT)
    assert len(caught) == 1 and isinstance(caught[0], PeerFailedError)
    assert "'b'" in str(caught[0]) and "out of memory in layer 3" in str(caught[0])


def test_abort_of_a_third_party_reaches_a_recv_waiting_on_another_peer(
    mesh: list[TcpTransport],
) -> None:
    a, _, c = mesh
    caught: list[BaseException] = []

    def wait() -> None:
        try:
            a.recv(1, (5, 1), TIMEOUT)  # waits on b's connection
        except BaseException as e:
            caught.append(e)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.1)
    c.abort("disk full")
    thread.join(TIMEOUT)
    assert len(caught) == 1 and isinstance(caught[0], PeerFailedError)
    assert "'c'" in str(caught[0]) and "disk full" in str(caught[0])


def test_external_mailbox_failure_wakes_a_waiting_recv(mesh: list[TcpTransport]) -> None:
    """The party runtime fails the mailbox when the driver reports a failure elsewhere."""
    a = mesh[0]
    caught: list[BaseException] = []

    def wait() -> None:
        try:
            a.recv(1, (5, 2), TIMEOUT)
        except BaseException as e:
            caught.append(e)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.1)
    a.mailbox.fail(PeerFailedError("party 'x' aborted the run"))
    thread.join(TIMEOUT)
    assert len(caught) == 1 and "'x'" in str(caught[0])


def test_lost_connection_gives_peer_failed() -> None:
    (a, b), relay = relayed_pair()
    try:
        caught: list[BaseException] = []

        def wait() -> None:
            try:
                a.recv(1, (0, 0), TIMEOUT)
            except BaseException as e:
                caught.append(e)

        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.1)
        relay.cut()  # no "bye": the peer vanished
        thread.join(TIMEOUT)
        assert len(caught) == 1 and isinstance(caught[0], PeerFailedError)
        assert "'b'" in str(caught[0]) and "unexpectedly" in str(caught[0])
    finally:
        close_all([a, b])


def test_closed_peer_gives_peer_failed(mesh: list[TcpTransport]) -> None:
    a, b, c = mesh
    b.send(0, (6, 0), np.ones(2))
    b.close()
    b.close()  # idempotent
    np.testing.assert_array_equal(a.recv(1, (6, 0), TIMEOUT), np.ones(2))  # sent before closing
    with pytest.raises(PeerFailedError, match="'b'"):
        a.recv(1, (6, 1), TIMEOUT)
    # the other link is unaffected
    c.send(0, (6, 2), np.zeros(1))
    np.testing.assert_array_equal(a.recv(2, (6, 2), TIMEOUT), np.zeros(1))
    with pytest.raises(CommunicationError):
        b.send(0, (6, 3), np.ones(1))


def test_recv_times_out(mesh: list[TcpTransport]) -> None:
    with pytest.raises(ReceiveTimeoutError, match="'b'"):
        mesh[0].recv(1, (7, 0), 0.3)


# ---- framing ----------------------------------------------------------------------------------


def test_framing_round_trip_and_validation() -> None:
    array = np.arange(6, dtype=np.int64).reshape(2, 3)
    header, payload = framing.encode_data((1, 2, 3), array)
    assert len(header) == framing.data_header_size(3, 2)
    parsed = framing.parse_header(header)
    assert parsed.tag == (1, 2, 3) and parsed.shape == (2, 3) and parsed.nbytes == 48
    assert parsed.dtype == "<i8"
    np.testing.assert_array_equal(framing.decode_array(parsed, payload), array)
    bufs = framing.frame_buffers(header, payload)  # a small payload is part of the first record
    assert int.from_bytes(bufs[0], "big") == len(header) + 48
    big = np.zeros(framing.INLINE_MAX // 8 + 1, dtype=np.uint64)
    big_header, big_payload = framing.encode_data((), big)
    assert int.from_bytes(framing.frame_buffers(big_header, big_payload)[0], "big") == len(
        big_header
    )
    zero_d = framing.parse_header(framing.encode_data((), np.array(-7, dtype=np.int64))[0])
    assert zero_d.shape == () and zero_d.nbytes == 8 and zero_d.tag == ()

    def bad(
        code: int = 1, tag: tuple[int, ...] = (1,), shape: tuple[int, ...] = (2, 3), zero: int = 0
    ) -> bytes:
        fmt = f"<BBBBI{len(tag)}q{len(shape)}Q"
        return struct.pack(fmt, 1, code, len(tag), len(shape), zero, *tag, *shape)

    for header_bytes in [
        bad(code=len(framing.DTYPE_CODES)),  # dtype code off the allow-list
        bad(code=255),
        bad(zero=1),  # reserved bytes must be zero
        bad(shape=(1 << 30, 8)),  # 2^33 elements of 8 bytes: over the payload limit
        bad(shape=(1 << 62, 1 << 62)),  # overflowing sizes
        bad()[:-1],  # truncated
        bad()[:5],  # truncated inside the fixed part
        bad() + b"\x00" * 8,  # trailing bytes
        bad()[:2] + bytes([framing.MAX_TAG_LEN + 1]) + bad()[3:],  # tag too long
        bad()[:3] + bytes([framing.MAX_NDIM + 1]) + bad()[4:],  # too many dimensions
        b"\x01",
        b"",
        b"\xc1garbage",
        msgpack.packb({"k": "data", "t": [1], "d": "<i8", "s": [2, 3], "n": 48}),  # old format
        msgpack.packb({"k": "exec"}),
        msgpack.packb([1, 2]),
        b"\x00" * (framing.MAX_HEADER_BYTES + 1),
    ]:
        with pytest.raises(IntegrityError, match="malformed frame header"):
            framing.parse_header(header_bytes)
    with pytest.raises(IntegrityError):
        framing.decode_array(framing.parse_header(bad()), b"\x00" * 40)
    bool_header = framing.parse_header(bad(code=framing.DTYPE_CODES.index("|b1"), shape=(2,)))
    with pytest.raises(IntegrityError, match="bool"):
        framing.decode_array(bool_header, b"\x01\x07")
    with pytest.raises(IntegrityError):
        framing.parse_length(b"\xff\xff\xff\xff", framing.MAX_HEADER_BYTES)
    assert framing.parse_header(framing.encode_abort("why", 7)) == framing.Header(
        "abort", reason="why", run=7
    )
    assert framing.parse_header(framing.encode_bye()).kind == "bye"
    for tag in [(1 << 63,), ("x",), (1.5,), tuple(range(framing.MAX_TAG_LEN + 1))]:
        with pytest.raises(ConfigurationError):
            framing.encode_data(tag, array)  # type: ignore[arg-type]
    assert framing.parse_header(framing.encode_data((np.int64(5), -2), array)[0]).tag == (5, -2)


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(b"\x00\x00\x00\x00", id="zero-length"),
        pytest.param(b"\xff\xff\xff\xff", id="oversized-length"),
        pytest.param(b"\x00\x00\x00\x09\x01\x00\x00\x00\x00\x00\x00\x00\x01", id="garbled"),
        pytest.param(
            framing.length_prefix(8 + 8 + 3) + struct.pack("<BBBBIQ", 1, 4, 0, 1, 0, 5) + b"abc",
            id="short-inline-payload",
        ),
        pytest.param(
            framing.length_prefix(16) + struct.pack("<BBBBIQ", 1, 4, 0, 1, 0, 1 << 20),
            id="missing-payload",  # large payload announced, then the connection closes
        ),
    ],
)
def test_bad_plaintext_frames_fail_the_receive_quickly(record: bytes) -> None:
    (a, b), relay = relayed_pair(encrypt=False)
    try:
        relay.inject(record)
        if record.endswith(struct.pack("<Q", 1 << 20)):
            relay.cut()
        start = time.monotonic()
        with pytest.raises((IntegrityError, PeerFailedError), match="'b'"):
            a.recv(1, (0, 0), TIMEOUT)
        assert time.monotonic() - start < TIMEOUT / 2  # an error, not a hang until the timeout
    finally:
        close_all([a, b])
        relay.cut()


def test_truncated_or_oversized_encrypted_record_is_rejected() -> None:
    (a, b), relay = relayed_pair()
    try:
        relay.inject(framing.length_prefix(framing.MAX_FIRST_RECORD + 17))  # oversized record
        with pytest.raises(IntegrityError, match=r"'b'.*outside the accepted range"):
            a.recv(1, (0, 0), TIMEOUT)
    finally:
        close_all([a, b])
        relay.cut()
    (a, b), relay = relayed_pair()
    try:
        relay.inject(framing.length_prefix(10) + b"\x00" * 10)  # shorter than a GCM tag
        with pytest.raises(IntegrityError, match=r"'b'.*shorter than its authentication tag"):
            a.recv(1, (0, 0), TIMEOUT)
    finally:
        close_all([a, b])
        relay.cut()


def test_frames_read_together_are_all_delivered_without_waiting_for_the_drain() -> None:
    """Two frames that arrive in one segment: the second is already out of the socket (poll does
    not report it) when the first is received; the next receive must find it at once instead of
    waiting for the receiver thread (which backs off for up to 20 ms)."""
    (a, b), relay = relayed_pair(encrypt=False)
    try:
        rounds = 30
        start = time.monotonic()
        for i in range(rounds):
            wire = b"".join(
                bytes(buf)
                for r in (0, 1)
                for buf in framing.frame_buffers(
                    *framing.encode_data((i, r), np.array([i, r], dtype=np.int64))
                )
            )
            relay.inject(wire)
            for r in (0, 1):
                np.testing.assert_array_equal(a.recv(1, (i, r), TIMEOUT), [i, r])
        assert (time.monotonic() - start) / rounds < 0.01
    finally:
        close_all([a, b])
        relay.cut()


@pytest.mark.parametrize("encrypt", [True, False])
def test_exchange_sends_and_receives_one_round(encrypt: bool) -> None:
    transports = make_transports(3, encrypt=encrypt)
    try:
        assert connect_all(transports) == [None, None, None]
        big = [np.full(3 * framing.INLINE_MAX, i, dtype=np.uint64) for i in range(3)]
        results: list[object] = [None] * 3

        def run(i: int) -> None:
            others = [j for j in range(3) if j != i]
            try:
                results[i] = transports[i].exchange(
                    (0, 1), {j: big[i] for j in others}, others, TIMEOUT
                )
            except BaseException as e:  # pragma: no cover - reported below
                results[i] = e

        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        for i, result in enumerate(results):
            assert isinstance(result, tuple), result
            got, sent = result
            assert sorted(got) == [j for j in range(3) if j != i]
            for j, array in got.items():
                np.testing.assert_array_equal(array, big[j])
                assert array.flags.writeable
            assert sent >= 2 * big[i].nbytes
    finally:
        close_all(transports)


# ---- keys -------------------------------------------------------------------------------------


def test_party_key_save_load(tmp_path: Path) -> None:
    key = PartyKey.generate()
    pub_path = key.save(tmp_path / "party0.key")
    assert pub_path == tmp_path / "party0.key.pub"
    assert stat.S_IMODE(os.stat(tmp_path / "party0.key").st_mode) == 0o600
    assert pub_path.read_text().strip() == key.public_hex
    loaded = PartyKey.load(tmp_path / "party0.key")
    assert loaded.public_bytes == key.public_bytes
    assert load_public(key.public_hex) == key.public_bytes
    assert load_public(str(pub_path)) == key.public_bytes
    assert load_public(pub_path) == key.public_bytes
    other = PartyKey.generate()
    assert key.exchange(other.public_bytes) == other.exchange(key.public_bytes)


@pytest.mark.parametrize("value", ["abcd", "zz" * 32, "00" * 32, "ab" * 33, "/no/such/file.pub"])
def test_load_public_rejects_bad_keys(value: str) -> None:
    with pytest.raises(ConfigurationError):
        load_public(value)


def test_load_public_refuses_private_key_file(tmp_path: Path) -> None:
    PartyKey.generate().save(tmp_path / "k")
    with pytest.raises(ConfigurationError, match="PEM"):
        load_public(tmp_path / "k")
