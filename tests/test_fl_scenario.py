"""CI smoke test of scenarios/federated_hospitals.py: small data, in-process hospitals.

The scenario prints secure FedAvg's test accuracy beside plain FedAvg's (same recipe and seeds,
no MPC, no rounding); the goal of issue 17 is that they agree within 0.5 point, which this
test checks on its own reading of the printed figures (not only the scenario's OK).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import LOCAL, load_scenario

pytest.importorskip("torch")
pytest.importorskip("sklearn")


def accuracy(out: str, label: str) -> float:
    match = re.search(rf"^{re.escape(label)}\s+([0-9.]+)$", out, re.M)
    assert match, f"no line {label!r} in:\n{out}"
    return float(match[1])


@pytest.mark.parametrize(
    ("protocol", "parties"), [("additive", "3"), ("shamir", "3"), ("additive", "5")]
)
def test_federated_hospitals_secure_matches_plain(
    protocol: str, parties: str, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = load_scenario("federated_hospitals")
    args = [*LOCAL, "--protocol", protocol, "--parties", parties, "--rows", "1500"]
    assert scenario.run([*args, "--rounds", "4"]) == 0
    out = capsys.readouterr().out
    secure = accuracy(out, "secure FedAvg (MPC)")
    plain = accuracy(out, "plain FedAvg, same recipe and seeds")
    central = accuracy(out, "centralised training, same epochs")
    assert abs(secure - plain) <= 0.005
    assert secure > 0.6 and central > 0.6  # it learned (chance is 0.5)
    assert len(re.findall(r"^  round +\d+ .*joint test accuracy", out, re.M)) == 4
    assert "all hospitals hold the same model: True" in out
    assert out.rstrip().endswith("OK")


def test_federated_hospitals_rejects_bad_options() -> None:
    scenario = load_scenario("federated_hospitals")
    assert scenario.run([*LOCAL, "--parties", "6"]) == 2
    assert scenario.run([*LOCAL, "--rows", "10"]) == 2


def test_federated_hospitals_dp_sgd_charges_the_ledgers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = load_scenario("federated_hospitals")
    args = [*LOCAL, "--dp-epsilon", "1", "--dp-steps", "20", "--rows", "900"]
    args += ["--ledger", str(tmp_path), "--allow-temporary-ledger", "--budget-epsilon", "1.5"]
    assert scenario.run(args) == 0
    out = capsys.readouterr().out
    assert re.search(r"epsilon spent: 0\.9\d+ at delta 1e-05", out)
    assert len(re.findall(r"spent epsilon 0\.9\d+ .* 1 release\(s\)", out)) == 3
    # a second run would exceed the budget of 1.5: refused, nothing charged
    assert scenario.run(args) == 1
    out = capsys.readouterr().out
    assert "no ledger was charged" in out
