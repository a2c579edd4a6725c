"""Write a complete example deployment: keys and policy files for n parties and a dealer.

Responsibility: generate one key per party and for the dealer, and write each organisation's
policy (TOML) into its own folder, with every peer's public key pinned, the approved programs
copied into each party's program folder, and its private data sources. Used by
`mpc deploy example` (`write_example`: the hospital scenarios on one machine), the tests, and
docs/deploy.md as a starting point.
Security model: in a real deployment each organisation generates its own key on its own machine
and sends only the public key; this helper does all of it in one place, so its output is for
trying things out (one machine, or test hosts), not for production as is.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpc.parties.keys import PartyKey
from mpc.state import temporary_root


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


#: The scenarios an example deployment approves (each defines party_program).
EXAMPLE_PROGRAMS = ("joint_statistics.py", "hospitals_logreg.py", "dp_joint_statistics.py")


def write_example(
    folder: Path,
    names: Sequence[str] = ("east", "north", "south"),
    *,
    host: str = "127.0.0.1",
    base_port: int = 7100,
    scenarios: Path | None = None,
    dp_epsilon: float = 2.0,
) -> dict[str, Path]:
    """An example deployment of the hospital scenarios on one machine (`mpc deploy example`).

    Party i listens on `base_port + 2i` (control) and `base_port + 2i + 1` (data), the dealer
    on `base_port + 2n`. Each hospital gets its own synthetic patient CSV (`csv`), its rows of
    the breast-cancer split (`rows`) and a privacy ledger ([dp], budget `dp_epsilon`) in its
    own folder; the three scenarios are approved by copying them into each `programs` folder.
    """
    from mpc.scenario import load_script

    if not 2 <= len(names) <= 5 or len(set(names)) != len(names):
        raise ValueError(f"an example deployment has 2 to 5 distinct parties, got {names!r}")
    source = scenarios or Path(__file__).resolve().parent.parent.parent / "scenarios"
    programs = [source / p for p in EXAMPLE_PROGRAMS]
    missing = [str(p) for p in programs if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"the example scenarios are not here: {missing}")
    folder = Path(folder).resolve()
    data: dict[str, dict[str, str]] = {}
    stats = load_script(source / "joint_statistics.py")
    logreg = load_script(source / "hospitals_logreg.py")
    with tempfile.TemporaryDirectory() as scratch:
        csvs = stats.make_data(list(names), Path(scratch))  # each hospital its own patients
        rows = logreg.write_rows(list(names), Path(scratch))
        for name in names:  # each organisation's folder holds only its own data
            home = folder / name / "data"
            home.mkdir(parents=True, exist_ok=True)
            data[name] = {
                key: str(Path(shutil.move(made[name], home / Path(made[name]).name)))
                for key, made in (("csv", csvs), ("rows", rows))
            }
    hosts = {n: Host(host, base_port + 2 * i, base_port + 2 * i + 1) for i, n in enumerate(names)}
    # a throwaway example in a temporary folder keeps its ledgers there too (its policies say so)
    temporary = {"allow_temporary": True} if temporary_root(folder) is not None else {}
    dp = {
        n: {
            "directory": str(folder / n / "ledger"),
            "dataset": f"patients-{n}",
            "epsilon": dp_epsilon,
            "delta": 1e-6,
            **temporary,
        }
        for n in names
    }
    # each hospital on its own Ray (started by `mpc party serve`), results kept in its folder
    extra = {n: {"ray_address": "local", "results_folder": "results"} for n in names}
    return write_deployment(
        folder,
        hosts,
        Host(host, base_port + 2 * len(names)),
        programs,
        data=data,
        dp=dp,
        party_extra=extra,
    )
