"""What a peer (or a stranger) sends cannot break later runs, exhaust memory or threads, or hang
the session: tags checked against the run, bounded buffers, allocation as bytes arrive, control
frames with a deadline, a run deadline, anonymous pre-authentication failures, a cap on
concurrent handshakes (issue 13, item 4); a short deadline for a dialer's hello, and after a
failed connect a listener that answers only dialers of its own session, each within one
deadline, while what unauthenticated peers sent stays out of what other parties are told.
Loopback only."""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import threading
import time
import tracemalloc
import types
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np
import pytest
from test_tcp_transport import (
    close_all,
    connect_all,
    connect_listening,
    make_transports,
    relayed_pair,
)

from mpc.errors import (
    CommunicationError,
    IntegrityError,
    MpcError,
    PartyFailedError,
    PeerFailedError,
)
from mpc.parties import framing, mailbox, ray_runtime, tcp
from mpc.parties.keys import PartyKey
from mpc.parties.mailbox import Mailbox
from mpc.parties.party import SessionConfig
from mpc.parties.tcp import TcpTransport
from mpc.parties.tcp import connect as tcp_connect
from mpc.parties.tcp import link as tcp_link
from mpc.parties.tcp import records as tcp_records
from mpc.parties.tcp import state as tcp_state
from mpc.stats import PartyStats

TIMEOUT = 10.0


@pytest.fixture
def mesh() -> Iterator[list[TcpTransport]]:
    transports = make_transports(3)
    assert connect_all(transports) == [None, None, None]
    yield transports
    close_all(transports)


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


# ---- (a) tags are checked against the current run ------------------------------------------


def test_an_empty_tag_fails_the_run_naming_the_peer_and_not_the_next_run(
    mesh: list[TcpTransport],
) -> None:
    a, b, _ = mesh
    a.mailbox.begin_run(1)
    b.send(0, (), np.zeros(2))
    with pytest.raises(IntegrityError, match=r"'b'.*empty tag"):
        a.recv(1, (1, 0, 0), 3.0)
    a.mailbox.begin_run(2)
    b.send(0, (2, 0, 0), np.ones(2))
    np.testing.assert_array_equal(a.recv(1, (2, 0, 0), TIMEOUT), np.ones(2))


def test_an_empty_tag_between_runs_does_not_break_the_next_run(mesh: list[TcpTransport]) -> None:
    a, b, _ = mesh
    b.send(0, (), np.zeros(2))
    time.sleep(0.2)  # the receiver thread reads it
    a.mailbox.begin_run(1)  # used to raise IndexError on the stored empty tag
    b.send(0, (1, 0, 0), np.ones(2))
    np.testing.assert_array_equal(a.recv(1, (1, 0, 0), TIMEOUT), np.ones(2))


# ---- (b) bounded buffers ------------------------------------------------------------------------


def test_messages_for_runs_other_than_this_one_or_the_next_are_not_kept() -> None:
    box = Mailbox("alice", ["alice", "bob"])
    box.begin_run(5)
    assert box.put(1, (6, 0, 0), np.zeros(1))  # the next run: a faster peer started it
    assert not box.put(1, (4, 9, 9), np.zeros(1))  # a late message of a run that failed
    assert box.failure is None
    assert not box.put(1, (9, 0, 0), np.zeros(1))  # no party can be in run 9 yet
    with pytest.raises(IntegrityError, match=r"'bob'.*run 9"):
        box.get(1, (5, 0, 0), 1.0)
    assert box.held(1) == (1, 8)
    box.begin_run(6)  # starts clean, with the early message
    assert box.get(1, (6, 0, 0), 1.0).shape == (1,)
    assert box.held(1) == (0, 0)


