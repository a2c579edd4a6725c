"""A refused or failed run says so in one line at the command line (issue 13, item 6), and every
error class of the package is importable from `mpc.errors` (item 8).

The scenario runs are subprocesses, as a user types them: `python scenarios/X.py` and
`python -m mpc run scenarios/X.py` (what `mpc run` executes), in-process parties only.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from helpers import LOCAL, SCENARIOS, load_scenario

import mpc
import mpc.errors
from mpc.dp import Ledger, PrivacyBudget
from mpc.errors import ConfigurationError, MpcError, PartyFailedError
from mpc.scenario import INTERRUPTED, cli_main, one_line_errors

ROOT = SCENARIOS.parent
SCRIPT = "dp_joint_statistics.py"
#: Each DP scenario's data set of hospital north and default budget.
LEDGERS = {
    "dp_joint_statistics.py": ("patients-north", PrivacyBudget(2.0, 1e-6)),
    "dp_model_release.py": ("breast-cancer-north", PrivacyBudget(3.0, 2e-4)),
}


def tampered_ledgers(tmp_path: Path, script: str = SCRIPT) -> Path:
    """The ledger directory of `script` with hospital north's ledger edited."""
    ledgers = tmp_path / "ledgers"
    dataset, budget = LEDGERS[script]
    Ledger.open(ledgers / "north", dataset, budget)
    path = Ledger.paths(ledgers / "north", dataset)[0]
    path.write_text(path.read_text().replace('"kind":"open"', '"kind":"opeN"'))
    return ledgers


def in_folder(ledgers: Path) -> list[str]:
    """The options that put the ledgers in the test's (temporary) folder."""
    return ["--ledger", str(ledgers), "--allow-temporary-ledger"]


def command(how: str, *options: str, script: str = SCRIPT) -> list[str]:
    if how == "python":
        return [sys.executable, str(SCENARIOS / script), *options]
    return [sys.executable, "-m", "mpc", "run", f"scenarios/{script}", *options]


def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("script", "how"),
    [(SCRIPT, "python"), (SCRIPT, "mpc run"), ("dp_model_release.py", "python")],
)
def test_a_tampered_ledger_is_one_line_without_a_traceback(
    tmp_path: Path, script: str, how: str
) -> None:
    ledgers = tampered_ledgers(tmp_path, script)
    done = run(command(how, *LOCAL, *in_folder(ledgers), script=script))
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert line.startswith(f"{script}: party 'north' failed")
    assert "LedgerTamperedError" in line and "the ledger was modified" in line
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize("how", ["python", "mpc run"])
def test_debug_shows_the_traceback(tmp_path: Path, how: str) -> None:
    ledgers = tampered_ledgers(tmp_path)
    done = run(command(how, *LOCAL, *in_folder(ledgers), "--debug"))
    assert done.returncode != 0
    assert "Traceback (most recent call last)" in done.stderr
    assert "LedgerTamperedError" in done.stderr


# ---- the wrapper itself -------------------------------------------------------------------------


def scenario_run(outcome: BaseException | int, seen: list[list[str]]) -> object:
    def run(argv: Sequence[str] | None = None) -> int:
        seen.append(list(argv or []))
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return run


