"""A party's (or the dealer's) local policy: the settings only that organisation may choose.

Responsibility: read and validate the TOML policy file of one party (`PartyPolicy`) or of the
dealer service (`DealerPolicy`) into frozen dataclasses. Relative paths are relative to the
policy file. Every refusal names the file and the field to change.
Security model: the policy is the trust anchor of a deployment across organisations. It is
read only at the party that owns it; nothing in it comes from whoever starts a run or from a
peer. It pins every peer's and the dealer's public key, fixes the protocol and its parameters,
the transport (encrypted unless the policy itself allows plaintext), the approved programs,
where private data comes from, and the differential-privacy ledger and budget.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpc.encoding import FixedPoint
from mpc.errors import ConfigurationError
from mpc.parties.keys import load_public
from mpc.state import refuse_temporary

TRANSPORTS = ("tcp", "tcp-plaintext")


@dataclass(frozen=True)
class Endpoint:
    """Another service this one talks to: its name, control address and pinned public key.

    Attributes:
        name: the party (or dealer) name.
        host: the address it is reached at.
        port: its control port (runs are proposed and the dealer is asked here).
        public_key: its pinned X25519 public key (32 bytes).
        data_port: its party-to-party data port (parties only; 0 for the dealer).
    """

    name: str
    host: str
    port: int
    public_key: bytes
    data_port: int = 0


@dataclass(frozen=True)
class ProtocolSettings:
    """What every party of the deployment must agree on; compared before any input is shared.

    Attributes:
        protocol: a registered protocol name (`mpc protocols`).
        threshold: Shamir threshold t (None: the protocol's default for n parties).
        fixed_point: fractional and integer bits of fixed-point values.
        transport: "tcp" (encrypted, key-pinned); "tcp-plaintext" only with allow_plaintext.
        timeout: receive timeout in seconds for every party-to-party and dealer message.
        dealer: "trusted" (the dealer service), "enclave" (the attested dealer) or "none".
    """

    protocol: str = "additive"
    threshold: int | None = None
    fixed_point: FixedPoint = field(default_factory=FixedPoint)
    transport: str = "tcp"
    timeout: float = 30.0
    dealer: str = "trusted"

    def describe(self) -> dict[str, Any]:
        """The fields as plain data (for the run digest)."""
        return {
            "protocol": self.protocol,
            "threshold": self.threshold,
            "frac_bits": self.fixed_point.frac_bits,
            "int_bits": self.fixed_point.int_bits,
            "transport": self.transport,
            "timeout": self.timeout,
            "dealer": self.dealer,
        }


@dataclass(frozen=True)
class EnclavePolicy:
    """What an attested dealer must prove (mpc.tee): pinned platform keys and measurements.

    Attributes:
        platform_keys: Ed25519 quote-signing keys this party trusts (never taken from the dealer).
        measurements: further dealer code measurements this party accepts (hex), besides the
            one it computes from its own checkout (what `mpc tee measure` prints).
        allow_simulated: accept SIMULATED/DEBUG quotes (tests only; they prove nothing).
    """

    platform_keys: tuple[bytes, ...]
    measurements: tuple[str, ...] = ()
    allow_simulated: bool = False


@dataclass(frozen=True)
class DpPolicy:
    """This party's differential-privacy ledger: where it lives, the data set, the budget.

    Attributes:
        allow_temporary: accept a `directory` under the system's temporary folder, where other
            users can reach the ledger and a reboot may erase it (`mpc party serve` refuses it
            otherwise: `check_location`).
    """

    directory: Path
    dataset: str
    epsilon: float
    delta: float = 0.0
    allow_temporary: bool = False

    def check_location(self, origin: str) -> None:
        """ConfigurationError if the ledger would live in a temporary folder, unless allowed."""
        if not self.allow_temporary:
            refuse_temporary(
                self.directory,
                f"{origin} [dp]: the privacy ledger",
                "set allow_temporary = true in [dp] to accept it",
            )

    def ledger_description(self) -> dict[str, Any]:
        """The `ctx.private["dp_ledger"]` entry that mpc.dp.release reads."""
        return {
            "directory": str(self.directory),
            "dataset": self.dataset,
            "budget": {"epsilon": self.epsilon, "delta": self.delta},
        }


@dataclass(frozen=True)
class PartyPolicy:
    """One organisation's party: who it is, whom it trusts, what it agrees to run.

    Attributes:
        name: this party's name.
        key_file: its private X25519 key (`mpc keygen`).
        host, port: where its control service listens (runs are started and proposed here).
        data_port: where it listens for the other parties' data-plane connections of a run.
        bind: the local address to bind (default: host).
        peers: every other party, with its pinned key.
        dealer: the dealer service (None with dealer "none").
        enclave: the attestation policy when the dealer runs in an enclave.
        settings: the protocol settings every party must share.
        program_folder: folder of approved program files.
        program_hashes: if given, only these SHA-256 hashes (hex) of files in the folder run.
        data: this party's private data sources, name -> path (read as ctx.private[name]).
        dp: this party's DP ledger and budget.
        starters: clients (name -> public key) allowed to start runs here, besides this party's
            own key.
        ray_address: this organisation's own Ray ("local": a new private instance; "none": run
            in the service's process without Ray).
        show_output: show the party's program output in the service's log: what the program
            prints, as ``[name] line``, and each run's revealed output (False: neither; what
            the program prints then stays in the party's own Ray log, or nowhere in-process).
        results_folder: where the service writes each run's revealed results (None: nowhere).
    """

    name: str
    key_file: Path
    host: str
    port: int
    data_port: int
    peers: tuple[Endpoint, ...]
    settings: ProtocolSettings
    program_folder: Path
    bind: str = ""
    dealer: Endpoint | None = None
    enclave: EnclavePolicy | None = None
    program_hashes: frozenset[str] | None = None
    data: Mapping[str, str] = field(default_factory=dict)
    dp: DpPolicy | None = None
    starters: Mapping[str, bytes] = field(default_factory=dict)
    ray_address: str = "local"
    show_output: bool = True
    results_folder: Path | None = None
    origin: str = "policy"

    @property
    def parties(self) -> list[str]:
        """Every party of the deployment, sorted by name (the rank order all parties share)."""
        return sorted([self.name, *(p.name for p in self.peers)])

    def peer(self, name: str) -> Endpoint:
        for p in self.peers:
            if p.name == name:
                return p
        raise ConfigurationError(f"{self.origin}: no [[peer]] named {name!r}")

    def private_data(self) -> dict[str, Any]:
        """What the program sees as ctx.private: the data sources and the DP ledger."""
        private: dict[str, Any] = dict(self.data)
        if self.dp is not None:
            private["dp_ledger"] = self.dp.ledger_description()
        return private

    @staticmethod
    def load(path: str | Path) -> PartyPolicy:
        path, data = _read(path)
        return _party_policy(data, path)


@dataclass(frozen=True)
class DealerPolicy:
    """The dealer service: its key, where it listens, which parties it serves, with what.

    Attributes:
        name: the dealer's name (parties pin it with its key).
        key_file: its private X25519 key.
        host, port: where it listens; bind: the local address to bind (default: host).
        parties: every party it serves, name -> pinned public key; a party's requests are
            served only over a channel authenticated with that party's key.
        settings: protocol settings it deals for (parties' runs must match).
        enclave: "simulated" to run behind the simulated enclave backend (mpc.tee), or None.
        max_items: the largest number of elements it deals in one request.
        max_runs: how many runs it keeps open at once.
    """

    name: str
    key_file: Path
    host: str
    port: int
    parties: Mapping[str, bytes]
    settings: ProtocolSettings
    bind: str = ""
    enclave: str | None = None
    max_items: int = 1 << 26
    max_runs: int = 16
    origin: str = "dealer policy"

    @staticmethod
    def load(path: str | Path) -> DealerPolicy:
        path, data = _read(path)
        return _dealer_policy(data, path)


# ---- parsing ------------------------------------------------------------------------------------


def _read(path: str | Path) -> tuple[Path, dict[str, Any]]:
    path = Path(path)
    try:
        return path.resolve(), tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigurationError(f"policy file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"policy file {path} is not valid TOML: {exc}") from exc


class _Table:
    """One TOML table with typed getters whose errors name the file, the table and the field."""

    def __init__(self, raw: Any, where: str, known: set[str]) -> None:
        if not isinstance(raw, dict):
            raise ConfigurationError(f"{where} must be a table")
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigurationError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
        self.raw = raw
        self.where = where

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.raw:
            if default is ...:
                raise ConfigurationError(f"{self.where}: missing field {key!r}")
            return default
        value = self.raw[key]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise ConfigurationError(f"{self.where}: {key} must not be a boolean")
        if not isinstance(value, kind):
            raise ConfigurationError(
                f"{self.where}: {key} = {value!r} has the wrong type ({type(value).__name__})"
            )
        return value

    def name_of(self, value: str) -> str:
        """`value` (e.g. a table key) checked as a name."""
        if not value or not value.replace("-", "").replace("_", "").isalnum() or len(value) > 64:
            raise ConfigurationError(
                f"{self.where}: names must be 1-64 letters, digits, '-' or '_', got {value!r}"
            )
        return value

    def name(self, key: str = "name") -> str:
        value = str(self.get(key, str))
        if not value or not value.replace("-", "").replace("_", "").isalnum() or len(value) > 64:
            raise ConfigurationError(
                f"{self.where}: {key} must be 1-64 letters, digits, '-' or '_', got {value!r}"
            )
        return value

    def port(self, key: str, default: Any = ...) -> int:
        value = int(self.get(key, int, default))
        if not 1 <= value <= 65535:
            raise ConfigurationError(f"{self.where}: {key} must be a port 1-65535, got {value}")
        return value

    def key(self, key: str, base: Path) -> bytes:
        text = str(self.get(key, str))
        candidate = base / text
        try:
            return load_public(str(candidate) if candidate.is_file() else text)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{self.where}: {key}: {exc}") from None

    def path(self, key: str, base: Path, default: Any = ...) -> Path:
        value = self.get(key, str, default)
        if isinstance(value, Path):
            return value
        if not isinstance(value, str):
            raise ConfigurationError(f"{self.where}: {key} must be a path")
        return base / value


def _address(table: _Table, key: str) -> tuple[str, int]:
    text = str(table.get(key, str))
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigurationError(f"{table.where}: {key} must be 'host:port', got {text!r}")
    return host, int(port)


def _settings(raw: Any, where: str) -> ProtocolSettings:
    from mpc.protocols.registry import get_protocol

    t = _Table(
        raw,
        where,
        {
            "name",
            "threshold",
            "frac_bits",
            "int_bits",
            "transport",
            "timeout",
            "dealer",
            "allow_plaintext",
        },
    )
    protocol = str(t.get("name", str, "additive"))
    get_protocol(protocol)  # unknown protocol: the registry's message lists the known ones
    transport = str(t.get("transport", str, "tcp"))
    if transport not in TRANSPORTS:
        raise ConfigurationError(f"{where}: transport must be one of {TRANSPORTS}")
    if transport != "tcp" and not t.get("allow_plaintext", bool, False):
        raise ConfigurationError(
            f"{where}: transport {transport!r} sends shares unencrypted; this policy must also "
            "say allow_plaintext = true to accept that"
        )
    dealer = str(t.get("dealer", str, "trusted"))
    if dealer not in ("trusted", "enclave", "none"):
        raise ConfigurationError(f"{where}: dealer must be 'trusted', 'enclave' or 'none'")
    timeout = float(t.get("timeout", (int, float), 30.0))
    if not 0 < timeout <= 3600:
        raise ConfigurationError(f"{where}: timeout must be in (0, 3600] seconds")
    try:
        fixed = FixedPoint(
            int(t.get("frac_bits", int, 16)),
            int(t.get("int_bits", int, 24)),
            int(t.get("failure_bits", int, 20)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
    threshold = t.get("threshold", int, None)
    return ProtocolSettings(protocol, threshold, fixed, transport, timeout, dealer)


def _endpoint(raw: Any, where: str, base: Path, party: bool) -> Endpoint:
    known = {"name", "address", "public_key"} | ({"data_port"} if party else set())
    t = _Table(raw, where, known)
    host, port = _address(t, "address")
    return Endpoint(
        t.name(), host, port, t.key("public_key", base), t.port("data_port") if party else 0
    )


def _enclave(raw: Any, where: str) -> EnclavePolicy:
    t = _Table(raw, where, {"platform_keys", "measurements", "allow_simulated"})
    keys = t.get("platform_keys", list)
    if not keys or not all(isinstance(k, str) for k in keys):
        raise ConfigurationError(
            f"{where}: platform_keys must list the hex Ed25519 keys of the platforms this party "
            "trusts (from the vendor or your own provisioning, never from the dealer)"
        )
    try:
        platform = tuple(bytes.fromhex(k) for k in keys)
    except ValueError:
        raise ConfigurationError(f"{where}: platform_keys must be hex strings") from None
    measurements = t.get("measurements", list, [])
    if not all(isinstance(m, str) and len(m) == 64 for m in measurements):
        raise ConfigurationError(f"{where}: measurements must be 64-hex-digit SHA-256 values")
    return EnclavePolicy(platform, tuple(measurements), bool(t.get("allow_simulated", bool, False)))


def _party_policy(data: dict[str, Any], path: Path) -> PartyPolicy:
    origin = str(path)
    base = path.parent
    top = _Table(
        data,
        origin,
        {"party", "peer", "dealer", "enclave", "protocol", "programs", "data", "dp", "starters"},
    )
    me = _Table(
        top.get("party", dict),
        f"{origin} [party]",
        {
            "name",
            "key_file",
            "address",
            "data_port",
            "bind",
            "ray_address",
            "show_output",
            "results_folder",
        },
    )
    host, port = _address(me, "address")
    raw_peers = top.get("peer", list)
    peers = tuple(
        _endpoint(p, f"{origin} [[peer]] #{i + 1}", base, party=True)
        for i, p in enumerate(raw_peers)
    )
    name = me.name()
    names = [name, *(p.name for p in peers)]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{origin}: party names must be unique, got {names}")
    settings = _settings(top.get("protocol", dict, {}), f"{origin} [protocol]")
    dealer = None
    if "dealer" in data:
        dealer = _endpoint(data["dealer"], f"{origin} [dealer]", base, party=False)
    if settings.dealer != "none" and dealer is None:
        raise ConfigurationError(
            f"{origin}: the protocol uses dealer {settings.dealer!r}; add a [dealer] table with "
            "its address and pinned public_key (or set dealer = 'none' under [protocol])"
        )
    enclave = _enclave(data["enclave"], f"{origin} [enclave]") if "enclave" in data else None
    if settings.dealer == "enclave" and enclave is None:
        raise ConfigurationError(
            f"{origin}: dealer 'enclave' needs an [enclave] table with the platform_keys this "
            "party trusts"
        )
    programs = _Table(top.get("programs", dict), f"{origin} [programs]", {"folder", "hashes"})
    hashes = programs.get("hashes", list, None)
    if hashes is not None and not all(isinstance(h, str) and len(h) == 64 for h in hashes):
        raise ConfigurationError(f"{origin} [programs]: hashes must be 64-hex-digit SHA-256 values")
    raw_data = top.get("data", dict, {})
    if not all(isinstance(v, str) for v in raw_data.values()):
        raise ConfigurationError(f"{origin} [data]: each data source is a path (a string)")
    dp = None
    if "dp" in data:
        t = _Table(
            data["dp"],
            f"{origin} [dp]",
            {"directory", "dataset", "epsilon", "delta", "allow_temporary"},
        )
        dp = DpPolicy(
            t.path("directory", base),
            str(t.get("dataset", str)),
            float(t.get("epsilon", (int, float))),
            float(t.get("delta", (int, float), 0.0)),
            bool(t.get("allow_temporary", bool, False)),
        )
    raw_starters = top.get("starters", dict, {})
    starters_table = _Table(raw_starters, f"{origin} [starters]", set(raw_starters))
    starters = {}
    for starter_name in starters_table.raw:
        starters[starters_table.name_of(starter_name)] = starters_table.key(starter_name, base)
    results = me.get("results_folder", str, None)
    return PartyPolicy(
        name=name,
        key_file=me.path("key_file", base),
        host=host,
        port=port,
        data_port=me.port("data_port"),
        bind=str(me.get("bind", str, "")),
        peers=peers,
        settings=settings,
        dealer=dealer,
        enclave=enclave,
        program_folder=programs.path("folder", base),
        program_hashes=frozenset(h.lower() for h in hashes) if hashes is not None else None,
        data={k: str(base / v) for k, v in raw_data.items()},
        dp=dp,
        starters=starters,
        ray_address=str(me.get("ray_address", str, "local")),
        show_output=bool(me.get("show_output", bool, True)),
        results_folder=base / results if results else None,
        origin=origin,
    )


def _dealer_policy(data: dict[str, Any], path: Path) -> DealerPolicy:
    origin = str(path)
    base = path.parent
    top = _Table(data, origin, {"dealer", "party", "protocol"})
    me = _Table(
        top.get("dealer", dict),
        f"{origin} [dealer]",
        {"name", "key_file", "address", "bind", "enclave", "max_items", "max_runs"},
    )
    host, port = _address(me, "address")
    parties = {}
    for i, raw in enumerate(top.get("party", list)):
        t = _Table(raw, f"{origin} [[party]] #{i + 1}", {"name", "public_key"})
        parties[t.name()] = t.key("public_key", base)
    if len(parties) < 2:
        raise ConfigurationError(f"{origin}: list at least two [[party]] tables (name, public_key)")
    enclave = me.get("enclave", str, None)
    if enclave not in (None, "simulated"):
        raise ConfigurationError(f"{origin} [dealer]: enclave must be 'simulated' or absent")
    return DealerPolicy(
        name=me.name(),
        key_file=me.path("key_file", base),
        host=host,
        port=port,
        parties=parties,
        settings=_settings(top.get("protocol", dict, {}), f"{origin} [protocol]"),
        bind=str(me.get("bind", str, "")),
        enclave=enclave,
        max_items=int(me.get("max_items", int, 1 << 26)),
        max_runs=int(me.get("max_runs", int, 16)),
        origin=origin,
    )
