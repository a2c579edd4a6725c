"""WAN profiles: 3 parties and a dealer on namespace hosts, party links delayed and rate-limited.

Every organisation runs its real service (`mpc party serve --no-ray`, `mpc dealer serve`) on a
network-namespace host of its own (tests/netns.py: one veth per host on a private bridge, one
IP each); runs start as a user starts them (`start_run`, what `mpc run --policy` calls) at the
first party. A profile sets each party's uplink rate (`tc tbf` on its eth0) and the round trip
of each party-to-party link: a delay relay (benchmarks/wan_relay.py, one process per link
direction, on a "wan" host of its own) holds every chunk for half the round trip, and each
policy's peer addresses point at the relays. The dealer's links are neither delayed nor shaped.
Rows: the 10^6 fixed-point product, a chain of dependent products, joint statistics and
breast-cancer logistic regression (`piecewise`, `accurate-clamped`), each timed inside the
program at every party (slowest party, median of the repetitions) beside its floor
(`floor_seconds`, from the rounds and bytes the parties report) and the whole run's time.

Run (root): python benchmarks/bench_wan.py [--profiles lan wan far] [--quick] [--repeats N]
See benchmarks/README.md ("WAN profiles") for what is measured and how to read the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import msgpack
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCENARIOS = ROOT / "scenarios"
RELAY = HERE / "wan_relay.py"
MPC = str(Path(sys.executable).parent / "mpc")
PARTIES = ("east", "north", "south")
#: Ports on every host (each namespace has its own stack), and the relays' first port.
CONTROL_PORT, DATA_PORT, PROBE_PORT, RELAY_BASE = 7100, 7101, 7190, 9000
#: Protocol timeout of the runs (seconds): every receive waits at most this long.
RUN_TIMEOUT = 60.0
READY_TIMEOUT = 60.0
STARTER_TIMEOUT = 900.0
MARK = "WANBENCH "
#: The scenarios whose programs are rows (besides benchmarks/wan_program.py).
WORKLOAD_SCENARIOS = ("joint_statistics.py", "hospitals_logreg.py")


@dataclass(frozen=True)
class Profile:
    """One network profile.

    Attributes:
        name: the profile's name on the command line and in the table.
        rtt_s: round trip of every party-to-party link in seconds (half each way, added by
            the relays); None: no relay, the hosts talk over the bridge directly.
        mbit: each party's uplink rate in Mbit/s (`tc tbf` on its eth0, so both directions of
            a link are limited, each by its sender); None: not shaped.
    """

    name: str
    rtt_s: float | None = None
    mbit: float | None = None


PROFILES = {
    p.name: p for p in (Profile("lan"), Profile("wan", 0.040, 100.0), Profile("far", 0.100, 20.0))
}


@dataclass(frozen=True)
class Workload:
    """One row kind: an approved program file and the starter's command-line options."""

    name: str
    program: str
    argv: tuple[str, ...]


def workloads(quick: bool) -> list[Workload]:
    size = "100000" if quick else "1000000"
    length = "20" if quick else "50"
    epochs = "2" if quick else "10"
    product = ("--workload", "product", "--size", size)
    chain = ("--workload", "chain", "--size", "10", "--length", length)
    return [
        Workload(f"product 1e{len(size) - 1}", "wan_program.py", product),
        Workload(f"chain {length} x 10", "wan_program.py", chain),
        Workload("joint statistics", "joint_statistics.py", ()),
        *(
            Workload(
                f"logreg {s} {epochs} ep",
                "hospitals_logreg.py",
                ("--sigmoid", s, "--epochs", epochs),
            )
            for s in ("piecewise", "accurate-clamped")
        ),
    ]


