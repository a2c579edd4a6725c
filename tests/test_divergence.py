"""Parties that run different operations are told so at once, and errors name the operation that
failed (in-process and over TCP; no Ray)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import local_parties
from test_tcp_transport import close_all, connect_all, make_transports

from mpc.errors import ConfigurationError, DivergenceError, IntegrityError, PartyFailedError
from mpc.parties import framing
from mpc.parties.channel import PartyChannel
from mpc.parties.mailbox import END_LABEL, Mailbox
from mpc.parties.memory import MemoryNetwork
from mpc.parties.party import PartyRunner, SessionConfig
from mpc.program import PartyContext

#: Long enough that a test which waited for it would fail its own time check.
TIMEOUT = 30.0
PROMPT = 10.0


def branches(ctx: PartyContext) -> Any:
    """alice reveals where the others share a new input (operation 2)."""
    x = ctx.input(ctx.parties[0], np.arange(3.0) if ctx.rank == 0 else None)
    if ctx.rank == 0:
        return ctx.reveal(x)
    y = ctx.input(ctx.parties[1], np.ones(3) if ctx.rank == 1 else None)
    return ctx.reveal(x + y)


def ends_early(ctx: PartyContext) -> Any:
    """alice reveals once more after the others have returned."""
    x = ctx.input(ctx.parties[0], np.arange(3.0) if ctx.rank == 0 else None)
    if ctx.rank == 0:
        return ctx.reveal(x)
    return None


def _failure(run: Callable[[], Any]) -> tuple[PartyFailedError, float]:
    start = time.monotonic()
    with pytest.raises(PartyFailedError) as info:
        run()
    return info.value, time.monotonic() - start


def test_parties_that_run_different_operations_fail_at_once_naming_both() -> None:
    parties = local_parties("additive", 2, timeout=TIMEOUT)
    err, elapsed = _failure(lambda: parties.run(branches))
    assert elapsed < PROMPT, f"{elapsed:.1f} s: the parties waited instead of failing"
    assert isinstance(err.__cause__, DivergenceError)
    assert (err.party, err.operation) == ("alice", "reveal #2")
    assert "parties diverged at operation 2: alice did reveal (3,), bob did input" in err.cause
    assert "ctx.me" in err.cause  # says what to change


def test_a_party_waiting_for_one_that_has_ended_fails_at_once() -> None:
    parties = local_parties("additive", 3, timeout=TIMEOUT)
    err, elapsed = _failure(lambda: parties.run(ends_early))
    assert elapsed < PROMPT, f"{elapsed:.1f} s: alice waited out the receive timeout"
    assert isinstance(err.__cause__, DivergenceError) and err.party == "alice"
    assert re.search(
        r"diverged at operation 2: alice did reveal \(3,\), (bob|carol) had ended its program "
        r"after operation 1",
        err.cause,
    ), err.cause
    # the session stays usable, and the end messages of a good run fail nothing
    assert np.allclose(parties.run(_same)["bob"].output, 2.0)


def _same(ctx: PartyContext) -> Any:
    return ctx.reveal(ctx.input("alice", 2.0 if ctx.me == "alice" else None))


def _run_over_tcp(program: Callable[..., Any], n: int) -> dict[str, BaseException]:
    """Run `program` at n parties over an encrypted TCP mesh (no dealer); their failures."""
    transports = make_transports(n)
    assert connect_all(transports) == [None] * n
    config = SessionConfig(tuple(t.name for t in transports), "additive", 1, timeout=TIMEOUT)
    failures: dict[str, BaseException] = {}

    def party(rank: int) -> None:
        transports[rank].mailbox.begin_run(1)
        try:
            PartyRunner(rank, config, transports[rank], None).run(1, program)
        except BaseException as exc:
            failures[config.parties[rank]] = exc

    threads = [threading.Thread(target=party, args=(r,)) for r in range(n)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT + 10)
    finally:
        close_all(transports)
    return failures


@pytest.mark.parametrize(
    ("program", "n", "expected"),
    [
        (branches, 2, "diverged at operation 2: a did reveal (3,), b did input"),
        (ends_early, 2, "diverged at operation 2: a did reveal (3,), b had ended its program"),
    ],
)
def test_divergence_is_found_over_tcp(program: Callable[..., Any], n: int, expected: str) -> None:
    start = time.monotonic()
    failures = _run_over_tcp(program, n)
    assert time.monotonic() - start < PROMPT
    primary = [e for e in failures.values() if not getattr(e, "secondary", True)]
    assert len(primary) == 1 and expected in str(primary[0]), failures


def test_declared_shapes_tell_the_same_kind_apart() -> None:
    """A caller that declares its operands' shapes gets them compared and named too."""
    network = MemoryNetwork(["alice", "bob"])
    channels = [PartyChannel(t, 1, TIMEOUT) for t in network.transports()]
    for box in network.mailboxes:
        box.begin_run(1)
    errors: dict[int, BaseException] = {}

    def party(rank: int, shape: tuple[int, ...]) -> None:
        try:
            with channels[rank].operation("mul", shapes=[shape, shape]):
                channels[rank].exchange({1 - rank: np.zeros(2 * shape[0])}, [1 - rank])
        except BaseException as exc:
            errors[rank] = exc

    threads = [
        threading.Thread(target=party, args=(0, (3,))),
        threading.Thread(target=party, args=(1, (2,))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert isinstance(errors[0], DivergenceError)
    assert "operation 1: alice did mul (3,) (3,), bob did mul (2,) (2,)" in str(errors[0])


def test_an_end_message_waits_for_messages_still_in_flight() -> None:
    """A transport may deliver a peer's end message before its last data (Ray calls): the
    receive waits for what the peer says it sent, then fails at once for what it never sent."""
    box = Mailbox("alice", ["alice", "bob"])
    box.begin_run(5)
    end = np.array([2, 4], dtype=np.uint64)  # bob sent alice 2 messages; its last op was 4
    assert box.put(1, (5, -1, 0), end, END_LABEL)
    assert box.put(1, (5, 3, 0), np.ones(1), "reveal")
    got: list[np.ndarray] = []
    waiter = threading.Thread(
        target=lambda: got.append(box.get(1, (5, 4, 0), TIMEOUT, label="mul"))
    )
    waiter.start()
    time.sleep(0.05)  # the receive waits: one of bob's messages is still on its way
    assert box.put(1, (5, 4, 0), np.zeros(1), "mul")
    waiter.join(PROMPT)
    assert len(got) == 1
    np.testing.assert_array_equal(box.get(1, (5, 3, 0), 1.0, label="reveal"), np.ones(1))
    start = time.monotonic()
    ended = r"'bob' has ended its program \(after its operation #4\)"
    with pytest.raises(DivergenceError, match=ended):
        box.get(1, (5, 5, 0), TIMEOUT, label="reveal")
    assert time.monotonic() - start < PROMPT
    with pytest.raises(DivergenceError):  # take (the TCP transport's) as well
        box.take(1, (5, 6, 0), "reveal")
    # a malformed end message is refused, and the next run starts clean
    box.begin_run(6)
    assert not box.put(1, (6, -1, 0), np.zeros(3, dtype=np.uint64), END_LABEL)
    with pytest.raises(IntegrityError, match="malformed end-of-program"):
        box.get(1, (6, 1, 0), 1.0)


def test_operation_labels_from_peers_are_short_and_printable() -> None:
    array = np.arange(3, dtype=np.uint64)
    header, _ = framing.encode_data((1, 2, 0), array, "reveal (3,)")
    parsed = framing.parse_header(header)
    assert parsed.label == "reveal (3,)" and parsed.tag == (1, 2, 0) and parsed.shape == (3,)
    assert len(header) == framing.data_header_size(3, 1, len("reveal (3,)"))
    assert len(header) % 8 == 0  # an inline payload stays aligned
    for label in ["x" * (framing.MAX_LABEL_BYTES + 1), "mul\n", "mul\x1b[2J", "mül"]:
        with pytest.raises(ConfigurationError):
            framing.encode_data((1,), array, label)
    good, _ = framing.encode_data((1,), array, "mul")
    assert framing.parse_header(good).label == "mul"  # (now also known to the label cache)
    at = len(good) - 8  # the label's 8 bytes: "mul" and 5 zero bytes
    for forged in [
        good[:4] + bytes([4]) + good[5:],  # a length that takes in a zero byte
        good[:at] + b"m\x1bl" + good[at + 3 :],  # not printable
        good[:at] + b"m\xc3\xbc" + good[at + 3 :],  # not ASCII
        good[:at] + b"mul\x00\x00\x00\x00x",  # padding that is not zero
        good[:4] + bytes([framing.MAX_LABEL_BYTES + 1]) + good[5:],  # too long
        good[:4] + bytes([9]) + good[5:],  # longer than what follows
    ]:
        with pytest.raises(IntegrityError, match="malformed frame header"):
            framing.parse_header(forged)


def _after_input(then: Callable[[PartyContext, Any], Any]) -> Callable[[PartyContext], Any]:
    def program(ctx: PartyContext) -> Any:
        x = ctx.input("alice", np.ones(3) if ctx.me == "alice" else None)
        return then(ctx, x)

    return program


def _raise(exc: Exception) -> Any:
    raise exc


@pytest.mark.parametrize(
    ("then", "operation"),
    [
        (lambda ctx, x: ctx.reveal(x, to="mallory"), "reveal (local, after input #1)"),
        (lambda ctx, x: ctx.input("mallory", 1.0), "input (local, after input #1)"),
        (lambda ctx, x: x[5], "index (local, after input #1)"),
        (lambda ctx, x: _raise(RuntimeError("boom")), "program code (after input #1)"),
        (lambda ctx, x: {"leak": x}, "program output (after input #1)"),
    ],
    ids=["bad-reveal", "bad-input", "bad-index", "own-code", "returns-a-secret"],
)
def test_errors_name_the_operation_that_failed(
    then: Callable[[PartyContext, Any], Any], operation: str
) -> None:
    parties = local_parties("additive", 3, timeout=TIMEOUT)
    err, _ = _failure(lambda: parties.run(_after_input(then)))
    assert err.operation == operation, str(err)


def test_an_error_before_any_operation_and_one_inside_an_operation() -> None:
    def unknown_owner(ctx: PartyContext) -> Any:
        return ctx.input("mallory", 1.0)

    err, _ = _failure(lambda: local_parties("additive", 3).run(unknown_owner))
    assert err.operation == "input (local)" and "mallory" in err.cause

    def bad_exchange(ctx: PartyContext) -> Any:
        ctx.input("alice", 1.0 if ctx.me == "alice" else None)
        with ctx.channel.operation("custom"):
            ctx.channel.exchange({}, [])  # a round of its own: operation 2
            raise ValueError("inside")

    err, _ = _failure(lambda: local_parties("additive", 3).run(bad_exchange))
    assert err.operation == "custom #2"


def test_a_peers_label_cannot_pass_for_more_of_the_message() -> None:
    """A label that reads as one operation is shown as is; any other is quoted, so a peer
    cannot write 'c had ended its program' into an honest party's error (it was shown bare)."""
    network = MemoryNetwork(["a", "b"])
    channels = [PartyChannel(t, 1, TIMEOUT) for t in network.transports()]
    for box in network.mailboxes:
        box.begin_run(1)
    forged = "mul (3,) (3,), c had ended its program after operation 1"
    errors: dict[int, BaseException] = {}

    def party(rank: int, kind: str) -> None:
        try:
            with channels[rank].operation(kind):
                channels[rank].exchange({1 - rank: np.zeros(3)}, [1 - rank])
        except BaseException as exc:
            errors[rank] = exc

    threads = [
        threading.Thread(target=party, args=(0, "mul")),
        threading.Thread(target=party, args=(1, forged)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert isinstance(errors[0], DivergenceError)
    assert f"b did {forged!r};" in str(errors[0])


def test_end_of_program_messages_cannot_flood_a_mailbox() -> None:
    """One end-of-program message per peer and run, with its own tag: a peer sending many (each
    with a new tag) used to grow this party's memory without bound, past every limit."""
    box = Mailbox("a", ["a", "b"], max_messages=4)
    box.begin_run(1)
    end = np.array([0, 0], dtype=np.uint64)
    assert box.put(1, (1, -1, 0), end, END_LABEL)
    assert not box.put(1, (1, -1, 0), end, END_LABEL)  # a second one is refused
    assert isinstance(box.failure, IntegrityError) and "second end-of-program" in str(box.failure)
    other = Mailbox("a", ["a", "b"], max_messages=4)
    other.begin_run(1)
    assert not other.put(1, (1, 7, 3), end, END_LABEL)  # any other tag is malformed
    assert isinstance(other.failure, IntegrityError) and "malformed" in str(other.failure)
