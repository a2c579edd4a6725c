"""What a new user meets on a first run: where data and privacy ledgers go, and a quiet screen.

Demo data is generated only into the scenarios' own folder, and says so; a data folder the user
names is read, never filled in. Privacy ledgers default to the user's state folder and are
refused under the system's temporary folder unless allowed. A scenario run under Ray shows no
Ray notices before the results (the one test here that starts Ray, in a child process).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import LOCAL, SCENARIOS, load_scenario

import mpc.state
from mpc.dp import Ledger
from mpc.errors import ConfigurationError
from mpc.federation.example import Host, write_deployment
from mpc.federation.policy import PartyPolicy
from mpc.federation.serve import serve_party
from mpc.scenario import ledger_folder
from mpc.state import state_home, temporary_root

DP_SCENARIOS = ("dp_joint_statistics", "dp_model_release")


@pytest.fixture
def no_temporary_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Pretend the system's temporary folder is `tmp_path/system-tmp`, so that the rest of
    `tmp_path` stands for a user's own disk."""
    system = tmp_path / "system-tmp"
    system.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system))
    monkeypatch.setattr(mpc.state, "TEMPORARY_FOLDERS", ())
    return system


# ---- privacy ledgers ----------------------------------------------------------------------------


@pytest.mark.usefixtures("no_temporary_folder")
def test_the_ledgers_default_to_the_users_state_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_home() == tmp_path / "home" / ".local" / "state" / "mpc"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    home = tmp_path / "state" / "mpc"
    assert state_home() == home
    assert home.stat().st_mode & 0o777 == 0o700  # this user's only
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")  # not absolute: ignored (XDG spec)
    assert state_home() == tmp_path / "home" / ".local" / "state" / "mpc"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))

    scenario = load_scenario("dp_joint_statistics")
    assert ledger_folder(scenario.parse_args([]), "x") == home / "ledgers" / "x"
    assert scenario.run([*LOCAL, "--parties", "2"]) == 0
    out = capsys.readouterr().out
    folder = home / "ledgers" / "dp_joint_statistics"
    assert f"privacy ledgers: {folder}/<hospital>" in out  # said before the run starts
    assert len(Ledger.open(folder / "north", "patients-north").releases) == 2


