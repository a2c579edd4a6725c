"""Write a complete example deployment: keys and policy files for n parties and a dealer.

Responsibility: generate one key per party and for the dealer, and write each organisation's
policy (TOML) into its own folder, with every peer's public key pinned, the approved programs
copied into each party's program folder, and its private data sources. Used by
`mpc deploy example`, the tests, and docs/deploy.md as a starting point.
Security model: in a real deployment each organisation generates its own key on its own machine
and sends only the public key; this helper does all of it in one place, so its output is for
trying things out (one machine, or test hosts), not for production as is.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpc.parties.keys import PartyKey


@dataclass(frozen=True)
class Host:
    """Where one organisation's service listens: address, control port, data port."""

    address: str
    port: int
    data_port: int = 0


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def _table(name: str, fields: Mapping[str, Any], array: bool = False) -> str:
    head = f"[[{name}]]" if array else f"[{name}]"
    lines = [head] + [f"{k} = {_toml_value(v)}" for k, v in fields.items() if v is not None]
    return "\n".join(lines) + "\n"


def write_deployment(
    folder: Path,
    parties: Mapping[str, Host],
    dealer: Host | None,
    programs: Sequence[Path],
    *,
    data: Mapping[str, Mapping[str, str]] | None = None,
    protocol: Mapping[str, Any] | None = None,
    party_extra: Mapping[str, Mapping[str, Any]] | None = None,
    dp: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Path]:
    """Write `folder/<name>/policy.toml` (+ key, programs) for every party and the dealer.

    Returns the policy path of each organisation ("dealer" for the dealer). `data[name]` maps
    data-source names to paths; `protocol` overrides [protocol] fields for everyone;
    `party_extra[name]` adds fields to that party's [party] table; `dp[name]` its [dp] table.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(parties)
    keys = {name: PartyKey.generate() for name in [*names, "dealer"]}
    paths: dict[str, Path] = {}
    for name in [*names, "dealer"]:
        home = folder / name
        home.mkdir(exist_ok=True)
        keys[name].save(home / f"{name}.key")
    settings = {"name": "additive", **(protocol or {})}
    if dealer is None:
        settings.setdefault("dealer", "none")
    for name in names:
        home = folder / name
        approved = home / "programs"
        approved.mkdir(exist_ok=True)
        for program in programs:
            shutil.copy(program, approved / Path(program).name)
        host = parties[name]
        parts = [
            _table(
                "party",
                {
                    "name": name,
                    "key_file": f"{name}.key",
                    "address": f"{host.address}:{host.port}",
                    "data_port": host.data_port,
                    "ray_address": "none",
                    **(party_extra or {}).get(name, {}),
                },
            )
        ]
        for peer in names:
            if peer != name:
                other = parties[peer]
                parts.append(
                    _table(
                        "peer",
                        {
                            "name": peer,
                            "address": f"{other.address}:{other.port}",
                            "data_port": other.data_port,
                            "public_key": keys[peer].public_hex,
                        },
                        array=True,
                    )
                )
        if dealer is not None:
            parts.append(
                _table(
                    "dealer",
                    {
                        "name": "dealer",
                        "address": f"{dealer.address}:{dealer.port}",
                        "public_key": keys["dealer"].public_hex,
                    },
                )
            )
        parts.append(_table("protocol", settings))
        parts.append(_table("programs", {"folder": "programs"}))
        parts.append(_table("data", dict((data or {}).get(name, {}))))
        if dp and name in dp:
            parts.append(_table("dp", dict(dp[name])))
        paths[name] = home / "policy.toml"
        paths[name].write_text("\n".join(parts))
    if dealer is not None:
        parts = [
            _table(
                "dealer",
                {
                    "name": "dealer",
                    "key_file": "dealer.key",
                    "address": f"{dealer.address}:{dealer.port}",
                },
            )
        ]
        for name in names:
            parts.append(_table("party", {"name": name, "public_key": keys[name].public_hex}, True))
        parts.append(_table("protocol", settings))
        paths["dealer"] = folder / "dealer" / "policy.toml"
        paths["dealer"].write_text("\n".join(parts))
    return paths