def test_failures_of_future_runs_are_bounded() -> None:
    box = Mailbox("alice")
    for run in range(1000):  # before the first run
        box.fail(PeerFailedError(f"run {run}"), run=run)
    assert len(box._early) <= mailbox.MAX_EARLY_FAILURES
    box.begin_run(10)
    box.fail(PeerFailedError("run 12 cannot have started"), run=12)
    box.fail(PeerFailedError("run 11 failed early"), run=11)
    box.begin_run(11)
    with pytest.raises(PeerFailedError, match="run 11"):
        box.get(1, (11, 0, 0), 1.0)
    box.begin_run(12)
    box.put(1, (12, 0, 0), np.zeros(1))
    assert box.get(1, (12, 0, 0), 1.0).shape == (1,)


def test_a_peer_holds_a_bounded_share_of_the_mailbox() -> None:
    box = Mailbox("alice", ["alice", "bob"], max_messages=3, max_bytes=1 << 20)
    for k in range(3):
        assert box.put(1, (0, k), np.zeros(1))
    assert not box.has_room(1) and box.has_room(2)
    assert not box.put(1, (0, 3), np.zeros(1))
    with pytest.raises(IntegrityError, match="'bob' has 3 messages"):
        box.get(1, (0, 4), 1.0)
    box.begin_run(0)
    assert box.take(1, (0, 0)) is not None
    assert box.has_room(1)
    big = Mailbox("alice", ["alice", "bob"], max_bytes=100)
    assert big.put(1, (0, 0), np.zeros(20))  # 160 bytes: over the limit only after it
    assert not big.has_room(1)
    assert not big.put(1, (0, 1), np.zeros(1))


def test_a_peer_that_runs_ahead_is_held_back_not_buffered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """b sends 200 messages that a receives only later: a keeps at most its per-peer share in
    memory (the rest waits in the sockets, b's sends are slowed down by TCP), and every message
    still arrives, in order."""
    monkeypatch.setattr(tcp_state, "_MAILBOX_MESSAGES", 8)
    monkeypatch.setattr(tcp_state, "_MAILBOX_BYTES", 1 << 20)
    transports = make_transports(2)
    try:
        assert connect_all(transports) == [None, None]
        a, b = transports
        small = [np.full(4, k, dtype=np.int64) for k in range(200)]
        for k, array in enumerate(small):
            b.send(0, (0, k), array)
        large = [np.full(32 * 1024, k, dtype=np.uint64) for k in range(24)]  # 256 KiB each
        errors: list[BaseException] = []

        def send_large() -> None:
            try:
                for k, array in enumerate(large):
                    b.send(0, (1, k), array)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        sender = threading.Thread(target=send_large)
        sender.start()
        time.sleep(0.5)
        assert a.mailbox.held(1)[0] <= 8
        for k, array in enumerate(small):
            np.testing.assert_array_equal(a.recv(1, (0, k), TIMEOUT), array)
        time.sleep(0.3)
        count, size = a.mailbox.held(1)
        assert count <= 8 and size <= (1 << 20) + large[0].nbytes
        for k, array in enumerate(large):
            np.testing.assert_array_equal(a.recv(1, (1, k), TIMEOUT), array)
        sender.join(TIMEOUT)
        assert not sender.is_alive() and errors == []
        assert a.mailbox.held(1) == (0, 0)
    finally:
        close_all(transports)


def test_a_flood_into_a_waiting_receive_is_refused_naming_the_peer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tcp_state, "_MAILBOX_MESSAGES", 8)
    transports = make_transports(2)
    try:
        assert connect_all(transports) == [None, None]
        a, b = transports
        for k in range(100):  # tags a never asks for
            b.send(0, (0, k), np.zeros(2))
        start = time.monotonic()
        with pytest.raises(IntegrityError, match="'b' has 8 messages"):
            a.recv(1, (0, 1000), TIMEOUT)
        assert time.monotonic() - start < TIMEOUT / 2
        assert a.mailbox.held(1)[0] <= 8
    finally:
        close_all(transports)


