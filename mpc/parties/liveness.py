"""Liveness of the parties during a run: which ones still answer.

Responsibility: ping every party of a run every `interval` seconds (one ping outstanding per
party at most) and name the ones that have answered no ping sent in the last `silence` seconds:
a frozen process (SIGSTOP, a hung host) or an unreachable node. No receive timeout reports such
a party by itself: its peers' receives time out, but it never returns. How a ping is sent and
how its answer is noticed is passed in (Ray actor calls in `mpc.parties.ray_runtime`), so this
runs without Ray in tests.
Security model: a ping carries nothing and its answer is not read; it only shows that the
party's process still runs the actor's code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

#: A ping is sent every `silence / PINGS_PER_SILENCE` seconds (within the bounds below), so a
#: party that stops answering is named at most `silence` seconds after it stopped, and a live
#: one only if none of about this many pings came back.
PINGS_PER_SILENCE = 20
MIN_INTERVAL = 0.01
MAX_INTERVAL = 1.0


def ping_interval(silence: float) -> float:
    """How often to ping for a given `silence` limit (seconds)."""
    return min(MAX_INTERVAL, max(MIN_INTERVAL, silence / PINGS_PER_SILENCE))


class Liveness:
    """When each party last answered a ping, and which ones went silent.

    `ping(name)` sends a ping and returns its handle; `answered(handles)` returns those of the
    handles whose answer (or failure: a dead party is the run's own result to report) has
    come, without waiting. A party counts as heard at the time its answered ping was *sent*,
    so one that stops at time T is named by T + `silence` whatever the ping period; and only
    once a ping to it has gone unanswered for `silence - interval` s, so that a caller that
    could not check for a while (and so sent no pings) names no one for it.
    """

    def __init__(
        self,
        names: Iterable[str],
        *,
        silence: float,
        ping: Callable[[str], Any],
        answered: Callable[[list[Any]], Collection[Any]],
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.silence = silence
        self.interval = ping_interval(silence) if interval is None else interval
        self._ping = ping
        self._answered = answered
        self._clock = clock
        now = clock()
        self._heard = dict.fromkeys(names, now)
        self._out: dict[str, tuple[Any, float]] = {}  # name -> (handle, when sent)
        # the first ping goes out after one interval: a short run costs no call
        self._sent = dict.fromkeys(self._heard, now)

    def check(self, pending: Iterable[str]) -> list[str]:
        """Note the answers that came, send the pings that are due to the `pending` parties,
        and return those of them that answered nothing sent in the last `silence` seconds."""
        waiting = [name for name in pending if name in self._heard]
        outstanding = {self._out[n][0]: n for n in waiting if n in self._out}
        if outstanding:
            done = self._answered(list(outstanding))
            for handle in done:
                name = outstanding[handle]
                _, sent = self._out.pop(name)
                self._heard[name] = max(self._heard[name], sent)
        now = self._clock()
        for name in waiting:
            if name not in self._out and now - self._sent[name] >= self.interval:
                self._out[name] = (self._ping(name), now)
                self._sent[name] = now
        limit = self.silence - self.interval
        return [
            name
            for name in waiting
            if now - self._heard[name] >= self.silence
            and name in self._out
            and now - self._out[name][1] >= limit
        ]