def floor_seconds(rounds: float, bytes_sent: float, rtt_s: float, bits_per_s: float) -> float:
    """The least time of `rounds` dependent communication rounds in which one party sends
    `bytes_sent` bytes, over links of round trip `rtt_s` and uplinks of `bits_per_s`:
    rounds x rtt_s / 2 + bytes / bandwidth, local computation counted as free.

    A round is one exchange: every party sends, then waits for what it expects; the messages
    travel once, so a round costs a one-way delay (half the round trip), not a round trip
    (``rounds x RTT`` would be a request and a reply per round; bench_wan prints it too).
    Not exact either way: a round in which a party only sends (its own input) does not wait,
    so the next can overlap it (the time can come in a little under the floor); and `bytes_sent`
    is the most one party sends, while rounds in which different parties send in turn (x shared
    by one, then y by another) put more bytes on the critical path (the time is above it).
    """
    if rounds < 0 or bytes_sent < 0 or rtt_s < 0 or bits_per_s <= 0:
        raise ValueError("rounds, bytes and the round trip must be >= 0, the bandwidth > 0")
    return rounds * rtt_s / 2 + 8.0 * bytes_sent / bits_per_s


# ---- the programs the parties approve ---------------------------------------------------------
#: Appended to every approved program: time `party_program` at each party, print its costs
#: (the service shows what a program prints in its log as "[party] line").
TIMING_WRAPPER = """

# ---- appended by benchmarks/bench_wan.py: time the program at each party, print its costs
def _bench_wan_timed(inner):
    import json as _json
    import time as _time

    def party_program(ctx, args):
        start = _time.perf_counter()
        output = inner(ctx, args)
        seconds = _time.perf_counter() - start
        line = {"party": ctx.me, "seconds": seconds, "stats": ctx.channel.stats.as_dict()}
        print("WANBENCH " + _json.dumps(line), flush=True)
        return output

    return party_program


party_program = _bench_wan_timed(party_program)
"""


def write_programs(folder: Path) -> list[Path]:
    """The approved programs, each with `TIMING_WRAPPER` appended."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = [HERE / "wan_program.py", *(SCENARIOS / n for n in WORKLOAD_SCENARIOS)]
    paths = []
    for source in sources:
        path = folder / source.name
        path.write_text(source.read_text() + TIMING_WRAPPER)
        paths.append(path)
    return paths


# ---- hosts, links and services ----------------------------------------------------------------
def _netns() -> ModuleType:
    """tests/netns.py (the namespace hosts), imported on first use."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    return importlib.import_module("netns")


def _wait_line(proc: subprocess.Popen[bytes], needle: str, log: Path | None, what: str) -> str:
    """The first stdout line of `proc` (a pipe) or of its `log` file holding `needle`."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if log is not None:
            text = log.read_text(errors="replace") if log.exists() else ""
            for line in text.splitlines():
                if needle in line:
                    return line
            if proc.poll() is not None:
                break
            time.sleep(0.05)
            continue
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = proc.stdout.readline().decode(errors="replace")
        if needle in line:
            return line
        if not line:
            break
    tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
    raise RuntimeError(f"{what} did not start (exit code {proc.poll()}): {tail}")


def _stop(procs: Sequence[subprocess.Popen[bytes]], grace: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; reap. (The hosts kill leftovers too.)"""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def shape(host: Any, mbit: float | None) -> None:
    """Limit `host`'s uplink (eth0 egress) to `mbit` Mbit/s with tbf; None removes the limit.

    The bucket holds 2 ms at the rate (at least 8 KB), the queue 25 ms: every message is
    serialised at about the rate, and a bulk sender does not queue much behind it.
    """
    tc = shutil.which("tc") or "/usr/sbin/tc"
    if mbit is None:
        host.run([tc, "qdisc", "del", "dev", "eth0", "root"], timeout=15, check=False)
        return
    burst = max(8000, int(mbit * 1e6 / 8 * 0.002))
    tbf = ["tbf", "rate", f"{mbit:g}mbit", "burst", str(burst), "latency", "25ms"]
    host.run([tc, "qdisc", "replace", "dev", "eth0", "root", *tbf], timeout=15)


def relay_port(pair: int, kind: int) -> int:
    """The relay's listen port for ordered pair `pair`: kind 0 control, 1 data, 2 probe."""
    return RELAY_BASE + 3 * pair + kind


def ordered_pairs() -> list[tuple[str, str]]:
    return [(a, b) for a in PARTIES for b in PARTIES if a != b]


