"""Tests of the encrypted, key-pinned request/response channel `mpc.federation.secure_rpc`.

Loopback only, in-process; a frame-aware TCP relay tampers with, replays and replaces records.
"""

from __future__ import annotations

import contextlib
import pickle
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import numpy as np
import pytest

from mpc.errors import (
    CommunicationError,
    ConfigurationError,
    IntegrityError,
    ReceiveTimeoutError,
)
from mpc.federation import secure_rpc
from mpc.federation.secure_rpc import RemoteError, SecureClient, SecureServer
from mpc.parties.keys import PartyKey, fingerprint

T = 5.0  # generous timeout for calls that must succeed
SERVER_KEY = PartyKey.generate()
ALICE = PartyKey.generate()
BOB = PartyKey.generate()
CLIENTS = {"alice": ALICE.public_bytes, "bob": BOB.public_bytes}
CALLS: list[tuple[str, str, dict[str, Any]]] = []


def echo(client: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
    CALLS.append((client, method, params))
    if method == "deny":
        raise ConfigurationError("policy refuses this program")
    if method == "boom":
        raise ValueError("secret detail 4242")
    if method == "half":
        return {"bad": np.zeros(2, np.float16)}
    if method == "sleep":
        time.sleep(float(params["s"]))
    return {"client": client, "method": method, "params": params}


@contextlib.contextmanager
def serve(
    handler: Callable[[str, str, dict[str, Any]], dict[str, Any]] = echo, **kw: Any
) -> Iterator[tuple[SecureServer, tuple[str, int]]]:
    key = kw.pop("key", SERVER_KEY)
    server = SecureServer("dealer", key, kw.pop("clients", CLIENTS), handler, **kw)
    address = server.start()
    try:
        yield server, address
    finally:
        server.close()


def client(
    address: tuple[str, int], name: str = "alice", key: PartyKey = ALICE, **kw: Any
) -> SecureClient:
    server_key = kw.pop("server_key", SERVER_KEY.public_bytes)
    return SecureClient(
        name,
        key,
        kw.pop("server_name", "dealer"),
        server_key,
        address,
        timeout=kw.pop("timeout", T),
        **kw,
    )


def refused_raw(address: tuple[str, int], data: bytes) -> str:
    """Send `data` on a raw connection; return the server's refusal ("" if it just closed)."""
    with socket.create_connection(address, timeout=T) as raw:
        raw.sendall(data)
        try:
            reply = raw.recv(4096, socket.MSG_WAITALL)
        except ConnectionResetError:  # it closed with our bytes unread
            return ""
    if not reply:
        return ""
    message = msgpack.unpackb(reply[4:])
    assert message["m"] == "refused"
    return str(message["why"])


def rpc_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("mpc-rpc")]


class Relay:
    """Forwards length-prefixed bodies between one client and the server; `edit(direction,
    index, frame)` returns the bytes to forward instead of `frame` (prefix included)."""

    def __init__(
        self, target: tuple[str, int], edit: Callable[[str, int, bytes], list[bytes]]
    ) -> None:
        self.target, self.edit = target, edit
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._run, name="relay", daemon=True).start()

    def _run(self) -> None:
        near, _ = self.listener.accept()
        far = socket.create_connection(self.target)
        self.socks += [near, far]
        threading.Thread(target=self._pump, args=("s2c", far, near), daemon=True).start()
        self._pump("c2s", near, far)

    def _pump(self, direction: str, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            for index in range(10**6):
                prefix = src.recv(4, socket.MSG_WAITALL)
                if len(prefix) < 4:
                    break
                n = int.from_bytes(prefix, "big")
                body = src.recv(n, socket.MSG_WAITALL) if n else b""
                for out in self.edit(direction, index, prefix + body):
                    dst.sendall(out)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for s in [self.listener, *self.socks]:
            s.close()


@contextlib.contextmanager
def relayed(
    address: tuple[str, int], edit: Callable[[str, int, bytes], list[bytes]]
) -> Iterator[SecureClient]:
    relay = Relay(address, edit)
    try:
        with client(relay.address) as c:
            yield c
    finally:
        relay.close()


def flip_last(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 1])


# ---- values -------------------------------------------------------------------------------


