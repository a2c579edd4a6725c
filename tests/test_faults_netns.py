"""Faults between hosts (issue 15, item 4): the three hospitals' party services and the dealer
service each run on a network-namespace host of their own (tests/netns.py, as in
tests/test_multihost.py), a run starts as a user starts it (`mpc run PROGRAM --policy` at
north, the coordinator), and the test breaks something in the middle of the run: the dealer
killed (SIGKILL) or frozen (SIGSTOP), a party service killed or frozen, a party's link pulled
(its veth set down), and a party's and the dealer's uplinks throttled to 1 Mbit/s with
`tc ... tbf` (slow but alive).

Required, and checked here: a dead, frozen or cut-off party or dealer is reported within the
receive timeout plus 10 % (plus `SLACK`), to the starter as one line and to every surviving
party as its recorded error, each naming the party (or the dealer) and the operation; nothing
is revealed (no output recorded anywhere, nothing printed by the starter) and no DP ledger is
charged (the program ends with a DP release, charged when it begins); after the failed run no
TCP connection is left at any surviving host, and when the services stop no process is left in
any namespace. A slow but alive link does not fail a run that moves several MB with a receive
timeout 2 to 4 times shorter than its rounds.

`SLACK` (1.0 s, as in tests/test_faults.py) is what may come after the timeout and that the
code does not control, on a 2-core machine running four services and a starter: the survivors
waking up, their abort crossing the bridge, the starter's process printing and exiting (its
time is taken when it has exited). Measured here: at most 0.12 s beyond the timeout, and 0.3 s
in all for a killed service; docs/security.md has the times.

Needs root, iproute2 and `tc`: without them the tests fail, they are not skipped (CI runs as
root). The services run without Ray (`--no-ray`), so these are not `ray` tests. One set of hosts
serves the module; each test starts its own services (fresh ports, policies and ledgers), and
stops them (and checks that nothing is left) even when it fails. About 50 s.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import netns
import pytest
from netns import Host as NetHost

from mpc.dp.ledger import Ledger
from mpc.federation.example import Host, write_deployment

HOSPITALS = ("east", "north", "south")
#: Receive timeout of the runs (seconds), and what a detection may take beyond 110 % of it.
TIMEOUT = 2.0
SLACK = 1.0
LIMIT = TIMEOUT * 1.1 + SLACK
MPC = str(Path(sys.executable).parent / "mpc")
TC = shutil.which("tc") or "/usr/sbin/tc"
READY_TIMEOUT = 60.0
#: Control and data ports of each test's services (every host has its own network stack).
_PORTS = itertools.count(7600, 10)

#: The approved program of the fault tests: a long loop of products (south creates its
#: `marker` file once the loop is under way: the fault is struck then), then a DP release,
#: charged to every party's ledger when it begins. The loop's products need the dealer's
#: items as they go (south fetches the corrections of the additive triples).
LOOP_THEN_RELEASE = """
from pathlib import Path

import numpy as np

from mpc.dp import DiscreteLaplaceMechanism, dp_reveal


def party_program(ctx, args):
    x = ctx.input("east", np.full(4, 0.5) if ctx.me == "east" else None, bound=1)
    y = ctx.input("north", np.full(4, 0.5) if ctx.me == "north" else None, bound=1)
    for i in range(100_000):
        x = x * y + y
        x = x * y
        if i == 20 and "marker" in ctx.private:
            Path(ctx.private["marker"]).touch()
    ones = [ctx.input(p, np.ones(1, np.int64) if ctx.me == p else None, kind="int")
            for p in ctx.parties]
    mechanism = DiscreteLaplaceMechanism(epsilon=0.5, sensitivity=1.0, frac_bits=0)
    count = dp_reveal(ctx, ctx.sum(ones), mechanism, max_colluding=ctx.n - 1, label="count")
    return {"count": count, "x": ctx.reveal(x)}
"""

#: The slow-link program: south shares N values (256 KiB to each peer), all multiply them by
#: east's (a Beaver product: the dealer sends south 256 KiB of corrections, and every party
#: sends each other 512 KiB), and open the result (256 KiB from each party to each other).
SLOW_VALUES = 1 << 15
SLOW_PROGRAM = f"""
import numpy as np