@contextlib.contextmanager
def relays(hosts: Mapping[str, Any], rtt_s: float, logs: Path) -> Iterator[None]:
    """One delay relay per link direction on the "wan" host (half the round trip each way)."""
    procs = []
    try:
        for k, (src, dst) in enumerate(ordered_pairs()):
            target = hosts[dst].ip
            routes = [
                f"{relay_port(k, 0)}={target}:{CONTROL_PORT}",
                f"{relay_port(k, 1)}={target}:{DATA_PORT}",
                f"{relay_port(k, 2)}={target}:{PROBE_PORT}",
            ]
            argv = [sys.executable, str(RELAY), "relay", "--delay-ms", f"{rtt_s * 500:g}"]
            argv += [a for r in routes for a in ("--route", r)]
            with (logs / f"relay-{src}-{dst}.log").open("wb") as err:
                proc = hosts["wan"].popen(argv, stdout=subprocess.PIPE, stderr=err)
            procs.append(proc)
            _wait_line(proc, "relay ready", None, f"the relay {src}->{dst}")
        yield
    finally:
        _stop(procs, grace=5.0)


@contextlib.contextmanager
def probes(hosts: Mapping[str, Any]) -> Iterator[None]:
    """The echo / sink server of `wan_relay` on every party host (for ping and bulk)."""
    procs = []
    try:
        for name in PARTIES:
            argv = [sys.executable, str(RELAY), "serve", "--port", str(PROBE_PORT)]
            proc = hosts[name].popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            procs.append(proc)
            _wait_line(proc, "server ready", None, f"the probe server on {name}")
        yield
    finally:
        _stop(procs, grace=5.0)


def _tool(host: Any, *argv: str) -> dict[str, Any]:
    done = host.run([sys.executable, str(RELAY), *argv], timeout=300)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _probe(hosts: Mapping[str, Any], profile: Profile, src: str, dst: str) -> str:
    """Where `src` reaches `dst`'s probe server: through their relay when the profile has one."""
    if profile.rtt_s is None:
        return f"{hosts[dst].ip}:{PROBE_PORT}"
    return f"{hosts['wan'].ip}:{relay_port(ordered_pairs().index((src, dst)), 2)}"


def measure_links(hosts: Mapping[str, Any], profile: Profile, pings: int) -> dict[str, Any]:
    """Round trips (16-byte ping-pong, every link direction) and one bulk transfer's rate,
    through the relays when the profile has them."""
    rtts: list[float] = []
    for src, dst in ordered_pairs():
        where = _probe(hosts, profile, src, dst)
        rtts += _tool(hosts[src], "ping", "--to", where, "--count", str(pings))["rtt_s"]
    src, dst = PARTIES[0], PARTIES[2]
    where = _probe(hosts, profile, src, dst)
    # about 2 s of data at the nominal rate (unshaped: 200 MB)
    size = int(profile.mbit * 1e6 / 8 * 2) if profile.mbit else 200_000_000
    rtt = statistics.median(rtts)
    transfer = _tool(hosts[src], "bulk", "--to", where, "--bytes", str(size))
    if not transfer["intact"]:
        raise RuntimeError(f"the bulk transfer {src}->{dst} arrived changed")
    # the answer comes back after one round trip: the data took seconds - rtt
    rate = 8 * size / max(transfer["seconds"] - rtt, 1e-9)
    return {
        "target_rtt_ms": profile.rtt_s * 1e3 if profile.rtt_s else None,
        "rtt_median_ms": rtt * 1e3,
        "rtt_min_ms": min(rtts) * 1e3,
        "rtt_max_ms": max(rtts) * 1e3,
        "rtt_p90_ms": float(np.percentile(rtts, 90)) * 1e3,
        "pings": len(rtts),
        "target_mbit": profile.mbit,
        "bulk_bytes": size,
        "bulk_mbit": rate / 1e6,
        "bytes_intact": True,
    }


