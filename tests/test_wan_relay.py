"""The delay relay of benchmarks/bench_wan.py (benchmarks/wan_relay.py) and its floor formula.

Three namespace hosts (tests/netns.py): a client, the relay on a "wan" host, and an echo/sink
server. Needs root and iproute2: without them these tests fail (they must run in CI as root),
they are not skipped, as in tests/test_multihost.py. No Ray; about 4 s.

Tolerance: a relay of 20 ms one way adds 20-25 ms per direction: the median of 20 ping-pong
round trips through it lies in [40, 50] ms, and no round trip is under 40 ms (a chunk is never
forwarded before its due time). Measured on the 2-core development machine: about 41.4 ms
median (20.7 ms per direction), against under 0.2 ms without the relay.
"""

from __future__ import annotations

import select
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import netns
import pytest
from netns import Host

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_wan  # noqa: E402 - benchmarks/ is a folder of scripts, not a package
import wan_relay  # noqa: E402

RELAY = str(BENCHMARKS / "wan_relay.py")
SERVER_PORT = 9000
DELAY_MS = 20.0
PINGS = 20


def _started(proc: subprocess.Popen[bytes], needle: str) -> None:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    line = proc.stdout.readline().decode() if ready else ""
    assert needle in line, f"not started: {line!r}"


@pytest.fixture(scope="module")
def hosts() -> Iterator[dict[str, Host]]:
    with netns.namespace_hosts(["client", "wan", "server"]) as made:
        server = made["server"].popen(
            [sys.executable, RELAY, "serve", "--port", str(SERVER_PORT)], stdout=subprocess.PIPE
        )
        _started(server, "server ready")
        names = {h.netns for h in made.values()}
        yield made
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [ns for ns in names if ns in left], f"namespaces left behind: {left}"


def start_relay(hosts: dict[str, Host], port: int, delay_ms: float, target_port: int) -> None:
    """A relay on the wan host: `port` -> the server host's `target_port`, `delay_ms` each way.
    (The hosts' context stops it with the other processes.)"""
    route = f"{port}={hosts['server'].ip}:{target_port}"
    argv = [sys.executable, RELAY, "relay", "--delay-ms", str(delay_ms), "--route", route]
    _started(hosts["wan"].popen(argv, stdout=subprocess.PIPE), "relay ready")


def from_client(hosts: dict[str, Host], code: str) -> str:
    """Run python `code` (with wan_relay imported) on the client host; its stdout."""
    script = f"import sys; sys.path.insert(0, {str(BENCHMARKS)!r}); import wan_relay\n{code}"
    return hosts["client"].run([sys.executable, "-c", script], timeout=60).stdout


def round_trips(hosts: dict[str, Host], host: str, port: int) -> list[float]:
    code = f"print(wan_relay.ping({host!r}, {port}, {PINGS}))"
    return [float(t) for t in from_client(hosts, code).strip("[]\n").split(",")]


def test_the_relay_adds_the_configured_delay_each_way(hosts: dict[str, Host]) -> None:
    direct = round_trips(hosts, hosts["server"].ip, SERVER_PORT)
    start_relay(hosts, 9100, DELAY_MS, SERVER_PORT)
    relayed = round_trips(hosts, hosts["wan"].ip, 9100)
    per_direction_ms = statistics.median(relayed) / 2 * 1e3
    assert statistics.median(direct) < 2e-3, direct
    assert DELAY_MS <= per_direction_ms <= DELAY_MS + 5, relayed
    assert min(relayed) >= 2 * DELAY_MS / 1e3, relayed  # never forwarded early


def test_the_relay_passes_bytes_through_unchanged(hosts: dict[str, Host]) -> None:
    start_relay(hosts, 9200, 2.0, SERVER_PORT)
    where = f"{hosts['wan'].ip!r}, 9200"
    code = (
        "import hashlib, os\n"
        "payload = os.urandom(3 * 2**20 + 17)  # test data, not a secret\n"
        f"back = wan_relay.echo_check({where}, payload)\n"
        "print(len(payload), hashlib.sha256(payload).hexdigest())\n"
        "print(len(back), hashlib.sha256(back).hexdigest())\n"
        f"print(wan_relay.bulk({where}, 20 * 2**20)['intact'])\n"
    )
    sent, echoed, sunk = from_client(hosts, code).splitlines()
    assert echoed == sent  # 3 MiB of random bytes, back through the relay unchanged
    assert sunk == "True"  # the sink's SHA-256 of 20 MiB matches what was sent


def test_a_relay_whose_target_does_not_listen_closes_the_connection(
    hosts: dict[str, Host],
) -> None:
    """Like a refused connection: the transport's dialer sees the close and dials again."""
    start_relay(hosts, 9300, 2.0, SERVER_PORT + 1)  # nothing listens there
    where = f"({hosts['wan'].ip!r}, 9300)"
    code = (
        "import socket\n"
        f"s = socket.create_connection({where}, timeout=10)\n"
        "s.settimeout(10)\n"
        "print(repr(s.recv(1)))\n"
    )
    assert from_client(hosts, code).strip() == "b''"


def test_floor_formula_on_a_toy_case() -> None:
    # 10 rounds at 40 ms round trip: 10 one-way delays of 20 ms = 0.2 s; 1.25 MB at 100 Mbit/s
    # = 10^7 bits / 10^8 bit/s = 0.1 s
    assert bench_wan.floor_seconds(10, 1_250_000, 0.040, 100e6) == pytest.approx(0.3)
    assert bench_wan.floor_seconds(0, 0, 0.1, 20e6) == 0.0
    assert bench_wan.floor_seconds(4, 0, 0.1, 20e6) == pytest.approx(0.2)
    # the far profile: 2.5 MB over 20 Mbit/s is 1 s
    far = bench_wan.PROFILES["far"]
    assert far.rtt_s is not None and far.mbit is not None
    assert bench_wan.floor_seconds(0, 2_500_000, far.rtt_s, far.mbit * 1e6) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        bench_wan.floor_seconds(1, 1, 0.04, 0)


def test_a_route_is_parsed_and_a_bad_one_refused() -> None:
    assert wan_relay.parse_route("9001=10.0.0.2:7101") == wan_relay.Route(9001, "10.0.0.2", 7101)
    for bad in ("9001", "x=10.0.0.2:1", "9001=10.0.0.2", "9001=:7101"):
        with pytest.raises(Exception, match="LISTEN_PORT=HOST:PORT"):
            wan_relay.parse_route(bad)