def test_round_trip_of_nested_values_and_every_allowed_dtype() -> None:
    arrays = {
        "u8": np.array([0, 1, 2**64 - 1], np.uint64),
        "i8": np.arange(-6, 6, dtype=np.int64).reshape(3, 4),
        "f8": np.array([[1.5, -0.0], [np.inf, np.nan]]),
        "u4": np.array(2**32 - 1, np.uint32),  # 0-d
        "i4": np.zeros((2, 0, 3), np.int32),  # empty
        "u1": np.arange(24, dtype=np.uint8).reshape(2, 3, 4).transpose(2, 0, 1),  # not contiguous
        "b1": np.array([True, False, True]),
        "big_endian": np.arange(5, dtype=">i8"),
        "eight_dims": np.ones((1, 2, 1, 2, 1, 2, 1, 2), np.float64),
    }
    scalars = [None, True, False, 0, -(2**63), 2**64 - 1, 1.5, "ünï", b"\x00\xff", [], {}]
    params = {"arrays": arrays, "nested": {"list": [scalars, [{"deep": [[arrays["i8"]]]}]]}}
    with serve() as (_, address), client(address) as c:
        got = c.call("echo", params)["params"]
    assert got["nested"]["list"][0] == scalars
    assert len(got["nested"]["list"]) == 2
    np.testing.assert_array_equal(got["nested"]["list"][1][0]["deep"][0][0], arrays["i8"])
    assert set(got["arrays"]) == set(arrays)
    for key, sent in arrays.items():
        back = got["arrays"][key]
        assert type(back) is np.ndarray
        assert back.dtype == sent.dtype.newbyteorder("=") and back.shape == sent.shape, key
        np.testing.assert_array_equal(back, sent)
        assert back.flags.writeable and back.flags.c_contiguous  # decoded arrays are copies
    assert got["arrays"]["big_endian"].dtype.str == "<i8"


def test_numpy_scalars_and_tuples_are_sent_as_plain_values() -> None:
    with serve() as (_, address), client(address) as c:
        got = c.call("echo", {"n": np.int64(-3), "f": np.float64(0.5), "t": (1, (2, 3))})
    assert got["params"] == {"n": -3, "f": 0.5, "t": [1, [2, 3]]}


@pytest.mark.parametrize(
    "value",
    [
        np.zeros(3, np.float16),
        np.array([1, "x"], object),
        np.zeros(2, np.complex128),
        np.zeros((1,) * 9),
        {1: "int key"},
        {"set": {1, 2}},
        2**64,
        np.float16(1.0),
    ],
    ids=["float16", "object", "complex", "ndim9", "int-key", "set", "int65", "f2-scalar"],
)
def test_values_that_are_not_allowed_are_refused_at_encode_time(value: Any) -> None:
    with serve() as (_, address), client(address) as c:
        before = len(CALLS)
        with pytest.raises(ConfigurationError):
            c.call("echo", {"x": value})
        assert len(CALLS) == before  # nothing was sent
        assert c.call("echo", {"x": 1})["params"] == {"x": 1}  # and the connection still works


