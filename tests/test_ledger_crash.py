"""A crash at any point of a ledger's creation is recovered by the next open, never by an
operator, and never by starting a fresh budget over recorded releases (issue 13, item 5).

The crash is simulated by making one of the creation's durable writes raise: the key file
(``Ledger._write_key_file``) or the ledger itself (``Ledger._write_new_ledger``), at the first,
second or third write.  Nothing is cleaned up after the exception, as after a real crash.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mpc.dp import (
    Accountant,
    DiscreteLaplaceMechanism,
    InvalidPrivacyParameterError,
    Ledger,
    LedgerTamperedError,
    PrivacyBudget,
)

BUDGET = PrivacyBudget(1.0, 1e-6)
DATASET = "patients"


class Crash(BaseException):
    """The process dies here (a BaseException, so no `except Exception` can tidy up)."""


def crash_at(monkeypatch: pytest.MonkeyPatch, write: int) -> list[str]:
    """Make the `write`-th durable write of the ledger code raise Crash; returns the log of
    the writes attempted (the name of the file each one targets)."""
    log: list[str] = []

    def wrap(original: Callable[[Path, bytes], None]) -> staticmethod[[Path, bytes], None]:
        def attempt(path: Path, data: bytes) -> None:
            log.append(path.name)
            if len(log) == write:
                raise Crash(f"crash at write {write} ({path.name})")
            original(path, data)

        return staticmethod(attempt)

    monkeypatch.setattr(Ledger, "_write_key_file", wrap(Ledger._write_key_file))
    original_ledger_write = getattr(Ledger, "_write_new_ledger", None)
    if original_ledger_write is not None:
        monkeypatch.setattr(Ledger, "_write_new_ledger", wrap(original_ledger_write))
    return log


def files(directory: Path) -> tuple[Path, Path]:
    ledger, key, _lock = Ledger.paths(directory, DATASET)
    return ledger, key


@pytest.mark.parametrize("write", [1, 2, 3])
def test_crash_during_creation_is_recovered_without_an_operator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: int
) -> None:
    log = crash_at(monkeypatch, write)
    with pytest.raises(Crash):
        Ledger.open(tmp_path, DATASET, BUDGET)
    assert len(log) == write
    monkeypatch.undo()  # the process restarts

    ledger = Ledger.open(tmp_path, DATASET, BUDGET)
    assert ledger.releases == () and ledger.budget == BUDGET
    Accountant(ledger=ledger).spend(DiscreteLaplaceMechanism(epsilon=0.25, sensitivity=1).cost())
    reopened = Ledger.open(tmp_path, DATASET)
    assert len(reopened.releases) == 1
    ledger_path, key_path = files(tmp_path)
    assert len(ledger_path.read_text().splitlines()) == 2
    assert json.loads(key_path.read_text())["entries"] == 2
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_the_key_file_is_written_before_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the comment in the code said: a crash at the first write leaves no ledger that
    lacks its key file (such a ledger can never be verified again)."""
    crash_at(monkeypatch, 1)
    with pytest.raises(Crash):
        Ledger.open(tmp_path, DATASET, BUDGET)
    ledger_path, _key_path = files(tmp_path)
    assert not ledger_path.exists()


def test_interrupted_creation_without_a_budget_asks_for_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_at(monkeypatch, 2)  # the key file exists, the ledger does not
    with pytest.raises(Crash):
        Ledger.open(tmp_path, DATASET, BUDGET)
    monkeypatch.undo()
    with pytest.raises(InvalidPrivacyParameterError, match=r"interrupted.*pass budget="):
        Ledger.open(tmp_path, DATASET)
    assert len(Ledger.open(tmp_path, DATASET, PrivacyBudget(2.0, 1e-6)).releases) == 0


def test_crash_before_the_key_file_counts_the_opening_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ledger complete, key file still at 0 entries: the budget recorded in the ledger holds
    (a reopen with another budget is refused, not a fresh start)."""
    crash_at(monkeypatch, 3)
    with pytest.raises(Crash):
        Ledger.open(tmp_path, DATASET, BUDGET)
    monkeypatch.undo()
    _ledger_path, key_path = files(tmp_path)
    assert json.loads(key_path.read_text())["entries"] == 0
    with pytest.raises(InvalidPrivacyParameterError, match="cannot be changed"):
        Ledger.open(tmp_path, DATASET, PrivacyBudget(5.0, 1e-6))
    assert Ledger.open(tmp_path, DATASET).budget == BUDGET
    assert json.loads(key_path.read_text())["entries"] == 1  # repaired


def test_recorded_releases_are_never_reset(tmp_path: Path) -> None:
    """A ledger with releases whose key file is gone is refused, and one whose key file was
    reset to "no entry" keeps its releases: recovery only ever adds recorded spending."""
    ledger = Ledger.open(tmp_path, DATASET, BUDGET)
    Accountant(ledger=ledger).spend(DiscreteLaplaceMechanism(epsilon=0.5, sensitivity=1).cost())
    _ledger_path, key_path = files(tmp_path)
    key = json.loads(key_path.read_text())

    key_path.unlink()
    with pytest.raises(LedgerTamperedError, match=r"restore the key file.*1 release entries"):
        Ledger.open(tmp_path, DATASET, BUDGET)

    key_path.write_text(json.dumps({**key, "entries": 0, "head": "00" * 32}))
    key_path.chmod(0o600)  # the key file reset to "no entry yet": every release is still read
    assert len(Ledger.open(tmp_path, DATASET, BUDGET).releases) == 1
    assert json.loads(key_path.read_text())["entries"] == 2


def test_legacy_ledger_without_key_file_says_what_to_do(tmp_path: Path) -> None:
    """The state older versions left after a crash (opening entry written, key file not): the
    open is refused with the exact steps, and works once they are followed."""
    Ledger.open(tmp_path, DATASET, BUDGET)
    ledger_path, key_path = files(tmp_path)
    key_path.unlink()
    with pytest.raises(LedgerTamperedError) as info:
        Ledger.open(tmp_path, DATASET, BUDGET)
    message = str(info.value)
    assert "restore the key file" in message
    assert f"delete {ledger_path} and open it again with its budget" in message
    ledger_path.unlink()
    assert Ledger.open(tmp_path, DATASET, BUDGET).releases == ()
