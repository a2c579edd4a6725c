"""Where a user's lasting state lives (privacy ledgers), and keeping it out of temporary folders.

Responsibility: the per-user state folder (`state_home`: ``$XDG_STATE_HOME/mpc``, else
``~/.local/state/mpc``), and refusing a state location under the system's temporary folder
(`refuse_temporary`), where other users can reach it and a reboot may erase it: a privacy budget
kept there could be spent by someone else's runs or silently reset.
Security model: the state folder is this user's own (not a symbolic link, owned by the effective
user) and readable by its owner only (mode 0700, set if it was wider). A location is temporary
if its path as written or as resolved (through symbolic links) lies in a temporary folder.
Nothing here reads or writes the state itself.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from mpc.errors import ConfigurationError

#: Folders that are temporary on every Unix-like system, besides Python's own
#: (`tempfile.gettempdir()`, which honours TMPDIR).
TEMPORARY_FOLDERS: tuple[str, ...] = ("/tmp", "/var/tmp", "/dev/shm")


def state_home_path() -> Path:
    """Where `state_home` is (without creating it)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "mpc"


def state_home() -> Path:
    """This user's state folder for `mpc` (created, mode 0700, if missing): ``mpc`` under
    ``$XDG_STATE_HOME`` if that is an absolute path, else under ``~/.local/state``."""
    home = state_home_path()
    if not home.is_dir():
        home.mkdir(parents=True, exist_ok=True)
    info = os.lstat(home)
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
        raise ConfigurationError(
            f"the state folder {home} is a symbolic link or belongs to another user; privacy "
            "ledgers must live in a folder of your own: remove it, or set XDG_STATE_HOME"
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        home.chmod(0o700)
    return home


def temporary_root(path: str | os.PathLike[str]) -> Path | None:
    """The system temporary folder that `path` is in (or is), as written or through symbolic
    links (a link in /tmp to a folder elsewhere is still a temporary location), or None."""
    written = Path(os.path.abspath(Path(path).expanduser()))
    places = (written, written.resolve())
    for folder in (tempfile.gettempdir(), *TEMPORARY_FOLDERS):
        for root in (Path(os.path.abspath(folder)), Path(folder).resolve()):
            if any(where == root or root in where.parents for where in places):
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
