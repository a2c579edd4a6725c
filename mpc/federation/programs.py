"""Agreed programs: a program is a Python file identified by the SHA-256 of its source.

Responsibility: hash a program file (`mpc program hash FILE`), find an approved program by hash
in a party's own program folder, and load it from the exact bytes that were hashed; check the
public arguments of a run (plain msgpack data, bounded in size and depth).
Security model: a party runs only code from its own disk whose hash its policy approves; the
starter of a run names a hash, never code. The source is executed from the bytes that were
hashed, so a file changed after the check is not what runs. A program file defines
``party_program(ctx, args)`` (the SPMD entry) and may define ``public_args(argv) -> dict``
and ``report(output, args) -> str`` for the starter.
Public arguments are chosen by whoever starts a run, so they are an attack surface (a training
recipe can be bent to make the revealed model one patient's row): a program that takes any
defines ``accept_args(args) -> dict``, which every party runs (it is part of the approved,
hashed file) to refuse unknown keys and values outside the program's safe ranges; a program
without it takes no arguments at all.
"""

from __future__ import annotations

import hashlib
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from mpc.errors import ConfigurationError

ENTRY = "party_program"
ACCEPT = "accept_args"
MAX_ARGS_BYTES = 64 * 1024
MAX_PROGRAM_BYTES = 4 * 2**20


def source_hash(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()


def program_hash(path: str | Path) -> str:
    """The SHA-256 (hex) of a program file: what a policy lists to approve it."""
    return source_hash(Path(path).read_bytes())


@dataclass(frozen=True)
class Program:
    """An approved program, loaded from the bytes whose hash was checked."""

    digest: str
    path: Path
    module: types.ModuleType

    @property
    def entry(self) -> Callable[..., Any]:
        entry = getattr(self.module, ENTRY, None)
        if not callable(entry):
            raise ConfigurationError(
                f"program {self.path.name} defines no {ENTRY}(ctx, args) function, so it cannot "
                "run across organisations"
            )
        return entry  # type: ignore[no-any-return]


def load_source(path: Path, source: bytes, digest: str) -> Program:
    """Execute `source` (the bytes hashed to `digest`) as a module named after its hash."""
    name = f"mpc_program_{digest[:16]}"
    module = types.ModuleType(name)
    module.__file__ = str(path)
    code = compile(source, str(path), "exec")
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        exec(code, module.__dict__)  # the party's own approved file
    except BaseException:
        del sys.modules[name]
        raise
    return Program(digest, path, module)


def find_approved(folder: Path, hashes: frozenset[str] | None, digest: str, origin: str) -> Program:
    """The program with `digest` from `folder`, if this party's policy approves it."""
    if not isinstance(digest, str) or len(digest) != 64:
        raise ConfigurationError("a program is named by its 64-hex-digit SHA-256")
    digest = digest.lower()
    if hashes is not None and digest not in hashes:
        raise ConfigurationError(
            f"program {digest[:16]}… is not approved by this party ({origin} [programs] hashes); "
            "add its hash (mpc program hash FILE) to approve it"
        )
    if not folder.is_dir():
        raise ConfigurationError(f"{origin} [programs] folder {folder} does not exist")
    for path in sorted(folder.glob("*.py")):
        source = path.read_bytes()
        if len(source) <= MAX_PROGRAM_BYTES and source_hash(source) == digest:
            return load_source(path, source, digest)
    raise ConfigurationError(
        f"program {digest[:16]}… is not in this party's approved folder {folder} ({origin} "
        "[programs] folder): copy the agreed file there after reviewing it"
    )


def check_args(args: Any) -> dict[str, Any]:
    """Public arguments: a msgpack-able mapping with string keys, at most 64 KiB encoded."""
    if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
        raise ConfigurationError("a run's public arguments are a mapping with string keys")
    try:
        encoded = msgpack.packb(dict(args), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigurationError(
            f"public arguments must be plain data (numbers, strings, lists, maps): {exc}"
        ) from None
    if len(encoded) > MAX_ARGS_BYTES:
        raise ConfigurationError(
            f"public arguments are {len(encoded)} bytes encoded; the limit is {MAX_ARGS_BYTES}"
        )
    decoded: dict[str, Any] = msgpack.unpackb(encoded, raw=False, strict_map_key=True)
    return decoded


def accepted_args(program: Program, args: Mapping[str, Any]) -> dict[str, Any]:
    """The run's public arguments as the approved program accepts them (its `accept_args`);
    ConfigurationError when it refuses them, or when a program without one gets any."""
    accept = getattr(program.module, ACCEPT, None)
    if accept is None:
        if args:
            raise ConfigurationError(
                f"program {program.path.name} takes no public arguments (it defines no "
                f"{ACCEPT}), but the run gives {len(args)}"
            )
        return {}
    try:
        accepted = accept(dict(args))
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigurationError(
            f"program {program.path.name} refuses these public arguments: {exc}"
        ) from None
    return check_args(accepted)


def canonical_args(args: Mapping[str, Any]) -> bytes:
    """A deterministic encoding of public arguments (keys sorted at every level)."""

    def sort(value: Any) -> Any:
        if isinstance(value, Mapping):
            return [[k, sort(value[k])] for k in sorted(value)]
        if isinstance(value, list | tuple):
            return [sort(v) for v in value]
        return value

    packed: bytes = msgpack.packb(sort(args), use_bin_type=True)
    return packed
