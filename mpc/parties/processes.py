"""The operating-system processes of a session's actors, so that none outlives the session.

Responsibility: name a process so that it can be recognised later (`ProcessTag`: machine, pid and
start time; each actor reports its own), end the ones still alive a short grace period after
their session closed (`end_processes`), and kill one that stopped answering at once
(`kill_now`). Linux only (it reads /proc); elsewhere nothing is tagged and nothing is ended.
Security model: a process is signalled only if it is on this machine (same boot and process
namespace), has the recorded pid *and* start time (so a reused pid is never hit), and its command
line is a Ray worker's (``ray::...``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: How long a killed process gets to disappear before it is reported (seconds).
KILL_WAIT = 2.0
#: What a Ray worker's command line starts with (its process title, e.g. ``ray::PartyActor``).
RAY_WORKER_TITLE = b"ray::"

_POLL = 0.05
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessTag:
    """One process, recognisable later on the same machine.

    Attributes:
        machine: this boot of this machine and its process namespace (pids mean the same
            process only where this is equal).
        pid: the process id.
        started: its start time (clock ticks after boot, /proc/<pid>/stat field 22).
    """

    machine: str
    pid: int
    started: int

    def to_wire(self) -> tuple[str, int, int]:
        return self.machine, self.pid, self.started

    @staticmethod
    def from_wire(wire: tuple[str, int, int]) -> ProcessTag:
        machine, pid, started = wire
        return ProcessTag(str(machine), int(pid), int(started))


def _machine() -> str | None:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of process `pid`, or None if there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return fields[0], int(fields[19])


def process_tag(pid: int | None = None) -> ProcessTag | None:
    """The tag of process `pid` on this machine (default: the calling process); None if there is
    no such process or /proc is not available."""
    pid = os.getpid() if pid is None else pid
    machine = _machine()
    stat = _stat(pid)
    if machine is None or stat is None:
        return None
    return ProcessTag(machine, pid, stat[1])


def is_alive(tag: ProcessTag) -> bool:
    """Whether the process `tag` names still runs here (a zombie has ended: only its exit status
    waits to be collected)."""
    if tag.machine != _machine():
        return False
    stat = _stat(tag.pid)
    return stat is not None and stat[1] == tag.started and stat[0] != "Z"


def _is_ray_worker(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(RAY_WORKER_TITLE)
    except OSError:
        return False


def _wait_gone(tags: Sequence[ProcessTag], seconds: float) -> list[ProcessTag]:
    """Poll until every process of `tags` ended or `seconds` passed; those still alive."""
    end = time.monotonic() + seconds
    alive = [t for t in tags if is_alive(t)]
    while alive and time.monotonic() < end:
        time.sleep(_POLL)
        alive = [t for t in alive if is_alive(t)]
    return alive


def kill_now(tag: ProcessTag) -> bool:
    """Kill (SIGKILL) the process `tag` at once if it is a live Ray worker on this machine (a
    frozen party's actor: one that stopped answering, so that no grace period can help); True
    if it was signalled."""
    if not (_is_ray_worker(tag.pid) and is_alive(tag)):  # the start time: the same process
        return False
    try:
        os.kill(tag.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def end_processes(tags: Sequence[ProcessTag], grace: float) -> list[ProcessTag]:
    """Give the processes `tags` up to `grace` seconds to exit, then kill (SIGKILL) those still
    alive that are Ray workers; return the ones that survive even that (logged as warnings)."""
    stuck = _wait_gone([t for t in tags if t.machine == _machine()], grace)
    for tag in stuck:
        if _is_ray_worker(tag.pid) and is_alive(tag):  # checked again just before the signal
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(tag.pid, signal.SIGKILL)
    survivors = _wait_gone(stuck, KILL_WAIT)
    for tag in survivors:
        logger.warning("actor process %d did not exit, nor when killed; end it by hand", tag.pid)
    return survivors
