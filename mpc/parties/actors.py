"""Ray actors: one `PartyActor` per party and one `DealerActor` for the trusted dealer.

Responsibility: host a party (its private data, keys, transport, dealer client and
`PartyRunner`) or the dealer inside a Ray worker process. The classes here are plain Python; the
session wraps them with `ray.remote` when it starts, so importing this module starts nothing.
Security model: a party actor holds only its own private data, its own key and PRG seed and its
shares. It fetches its dealer seed from the dealer actor itself, so the driver never sees it. The
dealer actor holds every party's seed; it must run on a node that no party controls (or in an
enclave, see `mpc.tee`). The dealer also deals noise shares for differentially private releases
(`DealerActor.noise_share`, see `mpc.dealers.seeded`): it sees the noise, never the value.
With an enclave dealer a party accepts its seed only after the dealer's quote passes the party's
own policy (`enclave_policy`): the platform keys it trusts are the *pinned* ones of its enclave
options (`pinned_platform_keys`, from the session's `enclave_platform_keys`), never a key the
dealer reports or the driver relays; the simulated backend's key, which the party asks the
dealer for itself, is accepted only with `allow_simulated` and only on quotes marked SIMULATED
and DEBUG. The enclave dealer runs only built-in protocols (`measured_protocol`): entry-point
plug-ins are never loaded in it, since their code is not in its measurement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mpc.dealers.base import LOOKAHEAD_BYTES, Items
from mpc.dealers.seeded import NoiseDealerClient, NoiseKey, SeededDealer
from mpc.dealers.streams import Stream, WireStream
from mpc.errors import ConfigurationError, DealerError, PeerFailedError
from mpc.parties.keys import PartyKey
from mpc.parties.output import OutputBuffer, RelaysOutput
from mpc.parties.party import PartyRunner, Program, SessionConfig
from mpc.parties.processes import process_tag
from mpc.parties.transport import Transport
from mpc.parties.tuning import tune_allocator
from mpc.protocols.base import Protocol
from mpc.protocols.registry import get_protocol

if TYPE_CHECKING:
    from mpc.tee.verify import QuotePolicy


def measured_protocol(name: str) -> type[Protocol]:
    """The built-in protocol `name`, without loading any entry-point plug-in (for the enclave
    dealer, whose measurement covers mpc's own code only); ConfigurationError otherwise."""
    from mpc.protocols.additive import AdditiveBeaver
    from mpc.protocols.shamir import ShamirBeaver, ShamirDegreeReduction

    builtin = {cls.name: cls for cls in (AdditiveBeaver, ShamirBeaver, ShamirDegreeReduction)}
    if name not in builtin:
        raise ConfigurationError(
            f"the enclave dealer runs only the built-in protocols {sorted(builtin)}, whose code "
            f"is measured; {name!r} is not one of them (protocol plug-ins are not loaded in an "
            "attested dealer)"
        )
    return builtin[name]


class DealerActor:
    """The trusted dealer as a Ray actor. Each party's seed is handed out once.

    With `enclave="simulated"` the same generation code runs behind the simulated enclave
    backend: seeds leave only through `attested_seed` (a quote binding the measured code and a
    fresh enclave key, plus the seed encrypted to the requesting party), never in clear; only a
    built-in protocol is accepted (`measured_protocol`: no entry-point plug-in is loaded).
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
        if enclave is not None:
            if enclave != "simulated":
                raise ConfigurationError(
                    f"unknown enclave backend {enclave!r}; only 'simulated' exists (docs/tee.md)"
                )
            protocol_cls = measured_protocol(protocol)
        else:
            protocol_cls = get_protocol(protocol)
        scheme = protocol_cls.make_scheme(n, threshold)
        self._dealer = SeededDealer(scheme)
        self._seed_taken: set[int] = set()
        self._seed_service: Any = None
        self._backend: Any = None
        if enclave is not None:
            from mpc.tee import EnclaveSeedService, SimulatedBackend, dealer_config

            self._backend = SimulatedBackend()
            self._backend.launch(dealer_config(protocol, n, threshold))
            self._seed_service = EnclaveSeedService(
                self._backend, session_id, n, self._dealer.seed_for
            )

    def process(self) -> tuple[str, int, int] | None:
        """This actor's process (`mpc.parties.processes.ProcessTag`), so that the session can
        make sure it ends; None where it cannot be recognised later."""
        return _process_wire()

    def platform_key(self) -> bytes:
        """The simulated platform's quote-signing public key: a party that allows simulation
        accepts it only on SIMULATED, DEBUG quotes (`enclave_policy`), never as a root of trust."""
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
    ) -> list[np.ndarray]:
        """Party `rank`'s corrections for items start..start+count-1, stacked: one array per
        component it receives, items along the first axis (a batch of small items crosses Ray
        as a few arrays, not thousands; `unstack` splits them)."""
        items = self._dealer.corrections(rank, Stream.from_wire(stream), start, count)
        if count == 1:
            return [a[np.newaxis] for a in items[0]]  # views: no copy before Ray's own
        return [np.stack(parts) for parts in zip(*items, strict=True)]

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


class PartyActor(RelaysOutput):
    """One party, living in its own Ray worker process.

    With `show_output`, what its program prints during a run is kept for the driver to take
    (`take_output`; `mpc.parties.output`) instead of going to the worker's own log; `run` then
    also returns how many lines were printed so far, so that the driver can wait for them.
    """

    def __init__(
        self,
        rank: int,
        config: SessionConfig,
        transport: str,
        session_id: bytes,
        private: Mapping[str, Any] | None = None,
        key_path: str | None = None,
        show_output: bool = False,
    ) -> None:
        tune_allocator()
        self._output = OutputBuffer() if show_output else None
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

    def process(self) -> tuple[str, int, int] | None:
        """This party's process (`mpc.parties.processes.ProcessTag`), so that the session can
        make sure it ends; None where it cannot be recognised later."""
        return _process_wire()

    def alive(self) -> None:
        """Answer the driver's ping during a run (`mpc.parties.liveness`): it runs in another
        thread of this actor, so it answers while the program computes, not while the process
        is frozen."""

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
                    return unstack(_from_dealer(ref, timeout, "corrections"), count)

                return wait

            def fetch_noise(key: NoiseKey, spec: dict[str, Any]) -> np.ndarray:
                ref = dealer.noise_share.remote(rank, [key[0], key[1]], spec)
                share: np.ndarray = _from_dealer(ref, timeout, "a noise share")
                return share

            # the dealer works in its own process: fetch large items one ahead too
            client = NoiseDealerClient(
                self.rank, seed, scheme, fetch, fetch_noise, lookahead_bytes=LOOKAHEAD_BYTES
            )
        self.runner = PartyRunner(self.rank, self.config, self.transport, client, self.private)
        return summary

    def _attested_seed(self, dealer: Any, options: Mapping[str, Any]) -> tuple[bytes, str]:
        import ray

        timeout = self.config.timeout

        def ask_seed(request: bytes) -> bytes:
            answer: bytes = ray.get(dealer.attested_seed.remote(request), timeout=timeout)
            return answer

        def ask_simulated_key() -> bytes:
            key: bytes = ray.get(dealer.platform_key.remote(), timeout=timeout)
            return key

        return attested_seed(
            self.rank, self.session_id, self.config, options, ask_seed, ask_simulated_key
        )

    def prefetch(self, streams: list[tuple[WireStream, int]]) -> int:
        """Fetch dealer corrections ahead of a run (the offline phase: `Session.preprocess`);
        return the bytes of corrections this party then holds for those streams."""
        if self.runner is None or self.runner.dealer is None:
            return 0
        held = 0
        for wire, count in streams:
            held += self.runner.dealer.prefetch(Stream.from_wire(wire), count)
        return held

    def dealer_usage(self) -> list[tuple[WireStream, int]]:
        """The dealer items the last run took: (stream, count) per stream."""
        if self.runner is None or self.runner.dealer is None:
            return []
        return [(s.to_wire(), n) for s, n in self.runner.dealer.usage().items()]

    def run(
        self, run_id: int, program: Program, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, dict[str, dict[str, float]], int]:
        """Run the program; (output, stats, lines printed so far: see `take_output`)."""
        if self.runner is None:
            raise ConfigurationError("party actor is not set up")
        if self.transport is not None:
            self.transport.mailbox.begin_run(run_id)
        if self._output is None:
            outcome = self.runner.run(run_id, program, args, kwargs)
            return outcome.output, outcome.stats.as_dict(), 0
        with self._output.capturing():
            outcome = self.runner.run(run_id, program, args, kwargs)
        return outcome.output, outcome.stats.as_dict(), self._output.count

    def close(self) -> None:
        if self._output is not None:
            self._output.close()
        if self.transport is not None:
            self.transport.close()


def unstack(stacked: Any, count: int) -> Items:
    """`DealerActor.corrections`' stacked arrays as `count` items (views), checked: a list of
    arrays whose first axis has `count` entries."""
    if not isinstance(stacked, list) or not all(
        isinstance(a, np.ndarray) and a.ndim >= 1 and a.shape[0] == count for a in stacked
    ):
        raise DealerError(f"the dealer's answer is not {count} stacked items")
    return [[a[k, ...] for a in stacked] for k in range(count)]


def _from_dealer(ref: Any, timeout: float, what: str) -> Any:
    """The dealer's answer `ref`; DealerError naming the dealer if none comes within `timeout`
    seconds."""
    import ray

    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        raise DealerError(
            f"the dealer sent no {what} within {timeout:g} s: it is frozen, overloaded or "
            "unreachable"
        ) from None


def _process_wire() -> tuple[str, int, int] | None:
    tag = process_tag()
    return None if tag is None else tag.to_wire()


def enclave_policy(
    config: SessionConfig, options: Mapping[str, Any], ask_simulated_key: Callable[[], bytes]
) -> QuotePolicy:
    """A party's attestation policy for the enclave dealer of a session with `config`.

    `options` (`mpc.parties.runtime.EnclaveSettings.as_dict`): `pinned_platform_keys`, the
    platform keys this party trusts (its own configuration); `allow_simulated` and `allow_debug`.
    Any other entry, in particular a `platform_keys` list a driver filled in from the dealer, is
    ignored. With `allow_simulated` and `allow_debug` the party also asks the simulated backend
    for its per-process key (`ask_simulated_key`) and accepts it only on quotes marked SIMULATED
    and DEBUG (`QuotePolicy.simulated_platform_keys`). Without a pinned key or that allowance
    there is nothing to trust: ConfigurationError saying what to set.
    """
    from mpc.tee.verify import PLATFORM_KEY_REQUIRED, policy_for_dealer

    pinned = list(options.get("pinned_platform_keys") or ())
    allow_simulated = options.get("allow_simulated") is True
    allow_debug = options.get("allow_debug") is True
    learn = allow_simulated and allow_debug
    if not pinned and not learn:
        raise ConfigurationError(PLATFORM_KEY_REQUIRED)
    return policy_for_dealer(
        config.protocol,
        len(config.parties),
        config.threshold,
        trusted_platform_keys=pinned,
        simulated_platform_keys=[ask_simulated_key()] if learn else [],
        allow_simulated=allow_simulated,
        allow_debug=allow_debug,
    )


def attested_seed(
    rank: int,
    session_id: bytes,
    config: SessionConfig,
    options: Mapping[str, Any],
    ask_seed: Callable[[bytes], bytes],
    ask_simulated_key: Callable[[], bytes],
) -> tuple[bytes, str]:
    """Party `rank`'s seed from the enclave dealer, accepted only after the dealer's quote passes
    this party's `enclave_policy`; returns (seed, one-line attestation summary).

    `ask_seed` sends the party's seed request to the dealer and returns its answer.
    """
    from mpc.tee import SeedHandshake

    policy = enclave_policy(config, options, ask_simulated_key)
    handshake = SeedHandshake(rank, session_id)
    attested = handshake.finish(ask_seed(handshake.request_bytes()), policy)
    return attested.seed, f"{config.parties[rank]}: {attested.verified.summary()}"