def test_a_receive_waiting_on_another_peer_does_not_spin_on_a_held_back_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """b's share of a's mailbox is full: while a waits for c, it must not poll b's connection
    (readable, but not to be read) in a busy loop."""
    monkeypatch.setattr(tcp_state, "_MAILBOX_MESSAGES", 8)
    transports = make_transports(3)
    try:
        assert connect_all(transports) == [None, None, None]
        a, b, c = transports
        for k in range(300):
            b.send(0, (0, k), np.zeros(2))
        wait_until(lambda: a.mailbox.held(1)[0] == 8)

        def send_late() -> None:
            time.sleep(1.0)
            c.send(0, (1, 0), np.ones(1))

        threading.Thread(target=send_late).start()
        cpu = time.process_time()
        a.exchange((1, 0), {1: np.zeros(1)}, [2], TIMEOUT)  # b is written to, not waited for
        assert time.process_time() - cpu < 0.3, "the wait spun on b's connection"
        for k in range(300):
            a.recv(1, (0, k), TIMEOUT)
        assert b.recv(0, (1, 0), TIMEOUT).shape == (1,)
    finally:
        close_all(transports)


# ---- (c) allocation follows the payload --------------------------------------------------------


def test_a_header_alone_does_not_make_the_receiver_allocate_its_payload() -> None:
    (a, b), relay = relayed_pair(encrypt=False)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        code = framing.DTYPE_CODES.index("|u1")
        header = struct.pack("<BBBBIqQ", framing.DATA_MARKER, code, 1, 1, 0, 0, 1 << 30)
        relay.inject(framing.length_prefix(len(header)) + header + b"\0" * 1000)  # 1 GiB claimed
        time.sleep(0.5)  # the receiver thread reads the header and the first bytes
        _, peak = tracemalloc.get_traced_memory()
        assert peak < 48 << 20, f"{peak} bytes allocated for 1000 bytes received"
    finally:
        tracemalloc.stop()
        close_all([a, b])
        relay.cut()


@pytest.mark.parametrize("encrypt", [True, False])
def test_large_payloads_received_in_pieces_arrive_intact(
    encrypt: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tcp_records, "_EAGER_ALLOC", 1 << 20)
    monkeypatch.setattr(tcp_records, "_PIECE_BYTES", 2 * tcp.RECORD_CHUNK)
    transports = make_transports(2, encrypt=encrypt)
    try:
        assert connect_all(transports) == [None, None]
        rng = np.random.default_rng(3)
        arrays = [
            rng.integers(0, 2**63, size=(700_001,), dtype=np.uint64),  # 5.3 MiB: 3 pieces
            rng.standard_normal((512, 1024)),  # 4 MiB: exactly 2 pieces
            np.ones(1 << 20, dtype=bool),  # 1 MiB: allocated at once
        ]
        for k, array in enumerate(arrays):
            transports[1].send(0, (0, k), array)
            got = transports[0].recv(1, (0, k), TIMEOUT)
            np.testing.assert_array_equal(got, array)
            assert got.dtype == array.dtype and got.shape == array.shape
    finally:
        close_all(transports)


# ---- (d) control frames have a deadline -------------------------------------------------------


def test_control_frames_to_a_peer_that_does_not_read_give_up(mesh: list[TcpTransport]) -> None:
    a, b, _ = mesh
    reading = a._links[1].read_lock
    assert reading.acquire(timeout=5)  # a reads nothing more from b
    try:
        link = b._links[0]
        chunk = 1 << 16
        while chunk:  # fill b -> a (a never parses these bytes: it no longer reads them)
            try:
                link.sock.send(b"\0" * chunk, socket.MSG_DONTWAIT)
            except BlockingIOError:
                chunk //= 4
        done = threading.Event()

        def bye() -> None:
            link.send_control(framing.encode_bye())
            done.set()

        threading.Thread(target=bye, daemon=True).start()
        assert done.wait(3 * tcp_link._CONTROL_WAIT + 1), "a control send blocked on a full socket"
        start = time.monotonic()
        b.close()
        assert time.monotonic() - start < 4 * tcp_link._CONTROL_WAIT + 3
    finally:
        reading.release()


# ---- (e) a run deadline --------------------------------------------------------------------------


