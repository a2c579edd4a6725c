"""Soak: many consecutive runs of joint statistics on ONE session, watching for leaks.

One `Session` (3 parties as Ray actors, encrypted TCP, the trusted dealer generating on demand)
runs scenarios/joint_statistics.py's program `--runs` times. After the warm-up run and every
`--every` runs it reads the resident memory (VmRSS) and the open file descriptors of each party,
the dealer and this driver from /proc (Linux only). Checks, exit status 1 if one fails: every run
returns the first run's result at every party, and that result is the plaintext statistics;
from the warm-up to the end, no process's resident memory grows by 10 % or more, and none holds
more file descriptors at a later reading than after the warm-up. tests/test_soak.py runs the
same check, shorter.

Run:  python benchmarks/soak.py [--runs 200] [--warmup 10] [--every 10] [--out FILE.json]
Figures: benchmarks/README.md ("Soak").
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCENARIO = HERE.parent / "scenarios" / "joint_statistics.py"
DEFAULT_OUT = HERE / "results" / "soak.json"
#: Largest resident-memory growth from the warm-up to the end, in percent (issue 15 item 5).
RSS_LIMIT_PERCENT = 10.0
#: Largest relative difference between the secure and the plaintext statistics (the scenario's).
PLAINTEXT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Reading:
    """One process at one moment.

    Attributes:
        rss_kib: its resident set size (VmRSS in /proc/PID/status), KiB.
        fds: how many file descriptors it holds open (entries of /proc/PID/fd).
    """

    rss_kib: int
    fds: int


@dataclass
class SoakReport:
    """What a soak saw.

    Attributes:
        runs: how many runs it made.
        warmup: the run after which growth is measured from.
        pids: the process id of each party, of "dealer" and of "driver".
        samples: the readings of every process after some runs (run number -> process -> reading).
        seconds: each run's wall time at the driver.
        first: the first run's result at each party.
        differing: the runs (numbered from 1) whose result differed from the first run's at some
            party, or differed between parties.
    """

    runs: int
    warmup: int
    pids: dict[str, int]
    samples: dict[int, dict[str, Reading]] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)
    first: dict[str, Any] = field(default_factory=dict)
    differing: list[int] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """Each process's memory and descriptors after the warm-up and at the end."""
        start, end = self.samples[self.warmup], self.samples[self.runs]
        after = [r for r in self.samples if r >= self.warmup]
        rows = []
        for name in self.pids:
            a, b = start[name], end[name]
            rows.append(
                {
                    "process": name,
                    "pid": self.pids[name],
                    "rss_warmup_kib": a.rss_kib,
                    "rss_end_kib": b.rss_kib,
                    "rss_growth_percent": 100.0 * (b.rss_kib - a.rss_kib) / a.rss_kib,
                    "rss_growth_kib_per_run": (b.rss_kib - a.rss_kib) / (self.runs - self.warmup),
                    "fds_warmup": a.fds,
                    "fds_end": b.fds,
                    "fds_max": max(self.samples[r][name].fds for r in after),
                }
            )
        return rows


def read_rss_kib(pid: int) -> int:
    """Resident set size of process `pid` (VmRSS), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line (a kernel thread or a zombie?)")


def count_fds(pid: int) -> int:
    """How many file descriptors process `pid` holds open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def read(pids: Mapping[str, int]) -> dict[str, Reading]:
    return {name: Reading(read_rss_kib(pid), count_fds(pid)) for name, pid in pids.items()}


def session_processes(session: Any) -> dict[str, int]:
    """The process of each party, of the dealer and of this driver, for a started session with
    runtime="ray" whose actors run on this machine.

    The actors' pids come from the Ray runtime's own record (`RayParties.process_of` and
    `.processes`, each tag reported by the actor itself), as tests/test_faults.py reads them.
    """
    backend: Any = session._backend
    parties: dict[str, int] = {name: tag.pid for name, tag in backend.process_of.items()}
    others = [tag.pid for tag in backend.processes if tag.pid not in parties.values()]
    if sorted(parties) != sorted(session.parties) or len(others) != 1:
        raise RuntimeError(
            "cannot tell the party and dealer processes apart (the soak needs runtime='ray', the "
            f"trusted dealer and Linux /proc on this machine): parties {parties}, others {others}"
        )
    return {**{n: parties[n] for n in session.parties}, "dealer": others[0], "driver": os.getpid()}


def soak(
    session: Any,
    program: Callable[..., Any],
    runs: int,
    *,
    warmup: int,
    every: int = 10,
    progress: Callable[[str], None] | None = None,
) -> SoakReport:
    """Run `program` `runs` times on the started `session`; read every process after run
    `warmup`, every `every` runs and after the last; compare each run's result to the first's."""
    if not 0 < warmup < runs:
        raise ValueError(f"need 0 < warmup < runs, got warmup={warmup}, runs={runs}")
    report = SoakReport(runs, warmup, session_processes(session))
    started = time.perf_counter()
    for run in range(1, runs + 1):
        result = session.run(program)
        report.seconds.append(result.seconds)
        outputs = dict(result.outputs)
        if run == 1:
            report.first = outputs
        alike = all(v == outputs[session.parties[0]] for v in outputs.values())
        if outputs != report.first or not alike:
            report.differing.append(run)
        if run in (warmup, runs) or run % every == 0:
            report.samples[run] = read(report.pids)
        if progress is not None and run % every == 0:
            now = report.samples[run]
            progress(
                f"run {run:>4}/{runs}  {time.perf_counter() - started:6.1f} s  "
                + "  ".join(f"{n} {r.rss_kib / 1024:.1f} MiB {r.fds} fds" for n, r in now.items())
            )
    return report


