"""The one small interface behind which a `Session` runs its parties.

Responsibility: name what a runtime must do for a session (start, run one SPMD program at every
party, fetch dealer items ahead, report dealer traffic, close), and hold the typed settings a
session hands its runtime, so `mpc.session.Session` has no branch per runtime. The runtimes:
`mpc.parties.local.LocalParties` (threads in this process) and
`mpc.parties.ray_runtime.RayParties` (one Ray actor per party in one cluster). Both are one
trust domain: whoever drives the session controls every party. Across organisations each party
runs its own service instead (`mpc.federation`), which executes programs with the same
`PartyRunner` but is never driven by another organisation's session.
Security model: settings only; each runtime documents its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mpc.dealers.base import Dealer
from mpc.dealers.streams import Stream
from mpc.deploy import DeploymentConfig
from mpc.parties.party import SessionConfig
from mpc.stats import PartyStats


@dataclass(frozen=True)
class EnclaveSettings:
    """What the parties accept from an attested dealer (`dealer="enclave"`).

    `platform_keys`: the 32-byte Ed25519 keys whose quotes the parties trust (bytes, or 64 hex
    digits), pinned here from the session's own configuration (`enclave_platform_keys`), never
    taken from the dealer. `allow_simulated`: accept the simulated backend (tests only): each
    party then learns its per-process key from the dealer and accepts it only on SIMULATED, DEBUG
    quotes. At least one of the two is required (ConfigurationError otherwise).
    """

    platform_keys: tuple[bytes, ...] = ()
    allow_simulated: bool = False

    def __post_init__(self) -> None:
        from mpc.errors import ConfigurationError
        from mpc.tee.verify import PLATFORM_KEY_REQUIRED

        if isinstance(self.platform_keys, bytes | bytearray | str):
            raise ConfigurationError(
                "enclave_platform_keys must be a list of keys, not one key: "
                "enclave_platform_keys=[key]"
            )
        keys: list[bytes] = []
        for key in self.platform_keys:
            value: object = key
            if isinstance(key, str):
                try:
                    value = bytes.fromhex(key)
                except ValueError:
                    value = None
            if isinstance(value, bytearray):
                value = bytes(value)
            if not isinstance(value, bytes) or len(value) != 32:
                raise ConfigurationError(
                    "each of enclave_platform_keys must be a 32-byte Ed25519 public key (bytes "
                    f"or 64 hex digits), got {key!r:.80}"
                )
            keys.append(value)
        if not isinstance(self.allow_simulated, bool):
            raise ConfigurationError("allow_simulated_enclave must be True or False")
        if not keys and not self.allow_simulated:
            raise ConfigurationError(PLATFORM_KEY_REQUIRED)
        object.__setattr__(self, "platform_keys", tuple(keys))

    def as_dict(self) -> dict[str, Any]:
        """The form the party actors take (simulated quotes are also debug quotes).

        The parties trust `pinned_platform_keys` only; `platform_keys` (the same list) is what
        the Ray runtime reads and may fill in from the dealer, which the parties ignore.
        """
        return {
            "allow_simulated": self.allow_simulated,
            "allow_debug": self.allow_simulated,
            "pinned_platform_keys": list(self.platform_keys),
            "platform_keys": list(self.platform_keys),
        }


@dataclass(frozen=True)
class RuntimeSettings:
    """Everything a runtime needs besides the session's protocol configuration.

    Attributes:
        show_output: the parties whose printed output the driver shows, as ``[party] line``
            (None: every party; `mpc.parties.output`).
    """

    transport: str
    dealer_kind: str | None
    local_dealer: Dealer | None = None
    private: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    enclave: EnclaveSettings | None = None
    deployment: DeploymentConfig | None = None
    ray_address: str | None = None
    num_cpus: int = 2
    show_output: frozenset[str] | None = None


class Runtime(Protocol):
    """A started set of parties that run SPMD programs (one trust domain)."""

    attestations: list[str]

    def start(self) -> None: ...

    def execute(
        self, program: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, PartyStats]]:
        """Run `program(ctx, *args, **kwargs)` at every party: (outputs, stats) by name."""
        ...

    def prefetch(self, stream: Stream, count: int) -> None: ...

    def preprocess(self, needs: Sequence[tuple[Stream, int]], runs: int) -> dict[str, int]:
        """Fetch the dealer items `needs` for each of the next `runs` runs now; the bytes of
        corrections each party then holds for them (`mpc.session.Session.preprocess`)."""
        ...

    def dealer_usage(self) -> list[tuple[Stream, int]]:
        """The dealer items the last run took (stream, count), streams in run 0."""
        ...

    def dealer_stats(self) -> dict[str, int]: ...

    def close(self) -> None: ...


def make_runtime(name: str, config: SessionConfig, settings: RuntimeSettings) -> Runtime:
    """The runtime called `name` ("local" or "ray") for `config`, not yet started."""
    factory = RUNTIME_FACTORIES.get(name)
    if factory is None:
        raise KeyError(name)
    return factory(config, settings)


def _local(config: SessionConfig, settings: RuntimeSettings) -> Runtime:
    from mpc.parties.local import LocalParties

    return LocalParties(config, settings.local_dealer, settings.private, settings.show_output)


def _ray(config: SessionConfig, settings: RuntimeSettings) -> Runtime:
    import secrets

    from mpc.parties.ray_runtime import RayParties
    from mpc.parties.ray_setup import cluster_address, quiet_token_notice

    quiet_token_notice()
    return RayParties(
        config,
        transport=settings.transport,
        with_dealer=settings.dealer_kind in ("trusted", "enclave"),
        enclave=None if settings.enclave is None else settings.enclave.as_dict(),
        private=settings.private,
        deployment=settings.deployment,
        ray_address=cluster_address(settings.ray_address),
        num_cpus=settings.num_cpus,
        session_id=secrets.token_bytes(16),
        show_output=settings.show_output,
    )


RUNTIME_FACTORIES: dict[str, Callable[[SessionConfig, RuntimeSettings], Runtime]] = {
    "local": _local,
    "ray": _ray,
}
