"""CI smoke tests of the logistic-regression scenarios: small data, in-process parties."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
LOCAL = ["--runtime", "local", "--allow-insecure"]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"scenario_{name}", SCENARIOS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_hospitals_logreg_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    scenario = _load("hospitals_logreg")
    assert scenario.run([*LOCAL, "--rows", "120", "--epochs", "3", "--sigmoid", "piecewise"]) == 0
    out = capsys.readouterr().out
    assert "secure (MPC), piecewise" in out and "scikit-learn" in out
    assert out.rstrip().endswith("OK")


def test_bank_fraud_vertical_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    scenario = _load("bank_fraud_vertical")
    args = [*LOCAL, "--rows", "400", "--epochs", "3", "--parties", "3", "--sigmoid", "poly"]
    assert scenario.run(args) == 0
    out = capsys.readouterr().out
    assert "parties: bank, retailer, regulator" in out and out.rstrip().endswith("OK")


def test_scenarios_reject_bad_options() -> None:
    assert _load("hospitals_logreg").run([*LOCAL, "--parties", "9"]) == 2
    assert _load("bank_fraud_vertical").run([*LOCAL, "--rows", "10"]) == 2