def problems(
    report: SoakReport,
    rss_limit_percent: float = RSS_LIMIT_PERCENT,
    rss_limit_kib: float = float("inf"),
) -> list[str]:
    """What the soak found wrong (empty: the results agreed, nothing grew): runs whose result
    differed, a process whose resident memory grew by `rss_limit_percent` % or `rss_limit_kib`
    KiB or more, and one that held more file descriptors at some reading than after warm-up."""
    found = []
    if report.differing:
        found.append(f"results differ from the first run's in runs {report.differing[:10]}")
    for row in report.rows():
        grown = row["rss_end_kib"] - row["rss_warmup_kib"]
        if row["rss_growth_percent"] >= rss_limit_percent or grown >= rss_limit_kib:
            found.append(
                f"{row['process']}: resident memory grew {grown} KiB "
                f"({row['rss_growth_percent']:.1f} %) in {report.runs - report.warmup} runs "
                f"(limits {rss_limit_percent:g} %, {rss_limit_kib:g} KiB)"
            )
        if row["fds_max"] > row["fds_warmup"]:
            found.append(
                f"{row['process']}: open file descriptors grew from {row['fds_warmup']} to "
                f"{row['fds_max']} (at the end {row['fds_end']})"
            )
    return found


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        f"{'process':<8} {'RSS warm-up':>12} {'RSS end':>10} {'growth':>8} {'per run':>9} "
        f"{'fds warm-up':>12} {'fds end':>8}",
        f"{'':<8} {'MiB':>12} {'MiB':>10} {'%':>8} {'KiB':>9}",
    ]
    for r in rows:
        lines.append(
            f"{r['process']:<8} {r['rss_warmup_kib'] / 1024:>12.1f}"
            f" {r['rss_end_kib'] / 1024:>10.1f} {r['rss_growth_percent']:>+8.2f}"
            f" {r['rss_growth_kib_per_run']:>+9.1f}"
            f" {r['fds_warmup']:>12} {r['fds_end']:>8}"
        )
    return "\n".join(lines)


def max_relative_difference(secure: Mapping[str, float], plain: Mapping[str, float]) -> float:
    return max(abs(secure[k] - v) / max(1.0, abs(v)) for k, v in plain.items())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="runs on the one session")
    parser.add_argument("--warmup", type=int, default=10, help="growth is measured from this run")
    parser.add_argument("--every", type=int, default=10, help="read the processes every N runs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import ray

    from mpc.parties.ray_setup import quiet_token_notice
    from mpc.scenario import load_script
    from mpc.session import Session

    args = parse_args(argv)
    scenario = load_script(SCENARIO)
    names = list(scenario.HOSPITALS[:3])
    paths = scenario.patient_data(names)
    plain = scenario.plaintext(paths)
    private = {n: {"csv": str(p)} for n, p in paths.items()}
    quiet_token_notice()
    ray.init(
        address="local",  # a new instance of our own, even if a cluster is up
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    started = time.perf_counter()
    try:
        with Session(names, private=private) as session:
            setup = time.perf_counter() - started
            report = soak(
                session,
                scenario.joint_statistics,
                args.runs,
                warmup=args.warmup,
                every=args.every,
                progress=lambda line: print(line, file=sys.stderr, flush=True),
            )
    finally:
        ray.shutdown()
    total = time.perf_counter() - started
    found = problems(report)
    worst = max_relative_difference(report.first[names[0]], plain)
    if worst >= PLAINTEXT_TOLERANCE:
        found.append(f"the result differs from the plaintext statistics by {worst:.2e}")
    rows = report.rows()
    print(
        f"{args.runs} runs of joint_statistics on one session (3 parties, tcp, trusted dealer); "
        f"growth from run {args.warmup} to run {args.runs}\n"
    )
    print(format_table(rows))
    seconds = report.seconds
    print(
        f"\nrun wall time: median {statistics.median(seconds):.3f} s, max {max(seconds):.3f} s; "
        f"session start {setup:.1f} s, total {total:.1f} s"
    )
    print(
        f"results identical in all runs: {not report.differing}; "
        f"max relative difference to plaintext {worst:.1e}"
    )
    print("OK" if not found else "FAILED:\n  " + "\n  ".join(found))
    record = {
        "command": " ".join(["python", "benchmarks/soak.py", *(argv or sys.argv[1:])]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "ray": ray.__version__,
            "platform": platform.platform(),
        },
        "runs": args.runs,
        "warmup": args.warmup,
        "rows": rows,
        "samples": {
            str(run): {n: asdict(r) for n, r in readings.items()}
            for run, readings in report.samples.items()
        },
        "run_seconds": seconds,
        "session_start_seconds": setup,
        "total_seconds": total,
        "results_identical": not report.differing,
        "plaintext_max_relative_difference": worst,
        "result": report.first[names[0]],
        "problems": found,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written: {args.out}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
