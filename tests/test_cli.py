"""The `mpc` command line, called in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpc.cli import main
from mpc.parties.keys import PartyKey, load_public
from mpc.tee import dealer_config, measurement_hex


def test_protocols_lists_every_protocol_with_its_security(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["protocols"]) == 0
    out = capsys.readouterr().out
    for name in ("additive", "shamir", "shamir-beaver"):
        assert f"\n{name}\n" in f"\n{out}"
    assert "honest majority" in out and "trusted dealer" in out


def test_keygen_writes_a_private_key_and_prints_only_the_public_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "alice.key"
    assert main(["keygen", "alice", "--out", str(path)]) == 0
    out = capsys.readouterr().out
    key = PartyKey.load(path)
    assert key.public_hex in out
    assert load_public(path.with_name("alice.key.pub")) == key.public_bytes
    assert path.stat().st_mode & 0o077 == 0  # private key readable by its owner only
    assert main(["keygen", "alice", "--out", str(path)]) == 2  # no silent overwrite


def test_tee_measure_matches_the_library(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tee", "measure", "--protocol", "additive", "--parties", "3"]) == 0
    assert measurement_hex(dealer_config("additive", 3, 2)) in capsys.readouterr().out


def test_run_passes_options_to_the_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "scenarios/joint_statistics.py", "--runtime", "local", "--allow-insecure"])
    out = capsys.readouterr().out
    assert code == 0 and out.rstrip().endswith("OK")
    assert main(["run", "scenarios/no_such_scenario.py"]) == 2
