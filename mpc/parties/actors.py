"""Ray actors: one `PartyActor` per party and one `DealerActor` for the trusted dealer.

Responsibility: host a party (its private data, keys, transport, dealer client and
`PartyRunner`) or the dealer inside a Ray worker process. The classes here are plain Python; the
session wraps them with `ray.remote` when it starts, so importing this module starts nothing.
Security model: a party actor holds only its own private data, its own key and PRG seed and its
shares. It fetches its dealer seed from the dealer actor itself, so the driver never sees it. The
dealer actor holds every party's seed; it must run on a node that no party controls (or in an
enclave, see `mpc.tee`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mpc.dealers.base import DealerClient
from mpc.dealers.seeded import SeededDealer
from mpc.dealers.streams import Stream, WireStream
from mpc.errors import ConfigurationError, DealerError, PeerFailedError
from mpc.parties.keys import PartyKey
from mpc.parties.party import PartyRunner, Program, SessionConfig
from mpc.parties.transport import Transport
from mpc.parties.tuning import tune_allocator
from mpc.protocols.registry import get_protocol


class DealerActor:
    """The trusted dealer as a Ray actor. Each party's seed is handed out once."""

    secure = True

    def __init__(self, protocol: str, n: int, threshold: int) -> None:
        tune_allocator()
        scheme = get_protocol(protocol).make_scheme(n, threshold)
        self._dealer = SeededDealer(scheme)
        self._seed_taken: set[int] = set()

    def seed_for(self, rank: int) -> bytes:
        if rank in self._seed_taken:
            raise DealerError(f"the seed of party rank {rank} was already handed out")
        self._seed_taken.add(rank)
        return self._dealer.seed_for(rank)

    def corrections(
        self, rank: int, stream: WireStream, start: int, count: int
    ) -> list[list[np.ndarray]]:
        return self._dealer.corrections(rank, Stream.from_wire(stream), start, count)

    def stats(self) -> dict[str, int]:
        return {"items": self._dealer.items_generated, "bytes_sent": self._dealer.bytes_sent}


class PartyActor:
    """One party, living in its own Ray worker process."""

    def __init__(
        self,
        rank: int,
        config: SessionConfig,
        transport: str,
        session_id: bytes,
        private: Mapping[str, Any] | None = None,
        key_path: str | None = None,
    ) -> None:
        tune_allocator()
        self.rank = rank
        self.config = config
        self.kind = transport
        self.session_id = session_id
        self.private = dict(private or {})
        if key_path:
            self.key = PartyKey.load(key_path)
        else:
            self.key = PartyKey.generate()
        self.transport: Transport | None = None
        self.runner: PartyRunner | None = None
        self._tcp: Any = None
        self.current_run = 0

    @property
    def name(self) -> str:
        return self.config.parties[self.rank]

    def node_id(self) -> str:
        """The Ray node this party runs on (to check placement)."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def public_key(self) -> bytes:
        return self.key.public_bytes

    def listen(self, host: str, peer_keys: Mapping[str, bytes] | None) -> tuple[str, int]:
        """Start the TCP transport (encrypted unless this session asked for plaintext)."""
        import warnings

        from mpc.parties.tcp import PlaintextTransportWarning, TcpTransport

        encrypt = self.kind == "tcp"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PlaintextTransportWarning)  # the driver warns once
            self._tcp = TcpTransport(
                self.rank,
                list(self.config.parties),
                key=self.key if encrypt else None,
                peer_keys=dict(peer_keys) if encrypt and peer_keys else None,
                session_id=self.session_id,
                encrypt=encrypt,
                host=host,
            )
        self.transport = self._tcp
        address: tuple[str, int] = self._tcp.listen()
        return address

    def connect(self, addresses: Mapping[str, tuple[str, int]]) -> None:
        self._tcp.connect(dict(addresses))

    def use_ray_transport(self, peers: list[Any]) -> None:
        from mpc.parties.ray_transport import RayTransport

        self.transport = RayTransport(self.rank, list(self.config.parties), peers)

    def deliver(self, sender: int, header: bytes, payload: bytes) -> None:
        from mpc.parties.ray_transport import RayTransport

        if isinstance(self.transport, RayTransport):
            self.transport.deliver(sender, header, payload)

    def peer_aborted(self, peer: str, reason: str, run_id: int | None = None) -> None:
        """A peer (or the driver, naming the run) reports that the run failed there."""
        if self.transport is not None and run_id in (None, self.current_run):
            self.transport.mailbox.fail(
                PeerFailedError(f"party {peer!r} aborted the run: {reason}")
            )

    def attach_dealer(self, dealer: Any | None) -> None:
        """Fetch this party's seed from the dealer actor and build the party runner."""
        import ray

        if self.transport is None:
            raise ConfigurationError("connect the transport before attaching the dealer")
        client = None
        if dealer is not None:
            seed = ray.get(dealer.seed_for.remote(self.rank), timeout=self.config.timeout)
            scheme = get_protocol(self.config.protocol).make_scheme(
                len(self.config.parties), self.config.threshold
            )
            rank, timeout = self.rank, self.config.timeout

            def fetch(stream: Stream, start: int, count: int) -> list[list[np.ndarray]]:
                ref = dealer.corrections.remote(rank, stream.to_wire(), start, count)
                result: list[list[np.ndarray]] = ray.get(ref, timeout=timeout)
                return result

            client = DealerClient(self.rank, seed, scheme, fetch)
        self.runner = PartyRunner(self.rank, self.config, self.transport, client, self.private)

    def prefetch(self, streams: list[tuple[WireStream, int]]) -> None:
        """Fetch dealer corrections ahead of a run (the offline phase of benchmarks)."""
        if self.runner is None or self.runner.dealer is None:
            return
        for wire, count in streams:
            self.runner.dealer.prefetch(Stream.from_wire(wire), count)

    def run(
        self, run_id: int, program: Program, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, dict[str, dict[str, float]]]:
        if self.runner is None:
            raise ConfigurationError("party actor is not set up")
        self.current_run = run_id
        self.transport.mailbox.reset_failure() if self.transport else None
        outcome = self.runner.run(run_id, program, args, kwargs)
        return outcome.output, outcome.stats.as_dict()

    def abort(self, reason: str) -> None:
        if self.transport is not None:
            self.transport.mailbox.fail(PeerFailedError(reason))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
