"""In-process executor: n parties as threads over the in-memory transport.

Responsibility: run one SPMD program at n parties inside this process, for protocol tests and
quick experiments, with the same party code (`PartyRunner`) as the Ray runtime. What a party's
program prints is shown as ``[party] line`` (`mpc.parties.output`), or dropped for a party whose
output is not shown.
Security model: none between parties (one process); use it to test correctness, not to protect
data. Dealers used here are in-process and therefore insecure.
"""

from __future__ import annotations

import functools
import secrets
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from mpc.dealers.base import Dealer, DealerClient, Items, most_used
from mpc.dealers.seeded import SeededDealer, local_noise_client
from mpc.dealers.streams import Stream
from mpc.parties.memory import MemoryNetwork
from mpc.parties.output import capture, discard, show_line
from mpc.parties.party import PartyOutcome, PartyRunner, Program, SessionConfig, root_cause
from mpc.parties.tuning import tune_allocator
from mpc.protocols.registry import get_protocol
from mpc.stats import PartyStats


def _fetch(
    dealer: Dealer, rank: int, stream: Stream, start: int, count: int
) -> Callable[[], Items]:
    """In-process: generate when the party waits (there is no second process to overlap)."""
    return functools.partial(dealer.corrections, rank, stream, start, count)


class LocalParties:
    """n party runners wired together in memory; reusable for several runs.

    `show_output` names the parties whose printed output is shown (None: every party).
    """

    def __init__(
        self,
        config: SessionConfig,
        dealer: Dealer | None,
        private: Mapping[str, Mapping[str, Any]] | None = None,
        show_output: Collection[str] | None = None,
    ) -> None:
        self.config = config
        self.show_output = frozenset(config.parties if show_output is None else show_output)
        tune_allocator()  # as in party actors: reuse big share buffers (see mpc.parties.tuning)
        names = list(config.parties)
        self.network = MemoryNetwork(names)
        scheme = get_protocol(config.protocol).make_scheme(len(names), config.threshold)
        self.dealer_clients: list[DealerClient | None] = []
        for rank in range(len(names)):
            client: DealerClient | None = None
            if isinstance(dealer, SeededDealer):  # also serves dealer-sampled DP noise
                client = local_noise_client(dealer, rank)
            elif dealer is not None:
                fetch = functools.partial(_fetch, dealer, rank)
                client = DealerClient(
                    rank, dealer.seed_for(rank), scheme, fetch, provides=dealer.provides
                )
            self.dealer_clients.append(client)
        private = private or {}
        self.runners = [
            PartyRunner(rank, config, transport, self.dealer_clients[rank], private.get(name))
            for rank, (name, transport) in enumerate(
                zip(names, self.network.transports(), strict=True)
            )
        ]
        # Run ids are the dealer's epochs: start from a random point so that two LocalParties
        # sharing one dealer object (e.g. a Session started twice) never replay its items.
        self._run_id = secrets.randbits(40)
        self.attestations: list[str] = []

    def start(self) -> None:
        """Nothing to start: the parties are threads of each run."""

    def close(self) -> None:
        """Nothing to release."""

    def dealer_stats(self) -> dict[str, int]:
        """The in-process dealer keeps no traffic statistics."""
        return {}

    def execute(
        self, program: Program, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, PartyStats]]:
        """The `mpc.parties.runtime.Runtime` form of `run`: (outputs, stats) by name."""
        outcomes = self.run(program, *args, **kwargs)
        return (
            {k: v.output for k, v in outcomes.items()},
            {k: v.stats for k, v in outcomes.items()},
        )

    def prefetch(self, stream: Stream, count: int) -> None:
        """Fetch dealer corrections for the next run."""
        for client in self.dealer_clients:
            if client is not None:
                client.prefetch(stream.in_epoch(self._run_id + 1), count)

    def preprocess(self, needs: Sequence[tuple[Stream, int]], runs: int) -> dict[str, int]:
        """Fetch the dealer items `needs` for each of the next `runs` runs; bytes per party."""
        held = dict.fromkeys(self.config.parties, 0)
        for ahead in range(1, runs + 1):
            for name, client in zip(self.config.parties, self.dealer_clients, strict=True):
                for stream, count in needs:
                    if client is not None:
                        epoch = self._run_id + ahead
                        held[name] += client.prefetch(stream.in_epoch(epoch), count)
        return held

    def dealer_usage(self) -> list[tuple[Stream, int]]:
        """The dealer items the last run took: the most any party took of each stream."""
        return most_used(
            [(s, n) for c in self.dealer_clients if c is not None for s, n in c.usage().items()]
        )

    def run(self, program: Program, *args: Any, **kwargs: Any) -> dict[str, PartyOutcome]:
        """Run `program(ctx, *args, **kwargs)` at every party; return each party's outcome."""
        self._run_id += 1
        for box in self.network.mailboxes:
            box.begin_run(self._run_id)
        outcomes: dict[str, PartyOutcome] = {}
        failures: dict[str, BaseException] = {}

        def work(runner: PartyRunner) -> None:
            name = runner.name
            sink = functools.partial(show_line, name) if name in self.show_output else discard
            try:
                with capture(sink):
                    outcomes[name] = runner.run(self._run_id, program, args, kwargs)
            except BaseException as exc:  # collected and re-raised at the caller
                failures[name] = exc

        threads = [
            threading.Thread(target=work, args=(r,), name=f"party-{r.name}", daemon=True)
            for r in self.runners
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if failures:
            raise root_cause(failures)
        return {name: outcomes[name] for name in self.config.parties}
