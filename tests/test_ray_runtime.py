"""Ray integration: party actors over encrypted TCP, plaintext TCP and Ray calls; failures.

Kept few on purpose (each session starts 3-4 actor processes); they share one Ray instance.
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
import pytest
from helpers import process_state

from mpc.errors import ConfigurationError, PartyFailedError
from mpc.program import PartyContext
from mpc.session import Session

pytestmark = pytest.mark.ray

X = np.array([1.5, -2.0, 0.25, 10.0])
Y = np.array([4.0, 0.5, -8.0, 0.125])


def product(ctx: PartyContext) -> np.ndarray | None:
    x = ctx.input("alice", X if ctx.me == "alice" else None)
    y = ctx.input("bob", Y if ctx.me == "bob" else None)
    return ctx.reveal(x * y + x)


@pytest.mark.usefixtures("ray_local")
def test_same_result_on_every_transport() -> None:
    results = {}
    for transport in ("tcp", "tcp-plaintext", "ray"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            session = Session(["alice", "bob", "carol"], transport=transport, timeout=20)
        assert any("NOT encrypted" in str(w.message) for w in caught) == (
            transport == "tcp-plaintext"
        )
        with session:
            result = session.run(product)
        for party in ("alice", "bob", "carol"):
            np.testing.assert_allclose(result[party], X * Y + X, atol=2 * 2.0**-16)
        stats = result.stats["alice"].by_kind
        assert (stats["mul"].rounds, stats["truncate"].rounds) == (1, 1)  # truncated by + x
        results[transport] = result["alice"]
    np.testing.assert_array_equal(results["tcp"], results["ray"])
    np.testing.assert_array_equal(results["tcp"], results["tcp-plaintext"])


@pytest.mark.usefixtures("ray_local")
def test_exception_at_one_party_stops_all_promptly() -> None:
    def failing(ctx: PartyContext) -> np.ndarray | None:
        x = ctx.input("alice", X if ctx.me == "alice" else None)
        if ctx.me == "bob":
            raise RuntimeError("bob's disk is full")
        return ctx.reveal(x * x)

    with Session(["alice", "bob", "carol"], timeout=25) as session:
        start = time.monotonic()
        with pytest.raises(PartyFailedError) as info:
            session.run(failing)
        elapsed = time.monotonic() - start
        assert info.value.party == "bob"
        assert "bob's disk is full" in str(info.value)
        assert elapsed < 20, "the other parties waited for their full timeout"
        # The session is still usable after a failed run.
        np.testing.assert_allclose(session.run(product)["carol"], X * Y + X, atol=2 * 2.0**-16)


@pytest.mark.usefixtures("ray_local")
def test_killed_party_gives_one_clear_error() -> None:
    def dying(ctx: PartyContext) -> np.ndarray | None:
        x = ctx.input("alice", X if ctx.me == "alice" else None)
        if ctx.me == "carol":
            os._exit(1)  # the actor process dies mid-program
        return ctx.reveal(x * x)

    with Session(["alice", "bob", "carol"], timeout=25) as session:
        start = time.monotonic()
        with pytest.raises(PartyFailedError) as info:
            session.run(dying)
        assert time.monotonic() - start < 20
        assert info.value.party == "carol"
        assert "died" in str(info.value)


@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize("protocol", ["additive", "shamir-beaver"])
def test_enclave_dealer_gives_correct_results(protocol: str) -> None:
    from mpc.tee import dealer_config, measurement_hex

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the simulated-enclave warning
        session = Session(
            ["alice", "bob", "carol"],
            protocol=protocol,
            dealer="enclave",
            allow_simulated_enclave=True,
            timeout=20,
        )
    with session:
        result = session.run(product)
        expected = measurement_hex(dealer_config(protocol, 3, session.config.threshold))
        assert len(session.attestations) == 3
        assert all(expected in line and "SIMULATED" in line for line in session.attestations)
    np.testing.assert_allclose(result["bob"], X * Y + X, atol=2 * 2.0**-16)


def test_an_enclave_session_without_a_pinned_platform_or_the_allowance_is_refused() -> None:
    # refused when the session is made, before Ray starts (the simulated-quote refusal itself
    # is tested in tests/test_tee.py)
    with pytest.raises(ConfigurationError, match=r"enclave_platform_keys=\["):
        Session(["alice", "bob", "carol"], dealer="enclave", timeout=20)


@pytest.mark.usefixtures("ray_local")
def test_dealer_dying_mid_run_is_a_clear_error_at_every_party() -> None:
    import ray

    def uses_fresh_triples(ctx: PartyContext) -> np.ndarray | None:
        x = ctx.input("alice", np.arange(7.0) if ctx.me == "alice" else None)
        return ctx.reveal(x * x)

    with Session(["alice", "bob", "carol"], timeout=15) as session:
        ray.kill(session._backend.dealer)
        start = time.monotonic()
        with pytest.raises(PartyFailedError) as info:
            session.run(uses_fresh_triples)
        assert time.monotonic() - start < 15
        assert "dealer" in str(info.value)


@pytest.mark.usefixtures("ray_local")
def test_the_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README.md has no python example"
    exec(compile(blocks[0], "README.md", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    assert "6.99" in out and "wall time" in out  # 1.5 * 4 + 1 at alice, and the cost report


@pytest.mark.usefixtures("ray_local")
def test_no_party_process_outlives_its_session() -> None:
    import signal
    import threading

    def stuck_after_returning(ctx: PartyContext) -> int:
        if ctx.me == "bob":  # bob's process freezes: Ray can neither close nor end it in time

            def freeze() -> None:
                time.sleep(0.3)
                os.kill(os.getpid(), signal.SIGSTOP)

            threading.Thread(target=freeze, daemon=True).start()
        return os.getpid()

    with Session(["alice", "bob"], timeout=10) as session:
        pids = session.run(stuck_after_returning).outputs
        deadline = time.monotonic() + 10
        while process_state(pids["bob"]) != "T" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_state(pids["bob"]) == "T", "bob's process did not freeze"
    left = {name: process_state(pid) for name, pid in pids.items()}
    assert all(state in (None, "Z") for state in left.values()), left
