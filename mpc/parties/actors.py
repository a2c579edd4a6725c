"""Ray actors: one `PartyActor` per party and one `DealerActor` for the trusted dealer.

Responsibility: host a party (its private data, keys, transport, dealer client and
`PartyRunner`) or the dealer inside a Ray worker process. The classes here are plain Python; the
session wraps them with `ray.remote` when it starts, so importing this module starts nothing.
Security model: a party actor holds only its own private data, its own key and PRG seed and its
shares. It fetches its dealer seed from the dealer actor itself, so the driver never sees it. The
dealer actor holds every party's seed; it must run on a node that no party controls (or in an
enclave, see `mpc.tee`). The dealer also deals noise shares for differentially private releases
(`DealerActor.noise_share`, see `mpc.dealers.seeded`): it sees the noise, never the value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mpc.dealers.base import Items
from mpc.dealers.seeded import NoiseDealerClient, NoiseKey, SeededDealer
from mpc.dealers.streams import Stream, WireStream
from mpc.errors import ConfigurationError, DealerError, PeerFailedError
from mpc.parties.keys import PartyKey
from mpc.parties.party import PartyRunner, Program, SessionConfig
from mpc.parties.transport import Transport
from mpc.parties.tuning import tune_allocator
from mpc.protocols.registry import get_protocol


class DealerActor:
    """The trusted dealer as a Ray actor. Each party's seed is handed out once.

    With `enclave="simulated"` the same generation code runs behind the simulated enclave
    backend: seeds leave only through `attested_seed` (a quote binding the measured code and a
    fresh enclave key, plus the seed encrypted to the requesting party), never in clear.
    """

    secure = True

    def __init__(
        self,
        protocol: str,
        n: int,
        threshold: int,
        session_id: bytes = b"",
        enclave: str | None = None,
    ) -> None:
        tune_allocator()
        scheme = get_protocol(protocol).make_scheme(n, threshold)
        self._dealer = SeededDealer(scheme)
        self._seed_taken: set[int] = set()
        self._seed_service: Any = None
        self._backend: Any = None
        if enclave is not None:
            if enclave != "simulated":
                raise ConfigurationError(
                    f"unknown enclave backend {enclave!r}; only 'simulated' exists (docs/tee.md)"
                )
            from mpc.tee import EnclaveSeedService, SimulatedBackend, dealer_config

            self._backend = SimulatedBackend()
            self._backend.launch(dealer_config(protocol, n, threshold))
            self._seed_service = EnclaveSeedService(
                self._backend, session_id, n, self._dealer.seed_for
            )

    def platform_key(self) -> bytes:
        """The (simulated) platform's quote-signing public key."""
        if self._backend is None:
            raise DealerError("this dealer runs without an enclave")
        key: bytes = self._backend.platform_public_key
        return key

    def attested_seed(self, request: bytes) -> bytes:
        """Quote + the party's seed encrypted to it (see `mpc.tee.channel`)."""
        if self._seed_service is None:
            raise DealerError("this dealer runs without an enclave; use seed_for")
        answer: bytes = self._seed_service.handle(request)
        return answer

    def seed_for(self, rank: int) -> bytes:
        if self._seed_service is not None:
            raise DealerError("enclave dealer: seeds leave only over the attested channel")
        if rank in self._seed_taken:
            raise DealerError(f"the seed of party rank {rank} was already handed out")
        self._seed_taken.add(rank)
        return self._dealer.seed_for(rank)

    def corrections(
        self, rank: int, stream: WireStream, start: int, count: int
    ) -> list[list[np.ndarray]]:
        return self._dealer.corrections(rank, Stream.from_wire(stream), start, count)

    def noise_share(self, rank: int, key: list[int], spec: dict[str, Any]) -> np.ndarray:
        """Party `rank`'s share of the noise draw `key` = [run epoch, counter] described by
        `spec` (plain JSON data: mechanism name and public parameters; see
        `mpc.dp.release.noise_spec`)."""
        if not isinstance(spec, dict) or not isinstance(key, list | tuple) or len(key) != 2:
            raise DealerError("noise_share takes a key [epoch, counter] and a dict spec")
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in key):
            raise DealerError(f"a noise key holds two ints, got {key!r}")
        return self._dealer.noise_share(rank, (int(key[0]), int(key[1])), spec)

    def stats(self) -> dict[str, int]:
        return {
            "items": self._dealer.items_generated,
            "noise_draws": self._dealer.noise_draws,
            "bytes_sent": self._dealer.bytes_sent,
        }


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
        if self.transport is not None:
            error = PeerFailedError(f"party {peer!r} aborted the run: {reason}")
            self.transport.mailbox.fail(error, run_id)

    def attach_dealer(self, dealer: Any | None, enclave: Mapping[str, Any] | None = None) -> str:
        """Fetch this party's seed from the dealer actor and build the party runner.

        With `enclave` options, the seed is accepted only after the dealer's quote passes this
        party's own policy (measurement computed from this party's checkout); returns the
        attestation summary ("" without an enclave).
        """
        import ray

        if self.transport is None:
            raise ConfigurationError("connect the transport before attaching the dealer")
        client = None
        summary = ""
        if dealer is not None:
            if enclave is not None:
                seed, summary = self._attested_seed(dealer, enclave)
            else:
                seed = ray.get(dealer.seed_for.remote(self.rank), timeout=self.config.timeout)
            scheme = get_protocol(self.config.protocol).make_scheme(
                len(self.config.parties), self.config.threshold
            )
            rank, timeout = self.rank, self.config.timeout

            def fetch(stream: Stream, start: int, count: int) -> Callable[[], Items]:
                ref = dealer.corrections.remote(rank, stream.to_wire(), start, count)

                def wait() -> Items:
                    result: Items = ray.get(ref, timeout=timeout)
                    return result

                return wait

            def fetch_noise(key: NoiseKey, spec: dict[str, Any]) -> np.ndarray:
                ref = dealer.noise_share.remote(rank, [key[0], key[1]], spec)
                share: np.ndarray = ray.get(ref, timeout=timeout)
                return share

            client = NoiseDealerClient(self.rank, seed, scheme, fetch, fetch_noise)
        self.runner = PartyRunner(self.rank, self.config, self.transport, client, self.private)
        return summary

    def _attested_seed(self, dealer: Any, options: Mapping[str, Any]) -> tuple[bytes, str]:
        import ray

        from mpc.tee import SeedHandshake, policy_for_dealer

        policy = policy_for_dealer(
            self.config.protocol,
            len(self.config.parties),
            self.config.threshold,
            trusted_platform_keys=list(options["platform_keys"]),
            allow_simulated=bool(options.get("allow_simulated", False)),
            allow_debug=bool(options.get("allow_debug", False)),
        )
        handshake = SeedHandshake(self.rank, self.session_id)
        answer = ray.get(
            dealer.attested_seed.remote(handshake.request_bytes()), timeout=self.config.timeout
        )
        attested = handshake.finish(answer, policy)
        return attested.seed, f"{self.name}: {attested.verified.summary()}"

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
        if self.transport is not None:
            self.transport.mailbox.begin_run(run_id)
        outcome = self.runner.run(run_id, program, args, kwargs)
        return outcome.output, outcome.stats.as_dict()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
