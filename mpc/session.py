"""The session facade: the one object users touch, and the only place plaintext results leave.

Responsibility: validate the configuration (parties, protocol, threshold, dealer, transport),
start the parties (as Ray actors, or as threads in this process), wire their transport, ship
SPMD programs to them, collect what the programs return (revealed values only), report the cost
of each run, and stop everything on exit, also on error.

Security model: the driver process never holds a party's private data (each party's `private`
mapping is sent only to that party's actor), a party's dealer seed, or shares; programs may not
return `Secret`s. With runtime="ray" and transport="tcp", parties talk over authenticated,
encrypted TCP with pinned X25519 keys. Without a deployment config the driver generates no keys
but learns each party's public key and distributes it, so it could in principle stand in the
middle; pin keys in a deployment config for real use (docs/deploy.md). Insecure dealers (in this
process) are refused unless `allow_insecure=True`.
A session is ONE trust domain: whoever drives it chooses the program, the transport, the keys
and the data paths of every party (one organisation's own cluster, tests, simulation). Across
organisations that do not trust each other each runs its own party (`mpc party serve`,
`mpc.federation`), which enforces its own policy. The runtimes sit behind
`mpc.parties.runtime.Runtime`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mpc.dealers.base import Dealer
from mpc.dealers.seeded import InsecureLocalDealer
from mpc.dealers.streams import Stream
from mpc.deploy import DeploymentConfig
from mpc.encoding import FixedPoint
from mpc.errors import ConfigurationError, InsecureDealerError
from mpc.parties.party import SessionConfig
from mpc.parties.runtime import EnclaveSettings, Runtime, RuntimeSettings, make_runtime
from mpc.protocols.base import Need
from mpc.protocols.registry import check_compatibility, get_protocol
from mpc.stats import PartyStats, format_stats

RUNTIMES = ("ray", "local")  # each a factory in mpc.parties.runtime.RUNTIME_FACTORIES
TRANSPORTS = {"ray": ("tcp", "tcp-plaintext", "ray"), "local": ("memory",)}
DEALERS = ("trusted", "enclave", "local-insecure", "none")
DEFAULT_PARTIES = ("alice", "bob", "carol")


@dataclass
class RunResult:
    """What one run returned at each party, and what it cost."""

    outputs: dict[str, Any]
    stats: dict[str, PartyStats]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, party: str) -> Any:
        return self.outputs[party]

    def report(self) -> str:
        return f"{format_stats(self.stats)}\nwall time {self.seconds:.3f} s"


class Session:
    """A group of parties that run SPMD programs together.

    >>> with Session(["alice", "bob", "carol"]) as s:           # doctest: +SKIP
    ...     result = s.run(program)

    What a program prints at a party is shown here as ``[alice] ...`` while the run goes on
    (with either runtime); `show_output` turns that off (False) or limits it to some parties
    (a list of names). A party left out shows nothing here (under Ray its output stays in its
    worker's log; in-process it is dropped).
    """

    def __init__(
        self,
        parties: Sequence[str] | int | None = None,
        *,
        protocol: str = "additive",
        threshold: int | None = None,
        dealer: str | Dealer | None = "trusted",
        transport: str | None = None,
        runtime: str = "ray",
        allow_insecure: bool = False,
        fixed_point: FixedPoint | None = None,
        timeout: float = 30.0,
        private: Mapping[str, Mapping[str, Any]] | None = None,
        deployment: DeploymentConfig | str | None = None,
        ray_address: str | None = None,
        num_cpus: int = 2,
        allow_simulated_enclave: bool = False,
        enclave_platform_keys: Sequence[bytes] | None = None,
        show_output: bool | Collection[str] = True,
    ) -> None:
        if isinstance(deployment, str):
            deployment = DeploymentConfig.load(deployment)
        self.deployment = deployment
        names = _party_names(parties, deployment)
        if runtime not in RUNTIMES:
            raise ConfigurationError(f"unknown runtime {runtime!r}; choose one of {RUNTIMES}")
        transport = transport or TRANSPORTS[runtime][0]
        if transport not in TRANSPORTS[runtime]:
            raise ConfigurationError(
                f"transport {transport!r} is not available with runtime {runtime!r}; "
                f"choose one of {TRANSPORTS[runtime]}"
            )
        protocol_cls = get_protocol(protocol)
        local_dealer, provides = _choose_dealer(dealer, runtime, allow_insecure, protocol_cls.needs)
        t = check_compatibility(protocol_cls, len(names), threshold, provides)
        if local_dealer == "local-insecure":
            local_dealer = InsecureLocalDealer(protocol_cls.make_scheme(len(names), t))
        self.private = {k: dict(v) for k, v in (private or {}).items()}
        unknown = set(self.private) - set(names)
        if unknown:
            raise ConfigurationError(
                f"private data given for unknown parties {sorted(unknown)}; parties are {names}"
            )
        self.config = SessionConfig(tuple(names), protocol, t, fixed_point or FixedPoint(), timeout)
        self.runtime = runtime
        enclave: EnclaveSettings | None = None
        if dealer == "enclave":
            if runtime != "ray":
                raise ConfigurationError("dealer='enclave' needs runtime='ray'")
            keys: Any = enclave_platform_keys or ()
            if not isinstance(keys, bytes | bytearray | str):
                keys = tuple(keys)  # a single key is refused by EnclaveSettings
            # the parties trust only these keys (their own configuration), never the dealer's;
            # EnclaveSettings refuses a session that pins none and does not allow simulation
            enclave = EnclaveSettings(keys, allow_simulated_enclave)
            if allow_simulated_enclave:
                warnings.warn(
                    "dealer='enclave' with allow_simulated_enclave=True: the parties accept "
                    "SIMULATED, DEBUG quotes, which prove nothing about the dealer's code "
                    "(docs/tee.md)",
                    stacklevel=2,
                )
        self.settings = RuntimeSettings(
            transport=transport,
            dealer_kind=dealer if isinstance(dealer, str) or dealer is None else "custom",
            local_dealer=local_dealer if isinstance(local_dealer, Dealer) else None,
            private=self.private,
            enclave=enclave,
            deployment=deployment,
            ray_address=ray_address,
            num_cpus=num_cpus,
            show_output=_shown(show_output, names),
        )
        self.attestations: list[str] = []
        self._backend: Runtime | None = None
        self._last_program: Callable[..., Any] | None = None  # for `preprocess(program)`
        if transport == "tcp-plaintext":
            warnings.warn(
                "transport 'tcp-plaintext': party-to-party traffic is NOT encrypted or "
                "authenticated; use it only to measure the cost of encryption",
                stacklevel=2,
            )

    @property
    def parties(self) -> list[str]:
        return list(self.config.parties)

    @property
    def transport(self) -> str:
        return self.settings.transport

    @property
    def dealer_kind(self) -> str | None:
        return self.settings.dealer_kind

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Session:
        if self._backend is not None:
            return self
        backend = make_runtime(self.runtime, self.config, self.settings)
        try:
            backend.start()
        except BaseException:
            backend.close()
            raise
        self._backend = backend
        self.attestations = [a for a in backend.attestations if a]
        return self

    def _started(self) -> Runtime:
        self.start()
        assert self._backend is not None
        return self._backend

    def close(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    def __enter__(self) -> Session:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- running programs -----------------------------------------------------------------------
    def run(self, program: Callable[..., Any], *args: Any, **kwargs: Any) -> RunResult:
        """Run `program(ctx, *args, **kwargs)` at every party; return their outputs and costs.

        Raises `PartyFailedError` naming the party and operation that failed first; all parties
        stop (every receive has the session's timeout).
        """
        if not callable(program):
            raise TypeError("program must be a function of (ctx, ...)")
        backend = self._started()
        start = time.perf_counter()
        self._last_program = program
        outputs, stats = backend.execute(program, args, kwargs)
        return RunResult(outputs, stats, time.perf_counter() - start)

    def dealer_stats(self) -> dict[str, int]:
        """Items generated and bytes sent by the dealer so far (Ray runtime; {} otherwise)."""
        return self._started().dealer_stats()

    def prefetch(
        self,
        kind: str,
        shapes: Sequence[tuple[int, ...]],
        count: int,
        bits: int = 0,
        parent: int = -1,
    ) -> None:
        """Fetch dealer corrections for `count` items of the next run ahead of time (the
        offline phase; `preprocess` does it for a program or several streams and runs).

        The stream is named as in `mpc.dealers.streams.Stream` (kind, shapes, bits, parent).
        """
        stream = Stream(kind, tuple(tuple(s) for s in shapes), bits, parent=parent)
        self._started().prefetch(stream, count)

    def preprocess(
        self,
        needs: Callable[..., Any] | Iterable[tuple[Stream, int]],
        runs: int = 1,
    ) -> dict[str, int]:
        """The offline phase: the dealer generates, and every party fetches now, the
        correlated randomness of the next `runs` runs, which then make no dealer request for
        it (while they take no more than was prepared; beyond it they ask as usual).

        `needs` is either the program of the last run (`run`), whose dealer items are
        prepared again (the same program on inputs of the same shapes takes the same items:
        for a loop of runs, run it once, then preprocess before each next run or for several
        at once), or (stream, count) pairs (`mpc.dealers.streams.Stream`: kind, shapes,
        bits, e.g. ``(Stream("triple", ((10**6,),)), 5)``; the run is set here).

        Memory: every party keeps the correction shares it receives for the prepared items
        until a run uses them (under Ray in the node's shared-memory object store); shares a
        party derives from its seed are expanded only when used, so they cost nothing ahead.
        With the additive protocol only the last party receives corrections: one element per
        element of a triple, two of an exact truncation mask, so 24 MB for a 10^6-element
        fixed-point product ``(x * y).settle()`` (8 MB triple, 16 MB truncation), and nothing
        at the others. Returns the bytes each party holds for the prepared streams. Items
        prepared for a run that fails are dropped at the next run.

        Without it the dealer still works ahead during a run: a party asks for a stream's next
        item while it uses the current one (from the stream's second use in the run on, at
        most `mpc.dealers.base.LOOKAHEAD_BYTES` of corrections ahead per stream).
        """
        if runs < 1:
            raise ConfigurationError(f"runs must be at least 1, got {runs}")
        backend = self._started()
        if callable(needs):
            if needs is not self._last_program:
                name = getattr(needs, "__name__", "the program")
                raise ConfigurationError(
                    "preprocess(program) prepares what the program's last run took from the "
                    f"dealer, and {name} is not the last program this session ran: run it once "
                    "first (session.run), or pass (Stream, count) pairs"
                )
            items = backend.dealer_usage()
        else:
            items = []
            for stream, count in needs:
                if not isinstance(stream, Stream) or type(count) is not int or count < 1:
                    raise ConfigurationError(
                        f"preprocess takes (Stream, count >= 1) pairs, got ({stream!r}, {count!r})"
                    )
                items.append((stream, count))
        return backend.preprocess(items, runs)


def _party_names(
    parties: Sequence[str] | int | None, deployment: DeploymentConfig | None
) -> list[str]:
    if deployment is not None:
        if parties is not None and list(parties) != deployment.names:  # type: ignore[arg-type]
            raise ConfigurationError(
                f"parties {parties} differ from the deployment config's {deployment.names}"
            )
        return deployment.names
    if parties is None:
        return list(DEFAULT_PARTIES)
    if isinstance(parties, int):
        if parties < 2:
            raise ConfigurationError(f"need at least 2 parties, got {parties}")
        return [f"party{i}" for i in range(parties)]
    names = list(parties)
    for name in names:
        if (
            not isinstance(name, str)
            or not name
            or not name.replace("-", "").replace("_", "").isalnum()
        ):
            raise ConfigurationError(
                f"party names must be non-empty letters, digits, '-' or '_': got {name!r}"
            )
    return names


def _shown(show_output: bool | Collection[str], names: list[str]) -> frozenset[str]:
    """The parties whose printed output the driver shows."""
    if isinstance(show_output, bool):
        return frozenset(names) if show_output else frozenset()
    chosen = [show_output] if isinstance(show_output, str) else list(show_output)
    unknown = [p for p in chosen if p not in names]
    if unknown:
        raise ConfigurationError(
            f"show_output names unknown parties {unknown}; parties are {names} (or pass "
            "show_output=True / False for all / none)"
        )
    return frozenset(chosen)


def _choose_dealer(
    dealer: str | Dealer | None, runtime: str, allow_insecure: bool, needs: frozenset[Need]
) -> tuple[Dealer | str | None, frozenset[Need] | None]:
    """The in-process dealer (an object, or 'local-insecure' to build once (n, t) is known)
    and what the session's dealer provides."""
    if dealer is None or dealer == "none":
        return None, None
    if isinstance(dealer, Dealer):
        if not dealer.secure and not allow_insecure:
            raise InsecureDealerError(
                f"{type(dealer).__name__} is not secure (it runs where parties can read it); "
                "pass allow_insecure=True if this is a test"
            )
        if runtime != "local":
            raise ConfigurationError("a dealer object can only be used with runtime='local'")
        return dealer, dealer.provides
    if dealer not in DEALERS:
        raise ConfigurationError(f"unknown dealer {dealer!r}; choose one of {DEALERS}")
    if dealer == "local-insecure" or (dealer == "trusted" and runtime == "local"):
        if dealer == "trusted":
            raise ConfigurationError(
                "runtime='local' runs every party in this process, so there is no trusted "
                "dealer; use runtime='ray', or dealer='local-insecure' with allow_insecure=True"
            )
        if not allow_insecure:
            raise InsecureDealerError(
                "dealer 'local-insecure' runs in the parties' process and sees every secret "
                "it generates; pass allow_insecure=True if this is a test"
            )
        if runtime != "local":
            raise ConfigurationError("dealer 'local-insecure' needs runtime='local'")
        return "local-insecure", frozenset(Need)
    return None, frozenset(Need)  # the trusted-dealer actor provides everything
