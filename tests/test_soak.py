"""Soak, short (issue 15 item 5): many runs of joint statistics on one Ray session return the same
result every time and leak neither memory nor file descriptors in any party, the dealer or the
driver.

The full soak (200 runs, figures in benchmarks/README.md) is benchmarks/soak.py; these tests run
its code with a longer warm-up and fewer runs, and show that its check fails on a program that
leaks a socket and 100 KiB per run.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import load_scenario

from mpc.program import PartyContext
from mpc.scenario import load_script
from mpc.session import Session

SOAK = load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py")
SCENARIO = load_scenario("joint_statistics")
PARTIES = SCENARIO.HOSPITALS[:3]
#: Growth is measured over the runs after the warm-up: the first few dozen runs still grow each
#: process by 20-40 KiB a run (Ray's and the allocator's own warm-up), slowing down after.
WARMUP = 50
MEASURED = 100
#: Largest resident-memory growth of any process over the measured runs, KiB. Measured here
#: (runs 50 to 150, several soaks): at most about 1.5 MiB, in `east` (the party the dealer sends
#: corrections to) and the driver, each slowing down; a leak of 100 KiB a run adds 10 MiB.
#: 4 MiB (40 KiB a run) leaves a margin of about 2.5 either way. The 10 % of the full soak would
#: be about 10 MiB here: too close to the leak to tell it from noise in 100 runs.
RSS_BOUND_KIB = 4096
#: What the leaking program keeps per run at each party.
LEAK_BYTES = 100 * 1024


def _soak(program: Any) -> Any:
    paths = SCENARIO.patient_data(PARTIES)
    private = {n: {"csv": str(p)} for n, p in paths.items()}
    with Session(PARTIES, private=private) as session:
        return SOAK.soak(session, program, WARMUP + MEASURED, warmup=WARMUP)


@pytest.mark.usefixtures("ray_local")
def test_joint_statistics_on_one_session_is_stable_and_leaks_nothing() -> None:
    report = _soak(SCENARIO.joint_statistics)
    print("\n" + SOAK.format_table(report.rows()))
    assert not report.differing, f"results differ from the first run's in {report.differing}"
    plain = SCENARIO.plaintext(SCENARIO.patient_data(PARTIES))
    assert SOAK.max_relative_difference(report.first[PARTIES[0]], plain) < 1e-9
    assert set(report.pids) == {*PARTIES, "dealer", "driver"}
    assert not SOAK.problems(report, rss_limit_kib=RSS_BOUND_KIB)


def leaky_joint_statistics(ctx: PartyContext) -> dict[str, float]:
    """Joint statistics, keeping an open socket and 100 KiB (written, so resident) per run."""
    kept = sys.__dict__.setdefault("_mpc_test_soak_leak", [])  # lives as long as the process
    kept.append((socket.socket(), b"\x01" * LEAK_BYTES))
    result: dict[str, float] = SCENARIO.joint_statistics(ctx)
    return result


@pytest.mark.usefixtures("ray_local")
def test_the_soak_check_catches_a_leak_of_a_socket_and_100_kib_per_run() -> None:
    report = _soak(leaky_joint_statistics)
    rows = {r["process"]: r for r in report.rows()}
    found = "\n".join(SOAK.problems(report, rss_limit_kib=RSS_BOUND_KIB))
    for party in PARTIES:
        assert rows[party]["fds_end"] - rows[party]["fds_warmup"] == MEASURED, rows[party]
        assert f"{party}: open file descriptors grew" in found, found
        assert f"{party}: resident memory grew" in found, found
    assert not report.differing
