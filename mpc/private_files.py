"""Atomic writes of owner-only files (party keys, DP ledgers and their key files, Ray tokens).

Responsibility: replace a file's contents all at once (write a mode-0600 temporary file in the
same directory, fsync it, rename it over the target and fsync the directory, so a crash leaves
either the old or the new file, never a partial one), or create a new file all at once (link
the complete temporary file: only one of several concurrent creators wins).
Security model: the file is created readable and writable by its owner only (the temporary
file too); nothing is logged. Protection beyond file permissions is the operating system's.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _written_temp(directory: Path, name: str, data: bytes) -> str:
    """A mode-0600 temporary file in `directory` holding `data`, fsynced; its path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically replace `path` with `data`, mode 0600."""
    directory = path.parent if str(path.parent) else Path(".")
    tmp = _written_temp(directory, path.name, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def create_private_file(path: Path, data: bytes) -> None:
    """Create `path` holding `data`, mode 0600, all at once; FileExistsError if it exists.

    The complete temporary file is hard-linked to `path`, so a crash (or a concurrent creator)
    leaves no file or a complete one, never a partial one, and only one creator wins.
    """
    directory = path.parent if str(path.parent) else Path(".")
    tmp = _written_temp(directory, path.name, data)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # pragma: no cover - file systems without hard links
            if path.exists():
                raise FileExistsError(path) from None
            os.replace(tmp, path)  # callers that need exclusivity hold a lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(directory)


def fsync_dir(path: Path) -> None:
    """Make new directory entries in `path` durable (where the platform allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
