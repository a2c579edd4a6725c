"""Where a user's lasting state lives (privacy ledgers), and keeping it out of temporary folders.

Responsibility: the per-user state folder (`state_home`: ``$XDG_STATE_HOME/mpc``, else
``~/.local/state/mpc``), and refusing a state location under the system's temporary folder
(`refuse_temporary`), where other users can reach it and a reboot may erase it: a privacy budget
kept there could be spent by someone else's runs or silently reset.
Security model: the state folder is created readable by its owner only (mode 0700). Nothing here
reads or writes the state itself.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mpc.errors import ConfigurationError

#: Folders that are temporary on every Unix-like system, besides Python's own
#: (`tempfile.gettempdir()`, which honours TMPDIR).
TEMPORARY_FOLDERS: tuple[str, ...] = ("/tmp", "/var/tmp", "/dev/shm")


def state_home() -> Path:
    """This user's state folder for `mpc` (created, mode 0700, if missing): ``mpc`` under
    ``$XDG_STATE_HOME`` if that is an absolute path, else under ``~/.local/state``."""
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    home = root / "mpc"
    if not home.is_dir():
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o700)
    return home


def temporary_root(path: str | os.PathLike[str]) -> Path | None:
    """The system temporary folder that `path` is in (or is), or None."""
    where = Path(path).expanduser().resolve()
    for folder in (tempfile.gettempdir(), *TEMPORARY_FOLDERS):
        root = Path(folder).resolve()
        if where == root or root in where.parents:
            return root
    return None


def refuse_temporary(path: str | os.PathLike[str], what: str, allow: str) -> None:
    """Raise ConfigurationError if `path` is under the system's temporary folder: `what` names
    the state kept there, `allow` how the user accepts that location all the same."""
    root = temporary_root(path)
    if root is not None:
        raise ConfigurationError(
            f"{what} would be in {path}, under the temporary folder {root}: other users can "
            "reach it and a reboot may erase it, resetting the privacy budget; choose a folder "
            f"of your own (such as one in {state_home_hint()}), or {allow}"
        )


def state_home_hint() -> str:
    """Where `state_home` is, as the user would write it (without creating it)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    return f"{base}/mpc" if os.path.isabs(base) else "~/.local/state/mpc"
