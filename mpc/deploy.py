"""Deployment configuration: which parties exist, where they run and which keys they use.

Responsibility: read and validate the small TOML file that names the parties of a deployment,
the Ray custom resource that pins each party actor to its machine, each party's key file (a path
on that party's machine) and pinned public key.
Security model: the public keys in this file are the trust anchor of the encrypted transport;
exchange them out of band (each party runs `mpc keygen` and sends only its `.pub`). Private keys
never appear in this file.

Example::

    [session]
    protocol = "additive"
    transport = "tcp"

    [[party]]
    name = "alice"
    resource = "party:alice"
    key_file = "/etc/mpc/alice.key"
    public_key = "3f1c...e9"
    host = "10.0.0.11"          # address peers connect to

    [dealer]
    resource = "dealer"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpc.errors import ConfigurationError
from mpc.parties.keys import load_public


@dataclass(frozen=True)
class PartySpec:
    name: str
    resource: str | None = None
    key_file: str | None = None
    public_key: bytes | None = None
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class DeploymentConfig:
    parties: tuple[PartySpec, ...]
    dealer_resource: str | None = None
    session: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parties]

    @staticmethod
    def load(path: str | Path) -> DeploymentConfig:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigurationError(f"deployment config {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"deployment config {path} is not valid TOML: {exc}") from exc
        return DeploymentConfig.from_dict(data, origin=str(path))

    @staticmethod
    def from_dict(data: dict[str, Any], origin: str = "config") -> DeploymentConfig:
        raw_parties = data.get("party")
        if not isinstance(raw_parties, list) or len(raw_parties) < 2:
            raise ConfigurationError(f"{origin}: needs at least two [[party]] tables")
        parties = []
        for i, raw in enumerate(raw_parties):
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise ConfigurationError(f"{origin}: [[party]] number {i + 1} needs a name")
            unknown = set(raw) - {"name", "resource", "key_file", "public_key", "host"}
            if unknown:
                raise ConfigurationError(
                    f"{origin}: party {raw['name']!r} has unknown keys {sorted(unknown)}"
                )
            public = raw.get("public_key")
            parties.append(
                PartySpec(
                    name=raw["name"],
                    resource=raw.get("resource"),
                    key_file=raw.get("key_file"),
                    public_key=load_public(public) if public else None,
                    host=raw.get("host", "127.0.0.1"),
                )
            )
        names = [p.name for p in parties]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"{origin}: party names must be unique, got {names}")
        keyed = [p.public_key is not None for p in parties]
        if any(keyed) and not all(keyed):
            raise ConfigurationError(
                f"{origin}: give a public_key for every party or for none (then keys are "
                "generated per session and distributed by the driver)"
            )
        dealer = data.get("dealer", {})
        return DeploymentConfig(
            parties=tuple(parties),
            dealer_resource=dealer.get("resource") if isinstance(dealer, dict) else None,
            session=dict(data.get("session", {})),
        )
