"""Persistent, tamper-evident privacy ledger: one append-only file per data set.

Responsibility
--------------
Keep the releases charged against a data set's budget across sessions and restarts, and refuse
to go on (:class:`~mpc.dp.accountant.LedgerTamperedError`) when the record was edited,
truncated, deleted or cannot be verified — never silently start a fresh budget.

Files (in one directory, for data set ``NAME``; names are ``[A-Za-z0-9._-]+``)

``NAME.ledger.jsonl``
    Append-only JSON lines.  Entry 0 (``"kind": "open"``) fixes the data set and its budget;
    every later entry (``"kind": "release"``) is one :class:`~mpc.dp.accountant.Release`.  Each
    entry carries ``seq`` (its index) and ``mac = HMAC-SHA256(key, "mpc.dp.ledger.v1" ||
    previous mac || canonical JSON of the entry without its mac)``, the previous mac of entry 0
    being 32 zero bytes: a hash chain, so an entry cannot be changed, removed, reordered or
    inserted without the key.
``NAME.ledger.key``
    JSON with the 256-bit HMAC key, the data set name, the number of entries and the mac of the
    last one (the *head*), created with mode 0600 and rewritten atomically (temporary file +
    ``os.replace``) after every append.  The head is what detects truncation (dropping the last
    entries leaves a valid but shorter chain) and deletion of the ledger.  ``"entries": 0``
    (head: 32 zero bytes) means "created, no entry written yet" (see the creation order).
``NAME.ledger.lock``
    Empty; ``fcntl.flock`` on it serialises processes that open or append (POSIX only).

Loading verifies: both files present (or both absent: a new data set, created only when a
budget is given), key-file permissions 0600 or stricter, every line valid JSON with the right
``seq`` and mac, exactly one ``open`` entry first with the right data set, and the key file's
entry count and head matching the chain.  The ledger may hold *more* valid entries than the key
file records (a crash between the ledger's fsync and the key-file update); those are accepted,
since only the key holder can produce them and they only add spending.  A partial last line
(crash in the middle of a write) is treated as tampering: an operator must look.

Order of creation (each step durable before the next, so a crash anywhere is recovered by the
next open, without an operator):

1. the key file, recording 0 entries;
2. the ledger with its ``open`` entry, written to a temporary file, fsynced and then linked
   into place, so it appears complete or not at all;
3. the key file, recording 1 entry.

A crash after 1 leaves a key file that records nothing and no ledger: nothing was spent, so the
next open with a budget creates the ledger with that key (without a budget it asks for one).  A
crash after 2 leaves one valid entry the key file does not count yet, accepted as above.  A
ledger without its key file never comes from a crash, so it is always refused (it cannot be
verified, and recreating it would start a fresh budget).

Order of an append: re-read and verify under the lock, check the budget (by the accountant),
append the entry and fsync, then update the key file.  A release is therefore on disk before
the accountant lets the caller reveal anything.

Threat model (honest limits)
----------------------------
* Detects: edits of any byte of the ledger, deleted/reordered/inserted lines, truncation,
  deletion of the ledger while the key file exists, a ledger whose key file was deleted, a ledger
  or key file copied from another data set.
* Does NOT protect against whoever can read the key file: with the key, anyone can rewrite a
  consistent ledger (including a fresh one with nothing spent).  Keep the key file on storage
  the data users cannot write (e.g. the data custodian's account or an HSM-backed secret store).
* Does NOT detect the deletion of *both* files (indistinguishable from a data set never seen),
  nor a rollback of both files to an older consistent copy (e.g. restored from a backup).  An
  external monotonic counter or a remote append-only log would be needed for that.
* The JSON content (releases, budget) is public bookkeeping, authenticated but not encrypted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpc.dp.accountant import (
    InvalidPrivacyParameterError,
    LedgerTamperedError,
    PrivacyBudget,
    Release,
)
from mpc.private_files import create_private_file, write_private_file

__all__ = ["Ledger", "LedgerTransaction"]

_DOMAIN = b"mpc.dp.ledger.v1"
_KEY_BYTES = 32
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_VERSION = 1


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _mac(key: bytes, prev: bytes, body: dict[str, Any]) -> bytes:
    return hmac.new(key, _DOMAIN + prev + _canonical(body), hashlib.sha256).digest()


@dataclass(frozen=True)
class _State:
    budget: PrivacyBudget
    releases: tuple[Release, ...]
    head: bytes
    count: int


class LedgerTransaction:
    """The verified state under the ledger's lock; each ``append`` adds one release durably
    (several appends of one transaction are one all-or-nothing charge, in order)."""

    def __init__(self, ledger: Ledger, state: _State) -> None:
        self._ledger = ledger
        self._state = state

    @property
    def releases(self) -> tuple[Release, ...]:
        return self._state.releases

    @property
    def budget(self) -> PrivacyBudget:
        return self._state.budget

    def append(self, release: Release) -> None:
        self._state = self._ledger._append_locked(self._state, release)


class Ledger:
    """The privacy ledger of one data set (see the module docstring for files and guarantees).

    ``Ledger.open(directory, dataset, budget=None)``: load and verify; if neither file exists,
    create the ledger with ``budget`` (required then).  Use with
    :class:`~mpc.dp.accountant.Accountant` (``Accountant(ledger=ledger)``).
    """

    def __init__(self, directory: Path, dataset: str, state: _State) -> None:
        self._dir = directory
        self._dataset = dataset
        self._state = state

    # ---- paths --------------------------------------------------------------------------------

    @staticmethod
    def paths(directory: str | os.PathLike[str], dataset: str) -> tuple[Path, Path, Path]:
        """(ledger, key file, lock file) paths for ``dataset`` in ``directory``."""
        if not isinstance(dataset, str) or not _NAME.match(dataset) or dataset in (".", ".."):
            raise InvalidPrivacyParameterError(
                f"dataset must be a name of 1-128 characters from [A-Za-z0-9._-], got {dataset!r}"
            )
        base = Path(directory)
        return (
            base / f"{dataset}.ledger.jsonl",
            base / f"{dataset}.ledger.key",
            base / f"{dataset}.ledger.lock",
        )

    @property
    def dataset(self) -> str:
        return self._dataset

    @property
    def path(self) -> Path:
        return self.paths(self._dir, self._dataset)[0]

    @property
    def key_path(self) -> Path:
        return self.paths(self._dir, self._dataset)[1]

    @property
    def budget(self) -> PrivacyBudget:
        return self._state.budget

    @property
    def releases(self) -> tuple[Release, ...]:
        return self._state.releases

    # ---- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        dataset: str,
        budget: PrivacyBudget | None = None,
    ) -> Ledger:
        """Load and verify the ledger of ``dataset``, or create it (with ``budget``) if neither
        its ledger nor its key file exists.  ``budget``, when given for an existing ledger, must
        equal the recorded one (InvalidPrivacyParameterError otherwise)."""
        ledger_path, _key_path, _lock_path = cls.paths(directory, dataset)
        base = Path(directory)
        base.mkdir(parents=True, exist_ok=True)
        if budget is not None and not isinstance(budget, PrivacyBudget):
            raise InvalidPrivacyParameterError("budget must be a PrivacyBudget or None")
        with cls._lock(base, dataset):
            state = cls._load(base, dataset, create_with=budget)
        if budget is not None and state.budget != budget:
            raise InvalidPrivacyParameterError(
                f"the ledger of data set {dataset!r} ({ledger_path}) was created with budget "
                f"{state.budget}, not {budget}: a budget cannot be changed by reopening; pass "
                f"budget=None to use the recorded one"
            )
        return cls(base, dataset, state)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[LedgerTransaction]:
        """Lock, re-read and verify the ledger (others may have appended), yield the state."""
        with self._lock(self._dir, self._dataset):
            state = self._load(self._dir, self._dataset, create_with=None, existed=True)
            if state.budget != self._state.budget:  # pragma: no cover - needs the key
                raise LedgerTamperedError(f"the budget of data set {self._dataset!r} changed")
            txn = LedgerTransaction(self, state)
            yield txn
            self._state = txn._state

    def append(self, release: Release) -> None:
        """Append one release (no budget check: use :meth:`Accountant.spend` for that)."""
        with self.transaction() as txn:
            txn.append(release)

    def refresh(self) -> None:
        """Re-read and verify the ledger (LedgerTamperedError if it no longer verifies)."""
        with self.transaction():
            pass

    # ---- internals ----------------------------------------------------------------------------

    @staticmethod
    @contextlib.contextmanager
    def _lock(base: Path, dataset: str) -> Iterator[None]:
        lock_path = Ledger.paths(base, dataset)[2]
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @staticmethod
    def _write_key_file(path: Path, data: dict[str, Any]) -> None:
        write_private_file(path, _canonical(data) + b"\n")

    @staticmethod
    def _key_data(dataset: str, key: bytes, entries: int, head: bytes) -> dict[str, Any]:
        return {
            "version": _VERSION,
            "dataset": dataset,
            "key": key.hex(),
            "entries": entries,
            "head": head.hex(),
        }

    #: Creates the ledger file all at once (no partial first line); tests make it crash.
    _write_new_ledger = staticmethod(create_private_file)

    @classmethod
    def _create(
        cls, base: Path, dataset: str, budget: PrivacyBudget, key: bytes | None = None
    ) -> _State:
        """Create the ledger (under the lock) in the crash-safe order of the module docstring;
        ``key``: the key of a key file that records no entry (an interrupted creation)."""
        ledger_path, key_path, _ = cls.paths(base, dataset)
        if key is None:
            key = secrets.token_bytes(_KEY_BYTES)
            # 1. The key file first, recording no entry: a crash before the ledger exists leaves
            # a key file the next open can use (nothing was spent), never an unverifiable ledger.
            cls._write_key_file(key_path, cls._key_data(dataset, key, 0, bytes(32)))
        body = {
            "seq": 0,
            "kind": "open",
            "dataset": dataset,
            "budget": budget.to_json(),
            "time": time.time(),
            "version": _VERSION,
        }
        mac = _mac(key, bytes(32), body)
        # 2. The ledger, complete or not at all.
        cls._write_new_ledger(ledger_path, _canonical({**body, "mac": mac.hex()}) + b"\n")
        # 3. The key file counts the entry (a crash before this is repaired by the next load).
        cls._write_key_file(key_path, cls._key_data(dataset, key, 1, mac))
        return _State(budget, (), mac, 1)

    @staticmethod
    def _missing_key_message(ledger_path: Path, key_path: Path) -> str:
        """What to do about a ledger without its key file (never the result of a crash)."""
        try:
            lines = ledger_path.read_bytes().count(b"\n")
        except OSError:  # pragma: no cover - unreadable: say nothing about its content
            lines = -1
        text = (
            f"the ledger {ledger_path} exists but its key file {key_path} is missing, so it "
            f"cannot be verified and a fresh budget is not started: restore the key file from "
            f"where it is kept or backed up"
        )
        if lines == 1:
            text += (
                f"; if none ever existed (this ledger holds only its opening entry, as after a "
                f"crash while an older version of mpc created it) and nothing was ever released "
                f"from this data set, delete {ledger_path} and open it again with its budget"
            )
        elif lines > 1:
            text += f" (the ledger holds {lines - 1} release entries: do not delete it)"
        return text

    @classmethod
    def _read_key(cls, key_path: Path, dataset: str) -> tuple[bytes, int, bytes]:
        mode = key_path.stat().st_mode
        if stat.S_IMODE(mode) & 0o077:
            raise InvalidPrivacyParameterError(
                f"the ledger key file {key_path} is readable or writable by group/others "
                f"(mode {stat.S_IMODE(mode):o}): run chmod 600 on it"
            )
        try:
            data = json.loads(key_path.read_bytes())
            key = bytes.fromhex(data["key"])
            count = int(data["entries"])
            head = bytes.fromhex(data["head"])
            name = data["dataset"]
        except (ValueError, KeyError, TypeError) as exc:
            raise LedgerTamperedError(f"the ledger key file {key_path} is corrupt: {exc}") from exc
        if name != dataset:
            raise LedgerTamperedError(
                f"the key file {key_path} belongs to data set {name!r}, not {dataset!r}"
            )
        if len(key) != _KEY_BYTES or count < 0 or len(head) != 32:
            raise LedgerTamperedError(f"the ledger key file {key_path} is corrupt")
        if count == 0 and head != bytes(32):
            raise LedgerTamperedError(f"the ledger key file {key_path} is corrupt")
        return key, count, head

    @classmethod
    def _load(
        cls, base: Path, dataset: str, create_with: PrivacyBudget | None, existed: bool = False
    ) -> _State:
        ledger_path, key_path, _ = cls.paths(base, dataset)
        has_ledger, has_key = ledger_path.exists(), key_path.exists()
        if not has_ledger and not has_key:
            if existed:
                raise LedgerTamperedError(
                    f"the ledger of data set {dataset!r} ({ledger_path}) and its key file were "
                    f"both deleted while in use"
                )
            if create_with is None:
                raise InvalidPrivacyParameterError(
                    f"there is no ledger for data set {dataset!r} in {base}: pass "
                    f"budget=PrivacyBudget(epsilon, delta) to Ledger.open to create one"
                )
            return cls._create(base, dataset, create_with)
        if not has_key:
            raise LedgerTamperedError(cls._missing_key_message(ledger_path, key_path))
        key, count, head = cls._read_key(key_path, dataset)
        if not has_ledger:
            if count == 0 and not existed:
                # A creation interrupted after its first step: nothing was ever recorded.
                if create_with is None:
                    raise InvalidPrivacyParameterError(
                        f"the creation of the ledger of data set {dataset!r} in {base} was "
                        f"interrupted before any entry: pass budget=PrivacyBudget(epsilon, "
                        f"delta) to Ledger.open to create it"
                    )
                return cls._create(base, dataset, create_with, key=key)
            raise LedgerTamperedError(
                f"the ledger {ledger_path} is missing but its key file records {count} "
                f"entries: restore the ledger (a fresh budget is not started)"
            )
        raw = ledger_path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            raise LedgerTamperedError(f"the ledger {ledger_path} ends in a partial line")
        lines = raw.split(b"\n")[:-1] if raw else []
        prev = bytes(32)
        budget: PrivacyBudget | None = None
        releases: list[Release] = []
        macs: list[bytes] = []
        for seq, line in enumerate(lines):
            where = f"the ledger {ledger_path}, entry {seq}"
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict):
                    raise ValueError("not an object")
                mac = bytes.fromhex(entry.pop("mac"))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise LedgerTamperedError(f"{where} is not a valid entry ({exc})") from exc
            if not hmac.compare_digest(mac, _mac(key, prev, entry)):
                raise LedgerTamperedError(f"{where} fails its MAC: the ledger was modified")
            if entry.get("seq") != seq:
                raise LedgerTamperedError(f"{where} has sequence number {entry.get('seq')!r}")
            try:
                if seq == 0:
                    if entry.get("kind") != "open" or entry.get("dataset") != dataset:
                        raise LedgerTamperedError(f"{where} is not the opening of {dataset!r}")
                    budget = PrivacyBudget.from_json(entry["budget"])
                elif entry.get("kind") == "release":
                    releases.append(Release.from_json(entry["release"]))
                else:
                    raise LedgerTamperedError(f"{where} has unknown kind {entry.get('kind')!r}")
            except (KeyError, TypeError, ValueError) as exc:
                if isinstance(exc, LedgerTamperedError):
                    raise
                raise LedgerTamperedError(f"{where} has invalid content ({exc})") from exc
            prev = mac
            macs.append(mac)
        if budget is None or len(macs) < count:
            raise LedgerTamperedError(
                f"the ledger {ledger_path} has {len(macs)} entries but its key file records "
                f"{count}: it was truncated"
            )
        if count > 0 and not hmac.compare_digest(macs[count - 1], head):
            raise LedgerTamperedError(
                f"the ledger {ledger_path} does not match the head recorded in its key file"
            )
        if len(macs) > count:  # crash after the ledger write, before the key-file update
            cls._write_key_file(key_path, cls._key_data(dataset, key, len(macs), macs[-1]))
        return _State(budget, tuple(releases), macs[-1], len(macs))

    def _append_locked(self, state: _State, release: Release) -> _State:
        if not isinstance(release, Release):
            raise TypeError(f"expected a Release, got {type(release).__name__}")
        ledger_path, key_path, _ = self.paths(self._dir, self._dataset)
        key, _count, _head = self._read_key(key_path, self._dataset)
        body = {
            "seq": state.count,
            "kind": "release",
            "release": release.to_json(),
            "time": time.time(),
        }
        mac = _mac(key, state.head, body)
        line = _canonical({**body, "mac": mac.hex()}) + b"\n"
        fd = os.open(ledger_path, os.O_WRONLY | os.O_APPEND)
        with os.fdopen(fd, "ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self._write_key_file(key_path, self._key_data(self._dataset, key, state.count + 1, mac))
        # Round-trip through JSON so the in-memory record equals what a reload will see.
        stored = Release.from_json(json.loads(_canonical(release.to_json())))
        return _State(state.budget, (*state.releases, stored), mac, state.count + 1)
