"""What a program prints at a party is shown at the driver as ``[party] line``, while the run
goes on, unless the party's output is switched off (Session option, federation policy)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mpc.errors import ConfigurationError, PartyFailedError
from mpc.parties.output import MAX_LINE_CHARS, OutputBuffer, capture
from mpc.program import PartyContext
from mpc.session import Session
from tests.federation_helpers import HOSPITALS, running, start, write_local


def chatty(ctx: PartyContext) -> Any:
    print(f"hello from {ctx.me}")
    print(f"careful, {ctx.me}", file=sys.stderr)
    x = ctx.input("alice", 2.0 if ctx.me == "alice" else None)
    print("no newline", end="")
    return ctx.reveal(x)


def local_session(**kwargs: Any) -> Session:
    return Session(
        ["alice", "bob", "carol"],
        runtime="local",
        dealer="local-insecure",
        allow_insecure=True,
        **kwargs,
    )


def test_local_parties_print_under_their_names(capsys: pytest.CaptureFixture[str]) -> None:
    with local_session() as s:
        assert s.run(chatty)["bob"] == 2.0
        print("the driver's own line")
    out, err = capsys.readouterr()
    for name in ("alice", "bob", "carol"):
        assert f"[{name}] hello from {name}\n" in out
        assert f"[{name}] no newline\n" in out
        assert f"[{name}] careful, {name}\n" in err
    assert "the driver's own line\n" in out and "] the driver's own line" not in out
    assert type(sys.stdout).__name__ != "_ThreadStream"  # put back after the run


def test_output_can_be_switched_off_per_party(capsys: pytest.CaptureFixture[str]) -> None:
    with local_session(show_output=["bob"]) as s:
        s.run(chatty)
    out, err = capsys.readouterr()
    assert "[bob] hello from bob" in out and "[bob] careful, bob" in err
    assert "alice" not in out + err and "carol" not in out + err
    with local_session(show_output=False) as s:
        s.run(chatty)
    assert capsys.readouterr() == ("", "")
    with pytest.raises(ConfigurationError, match="show_output names unknown parties"):
        local_session(show_output=["mallory"])


def test_lines_before_a_failure_are_shown_and_only_the_capturing_thread_is_captured(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def failing(ctx: PartyContext) -> Any:
        print(f"about to fail at {ctx.me}")
        raise RuntimeError("boom")

    with local_session() as s, pytest.raises(PartyFailedError):
        s.run(failing)
    assert "[alice] about to fail at alice" in capsys.readouterr().out
    lines: list[tuple[int, str]] = []
    other = threading.Thread(target=print, args=("another thread",))
    with capture(lambda stream, line: lines.append((stream, line))):
        print("x" * (MAX_LINE_CHARS + 1))
        other.start()
        other.join()
    assert [len(line) for _, line in lines] == [MAX_LINE_CHARS, 1]
    assert capsys.readouterr().out == "another thread\n"


def test_a_buffer_keeps_a_bounded_number_of_lines() -> None:
    buffer = OutputBuffer(max_lines=3)
    for i in range(5):
        buffer.add(1, f"line {i}")
    lines, count = buffer.take(0.0)
    assert count == 5
    assert [line for _, line in lines] == [
        "line 0",
        "line 1",
        "line 2",
        "(2 lines of output were dropped)",
    ]
    assert buffer.take(0.0) == ([], 5)


PRINTING_PROGRAM = """
import numpy as np

def party_program(ctx, args):
    print(f"hello from {ctx.me}\\x1b[2J")
    x = ctx.input("north", np.array([1.0, 2.0]) if ctx.me == "north" else None)
    return {"x": ctx.reveal(x)}
"""


def test_a_federated_party_shows_its_output_unless_its_policy_says_not_to(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    program = tmp_path / "printing.py"
    program.write_text(PRINTING_PROGRAM)
    policies = write_local(
        tmp_path / "deploy", [program], party_extra={"east": {"show_output": False}}
    )
    with running(policies) as services:
        np.testing.assert_array_equal(start(policies, "north", program)["x"], [1.0, 2.0])
        deadline = time.monotonic() + 30  # the peers finish their side of the run
        while time.monotonic() < deadline and not all(services[n].results for n in HOSPITALS):
            time.sleep(0.05)
    out, err = capfd.readouterr()
    assert "[north] hello from north\\x1b[2J" in out  # printable only
    assert "[south] hello from south" in out
    assert "hello from east" not in out + err and "\x1b" not in out


@pytest.mark.usefixtures("ray_local")
def test_ray_parties_print_at_the_driver_while_the_run_goes_on(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """alice prints, then waits until the driver has seen the line: output that arrived only
    with the result would make her wait out her 20 s."""
    flag = tmp_path / "seen"

    def waits_to_be_seen(ctx: PartyContext, flag: str) -> Any:
        import os
        import time

        print(f"hello from {ctx.me}")
        if ctx.me == "alice":
            deadline = time.monotonic() + 20
            while not os.path.exists(flag) and time.monotonic() < deadline:
                time.sleep(0.01)
            print("seen" if os.path.exists(flag) else "not seen", file=sys.stderr)
        return ctx.reveal(ctx.input("alice", 1.0 if ctx.me == "alice" else None))

    with Session(["alice", "bob", "carol"], timeout=30, show_output=["alice", "carol"]) as s:
        outcome: list[Any] = []
        runner = threading.Thread(target=lambda: outcome.append(s.run(waits_to_be_seen, str(flag))))
        runner.start()
        seen = ""
        deadline = time.monotonic() + 20
        while "[alice] hello from alice" not in seen and time.monotonic() < deadline:
            time.sleep(0.02)
            seen += capfd.readouterr().out
        flag.touch()
        runner.join(60)
        out, err = capfd.readouterr()
        seen += out
    assert outcome and outcome[0]["bob"] == 1.0
    assert "[alice] hello from alice" in seen and "[carol] hello from carol" in seen
    assert "[alice] seen" in err  # shown before the run returned, with the party's name
    assert "bob" not in seen + err and "PartyActor" not in seen + err