@pytest.mark.parametrize("name", DP_SCENARIOS)
def test_a_ledger_in_the_temporary_folder_is_refused_without_the_flag(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert temporary_root(tmp_path) is not None  # pytest's folders are temporary
    scenario = load_scenario(name)
    ledgers = tmp_path / "ledgers"
    assert scenario.run([*LOCAL, "--ledger", str(ledgers)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"the privacy ledgers would be in {ledgers}, under the temporary folder" in err
    assert "--allow-temporary-ledger" in err and "Traceback" not in err
    assert not ledgers.exists()  # refused before anything ran
    # the flag accepts it (the runs themselves: tests/test_dp_release.py)
    args = scenario.parse_args(["--ledger", str(ledgers), "--allow-temporary-ledger"])
    assert ledger_folder(args, name) == ledgers


def test_a_default_state_folder_that_is_temporary_is_refused_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # e.g. HOME=/tmp in a container
    scenario = load_scenario("dp_model_release")
    with pytest.raises(ConfigurationError, match="allow-temporary-ledger"):
        ledger_folder(scenario.parse_args([]), "dp_model_release")


def test_a_party_service_refuses_a_temporary_ledger_unless_its_policy_allows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def policy(allow: bool) -> Path:
        dp = {"directory": str(tmp_path / "ledger"), "dataset": "patients", "epsilon": 1.0}
        if allow:
            dp["allow_temporary"] = True
        paths = write_deployment(
            tmp_path / f"allow-{allow}",
            {"north": Host("127.0.0.1", 7001, 7002), "south": Host("127.0.0.1", 7003, 7004)},
            None,
            [SCENARIOS / "joint_statistics.py"],
            dp={"north": dp},
        )
        return paths["north"]

    refused = policy(allow=False)
    assert serve_party(str(refused), use_ray=False) == 2  # before it listens or starts Ray
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mpc party serve: ")
    assert "[dp]: the privacy ledger would be in" in err and "allow_temporary = true" in err
    loaded = PartyPolicy.load(policy(allow=True))
    assert loaded.dp is not None and loaded.dp.allow_temporary
    loaded.dp.check_location(loaded.origin)  # allowed


# ---- scenario data ------------------------------------------------------------------------------


def test_missing_demo_data_is_generated_and_said_and_nothing_is_overwritten(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = load_scenario("joint_statistics")
    monkeypatch.setattr(scenario, "DATA_DIR", tmp_path / "data")
    (tmp_path / "data").mkdir()
    own = "patient_id,age,cholesterol\nn-1,50,200\nn-2,60,210\n"
    (tmp_path / "data" / "north.csv").write_text(own)
    assert scenario.run([*LOCAL, "--parties", "3"]) == 0
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if line.startswith("synthetic data:")]
    assert said == [
        f"synthetic data: generated south.csv, east.csv in {tmp_path / 'data'} (made-up "
        "patients, fixed seed); --data DIR reads your own CSVs instead"
    ]
    assert (tmp_path / "data" / "north.csv").read_text() == own  # an existing file is kept
    assert scenario.run([*LOCAL, "--parties", "3"]) == 0  # nothing missing: nothing said
    assert "synthetic data" not in capsys.readouterr().out


@pytest.mark.parametrize("name", ["joint_statistics", "dp_joint_statistics"])
def test_a_named_data_folder_missing_a_file_is_refused_not_filled_in(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = load_scenario(name)
    data = tmp_path / "our-data"
    data.mkdir()
    (data / "north.csv").write_text("patient_id,age,cholesterol\nn-1,50,200\n")
    extra = ["--ledger", str(tmp_path / "l"), "--allow-temporary-ledger"] if "dp" in name else []
    assert scenario.run([*LOCAL, "--data", str(data), *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"--data {data}: no south.csv, east.csv there" in err
    assert "nothing was generated" in err
    assert sorted(p.name for p in data.iterdir()) == ["north.csv"]


def test_across_organisations_the_data_and_ledger_options_are_the_policys() -> None:
    scenario = load_scenario("dp_joint_statistics")
    for option in ("--data", "--allow-temporary-ledger"):
        with pytest.raises(ValueError, match="policy"):
            scenario.public_args([option])


# ---- the first screen under Ray ----------------------------------------------------------------

#: Lines of Ray's own logging: Python ("2026-01-01 10:00:00,000\tWARNING file.py:85 -- ..."), C++
#: ("[2026-01-01 10:00:00,000 W 123 123] file.cc:210: ...") and forwarded worker output.
RAY_LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+[A-Z]+ \S+:\d+ -- |\[\d{4}-\d\d-\d\d |\((raylet|pid=))"
)
#: What the joint-statistics scenario prints before its results, and nothing else.
FIRST_SCREEN = ("parties:", "synthetic data:", "session ready")


@pytest.mark.ray
def test_a_scenario_under_ray_shows_no_token_notice_or_other_ray_log() -> None:
    # as a new user runs it: a fresh process, Ray's own defaults (RAY_AUTH_MODE unset: Ray then
    # turns token authentication on and used to say so on every run)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    done = subprocess.run(
        [sys.executable, "-m", "mpc", "run", "scenarios/joint_statistics.py", "--parties", "2"],
        cwd=SCENARIOS.parent,
        env={**env, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    shown = done.stdout + done.stderr
    assert "Token authentication" not in shown and "RAY_AUTH_MODE" not in shown, shown
    assert not [line for line in shown.splitlines() if RAY_LOG_LINE.match(line)], shown
    lines = done.stdout.splitlines()
    table = next(i for i, line in enumerate(lines) if line.startswith("statistic"))
    before = [line for line in lines[:table] if line.strip()]
    assert before[0].startswith(FIRST_SCREEN[:2]) and before[-1].startswith("session ready")
    assert all(line.startswith(FIRST_SCREEN) for line in before), before


def test_a_symlink_in_the_temporary_folder_is_still_temporary(tmp_path: Path) -> None:
    """A link in /tmp to a folder elsewhere (another user can plant one, and owns the target)
    is refused like the temporary folder itself; it used to pass, being checked resolved only."""
    elsewhere = Path.home() / f".mpc-test-target-{os.getpid()}"
    elsewhere.mkdir()
    link = Path(tempfile.gettempdir()) / f"mpc-test-link-{os.getpid()}"
    try:
        link.symlink_to(elsewhere)
        assert temporary_root(link) is not None
        assert temporary_root(link / "ledgers") is not None
    finally:
        link.unlink(missing_ok=True)
        elsewhere.rmdir()


def test_a_state_folder_that_is_a_link_or_too_open_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "mpc").mkdir(mode=0o755)
    os.chmod(tmp_path / "state" / "mpc", 0o755)
    assert state_home() == tmp_path / "state" / "mpc"
    assert (os.stat(tmp_path / "state" / "mpc").st_mode & 0o777) == 0o700  # narrowed
    (tmp_path / "state" / "mpc").rmdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "state" / "mpc").symlink_to(tmp_path / "other")
    with pytest.raises(ConfigurationError, match="symbolic link or belongs to another user"):
        state_home()
