"""Ending the processes a session leaves behind (mpc.parties.processes), without Ray."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from mpc.parties.processes import ProcessTag, end_processes, is_alive, process_tag


@pytest.fixture
def sleepers() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """A process titled like a Ray party actor, and an ordinary one (both just sleep)."""
    made = {
        "actor": subprocess.Popen(["bash", "-c", "exec -a ray::PartyActor sleep 60"]),
        "other": subprocess.Popen(["sleep", "60"]),
    }
    yield made
    for proc in made.values():
        proc.kill()
        proc.wait()


def tag(proc: subprocess.Popen[bytes], title: bytes = b"") -> ProcessTag:
    """`proc`'s tag, once its command line starts with `title` (bash has exec'd it)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = process_tag(proc.pid)
        with open(f"/proc/{proc.pid}/cmdline", "rb") as fh:
            if found is not None and fh.read().startswith(title):
                return found
        time.sleep(0.01)
    raise AssertionError(f"process {proc.pid} never started")


def test_a_stuck_actor_process_is_killed_after_the_grace_period(
    sleepers: dict[str, subprocess.Popen[bytes]],
) -> None:
    actor = tag(sleepers["actor"], b"ray::")
    assert is_alive(actor)
    assert end_processes([actor], grace=0.2) == []
    sleepers["actor"].wait(timeout=5)  # collect it (a zombie counts as ended already)
    assert not is_alive(actor)


def test_only_ray_workers_with_the_recorded_start_time_are_killed(
    sleepers: dict[str, subprocess.Popen[bytes]],
) -> None:
    other = tag(sleepers["other"])
    actor = tag(sleepers["actor"], b"ray::")
    reused = ProcessTag(actor.machine, actor.pid, actor.started + 1)  # same pid, another process
    elsewhere = ProcessTag("another machine", actor.pid, actor.started)
    # not a Ray worker: left alone and reported; a reused pid or another machine's: not ours
    assert end_processes([other, reused, elsewhere], grace=0.1) == [other]
    assert sleepers["other"].poll() is None and sleepers["actor"].poll() is None
    assert not is_alive(reused) and not is_alive(elsewhere)


def test_a_process_that_exits_by_itself_is_not_waited_for_longer() -> None:
    proc = subprocess.Popen(["bash", "-c", "exec -a ray::PartyActor sleep 0.2"])
    found = tag(proc, b"ray::")
    started = time.monotonic()
    assert end_processes([found], grace=30) == []
    assert time.monotonic() - started < 10, "waited for the whole grace period"
    proc.wait(timeout=5)