N = {SLOW_VALUES}


def party_program(ctx, args):
    x = ctx.input("south", np.full(N, 0.25) if ctx.me == "south" else None, bound=1)
    y = ctx.input("east", np.full(N, 0.5) if ctx.me == "east" else None, bound=1)
    return {{"opened": ctx.reveal(x + x * y)}}


def report(output, args):
    return f"{{len(output['opened'])}} values, sum {{sum(output['opened'])}}"
"""


# ---- hosts and services ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hosts() -> Iterator[dict[str, NetHost]]:
    with netns.namespace_hosts([*HOSPITALS, "dealer"]) as made:
        tags = {h.netns for h in made.values()}
        yield made
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [ns for ns in tags if ns in left], f"namespaces left behind: {left}"


class Deployment:
    """The dealer and hospital services of one test on the module's hosts: policies (with a
    results folder, a `marker` data source and a DP ledger each), processes and logs."""

    def __init__(self, hosts: Mapping[str, NetHost], folder: Path, source: str) -> None:
        self.hosts = hosts
        program = folder / "program.py"
        program.write_text(source)
        self.markers = {n: folder / f"{n}.looping" for n in HOSPITALS}
        self.dp = {
            n: {
                "directory": str(folder / n / "ledger"),
                "dataset": f"patients-{n}",
                "epsilon": 5.0,
                "delta": 1e-6,
                "allow_temporary": True,  # the test's own folder
            }
            for n in HOSPITALS
        }
        port = next(_PORTS)
        self.policies = write_deployment(
            folder,
            {n: Host(hosts[n].ip, port, port + 1) for n in HOSPITALS},
            Host(hosts["dealer"].ip, port),
            [program],
            data={n: {"marker": str(self.markers[n])} for n in HOSPITALS},
            protocol={"timeout": TIMEOUT},
            party_extra={n: {"results_folder": "results"} for n in HOSPITALS},
            dp=self.dp,
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    def start(self) -> None:
        for name in ["dealer", *HOSPITALS]:
            kind = "dealer" if name == "dealer" else "party"
            argv = [MPC, kind, "serve", "--policy", str(self.policies[name])]
            if kind == "party":
                argv.append("--no-ray")
            self.logs[name] = self.policies[name].parent / "service.log"
            with self.logs[name].open("wb") as log:
                self.procs[name] = self.hosts[name].popen(argv, stdout=subprocess.PIPE, stderr=log)
        deadline = time.monotonic() + READY_TIMEOUT
        for name, proc in self.procs.items():
            assert proc.stdout is not None
            ready, _, _ = select.select(
                [proc.stdout], [], [], max(0.0, deadline - time.monotonic())
            )
            line = proc.stdout.readline().decode() if ready else ""
            assert "listening on" in line, f"{name} did not start: {line!r}\n{self.log(name)}"

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace") if name in self.logs else ""

    def starter(self) -> subprocess.Popen[bytes]:
        """`mpc run program.py --policy north/policy.toml` on north's host (not waited for)."""
        policy = self.policies["north"]
        program = policy.parent / "programs" / "program.py"
        return self.hosts["north"].popen(
            [MPC, "run", str(program), "--policy", str(policy)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def results(self, name: str) -> list[dict[str, Any]]:
        """The runs `name` recorded, each with the wall-clock time its file was written."""
        folder = self.policies[name].parent / "results"
        entries = []
        for path in sorted(folder.glob("run-*.json"), key=lambda p: p.stat().st_mtime):
            entry: dict[str, Any] = json.loads(path.read_text())
            entry["written"] = path.stat().st_mtime
            entries.append(entry)
        return entries

    def recorded(self, name: str, limit: float) -> dict[str, Any]:
        """The one run `name` recorded, waiting up to `limit` s for it."""
        deadline = time.monotonic() + limit
        while not self.results(name) and time.monotonic() < deadline:
            time.sleep(0.02)
        entries = self.results(name)
        assert len(entries) == 1, f"{name} recorded {entries}\n{self.log(name)}"
        return entries[0]

    def charged(self) -> list[str]:
        """The parties whose ledger holds a release."""
        return [
            n
            for n, dp in self.dp.items()
            if Ledger.paths(dp["directory"], dp["dataset"])[0].exists()
            and Ledger.open(dp["directory"], dp["dataset"]).releases
        ]

    def stop(self) -> None:
        """SIGKILL a stopped (frozen) service, SIGTERM the others; every one must exit."""
        for proc in self.procs.values():
            if proc.poll() is None:
                stopped = _state(proc.pid) == "T"
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL if stopped else signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
                raise AssertionError(f"{name}'s service did not stop on SIGTERM") from None
            finally:
                if proc.stdout is not None:
                    proc.stdout.close()


def _state(pid: int) -> str | None:
    """The state letter of process `pid` (R, S, T, ...), or None if there is none."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


@contextlib.contextmanager
def deployment(hosts: Mapping[str, NetHost], folder: Path, source: str) -> Iterator[Deployment]:
    made = Deployment(hosts, folder, source)
    try:
        made.start()
        yield made
    finally:
        made.stop()
    left = {h.name: _netns_pids(h) for h in hosts.values()}
    assert not any(left.values()), f"processes left in the hosts: {left}"


def _netns_pids(host: NetHost) -> list[int]:
    out = subprocess.run(
        ["ip", "netns", "pids", host.netns], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _connections(host: NetHost, apart: str) -> list[str]:
    """The established TCP connections of `host` (its services only listen between runs),
    but those with the host at address `apart` (a frozen service: it keeps its connections
    open, and the dealer its end of one until its idle timeout)."""
    out = host.run(["ss", "-Htn", "state", "established"], timeout=10).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return [" ".join(r) for r in rows if r[3].rsplit(":", 1)[0] != apart]


def assert_no_connection_left(hosts: list[NetHost], wait: float, apart: str = "") -> None:
    deadline = time.monotonic() + wait
    while True:
        left = {h.name: _connections(h, apart) for h in hosts}
        if not any(left.values()):
            return
        assert time.monotonic() < deadline, f"connections left after the run: {left}"
        time.sleep(0.1)


def _when_created(path: Path, then: Callable[[], None], limit: float = 60.0) -> None:
    def watch() -> None:
        deadline = time.monotonic() + limit
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        then()

    threading.Thread(target=watch, daemon=True).start()


def _veth(host: NetHost) -> str:
    """The root-namespace end of `host`'s eth0 (its side of the cable, at the bridge)."""
    line = host.run(["ip", "-o", "link", "show", "eth0"], timeout=10).stdout
    index = line.split(":", 2)[1].strip().split("@if", 1)[1]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for row in links.splitlines():
        number, name = row.split(":", 2)[:2]
        if number.strip() == index:
            return name.strip().split("@", 1)[0]
    raise RuntimeError(f"no root-namespace peer of {host.name}'s eth0 (ifindex {index})")


# ---- the dealer or a party killed or frozen, a link pulled -------------------------------------

FAULTS = [
    ("dealer", "SIGKILL"),
    ("dealer", "SIGSTOP"),
    ("south", "SIGKILL"),
    ("south", "SIGSTOP"),
    ("south", "link down"),
]


@pytest.mark.parametrize(("victim", "fault"), FAULTS, ids=[f"{v}-{f}" for v, f in FAULTS])
def test_a_fault_between_hosts_is_one_clear_error_at_the_starter_and_every_party(
    hosts: dict[str, NetHost], tmp_path: Path, victim: str, fault: str
) -> None:
    """north starts the run; `victim` is struck once south's loop is under way."""
    veth = _veth(hosts[victim]) if fault == "link down" else ""
    try:
        with deployment(hosts, tmp_path, LOOP_THEN_RELEASE) as made:
            hit: list[tuple[float, float]] = []  # (monotonic, wall clock)

            def strike() -> None:
                if fault == "link down":  # the cable pulled at the switch: no FIN, no reset
                    subprocess.run(["ip", "link", "set", veth, "down"], check=True)
                else:
                    os.kill(made.procs[victim].pid, getattr(signal, fault))
                hit.append((time.monotonic(), time.time()))

            _when_created(made.markers["south"], strike)
            starter = made.starter()
            out, err = starter.communicate(timeout=120)
            ended = time.monotonic()
            assert hit, f"the run ended before the fault: {err.decode()}\n{made.log('north')}"
            detected = ended - hit[0][0]
            message = err.decode().strip()
            print(f"\n{victim} {fault}: the starter's error {detected:.2f} s after: {message}")

            # the starter: one line naming the victim and the operation, within the limit
            assert starter.returncode == 1 and out == b"", (starter.returncode, out)
            assert len(message.splitlines()) == 1, message
            assert f"'{victim}'" in message and "in operation '" in message, message
            assert detected <= LIMIT, f"the starter heard {detected:.2f} s after the fault"

            # every party that can still record: its error names the victim and the operation
            recorders = [n for n in HOSPITALS if n != victim or fault == "link down"]
            for name in recorders:
                entry = made.recorded(name, LIMIT)
                after = entry["written"] - hit[0][1]
                print(f"{name} recorded {after:.2f} s after: {entry.get('error')}")
                assert "output" not in entry, f"{name} revealed something: {entry}"
                error = entry["error"]
                others = [p for p in HOSPITALS if p != name] if name == victim else [victim]
                assert any(f"'{p}'" in error for p in others), (name, error)
                assert "in operation '" in error, (name, error)
                assert after <= LIMIT, f"{name} recorded its error {after:.2f} s after the fault"
            assert made.charged() == [], "a DP ledger was charged by a run that failed"

            if fault == "link down":
                subprocess.run(["ip", "link", "set", veth, "up"], check=True)
            running = [h for n, h in hosts.items() if n != victim or fault == "link down"]
            frozen = hosts[victim].ip if fault == "SIGSTOP" else ""
            assert_no_connection_left(running, 2 * TIMEOUT + SLACK, apart=frozen)
    finally:
        if veth:
            subprocess.run(["ip", "link", "set", veth, "up"], check=False)


# ---- a slow but alive link ---------------------------------------------------------------------


def test_a_link_throttled_to_1_mbit_does_not_fail_a_run_of_several_mb(
    hosts: dict[str, NetHost], tmp_path: Path
) -> None:
    """south's and the dealer's uplinks at 1 Mbit/s (tbf on their eth0): south sends its
    peers 2 MiB in all (rounds of 4-8 s through its uplink), the dealer sends south 256 KiB of
    corrections (2 s, while the others wait for south), with a receive timeout of 2 s."""
    throttled = [hosts["south"], hosts["dealer"]]
    with deployment(hosts, tmp_path, SLOW_PROGRAM) as made:
        try:
            for host in throttled:
                netns.rate_limit(host, 1)
            began = time.monotonic()
            starter = made.starter()
            out, err = starter.communicate(timeout=240)
            seconds = time.monotonic() - began
        finally:
            for host in throttled:
                host.run([TC, "qdisc", "del", "dev", "eth0", "root"], timeout=15, check=False)
        print(f"\nslow link: the run took {seconds:.1f} s ({seconds / TIMEOUT:.0f} timeouts)")
        errors = {n: [r.get("error") for r in made.results(n)] for n in HOSPITALS}
        assert starter.returncode == 0, f"{err.decode()}\n{errors}"
        expected = 0.25 + 0.25 * 0.5
        total = expected * SLOW_VALUES
        count, _, _, printed = out.decode().splitlines()[0].split()
        assert int(count) == SLOW_VALUES and float(printed) == pytest.approx(total, abs=1), out
        for name in HOSPITALS:
            opened = made.recorded(name, 30)["output"]["opened"]
            assert opened == pytest.approx([expected] * SLOW_VALUES, abs=2**-15), name
        # 2 MiB through south's uplink takes 17 s at 1 Mbit/s: it did go through the throttle
        assert seconds > 2**21 * 8 / 1e6, f"the throttle did not slow the run ({seconds:.1f} s)"
        assert made.charged() == []
