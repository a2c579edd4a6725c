"""The persistent privacy ledger: restarts keep the budget, tampering is detected, never reset."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from mpc.dp import (
    Accountant,
    BudgetExceededError,
    DiscreteLaplaceMechanism,
    GaussianMechanism,
    InvalidPrivacyParameterError,
    Ledger,
    LedgerTamperedError,
    PrivacyBudget,
)

BUDGET = PrivacyBudget(1.0, 1e-6)


def spend(directory: Path, eps: float = 0.25, label: str = "q", dataset: str = "hospital") -> None:
    acct = Accountant(ledger=Ledger.open(directory, dataset))
    acct.spend(DiscreteLaplaceMechanism(epsilon=eps, sensitivity=1).cost(label))


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Path:
    Ledger.open(tmp_path, "hospital", BUDGET)
    for i in range(3):
        spend(tmp_path, label=f"q{i}")
    return tmp_path


def paths(directory: Path) -> tuple[Path, Path]:
    ledger, key, _lock = Ledger.paths(directory, "hospital")
    return ledger, key


# ---- persistence --------------------------------------------------------------------------------


def test_restart_keeps_the_budget(ledger_dir: Path) -> None:
    acct = Accountant(ledger=Ledger.open(ledger_dir, "hospital"))
    assert [r.label for r in acct.releases] == ["q0", "q1", "q2"]
    assert acct.budget == BUDGET
    assert acct.remaining_epsilon() == pytest.approx(0.25)
    acct.spend(DiscreteLaplaceMechanism(epsilon=0.25, sensitivity=1).cost("q3"))
    with pytest.raises(BudgetExceededError, match="nothing was released"):
        acct.spend(DiscreteLaplaceMechanism(epsilon=0.01, sensitivity=1).cost("q4"))
    reopened = Ledger.open(ledger_dir, "hospital")
    assert len(reopened.releases) == 4  # the refused release was not written
    assert reopened.releases == Accountant(ledger=reopened).releases


def test_files_and_permissions(ledger_dir: Path) -> None:
    ledger, key = paths(ledger_dir)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    lines = ledger.read_text().splitlines()
    assert len(lines) == 4
    assert json.loads(lines[0])["kind"] == "open"
    assert json.loads(key.read_text())["entries"] == 4


def test_two_accountants_share_one_ledger(ledger_dir: Path) -> None:
    """A second process (here: a second accountant) sees the first one's spending."""
    a = Accountant(ledger=Ledger.open(ledger_dir, "hospital"))
    b = Accountant(ledger=Ledger.open(ledger_dir, "hospital"))
    a.spend(DiscreteLaplaceMechanism(epsilon=0.2, sensitivity=1).cost("a"))
    with pytest.raises(BudgetExceededError):
        b.spend(DiscreteLaplaceMechanism(epsilon=0.2, sensitivity=1).cost("b"))
    assert [r.label for r in b.releases][-1] == "a"


def test_budget_fixed_at_creation(ledger_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidPrivacyParameterError, match="cannot be changed"):
        Ledger.open(ledger_dir, "hospital", PrivacyBudget(10.0, 1e-6))
    with pytest.raises(InvalidPrivacyParameterError, match="pass budget="):
        Ledger.open(tmp_path / "empty", "new-data")
    with pytest.raises(InvalidPrivacyParameterError, match="dataset must be a name"):
        Ledger.open(tmp_path, "../escape", BUDGET)
    with pytest.raises(InvalidPrivacyParameterError, match="has budget"):
        Accountant(PrivacyBudget(5.0), ledger=Ledger.open(ledger_dir, "hospital"))


def test_gaussian_releases_round_trip(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, "d", PrivacyBudget(3.0, 1e-5))
    acct = Accountant(ledger=ledger)
    mech = GaussianMechanism(epsilon=0.5, delta=1e-7, sensitivity=1.0)
    for i in range(8):
        acct.spend(mech.cost(f"g{i}"))
    again = Accountant(ledger=Ledger.open(tmp_path, "d"))
    assert again.releases == acct.releases
    assert again.spent() == acct.spent()


# ---- tamper detection ---------------------------------------------------------------------------


