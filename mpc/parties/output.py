"""Party output: what a program prints at a party, shown at the driver as ``[party] line``.

Responsibility: capture what one party's thread writes to stdout and stderr during a run
(`capture`; other threads are untouched), cut it into lines and hand them, in order, to a sink:
the driver's streams (`show_line`, in-process parties), or a bounded `OutputBuffer` that the
driver drains while the run goes on (`OutputRelay`, party actors in other processes).
Security model: a party's output is its own log; it reaches the driver only where the session or
the party's policy (`show_output`) says so. Line length and buffered lines are bounded; lines are
plain text, never parsed or unpickled.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Final, TextIO

#: Stream numbers of a captured line.
STDOUT: Final = 1
STDERR: Final = 2
#: Longest line kept whole (longer ones are cut into pieces of this length).
MAX_LINE_CHARS: Final = 16_384
#: Most lines an `OutputBuffer` keeps that the driver has not taken yet.
MAX_LINES: Final = 10_000
#: How long one relay call waits for new lines at a party (seconds).
POLL_SECONDS: Final = 2.0
#: How long the driver waits, once a run has returned, for its last lines (seconds).
DRAIN_SECONDS: Final = 5.0

Line = tuple[int, str]
Sink = Callable[[int, str], None]

_local = threading.local()
_install_lock = threading.Lock()
_write_lock = threading.Lock()
_users = 0


class _ThreadStream:
    """Stands in for sys.stdout / sys.stderr: writes of a capturing thread go to its line
    writer, every other thread's to the original stream."""

    def __init__(self, original: TextIO | None, stream: int) -> None:
        self.original = original
        self.stream = stream

    def write(self, text: str) -> int:
        writer: _LineWriter | None = getattr(_local, "writer", None)
        if writer is not None:
            writer.write(self.stream, text)
            return len(text)
        if self.original is None:
            return len(text)
        return self.original.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if getattr(_local, "writer", None) is None and self.original is not None:
            self.original.flush()

    def isatty(self) -> bool:
        return getattr(_local, "writer", None) is None and bool(
            self.original is not None and self.original.isatty()
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


class _LineWriter:
    """Cuts what one thread writes into lines (per stream) and hands them to a sink."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.partial = {STDOUT: "", STDERR: ""}

    def write(self, stream: int, text: str) -> None:
        if not text:
            return
        pending = self.partial[stream] + text
        *lines, rest = pending.split("\n")
        while len(rest) > MAX_LINE_CHARS:
            lines.append(rest[:MAX_LINE_CHARS])
            rest = rest[MAX_LINE_CHARS:]
        self.partial[stream] = rest
        for line in lines:
            for start in range(0, max(len(line), 1), MAX_LINE_CHARS):
                self._emit(stream, line[start : start + MAX_LINE_CHARS])

    def _emit(self, stream: int, line: str) -> None:
        saved = getattr(_local, "writer", None)
        _local.writer = None  # what the sink itself writes goes to the real streams
        try:
            self.sink(stream, line)
        finally:
            _local.writer = saved

    def close(self) -> None:
        """Hand over the unfinished last line of each stream."""
        for stream, rest in self.partial.items():
            if rest:
                self.partial[stream] = ""
                self._emit(stream, rest)


def _install() -> None:
    global _users
    with _install_lock:
        _users += 1
        if _users == 1:
            if not isinstance(sys.stdout, _ThreadStream):
                sys.stdout = _ThreadStream(sys.stdout, STDOUT)
            if not isinstance(sys.stderr, _ThreadStream):
                sys.stderr = _ThreadStream(sys.stderr, STDERR)


def _uninstall() -> None:
    global _users
    with _install_lock:
        _users -= 1
        if _users == 0:
            if isinstance(sys.stdout, _ThreadStream):
                sys.stdout = sys.stdout.original
            if isinstance(sys.stderr, _ThreadStream):
                sys.stderr = sys.stderr.original


@contextmanager
def capture(sink: Sink) -> Iterator[None]:
    """Send what this thread prints (stdout and stderr) to `sink(stream, line)`, line by line,
    until the block ends (then the unfinished last lines too). Other threads are unaffected."""
    writer = _LineWriter(sink)
    _install()
    previous = getattr(_local, "writer", None)
    _local.writer = writer
    try:
        yield
    finally:
        _local.writer = previous
        try:
            writer.close()
        finally:
            _uninstall()


def _real(stream: Any) -> Any:
    while isinstance(stream, _ThreadStream):
        stream = stream.original
    return stream


def show_line(party: str, stream: int, line: str) -> None:
    """Write `line` as ``[party] line`` to this process's stdout or stderr, flushed at once."""
    target = _real(sys.stderr if stream == STDERR else sys.stdout)
    if target is None:
        return
    with _write_lock:
        target.write(f"[{party}] {line}\n")
        target.flush()


def discard(stream: int, line: str) -> None:
    """A sink that drops every line."""


class OutputBuffer:
    """A party's captured lines, kept for the driver to take (`take`); thread-safe."""

    def __init__(self, max_lines: int = MAX_LINES) -> None:
        self._cond = threading.Condition()
        self._lines: deque[Line] = deque()
        self._max = max_lines
        self._count = 0  # lines captured so far (kept or dropped)
        self._dropped = 0
        self._closed = False

    def add(self, stream: int, line: str) -> None:
        with self._cond:
            self._count += 1
            if len(self._lines) >= self._max:
                self._dropped += 1
                return
            self._lines.append((stream, line))
            self._cond.notify_all()

    @property
    def count(self) -> int:
        """How many lines were captured so far."""
        with self._cond:
            return self._count

    def capturing(self) -> AbstractContextManager[None]:
        """Capture what this thread prints until the block ends."""
        return capture(self.add)

    def take(self, wait: float) -> tuple[list[Line], int]:
        """The lines captured since the last `take` (waiting up to `wait` s for one, at most a
        minute), and how many lines were captured so far in all (`count`)."""
        deadline = time.monotonic() + max(0.0, min(wait, 60.0))
        with self._cond:
            while not self._lines and not self._dropped and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            lines = list(self._lines)
            self._lines.clear()
            if self._dropped:
                lines.append((STDERR, f"({self._dropped} lines of output were dropped)"))
                self._dropped = 0
            return lines, self._count

    def close(self) -> None:
        """End every waiting `take` now (and later ones at once)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class RelaysOutput:
    """Mixin of a Ray actor whose program output the driver shows: the actor sets `_output`
    (an `OutputBuffer`, or None where output is not shown) and captures its runs with it."""

    _output: OutputBuffer | None = None

    def take_output(self, wait: float) -> tuple[list[Line], int]:
        """What the program printed since the last call (waiting up to `wait` s for a line),
        and how many lines it printed so far in all (`OutputBuffer.take`)."""
        if self._output is None:
            return [], 0
        return self._output.take(wait)

    def printed(self) -> int:
        """How many lines the program printed so far (`OutputBuffer.count`)."""
        return 0 if self._output is None else self._output.count


class OutputRelay:
    """Driver side: shows the lines that party actors capture (`OutputBuffer`) with
    `show(party, stream, line)` (``[party] line``) as soon as they come, in order per party.

    One thread keeps one waiting `take_output` call (`RelaysOutput`) per actor for as long as
    the relay runs
    (`start` to `stop`); `wait_for` lets the caller of a run wait until a party's lines up to a
    count (its `OutputBuffer.count` when the run returned) have been shown.
    """

    def __init__(
        self, actors: Mapping[str, Any], show: Callable[[str, int, str], None] = show_line
    ) -> None:
        self._actors = dict(actors)
        self._show = show
        self._shown: dict[str, int] = {}
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    @property
    def parties(self) -> list[str]:
        return list(self._actors)

    def start(self) -> OutputRelay:
        if self._actors and self._thread is None:
            self._thread = threading.Thread(target=self._relay, name="mpc-output", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop relaying (the thread ends within `POLL_SECONDS`; it is not waited for)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def wait_for(self, counts: Mapping[str, int], timeout: float = DRAIN_SECONDS) -> None:
        """Wait (at most `timeout` s) until the first `counts[party]` lines of each party have
        been shown."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._stopped and any(
                self._shown.get(name, 0) < n for name, n in counts.items()
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                    return
                self._cond.wait(remaining)

    def _ask(self, name: str) -> Any:
        return self._actors[name].take_output.remote(POLL_SECONDS)

    def _relay(self) -> None:
        import ray

        pending: dict[Any, str] = {}
        try:
            for name in self._actors:
                pending[self._ask(name)] = name
            while pending and not self._stopped:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS / 4)
                for ref in ready:
                    name = pending.pop(ref)
                    try:
                        lines, count = ray.get(ref)
                    except Exception:  # the actor died or was stopped: nothing more from it
                        with self._cond:
                            self._shown[name] = 1 << 62
                            self._cond.notify_all()
                        continue
                    for stream, line in lines:
                        self._show(name, stream, line)
                    with self._cond:
                        self._shown[name] = count
                        self._cond.notify_all()
                    if not self._stopped:
                        pending[self._ask(name)] = name
        except Exception:  # Ray shut down under us: the session is closing
            return
        finally:
            with self._cond:
                self._cond.notify_all()