def write_policies(
    folder: Path,
    hosts: Mapping[str, Any],
    programs: Sequence[Path],
    data: Mapping[str, Mapping[str, str]],
    relayed: bool,
) -> dict[str, Path]:
    """Every organisation's policy; with `relayed`, each party's peers are its relays."""
    from mpc.federation.example import Host, write_deployment
    from mpc.federation.policy import PartyPolicy

    places = {n: Host(hosts[n].ip, CONTROL_PORT, DATA_PORT) for n in PARTIES}
    policies = write_deployment(
        folder,
        places,
        Host(hosts["dealer"].ip, CONTROL_PORT),
        programs,
        data=data,
        protocol={"timeout": RUN_TIMEOUT},
        party_extra={n: {"ray_address": "none"} for n in PARTIES},
    )
    if not relayed:
        return policies
    wan = hosts["wan"].ip
    for k, (src, dst) in enumerate(ordered_pairs()):
        text = policies[src].read_text()
        direct = f'address = "{hosts[dst].ip}:{CONTROL_PORT}"\ndata_port = {DATA_PORT}\n'
        via = f'address = "{wan}:{relay_port(k, 0)}"\ndata_port = {relay_port(k, 1)}\n'
        if text.count(direct) != 1:
            raise RuntimeError(f"cannot find {dst}'s address in {policies[src]}")
        policies[src].write_text(text.replace(direct, via))
    for k, (src, dst) in enumerate(ordered_pairs()):  # check what the services will read
        peer = next(p for p in PartyPolicy.load(policies[src]).peers if p.name == dst)
        if (peer.host, peer.port, peer.data_port) != (wan, relay_port(k, 0), relay_port(k, 1)):
            raise RuntimeError(f"{src}'s policy does not reach {dst} through its relay")
    return policies