def _rewrite(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def test_edit_one_byte_is_detected(ledger_dir: Path) -> None:
    ledger, _ = paths(ledger_dir)
    data = bytearray(ledger.read_bytes())
    pos = data.index(b'"epsilon":0.25')
    data[pos + len('"epsilon":0.2')] = ord("0")  # 0.25 -> 0.20: a cheaper past
    ledger.write_bytes(bytes(data))
    with pytest.raises(LedgerTamperedError, match="fails its MAC"):
        Ledger.open(ledger_dir, "hospital")


@pytest.mark.parametrize("where", ["budget", "mac", "label"])
def test_edit_fields_is_detected(ledger_dir: Path, where: str) -> None:
    ledger, _ = paths(ledger_dir)
    lines = ledger.read_text().splitlines()
    if where == "budget":
        entry = json.loads(lines[0])
        entry["budget"]["epsilon"] = 100.0
        lines[0] = json.dumps(entry)
    elif where == "mac":
        entry = json.loads(lines[2])
        entry["mac"] = ("0" if entry["mac"][0] != "0" else "1") + entry["mac"][1:]
        lines[2] = json.dumps(entry)
    else:
        entry = json.loads(lines[1])
        entry["release"]["label"] = "something else"
        lines[1] = json.dumps(entry)
    _rewrite(ledger, lines)
    with pytest.raises(LedgerTamperedError):
        Ledger.open(ledger_dir, "hospital")


@pytest.mark.parametrize("index", [1, 2, 3])
def test_deleted_line_is_detected(ledger_dir: Path, index: int) -> None:
    ledger, _ = paths(ledger_dir)
    lines = ledger.read_text().splitlines()
    del lines[index]
    _rewrite(ledger, lines)
    with pytest.raises(LedgerTamperedError, match=r"MAC|truncated|head"):
        Ledger.open(ledger_dir, "hospital")


def test_reordered_and_duplicated_lines_are_detected(ledger_dir: Path) -> None:
    ledger, _ = paths(ledger_dir)
    lines = ledger.read_text().splitlines()
    _rewrite(ledger, [lines[0], lines[2], lines[1], lines[3]])
    with pytest.raises(LedgerTamperedError):
        Ledger.open(ledger_dir, "hospital")
    _rewrite(ledger, [*lines, lines[3]])
    with pytest.raises(LedgerTamperedError):
        Ledger.open(ledger_dir, "hospital")


def test_truncation_to_a_valid_prefix_is_detected(ledger_dir: Path) -> None:
    """Dropping the last entries leaves a valid chain: the key file's count and head catch it."""
    ledger, _ = paths(ledger_dir)
    lines = ledger.read_text().splitlines()
    _rewrite(ledger, lines[:2])
    with pytest.raises(LedgerTamperedError, match="truncated"):
        Ledger.open(ledger_dir, "hospital")
    ledger.write_bytes(b"")
    with pytest.raises(LedgerTamperedError, match="truncated"):
        Ledger.open(ledger_dir, "hospital")


def test_partial_last_line_is_detected(ledger_dir: Path) -> None:
    ledger, _ = paths(ledger_dir)
    ledger.write_bytes(ledger.read_bytes()[:-10])
    with pytest.raises(LedgerTamperedError, match="partial line"):
        Ledger.open(ledger_dir, "hospital")


def test_deleted_ledger_is_not_a_fresh_budget(ledger_dir: Path) -> None:
    ledger, _ = paths(ledger_dir)
    ledger.unlink()
    with pytest.raises(LedgerTamperedError, match="missing"):
        Ledger.open(ledger_dir, "hospital", BUDGET)  # even when a budget is offered


def test_deleted_key_file_is_detected(ledger_dir: Path) -> None:
    _, key = paths(ledger_dir)
    key.unlink()
    with pytest.raises(LedgerTamperedError, match=r"key file .* is missing"):
        Ledger.open(ledger_dir, "hospital", BUDGET)


def test_tampering_between_open_and_spend_is_detected(ledger_dir: Path) -> None:
    acct = Accountant(ledger=Ledger.open(ledger_dir, "hospital"))
    ledger, _ = paths(ledger_dir)
    _rewrite(ledger, ledger.read_text().splitlines()[:3])
    before = ledger.read_bytes()
    with pytest.raises(LedgerTamperedError):
        acct.spend(DiscreteLaplaceMechanism(epsilon=0.01, sensitivity=1).cost())
    assert ledger.read_bytes() == before  # nothing appended
    ledger.unlink()
    with pytest.raises(LedgerTamperedError):
        acct.spend(DiscreteLaplaceMechanism(epsilon=0.01, sensitivity=1).cost())
    paths(ledger_dir)[1].unlink()
    with pytest.raises(LedgerTamperedError, match="both deleted"):
        acct.spend(DiscreteLaplaceMechanism(epsilon=0.01, sensitivity=1).cost())


def test_ledger_from_another_data_set_is_detected(tmp_path: Path) -> None:
    Ledger.open(tmp_path, "a", BUDGET)
    Ledger.open(tmp_path, "b", BUDGET)
    spend(tmp_path, dataset="a")
    la, ka, _ = Ledger.paths(tmp_path, "a")
    lb, kb, _ = Ledger.paths(tmp_path, "b")
    os.replace(la, lb)  # b's ledger replaced by a's (same key file of b)
    with pytest.raises(LedgerTamperedError):
        Ledger.open(tmp_path, "b")
    os.replace(ka, kb)  # and b's key file by a's
    with pytest.raises(LedgerTamperedError, match="belongs to data set 'a'"):
        Ledger.open(tmp_path, "b")


def test_corrupt_or_open_key_file(ledger_dir: Path) -> None:
    _, key = paths(ledger_dir)
    key.chmod(0o644)
    with pytest.raises(InvalidPrivacyParameterError, match="chmod 600"):
        Ledger.open(ledger_dir, "hospital")
    key.chmod(0o600)
    key.write_text("{not json")
    with pytest.raises(LedgerTamperedError, match="corrupt"):
        Ledger.open(ledger_dir, "hospital")


def test_wrong_key_is_detected(ledger_dir: Path) -> None:
    _, key = paths(ledger_dir)
    data = json.loads(key.read_text())
    data["key"] = "11" * 32
    key.write_text(json.dumps(data))
    with pytest.raises(LedgerTamperedError, match="MAC"):
        Ledger.open(ledger_dir, "hospital")


def test_crash_before_key_file_update_is_recovered(ledger_dir: Path) -> None:
    """An appended, valid entry the key file does not yet count (crash in between) is kept."""
    _, key = paths(ledger_dir)
    old = key.read_bytes()
    spend(ledger_dir, label="q3")
    key.write_bytes(old)  # as if the key-file update never happened
    ledger = Ledger.open(ledger_dir, "hospital")
    assert [r.label for r in ledger.releases] == ["q0", "q1", "q2", "q3"]
    assert json.loads(key.read_text())["entries"] == 5  # repaired


def test_deleting_both_files_is_a_documented_limit(ledger_dir: Path) -> None:
    """Documented limit (docs/dp.md): deleting the ledger *and* its key file is indistinguishable
    from a data set never seen; protecting the key file's storage is the operator's job."""
    for p in paths(ledger_dir):
        p.unlink()
    fresh = Ledger.open(ledger_dir, "hospital", BUDGET)
    assert fresh.releases == ()


def test_docs_example_runs(tmp_path: Path) -> None:
    """The python block of docs/dp.md runs (with the ledger directory moved to tmp_path)."""
    import re

    doc = Path(__file__).resolve().parent.parent / "docs" / "dp.md"
    block = re.findall(r"^```python[ \t]*\n(.*?)^```[ \t]*$", doc.read_text(), flags=re.S | re.M)[0]
    code = block.replace('"/var/lib/mpc/ledgers"', repr(str(tmp_path)))
    namespace: dict[str, object] = {}
    exec(compile(code, str(doc), "exec"), namespace)
    acct = namespace["acct"]
    assert isinstance(acct, Accountant)
    assert [r.label for r in acct.releases] == ["model v1"]
    assert Ledger.open(tmp_path, "hospitals-2024").releases == acct.releases
