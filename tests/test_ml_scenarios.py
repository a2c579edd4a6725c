"""CI smoke tests of the logistic-regression scenarios: small data, in-process parties."""

from __future__ import annotations

import pytest
from helpers import LOCAL, load_scenario


def test_hospitals_logreg_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    scenario = load_scenario("hospitals_logreg")
    assert scenario.run([*LOCAL, "--rows", "120", "--epochs", "3", "--sigmoid", "piecewise"]) == 0
    out = capsys.readouterr().out
    assert "secure (MPC), piecewise" in out and "scikit-learn" in out
    assert out.rstrip().endswith("OK")


def test_bank_fraud_vertical_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    scenario = load_scenario("bank_fraud_vertical")
    args = [
        *LOCAL,
        "--rows",
        "400",
        "--epochs",
        "3",
        "--parties",
        "3",
        "--sigmoid",
        "accurate-clamped",
    ]
    assert scenario.run(args) == 0
    out = capsys.readouterr().out
    assert "parties: bank, retailer, regulator" in out and out.rstrip().endswith("OK")


def test_scenarios_reject_bad_options() -> None:
    assert load_scenario("hospitals_logreg").run([*LOCAL, "--parties", "9"]) == 2
    assert load_scenario("bank_fraud_vertical").run([*LOCAL, "--rows", "10"]) == 2