class Services:
    """The dealer and party services of one profile, their logs, and runs started at east."""

    def __init__(self, hosts: Mapping[str, Any], policies: Mapping[str, Path]) -> None:
        self.hosts, self.policies = hosts, policies
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self.runs = 0

    def start(self) -> None:
        for name in ["dealer", *PARTIES]:
            kind = "dealer" if name == "dealer" else "party"
            argv = [MPC, kind, "serve", "--policy", str(self.policies[name])]
            argv += ["--no-ray"] if kind == "party" else []
            self.logs[name] = self.policies[name].parent / "service.log"
            with self.logs[name].open("wb") as log:
                self.procs[name] = self.hosts[name].popen(argv, stdout=log, stderr=log)
        for name, proc in self.procs.items():
            _wait_line(proc, "listening on", self.logs[name], f"the {name} service")

    def stop(self) -> None:
        _stop(list(self.procs.values()))

    def marks(self, name: str) -> list[dict[str, Any]]:
        text = self.logs[name].read_text(errors="replace")
        return [json.loads(line.split(MARK, 1)[1]) for line in text.splitlines() if MARK in line]

    def run(self, program: Path, argv: Sequence[str], out: Path) -> dict[str, Any]:
        """One run started at the first party: its answer, time, and every party's costs."""
        starter = [sys.executable, str(Path(__file__).resolve()), "start"]
        starter += ["--policy", str(self.policies[PARTIES[0]]), "--program", str(program)]
        starter += ["--answer", str(out), "--", *argv]
        try:
            self.hosts[PARTIES[0]].run(starter, timeout=STARTER_TIMEOUT)
        except Exception as exc:
            logs = "\n".join(f"--- {n}\n{self.tail(n)}" for n in self.logs)
            raise RuntimeError(
                f"the run of {program.name} {list(argv)} failed: {exc}\n{logs}"
            ) from None
        self.runs += 1
        deadline = time.monotonic() + RUN_TIMEOUT
        while not all(len(self.marks(n)) >= self.runs for n in PARTIES):  # peers end just after
            if time.monotonic() > deadline:
                raise RuntimeError("a party did not report its run: " + self.tail(PARTIES[1]))
            time.sleep(0.05)
        answer: dict[str, Any] = msgpack.unpackb(out.read_bytes(), raw=False)
        answer["parties"] = {n: self.marks(n)[self.runs - 1] for n in PARTIES}
        return answer

    def tail(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")[-1500:] if name in self.logs else ""


# ---- checks -----------------------------------------------------------------------------------
def check(workload: Workload, output: Any, csvs: Mapping[str, str]) -> None:
    """Raise BenchmarkError unless the run's revealed output is right."""
    from mpc.bench import ULP, BenchmarkError, bench_data, check_product
    from mpc.scenario import load_script

    if workload.program == "wan_program.py":
        args = dict(zip(workload.argv[::2], workload.argv[1::2], strict=True))
        if args["--workload"] == "product":
            x, y = bench_data(int(args["--size"]))
            check_product(x, y, output["product"])
            return
        from wan_program import CHAIN_START  # benchmarks/, next to this script

        drift = CHAIN_START - np.asarray(output["product"], dtype=np.float64)
        if not np.all((drift >= 0) & (drift <= (int(args["--length"]) + 1) * ULP)):
            raise BenchmarkError(f"the chained product drifted by up to {drift.max()!r}")
    elif workload.program == "joint_statistics.py":
        stats = load_script(SCENARIOS / "joint_statistics.py")
        secure = stats.summarise({k: int(v) for k, v in output.items()})
        plain = stats.plaintext({n: Path(p) for n, p in csvs.items()})
        if any(abs(secure[k] - plain[k]) > 1e-9 * max(1.0, abs(plain[k])) for k in plain):
            raise BenchmarkError(f"joint statistics differ from plaintext: {secure} {plain}")
    else:
        correct, total = (int(v) for v in output["correct_of_total"])
        if correct / total < 0.9:
            raise BenchmarkError(f"logistic regression: test accuracy {correct}/{total}")


# ---- one profile ------------------------------------------------------------------------------
def run_profile(
    profile: Profile,
    hosts: Mapping[str, Any],
    work: Path,
    programs: Mapping[str, Path],
    data: Mapping[str, Mapping[str, str]],
    chosen: Sequence[Workload],
    repeats: int,
    pings: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from mpc.bench import progress

    folder = work / profile.name
    folder.mkdir()
    with contextlib.ExitStack() as stack:
        for name in PARTIES:
            shape(hosts[name], profile.mbit)
            stack.callback(shape, hosts[name], None)
        if profile.rtt_s is not None:
            stack.enter_context(relays(hosts, profile.rtt_s, folder))
        stack.enter_context(probes(hosts))
        links = measure_links(hosts, profile, pings)
        progress(
            f"{profile.name}: round trip {links['rtt_median_ms']:.3f} ms median "
            f"({links['rtt_min_ms']:.3f}-{links['rtt_max_ms']:.3f}, target "
            f"{links['target_rtt_ms']}), bulk {links['bulk_mbit']:.1f} Mbit/s "
            f"(target {links['target_mbit']})"
        )
        rtt = profile.rtt_s if profile.rtt_s is not None else links["rtt_median_ms"] / 1e3
        bits = profile.mbit * 1e6 if profile.mbit is not None else links["bulk_mbit"] * 1e6
        policies = write_policies(
            folder, hosts, list(programs.values()), data, profile.rtt_s is not None
        )
        services = Services(hosts, policies)
        stack.callback(services.stop)
        services.start()
        csvs = {n: data[n]["csv"] for n in PARTIES}
        out = hosts[PARTIES[0]].tmp / "answer.msgpack"
        services.run(programs["joint_statistics.py"], (), out)  # warm-up: first run's imports
        rows = []
        for workload in chosen:
            runs = []
            for _ in range(repeats):
                answer = services.run(programs[workload.program], workload.argv, out)
                check(workload, answer["output"], csvs)
                runs.append(answer)
            rows.append(_row(profile, workload, runs, rtt, bits))
            r = rows[-1]
            progress(
                f"{profile.name} {workload.name}: {r['seconds']:.3f} s (floor "
                f"{r['floor_seconds']:.3f} s, x{r['ratio']:.2f}; run {r['run_seconds']:.3f} s)"
            )
    return links, rows


def _row(
    profile: Profile, workload: Workload, runs: Sequence[Mapping[str, Any]], rtt: float, bits: float
) -> dict[str, Any]:
    """Median program time over the runs (each: its slowest party) and the floor from the
    largest rounds and bytes any party reported."""
    times = [max(p["seconds"] for p in r["parties"].values()) for r in runs]
    totals = [
        (
            sum(s["rounds"] for s in p["stats"].values()),
            sum(s["bytes_sent"] for s in p["stats"].values()),
        )
        for r in runs
        for p in r["parties"].values()
    ]
    rounds = max(t[0] for t in totals)
    sent = max(t[1] for t in totals)
    seconds = statistics.median(times)
    floor = floor_seconds(rounds, sent, rtt, bits)
    return {
        "profile": profile.name,
        "workload": workload.name,
        "argv": list(workload.argv),
        "repeats": len(runs),
        "seconds": seconds,
        "seconds_each": times,
        "run_seconds": statistics.median(r["seconds"] for r in runs),
        "rounds": rounds,
        "bytes_per_party": sent,
        "floor_rtt_s": rtt,
        "floor_bits_per_s": bits,
        "floor_seconds": floor,
        "rounds_x_rtt_seconds": rounds * rtt + 8.0 * sent / bits,
        "ratio": seconds / floor if floor > 0 else math.inf,
        "stats_first_run": {n: p["stats"] for n, p in runs[0]["parties"].items()},
        "verified": True,
        "load_1min": os.getloadavg()[0],
    }


# ---- output -----------------------------------------------------------------------------------
def format_tables(links: Mapping[str, Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> str:
    from mpc.bench import text_table

    link_lines = []
    for name, m in links.items():
        target = "-" if m["target_rtt_ms"] is None else f"{m['target_rtt_ms']:g}"
        rate = "-" if m["target_mbit"] is None else f"{m['target_mbit']:g}"
        link_lines.append(
            [
                name,
                target,
                f"{m['rtt_median_ms']:.2f}",
                f"{m['rtt_min_ms']:.2f}-{m['rtt_max_ms']:.2f}",
                rate,
                f"{m['bulk_mbit']:.1f}",
            ]
        )
    head = [
        "profile",
        "target RTT ms",
        "RTT ms (median)",
        "min-max",
        "target Mbit/s",
        "bulk Mbit/s",
    ]
    text = text_table(head, link_lines)
    lines = [
        [
            r["workload"],
            r["profile"],
            f"{r['seconds']:.3f}",
            f"{r['floor_seconds']:.3f}",
            f"{r['ratio']:.2f}",
            f"{r['rounds_x_rtt_seconds']:.3f}",
            f"{r['rounds']}",
            f"{r['bytes_per_party'] / 1e6:.2f}",
            f"{r['run_seconds']:.3f}",
        ]
        for r in sorted(rows, key=lambda r: (r["workload"], _order(r["profile"])))
    ]
    head = ["workload", "profile", "time s", "floor s", "ratio", "rounds x RTT s"]
    head += ["rounds", "MB/party", "run s"]
    return text + "\n\n" + text_table(head, lines)


def _order(profile: str) -> int:
    names = list(PROFILES)
    return names.index(profile) if profile in names else len(names)


def plot(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Time vs profile, one panel per workload: bars the program's time, black ticks its
    floor, red circles the whole run as the starter saw it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["workload"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        mine = sorted(
            (r for r in rows if r["workload"] == name), key=lambda r: _order(r["profile"])
        )
        xs = range(len(mine))
        ax.bar(xs, [r["seconds"] for r in mine], color="tab:blue", label="measured (median)")
        ax.scatter(
            xs, [r["floor_seconds"] for r in mine], marker="_", s=600, color="black", label="floor"
        )
        ax.scatter(
            xs,
            [r["run_seconds"] for r in mine],
            marker="o",
            facecolors="none",
            edgecolors="tab:red",
            label="whole run (starter)",
        )
        ax.set_xticks(list(xs), [r["profile"] for r in mine])
        ax.set_yscale("log")
        ax.set_title(name, fontsize="medium")
        ax.grid(True, axis="y", which="both", alpha=0.3)
    axes[0][0].set_ylabel("seconds (slowest party)")
    axes[0][0].legend(fontsize="small")
    fig.suptitle("3 parties on namespace hosts: time vs network profile")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---- the starter (runs inside the first party's namespace) ------------------------------------
def _plain(value: Any) -> Any:
    """msgpack's fallback for what an answer may hold: numpy arrays and scalars as lists and
    numbers, statistics objects as their dictionaries."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if hasattr(value, "as_dict"):
        return value.as_dict()
    raise TypeError(f"cannot write a {type(value).__name__} into a run's answer")


def start(policy: str, program: str, argv: Sequence[str], out: Path) -> int:
    """Start one run at the party of `policy` (as `mpc run` does); write the answer and the
    run's time to `out` (msgpack, as it came over the control channel: nothing is pickled).
    A party still busy with the previous run is asked again."""
    from mpc.errors import MpcError
    from mpc.federation.starter import start_run

    deadline = time.monotonic() + 30.0
    while True:
        began = time.perf_counter()
        try:
            answer, _ = start_run(policy, program, argv, timeout=STARTER_TIMEOUT)
            break
        except MpcError as exc:
            if "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    seconds = time.perf_counter() - began
    record = {"seconds": seconds, "output": answer["output"], "stats": answer["stats"]}
    out.write_bytes(msgpack.packb(record, use_bin_type=True, default=_plain))
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    s = sub.add_parser("start", help="(internal) start one run; used inside a namespace")
    s.add_argument("--policy", required=True)
    s.add_argument("--program", required=True)
    s.add_argument("--answer", type=Path, required=True)
    s.add_argument("argv", nargs=argparse.REMAINDER)
    parser.add_argument("--profiles", nargs="+", choices=list(PROFILES), default=list(PROFILES))
    parser.add_argument("--quick", action="store_true", help="smaller sizes, 2 epochs, 1 run")
    parser.add_argument("--repeats", type=int, default=None, help="runs per row (default 3)")
    parser.add_argument("--pings", type=int, default=None, help="round trips per link direction")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "wan.json")
    parser.add_argument("--plot", type=Path, default=HERE / "results" / "wan.png")
    args = parser.parse_args(argv)
    if args.command == "start":
        rest = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        return start(args.policy, args.program, rest, args.answer)

    if os.geteuid() != 0:
        print("bench_wan: needs root (network namespaces and tc); run it as root", file=sys.stderr)
        return 2
    from mpc.bench import progress, write_results
    from mpc.scenario import load_script

    repeats = args.repeats or (1 if args.quick else 3)
    pings = args.pings or (10 if args.quick else 20)
    if repeats < 1 or pings < 1:
        parser.error("--repeats and --pings must be at least 1")
    chosen = workloads(args.quick)
    for sig in (signal.SIGTERM, signal.SIGINT):  # cleanup runs on either (SIGINT: even when
        signal.signal(sig, _interrupt)  # a shell started this in the background, ignoring it)
    netns = _netns()
    began = time.perf_counter()
    links: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="mpc-bench-wan-") as scratch,
        netns.namespace_hosts([*PARTIES, "dealer", "wan"]) as hosts,
    ):
        work = Path(scratch)
        programs = {p.name: p for p in write_programs(work / "programs")}
        csvs = load_script(SCENARIOS / "joint_statistics.py").make_data(PARTIES, work / "data")
        npz = load_script(SCENARIOS / "hospitals_logreg.py").write_rows(PARTIES, work / "data")
        data = {n: {"csv": str(csvs[n]), "rows": str(npz[n])} for n in PARTIES}
        progress(
            f"hosts: {', '.join(f'{n} {h.ip}' for n, h in hosts.items())}; parties run in their "
            "service's process (mpc party serve --no-ray), 3 parties, additive, encrypted tcp"
        )
        for name in args.profiles:
            profile_links, profile_rows = run_profile(
                PROFILES[name], hosts, work, programs, data, chosen, repeats, pings
            )
            links[name] = profile_links
            rows += profile_rows
    elapsed = time.perf_counter() - began
    print(
        f"3 parties (mpc party serve --no-ray: each runs in its service's process), additive "
        f"over encrypted tcp; dealer on its own host, its links neither delayed nor shaped. "
        f"time: inside the program, slowest party, median of {repeats} runs; floor: rounds x "
        f"RTT/2 + bytes/bandwidth (lan: measured RTT and rate); run: the starter's whole run.\n"
    )
    print(format_tables(links, rows))
    document = {
        "links": links,
        "rows": rows,
        "config": {
            "profiles": {n: vars(PROFILES[n]) for n in args.profiles},
            "parties": list(PARTIES),
            "runtime": "mpc party serve --no-ray (each party in its service's process)",
            "dealer": "mpc dealer serve on its own host; its links neither delayed nor shaped",
            "repeats": repeats,
            "quick": args.quick,
            "seconds_total": elapsed,
        },
    }
    written = write_results(document, args.out)
    print(f"\nwrote {written} and {plot(rows, args.plot)} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench_wan: interrupted; hosts, relays and services removed", file=sys.stderr)
        sys.exit(130)