class _TaskError(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _ActorError(Exception):
    pass


class _Ref:
    def __init__(self, actor: _Actor) -> None:
        self.actor = actor

    def ready(self) -> bool:
        return bool(self.actor.outcome != "stuck")


class _Ping(_Ref):
    def ready(self) -> bool:
        return not self.actor.frozen


class _Actor:
    """A party actor whose run finishes, fails, or never returns ("stuck"); a stuck party that
    `wakes` returns (failed) once it is told to abort; a `frozen` one answers no ping either."""

    def __init__(self, name: str, outcome: Any, wakes: bool = False, frozen: bool = False) -> None:
        self.name = name
        self.outcome = outcome
        self.wakes = wakes
        self.frozen = frozen
        self.told: list[str] = []
        self.run = types.SimpleNamespace(remote=lambda *args: _Ref(self))
        self.alive = types.SimpleNamespace(remote=lambda: _Ping(self))
        self.peer_aborted = types.SimpleNamespace(remote=self._told)

    def _told(self, peer: str, reason: str, run_id: int | None = None) -> None:
        self.told.append(reason)
        if self.wakes and self.outcome == "stuck":
            self.outcome = PartyFailedError(self.name, "mul #2", f"aborted: {reason}", True)


class _FakeRay(types.ModuleType):
    """Just enough of `ray` for `RayParties.execute`."""

    def __init__(self) -> None:
        super().__init__("ray")
        self.exceptions = types.SimpleNamespace(RayTaskError=_TaskError, RayActorError=_ActorError)
        self.cloudpickle = types.SimpleNamespace(register_pickle_by_value=lambda module: None)
        self.killed: list[str] = []
        self.error: Any = None

    def wait(
        self, pending: list[_Ref], num_returns: int = 1, timeout: float | None = None
    ) -> tuple[list[_Ref], list[_Ref]]:
        ready = [r for r in pending if r.ready()][:num_returns]
        if ready:
            return ready, [r for r in pending if r not in ready]
        if timeout is None:
            raise AssertionError("ray.wait without a timeout blocks for ever on a stuck party")
        time.sleep(min(timeout, 0.05))
        return [], pending

    def get(self, ref: _Ref, timeout: float | None = None) -> Any:
        if isinstance(ref.actor.outcome, BaseException):
            raise _TaskError(ref.actor.outcome)
        return ref.actor.outcome, PartyStats().as_dict()

    def kill(self, actor: _Actor) -> None:
        self.killed.append(actor.name)


def _program(ctx: Any) -> None:  # never runs: the fake actors return canned outcomes
    return None


def _execute(actors: list[_Actor], monkeypatch: pytest.MonkeyPatch) -> _FakeRay:
    """Run `RayParties.execute` over `actors` with a fake `ray`; return the fake (the run's
    error, if any, is in `fake.error`)."""
    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(ray_runtime, "ABORT_GRACE", 0.2, raising=False)
    config = SessionConfig(tuple(a.name for a in actors), "additive", 2, timeout=0.1)
    parties = ray_runtime.RayParties(
        config,
        transport="tcp",
        with_dealer=False,
        private={},
        deployment=None,
        ray_address=None,
        num_cpus=2,
        session_id=b"session",
    )
    parties.straggler_timeout = 0.3
    parties.actors = actors
    start = time.monotonic()
    with pytest.raises(PartyFailedError) as failed:
        parties.execute(_program, (), {})
    assert time.monotonic() - start < 5
    fake.error = failed.value
    return fake


@pytest.mark.parametrize("others_fail", [True, False])
def test_a_party_stuck_outside_a_receive_does_not_hang_the_session(
    others_fail: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    first: Any = None
    if others_fail:  # alice timed out waiting for carol
        first = PartyFailedError("alice", "mul #2", "ReceiveTimeoutError: no message from 'carol'")
    actors = [_Actor("alice", first), _Actor("bob", None), _Actor("carol", "stuck")]
    fake = _execute(actors, monkeypatch)
    assert fake.error.party == "carol"
    assert "did not finish the run" in str(fake.error) and "stopped" in str(fake.error)
    assert fake.killed == ["carol"]
    assert any("'carol' did not finish" in reason for reason in actors[2].told)


def test_a_late_party_that_ends_when_told_to_abort_is_not_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    actors = [_Actor("alice", None), _Actor("bob", None), _Actor("carol", "stuck", wakes=True)]
    fake = _execute(actors, monkeypatch)
    assert fake.killed == []
    assert fake.error.party == "carol" and "did not finish the run" in str(fake.error)


def test_run_timeout_bounds_a_run_where_no_party_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["alice", "bob", "carol"]
    outcomes: dict[str, Any] = {}
    calls: list[float | None] = []

    def wait(pending: list[Any], timeout: float | None) -> tuple[list[Any], list[Any]]:
        calls.append(timeout)
        assert timeout is not None
        time.sleep(min(timeout, 0.05))
        return [], pending

    results, failures, late = ray_runtime.await_parties(
        {name: name for name in names},
        wait=wait,
        fetch=lambda ref, name: outcomes[name],
        tell=lambda name, failed, reason: None,
        stop=lambda name: None,
        straggler_timeout=60.0,
        run_timeout=0.2,
        abort_grace=0.1,
    )
    assert results == {} and late == names
    assert "time limit of 0.2 s" in str(failures["alice"])


# ---- (f) failures before authentication are anonymous ------------------------------------------


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _message(sock: socket.socket) -> dict[str, Any]:
    size = int.from_bytes(sock.recv(4, socket.MSG_WAITALL), "big")
    message: dict[str, Any] = msgpack.unpackb(sock.recv(size, socket.MSG_WAITALL), raw=False)
    return message


@pytest.mark.parametrize("claim", ["wrong key", "public key only"])
def test_a_stranger_that_claims_a_name_cannot_abort_set_up(claim: str) -> None:
    keys = [PartyKey.generate() for _ in range(2)]
    transports = make_transports(2, keys=keys)
    a, b = transports
    try:
        addresses = {t.name: t.listen() for t in transports}
        static = PartyKey.generate().public_bytes if claim == "wrong key" else keys[1].public_bytes
        hello = {
            "m": "hello",
            "p": tcp.PROTOCOL,
            "v": tcp.VERSION,
            "rank": 1,
            "name": "b",
            "names": ["a", "b"],
            "to": 0,
            "enc": True,
            "sid": a._sid_digest,
            "static": static,
            "eph": PartyKey.generate().public_bytes,
        }
        with socket.create_connection(addresses["a"], timeout=5) as stranger:
            data = msgpack.packb(hello, use_bin_type=True)
            stranger.sendall(framing.length_prefix(len(data)) + data)
            if claim == "public key only":  # a answers; the stranger cannot confirm the key
                assert _message(stranger)["m"] == "hello"
                confirm = msgpack.packb({"m": "confirm", "c": b"\0" * 40}, use_bin_type=True)
                stranger.sendall(framing.length_prefix(len(confirm)) + confirm)
            assert b"reject" in _read_all(stranger)
        errors = connect_listening(transports[:2], addresses)
        assert errors == [None, None]
        b.send(0, (0, 0), np.arange(3))
        np.testing.assert_array_equal(a.recv(1, (0, 0), TIMEOUT), np.arange(3))
    finally:
        close_all(transports)


# ---- (g) a cap on concurrent handshakes ----------------------------------------------------------


def test_concurrent_handshakes_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcp_state, "_MAX_HANDSHAKES", 3)
    transports = make_transports(2)
    try:
        addresses = {t.name: t.listen() for t in transports}
        idle = [socket.create_connection(addresses["a"], timeout=5) for _ in range(6)]
        time.sleep(0.5)
        running = [t for t in threading.enumerate() if t.name == "mpc-tcp-handshake-a"]
        assert len(running) <= 3
        for sock in idle:  # the slots free up; the honest peer is served
            sock.close()
        errors = connect_listening(transports[:2], addresses)
        assert errors == [None, None]
    finally:
        close_all(transports)


def _connect_in_threads(
    transports: list[TcpTransport], addresses: dict[str, tuple[str, int]]
) -> list[BaseException | None]:
    errors: list[BaseException | None] = [None] * len(transports)

    def run(i: int) -> None:
        try:
            transports[i].connect(addresses)
        except BaseException as e:
            errors[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(transports))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return errors


def test_silent_connections_give_their_handshake_slots_back_soon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Connections that never send a hello hold a handshake slot for _HELLO_DEADLINE, not for
    the whole connect timeout: they cannot hold up set-up."""
    monkeypatch.setattr(tcp_state, "_MAX_HANDSHAKES", 2)
    monkeypatch.setattr(tcp_connect, "_HELLO_DEADLINE", 1.0)
    transports = make_transports(2, connect_timeout=8.0)
    silent: list[socket.socket] = []
    try:
        addresses = {t.name: t.listen() for t in transports}
        silent = [socket.create_connection(addresses["a"], timeout=5) for _ in range(2)]
        time.sleep(0.2)  # both slots taken
        started = time.monotonic()
        assert _connect_in_threads(transports, addresses) == [None, None]
        assert time.monotonic() - started < 5.0, "set-up waited for the silent connections"
        assert any("no hello within 1 s" in e for e in transports[0]._anonymous_errors)
    finally:
        for sock in silent:
            sock.close()
        close_all(transports)


# ---- (h) after a failed connect ------------------------------------------------------------------


def _hello_bytes(transport: TcpTransport, rank: int, **override: Any) -> bytes:
    """The hello `transport` would send when it dials `rank` (fields overridable)."""
    hello = transport._handshake.hello(rank, PartyKey.generate().public_bytes)
    hello.update(override)
    data: bytes = msgpack.packb(hello, use_bin_type=True)
    return framing.length_prefix(len(data)) + data


def _read_quietly(sock: socket.socket) -> bytes:
    """Everything until the peer closes (a reset ends it too)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_a_lingering_listener_gives_each_late_dialer_one_deadline_and_a_handshake_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A late dialer that never closes (it keeps sending) is let go after _LATE_DEADLINE, and
    holds a handshake slot until then: answers to late dialers cannot pile up threads."""
    monkeypatch.setattr(tcp_state, "_MAX_HANDSHAKES", 1)
    a, b = make_transports(2, connect_timeout=0.5)
    socks: list[socket.socket] = []
    stop = threading.Event()
    try:
        address = a.listen()
        with pytest.raises(CommunicationError, match="'b' did not connect"):
            a.connect({})
        before = set(threading.enumerate())

        def answering() -> list[threading.Thread]:
            return [
                t
                for t in threading.enumerate()
                if t.name == "mpc-tcp-handshake-a" and t not in before and t.is_alive()
            ]

        socks = [socket.create_connection(address, timeout=5) for _ in range(2)]
        for sock in socks:
            sock.sendall(_hello_bytes(b, 0))

        def trickle() -> None:
            while not stop.wait(0.2):
                for sock in socks:
                    with contextlib.suppress(OSError):
                        sock.send(b"\0")

        threading.Thread(target=trickle, daemon=True).start()
        time.sleep(0.5)
        assert len(answering()) == 1  # one slot: the second waits in the backlog
        for sock in socks:  # the first is let go by its deadline; then the second is answered
            message = _message(sock)
            assert message["m"] == "reject" and "'b' did not connect" in message["why"]
        wait_until(lambda: not answering(), timeout=3.0)
    finally:
        stop.set()
        for sock in socks:
            sock.close()
        close_all([a, b])


def test_a_lingering_listener_tells_only_dialers_of_its_own_session_and_only_printable_text() -> (
    None
):
    a, b = make_transports(2)
    other = make_transports(2, session_ids=[b"another run"] * 2)[1]
    try:
        address = a.listen()
        a._linger_rejecting("why\x1b[2J\nnot" + "x" * 1000)
        with socket.create_connection(address, timeout=5) as stranger:  # no hello at all
            stranger.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert _read_quietly(stranger) == b""
        with socket.create_connection(address, timeout=5) as late:  # another session's dialer
            late.sendall(_hello_bytes(other, 0))
            assert _read_quietly(late) == b"", "told the reason of a run it is not part of"
        with socket.create_connection(address, timeout=5) as late:  # this session's dialer
            late.sendall(_hello_bytes(b, 0))
            message = _message(late)
        assert message == {"m": "reject", "why": ("why[2Jnot" + "x" * 1000)[:500]}
    finally:
        close_all([a, b, other])


def test_a_new_run_that_dials_a_port_where_a_failed_run_lingers_reaches_the_new_listener() -> None:
    """Run 1 of party a failed and its listener lingers; b of run 2 (another session) dials
    that port before a's run 2 listens: b is not told run 1's reason (it is hung up on and dials
    again), and run 2 starts once a listens there."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    keys = [PartyKey.generate() for _ in range(2)]
    pins = [{"b": keys[1].public_bytes}, {"a": keys[0].public_bytes}]

    def party(rank: int, session: bytes, timeout: float) -> TcpTransport:
        return TcpTransport(
            rank,
            ["a", "b"],
            key=keys[rank],
            peer_keys=pins[rank],
            session_id=session,
            port=port if rank == 0 else 0,
            connect_timeout=timeout,
        )

    old = party(0, b"run 1", 0.5)
    new = [party(0, b"run 2", 10.0), party(1, b"run 2", 10.0)]
    try:
        old.listen()
        with pytest.raises(CommunicationError, match="'b' did not connect"):
            old.connect({})
        errors: list[BaseException | None] = [None, None]

        def run(i: int) -> None:
            try:
                new[i].connect({"a": ("127.0.0.1", port)})
            except BaseException as e:
                errors[i] = e

        dialer = threading.Thread(target=run, args=(1,))
        dialer.start()
        time.sleep(1.0)  # b dials while run 1's listener still lingers there
        assert errors[1] is None, f"b was told run 1's reason: {errors[1]}"
        new[0].listen()  # the lingering listener of this process gives the port up
        run(0)
        dialer.join(30)
        assert errors == [None, None]
        new[1].send(0, (0, 0), np.arange(3))
        np.testing.assert_array_equal(new[0].recv(1, (0, 0), TIMEOUT), np.arange(3))
    finally:
        close_all([old, *new])


def test_what_an_unauthenticated_peer_sent_stays_in_the_own_error_quoted_and_short() -> None:
    """A stranger's hello (claiming b) carries long text with control characters: a, which
    times out waiting for b, quotes it briefly in its own error; neither the abort that the
    linked party c gets nor the reason that b, dialing late, is told contains it."""
    keys = [PartyKey.generate() for _ in range(3)]
    transports = make_transports(3, keys=keys, connect_timeout=2.0)
    transports[2] = make_transports(3, keys=keys, connect_timeout=10.0)[2]
    a, b, c = transports
    secret = "\x1b[2J" + "Z" * 300
    try:
        addresses = {t.name: t.listen() for t in transports}
        with socket.create_connection(addresses["a"], timeout=5) as stranger:
            stranger.sendall(_hello_bytes(b, 0, to=secret))
            assert b"reject" in _read_quietly(stranger)
        # a waits for b, which only listens (c links with both, so its connect succeeds)
        errors = _connect_in_threads([a, c], addresses)
        assert isinstance(errors[0], CommunicationError) and errors[1] is None
        own = str(errors[0])
        assert "rejected unidentified connections" in own and "Z" * 20 in own
        assert "Z" * 100 not in own and "\x1b" not in own
        wait_until(lambda: c.mailbox.failure is not None)
        told = str(c.mailbox.failure)
        assert "'a' aborted" in told and "'b' did not connect" in told
        assert "refused 1 connection(s) that did not authenticate" in told
        with pytest.raises(MpcError, match="refused this party") as late:  # b dials a late
            b.connect(addresses)
        for text in (told, str(late.value)):
            assert "ZZZ" not in text and "x1b" not in text, text
    finally:
        close_all(transports)
