"""Shared helpers for the in-process protocol tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from mpc.dealers.seeded import InsecureLocalDealer
from mpc.encoding import FixedPoint
from mpc.parties.local import LocalParties
from mpc.parties.party import SessionConfig
from mpc.parties.transport import Transport
from mpc.protocols.registry import available_protocols, get_protocol
from mpc.scenario import load_script

NAMES = ["alice", "bob", "carol", "dave", "erin"]
SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
#: Scenario options for in-process smoke tests.
LOCAL = ["--runtime", "local", "--allow-insecure"]


def load_scenario(name: str) -> ModuleType:
    """Import scenarios/<name>.py."""
    return load_script(SCENARIOS / f"{name}.py")


def protocol_cases(sizes: tuple[int, ...] = (2, 3, 5)) -> list[tuple[str, int]]:
    """Every registered protocol with every party count it supports."""
    cases = []
    for name, cls in available_protocols().items():
        for n in sizes:
            try:
                cls.check_parties(n, None)
            except ValueError:
                continue
            cases.append((name, n))
    return cases


def local_parties(
    protocol: str,
    n: int,
    *,
    threshold: int | None = None,
    fixed_point: FixedPoint | None = None,
    private: Mapping[str, Mapping[str, Any]] | None = None,
    timeout: float = 10.0,
    dealer: bool = True,
) -> LocalParties:
    cls = get_protocol(protocol)
    t = cls.check_parties(n, threshold)
    config = SessionConfig(
        tuple(NAMES[:n]), protocol, t, fixed_point or FixedPoint(), timeout=timeout
    )
    the_dealer = InsecureLocalDealer(cls.make_scheme(n, t)) if dealer else None
    return LocalParties(config, the_dealer, private)


def run(protocol: str, n: int, program: Any, *args: Any, **kw: Any) -> dict[str, Any]:
    """Run a program once in-process; return each party's output."""
    parties = local_parties(protocol, n)
    return {name: out.output for name, out in parties.run(program, *args, **kw).items()}


def record_traffic(
    transport: Transport,
) -> tuple[dict[object, np.ndarray], dict[object, list[np.ndarray]]]:
    """Record what one party sends (by tag) and receives (by tag, one array per sender) from now
    on, by wrapping its transport's `send` and `recv`; returns the two (live) dictionaries."""
    sent: dict[object, np.ndarray] = {}
    received: dict[object, list[np.ndarray]] = {}
    original_send, original_recv = transport.send, transport.recv

    def recording_send(to: int, tag: Any, array: np.ndarray, label: str = "") -> int:
        sent[tag] = np.array(array)
        return original_send(to, tag, array, label)

    def recording_recv(frm: int, tag: Any, timeout: float, label: str = "") -> np.ndarray:
        array = original_recv(frm, tag, timeout, label)
        received.setdefault(tag, []).append(np.array(array))
        return array

    transport.send = recording_send  # type: ignore[method-assign]
    transport.recv = recording_recv  # type: ignore[method-assign]
    return sent, received


def process_state(pid: int) -> str | None:
    """The state letter of process `pid` (R, S, T, Z, ...), or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None
