"""A whole deployment across organisations on loopback, in this process (no Ray): one
`PartyService` per party, the `DealerService`, each under its own policy file."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mpc.federation.dealer_service import DealerService
from mpc.federation.example import Host, write_deployment
from mpc.federation.party_service import PartyService
from mpc.federation.policy import DealerPolicy, PartyPolicy
from mpc.federation.starter import start_run

HOSPITALS = ("east", "north", "south")
SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_local(
    folder: Path,
    programs: Sequence[Path],
    names: Sequence[str] = HOSPITALS,
    *,
    dealer: bool = True,
    **kwargs: Any,
) -> dict[str, Path]:
    ports = free_ports(2 * len(names) + 1)
    hosts = {n: Host("127.0.0.1", ports[2 * i], ports[2 * i + 1]) for i, n in enumerate(names)}
    return write_deployment(
        folder, hosts, Host("127.0.0.1", ports[-1]) if dealer else None, programs, **kwargs
    )


@contextlib.contextmanager
def running(policies: Mapping[str, Path]) -> Iterator[dict[str, Any]]:
    """Start the dealer (if any) and every party service; close them all afterwards."""
    services: dict[str, Any] = {}
    try:
        if "dealer" in policies:
            services["dealer"] = DealerService(DealerPolicy.load(policies["dealer"]))
            services["dealer"].start()
        for name, path in policies.items():
            if name != "dealer":
                services[name] = PartyService(PartyPolicy.load(path))
                services[name].start()
        yield services
    finally:
        for service in services.values():
            service.close()


def start(
    policies: Mapping[str, Path], starter: str, program: Path, argv: Sequence[str] = ()
) -> Any:
    answer, _text = start_run(policies[starter], program, argv, timeout=120.0)
    return answer["output"]