def test_cli_main_one_line_exit_codes_and_debug(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[list[str]] = []
    failure = PartyFailedError("north", "dp.charge", "BudgetExceededError: over budget\nmore")
    assert cli_main(scenario_run(failure, seen), ["--parties", "3"]) == 1  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert err == (
        "test_cli_errors.py: party 'north' failed in operation 'dp.charge': "
        "BudgetExceededError: over budget | more\n"
    )
    assert cli_main(scenario_run(ConfigurationError("no"), seen), []) == 1  # type: ignore[arg-type]
    assert capsys.readouterr().err == "test_cli_errors.py: ConfigurationError: no\n"
    assert cli_main(scenario_run(3, seen), ["--x", "--debug"]) == 3  # type: ignore[arg-type]
    assert seen[-1] == ["--x"]  # --debug is not the scenario's option
    with pytest.raises(PartyFailedError):
        cli_main(scenario_run(failure, seen), ["--debug"])  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # not a refusal: a bug keeps its traceback
        cli_main(scenario_run(ValueError("bug"), seen), [])  # type: ignore[arg-type]


def test_interrupted_after_the_session_closed(capsys: pytest.CaptureFixture[str]) -> None:
    closed: list[bool] = []

    @one_line_errors
    def run(argv: Sequence[str] | None = None) -> int:
        try:  # stands for `with Session(...)`
            raise KeyboardInterrupt
        finally:
            closed.append(True)

    assert run([]) == INTERRUPTED == 130
    assert closed == [True]
    assert capsys.readouterr().err == "test_cli_errors.py: interrupted\n"
    with pytest.raises(KeyboardInterrupt):
        run(["--debug"])


@pytest.mark.parametrize("name", sorted(p.stem for p in SCENARIOS.glob("*.py")))
def test_every_scenario_run_reports_errors_in_one_line(name: str) -> None:
    run = load_scenario(name).run
    assert inspect.unwrap(run) is not run, f"scenarios/{name}.py: run lacks @one_line_errors"
    assert run.__code__ is one_line_errors(run).__code__


# ---- every error class from mpc.errors ----------------------------------------------------------


def package_exceptions() -> dict[str, type[BaseException]]:
    """Every public exception class (not warning) defined in a module of `mpc`."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(mpc.__path__, "mpc."):
        if info.name == "mpc.__main__":
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and not issubclass(value, Warning)
                and value.__module__ == info.name
                and not name.startswith("_")
            ):
                found[f"{info.name}.{name}"] = value
    return found


def test_every_error_class_is_importable_from_mpc_errors() -> None:
    found = package_exceptions()
    assert "mpc.dp.accountant.LedgerTamperedError" in found
    assert "mpc.tee.backend.AttestationError" in found
    missing = sorted(
        where for where, cls in found.items() if getattr(mpc.errors, cls.__name__, None) is not cls
    )
    assert not missing, f"add these to mpc.errors: {missing}"
    assert all(issubclass(getattr(mpc.errors, n), BaseException) for n in mpc.errors.__all__)
    subclasses = [MpcError]
    while subclasses:
        cls = subclasses.pop()
        if cls.__module__.startswith("mpc.") and not cls.__name__.startswith("_"):
            assert getattr(mpc.errors, cls.__name__) is cls
        subclasses.extend(cls.__subclasses__())


def test_mpc_errors_stays_cheap_to_import() -> None:
    code = (
        "import sys; import mpc.errors as e; "
        "from mpc.errors import LedgerTamperedError, AttestationError; "
        "assert 'mpc.bench' not in sys.modules and 'ray' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


@pytest.mark.parametrize(
    "argv",
    [
        ["tee", "measure", "--root", "/nonexistent-mpc-root"],
        ["run", "/nonexistent-mpc-program.py", "--policy", "/nonexistent-policy.toml"],
    ],
)
def test_mpc_commands_report_a_refusal_in_one_line_and_debug_shows_the_traceback(
    argv: list[str],
) -> None:
    command = [sys.executable, "-m", "mpc", *argv]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mpc {argv[0]}: "), done.stderr
    assert "Traceback" not in done.stderr
    debug = subprocess.run([*command, "--debug"], capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_a_peers_escape_sequences_never_reach_the_terminal() -> None:
    """An abort text from a peer (which becomes part of this party's error) with terminal
    escapes (clipboard write, cursor moves) is printed with them replaced by '?'."""
    from mpc.errors import PartyFailedError
    from mpc.scenario import error_line

    hostile = "party 'b' aborted: \x1b]52;c;ZXZpbA==\x07\x1b[1A\x1b[2Krun finished OK"
    line = error_line(PartyFailedError("a", "mul #3", hostile))
    assert "\x1b" not in line and "\x07" not in line
    assert "?]52;c;ZXZpbA==??[1A?[2Krun finished OK" in line