def test_nesting_is_bounded_both_ways() -> None:
    deep: Any = 1
    for _ in range(secure_rpc.MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(ConfigurationError, match="nests deeper"):
        secure_rpc._encode({"x": deep}, 2**20)
    raw = msgpack.packb({"x": deep})
    with pytest.raises(IntegrityError, match="nests deeper"):
        secure_rpc._decode(raw)


def test_pickle_and_other_non_msgpack_bytes_are_refused() -> None:
    ran: list[bool] = []

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (ran.append, (True,))

    payload = pickle.dumps({"id": 1, "method": Exploit()})
    for data in (payload, pickle.dumps({"id": 1}, protocol=0), b"\xc1", b"\x91\x01"):
        with pytest.raises(IntegrityError):
            secure_rpc._decode(data)
    # Bad arrays: unknown dtype code (float16 = 7 in framing), length mismatch, negative dim,
    # bool bytes other than 0/1, unknown extension type.
    bad = [
        msgpack.ExtType(1, bytes([7, 1]) + (2).to_bytes(8, "little") + bytes(4)),
        msgpack.ExtType(1, bytes([1, 1]) + (2).to_bytes(8, "little") + bytes(15)),
        msgpack.ExtType(1, bytes([1, 1]) + (-1).to_bytes(8, "little", signed=True)),
        msgpack.ExtType(1, bytes([3, 1]) + (1).to_bytes(8, "little") + b"\x02"),
        msgpack.ExtType(9, b""),
    ]
    for ext in bad:
        with pytest.raises(IntegrityError):
            secure_rpc._decode(msgpack.packb({"a": ext}))
    # Over the wire, as a hello: refused, nothing unpickled, and the server keeps serving.
    with serve() as (_, address):
        why = refused_raw(address, len(payload).to_bytes(4, "big") + payload)
        assert why == "malformed hello: undecodable message (ExtraData)"
        with client(address) as c:
            assert c.call("echo")["client"] == "alice"
    assert ran == []


# ---- authentication -----------------------------------------------------------------------


def test_the_handler_sees_the_authenticated_client_name() -> None:
    with serve() as (_, address), client(address) as a, client(address, "bob", BOB) as b:
        assert a.call("who")["client"] == "alice"
        assert b.call("who")["client"] == "bob"
        assert a.call("who")["client"] == "alice"


def test_an_unknown_client_name_is_refused() -> None:
    with serve() as (_, address), pytest.raises(ConfigurationError) as info:
        client(address, "mallory", PartyKey.generate())
    message = str(info.value)
    assert "'mallory' is not on the allow-list of server 'dealer'" in message
    assert f"{address[0]}:{address[1]}" in message


def test_a_client_presenting_a_key_that_is_not_pinned_is_refused() -> None:
    other = PartyKey.generate()
    with serve() as (_, address), pytest.raises(ConfigurationError) as info:
        client(address, "alice", other)
    message = str(info.value)
    assert "'alice'" in message and fingerprint(other.public_bytes) in message
    assert fingerprint(ALICE.public_bytes) in message


def test_a_client_that_pins_the_wrong_server_key_is_refused() -> None:
    wrong = PartyKey.generate().public_bytes
    with serve() as (_, address), pytest.raises(ConfigurationError) as info:
        client(address, server_key=wrong)
    message = str(info.value)
    assert "'dealer'" in message and fingerprint(wrong) in message
    assert fingerprint(SERVER_KEY.public_bytes) in message


class Impostor(PartyKey):
    """Presents someone else's public key without holding its private key."""

    def __init__(self, claimed: bytes) -> None:
        super().__init__(PartyKey.generate()._private)
        self._public = claimed


def test_an_impostor_server_fails_key_confirmation() -> None:
    with (
        serve(key=Impostor(SERVER_KEY.public_bytes)) as (_, address),
        pytest.raises(ConfigurationError, match="key confirmation failed"),
    ):
        client(address)


def test_an_impostor_client_is_refused() -> None:
    with serve() as (_, address), pytest.raises(ConfigurationError, match="key confirmation"):
        client(address, "alice", Impostor(ALICE.public_bytes))


def test_wrong_server_name_label_and_removed_clients_are_refused() -> None:
    with serve() as (server, address):
        with pytest.raises(ConfigurationError, match="expects server 'party-b'"):
            client(address, server_name="party-b")
        with pytest.raises(ConfigurationError, match="version"):
            client(address, label="other.rpc")
        with client(address) as kept:
            server.set_clients({"bob": BOB.public_bytes})
            with pytest.raises(ConfigurationError, match="'alice' is not on the allow-list"):
                client(address)
            assert kept.call("who")["client"] == "alice"  # open connections keep working


# ---- record layer -------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["c2s", "s2c"])
def test_a_tampered_record_is_refused(direction: str) -> None:
    def edit(d: str, index: int, frame: bytes) -> list[bytes]:
        return [flip_last(frame) if (d, index) == (direction, 2 if d == "c2s" else 1) else frame]

    with serve() as (_, address), relayed(address, edit) as c:
        before = len(CALLS)
        error = IntegrityError if direction == "s2c" else CommunicationError
        with pytest.raises(error) as info:
            c.call("echo", {"x": 1})
        if direction == "s2c":
            assert "failed authentication" in str(info.value)
        else:
            assert len(CALLS) == before  # the server never ran the forged request
        with pytest.raises(CommunicationError, match="closed"):
            c.call("echo")


def test_replayed_records_are_refused() -> None:
    seen: dict[tuple[str, int], bytes] = {}

    def edit(d: str, index: int, frame: bytes) -> list[bytes]:
        seen[(d, index)] = frame
        if (d, index) == ("s2c", 2):
            return [seen[("s2c", 1)]]  # replay the first response in place of the second
        return [frame]

    with serve() as (_, address), relayed(address, edit) as c:
        assert c.call("echo", {"n": 1})["params"] == {"n": 1}
        with pytest.raises(IntegrityError, match="replayed"):
            c.call("echo", {"n": 2})

    def replay_request(d: str, index: int, frame: bytes) -> list[bytes]:
        seen[(d, index)] = frame
        return [seen[("c2s", 2)]] if (d, index) == ("c2s", 3) else [frame]

    with serve() as (_, address), relayed(address, replay_request) as c:
        c.call("echo", {"n": "first"})
        before = len(CALLS)
        with pytest.raises(CommunicationError):
            c.call("echo", {"n": "second"})
        assert len(CALLS) == before  # the replayed request did not run again


def test_an_oversized_length_prefix_is_refused_without_allocating() -> None:
    def edit(d: str, index: int, frame: bytes) -> list[bytes]:
        return [b"\xff\xff\xff\xf0" + frame[4:]] if (d, index) == ("s2c", 1) else [frame]

    with serve() as (_, address):
        tracemalloc.start()
        try:
            with relayed(address, edit) as c:
                start = time.monotonic()
                with pytest.raises(IntegrityError, match="outside the accepted range"):
                    c.call("echo")
                assert time.monotonic() - start < 2.0
            why = refused_raw(address, b"\xff\xff\xff\xff" + b"x" * 100)  # as a hello
            assert why in (
                "",
                "malformed hello: frame length 4294967295 outside the accepted range 1..4096",
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 16 * 2**20
        # A record just over the configured bound is refused too.
        small = 1024
        with client(address, max_message=small) as c, pytest.raises(IntegrityError):
            c.call("echo", {"blob": b"x" * (small - 40)})  # fits, but its echo does not


# ---- errors and timeouts ------------------------------------------------------------------


def test_a_handler_refusal_reaches_the_client_with_its_message() -> None:
    with serve() as (_, address), client(address) as c:
        with pytest.raises(RemoteError) as info:
            c.call("deny")
        assert str(info.value) == "dealer refused deny: policy refuses this program"
        assert c.call("who")["client"] == "alice"


def test_other_handler_errors_reach_the_client_without_details() -> None:
    with serve() as (_, address), client(address) as c:
        with pytest.raises(RemoteError) as info:
            c.call("boom")
        assert str(info.value) == "dealer refused boom: internal error in boom (ValueError)"
        assert "4242" not in str(info.value)
        with pytest.raises(RemoteError, match="cannot send an array of dtype float16"):
            c.call("half")  # a result that cannot be encoded
        assert c.call("who")["client"] == "alice"


def test_a_server_that_never_answers_times_out() -> None:
    silent = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True).start()
    start = time.monotonic()
    with pytest.raises(ReceiveTimeoutError, match="'dealer'"):
        client(silent.getsockname()[:2], timeout=0.3)
    assert 0.25 < time.monotonic() - start < 2.0
    for s in [silent, *accepted]:
        s.close()


def test_a_slow_handler_times_out_naming_the_method() -> None:
    with serve() as (_, address), client(address) as c:
        start = time.monotonic()
        with pytest.raises(ReceiveTimeoutError, match=r"'sleep'.*'dealer'.*0\.2 s"):
            c.call("sleep", {"s": 0.5}, timeout=0.2)
        assert time.monotonic() - start < 1.0
        with pytest.raises(CommunicationError, match="closed"):
            c.call("who")


def test_a_dead_server_raises_communication_error() -> None:
    with serve() as (server, address), client(address) as c:
        assert c.call("who")["client"] == "alice"
        server.close()
        with pytest.raises(CommunicationError, match=r"'who'.*'dealer'"):
            c.call("who", timeout=2.0)
    with pytest.raises(CommunicationError, match="cannot connect"):
        client(address, connect_timeout=0.2)


def test_the_client_retries_refused_connections_until_the_server_starts() -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = SecureServer("dealer", SERVER_KEY, CLIENTS, echo, port=port)
    timer = threading.Timer(0.3, server.start)
    timer.start()
    try:
        with client(("127.0.0.1", port), connect_timeout=T) as c:
            assert c.call("who")["client"] == "alice"
    finally:
        timer.join()
        server.close()


# ---- concurrency and lifetime -------------------------------------------------------------


def test_calls_from_several_threads_are_serialised() -> None:
    errors: list[BaseException] = []
    with serve() as (_, address), client(address) as c:

        def work(k: int) -> None:
            try:
                for i in range(20):
                    assert c.call("echo", {"k": k, "i": i})["params"] == {"k": k, "i": i}
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_max_connections_is_enforced() -> None:
    with serve(max_connections=2) as (_, address):
        first, second = client(address), client(address, "bob", BOB)
        # an answered call means the server has counted that connection (it takes the slot
        # when it has confirmed the client's key, which may be just after the client returns)
        assert first.call("who")["client"] == "alice"
        assert second.call("who")["client"] == "bob"
        with pytest.raises(CommunicationError, match="busy"):
            client(address)
        first.close()
        deadline = time.monotonic() + T
        while True:  # the server frees the slot when it sees the connection close
            try:
                third = client(address)
                break
            except CommunicationError:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        assert third.call("who")["client"] == "alice"
        third.close()
        second.close()


def test_idle_connections_are_closed() -> None:
    with serve(idle_timeout=0.2) as (_, address), client(address) as c:
        time.sleep(0.5)
        with pytest.raises(CommunicationError):
            c.call("who")


def test_close_leaves_no_thread_running() -> None:
    assert rpc_threads() == []
    server = SecureServer("dealer", SERVER_KEY, CLIENTS, echo)
    address = server.start()
    a = client(address)
    a.call("who")
    b = client(address, "bob", BOB)
    pending = socket.create_connection(address)  # connected, never says hello
    time.sleep(0.05)
    assert len(rpc_threads()) == 4  # acceptor + three connections
    start = time.monotonic()
    server.close()
    assert time.monotonic() - start < 2.0
    assert rpc_threads() == []
    for closable in (a, b, pending):
        closable.close()


# ---- denial of service --------------------------------------------------------------------


def test_a_declared_length_allocates_nothing_until_its_bytes_arrive() -> None:
    declared = 64 * 2**20
    a, b = socket.socketpair()
    tracemalloc.start()
    try:
        with a, b:
            a.sendall(b"x" * 1000)
            with pytest.raises(TimeoutError):
                secure_rpc._recv_exact(b, declared, time.monotonic() + 0.2)
        # An authenticated client sends only the length prefix of a large record: the server
        # (default max_message of 256 MiB) must not reserve the declared size.
        with serve() as (_, address), client(address) as c:
            assert c._channel is not None
            c._channel.sock.sendall(declared.to_bytes(4, "big") + b"y" * 1000)
            time.sleep(0.3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20
    # Bodies longer than one receive chunk still arrive whole.
    blob = bytes(range(256)) * (3 * 2**12) + b"tail"
    with serve() as (_, address), client(address) as c:
        assert c.call("echo", {"blob": blob})["params"]["blob"] == blob


def test_idle_unauthenticated_connections_cannot_take_every_slot() -> None:
    hello = 0.5
    with (
        serve(max_connections=3, timeout=3600.0, hello_timeout=hello) as (server, address),
        client(address, "bob", BOB) as early,
    ):
        assert server.hello_timeout == hello
        start = time.monotonic()
        idle = [socket.create_connection(address) for _ in range(server.max_connections + 2)]
        try:
            # Anyone can open these without a key; they must not lock out the allow-listed
            # clients: a new client is served (at most about one hello timeout later) ...
            with client(address) as late:
                assert late.call("who")["client"] == "alice"
            assert time.monotonic() - start < hello + 2.0
            assert early.call("who")["client"] == "bob"  # ... and authenticated ones keep working
            # ... and every idle connection is dropped after the hello timeout, not `timeout`.
            for raw in idle:
                raw.settimeout(T)
                with contextlib.suppress(ConnectionResetError):
                    assert raw.recv(1) == b""
            assert hello * 0.8 < time.monotonic() - start < 2 * hello + 2.0
        finally:
            for raw in idle:
                raw.close()


def test_the_default_hello_timeout_is_short_whatever_the_call_timeout() -> None:
    server = SecureServer("dealer", SERVER_KEY, CLIENTS, echo, timeout=3600.0)
    assert server.hello_timeout == secure_rpc.HELLO_TIMEOUT == 5.0
    assert SecureServer("dealer", SERVER_KEY, CLIENTS, echo, timeout=1.0).hello_timeout == 1.0
