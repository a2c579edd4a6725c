"""What may leave a party after a run across organisations: only what `ctx.reveal` gave it.

Responsibility: check a program's return value against the party's reveal log
(`PartyContext.revealed`) and return a copy made only of revealed values.
Security model: a share, a private input, or anything computed from them (a numpy array derived
from a share, a float, a string) is refused, not filtered: the run fails at that party with a
message saying what to return instead. Allowed are containers (dicts with short string keys,
lists, tuples), None, and numpy arrays that are a revealed array (or a view of one) whose
content is still what the reveal returned. Public post-processing of revealed values belongs in
the program file's `report(output, args)`, which runs at whoever receives the output.
Limits: this guards against a program returning secrets by mistake or because of its public
arguments; it is not a sandbox. An approved program is trusted code (it runs with the party's
rights and could send data anywhere), and what it chooses as dict keys, list lengths or where
it puts None is not checked: review a program before approving its hash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mpc.errors import ConfigurationError

MAX_DEPTH = 8
MAX_KEY_CHARS = 64


def _refuse(path: str, what: str) -> ConfigurationError:
    return ConfigurationError(
        f"the program's output at {path} is {what}, not a value ctx.reveal gave this party: "
        "across organisations a program returns only revealed values (compute public "
        "summaries in the program file's report(output, args))"
    )


def only_revealed(output: Any, revealed: Sequence[tuple[np.ndarray, np.ndarray]]) -> Any:
    """`output` rebuilt from copies of revealed values; ConfigurationError naming the first
    element that is not one."""
    return _walk(output, revealed, "output", 0)


def _walk(
    value: Any, revealed: Sequence[tuple[np.ndarray, np.ndarray]], path: str, depth: int
) -> Any:
    if depth > MAX_DEPTH:
        raise _refuse(path, f"nested deeper than {MAX_DEPTH} levels")
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        return _revealed_copy(value, revealed, path)
    if isinstance(value, Mapping):
        out = {}
        for key, child in value.items():
            if not isinstance(key, str) or len(key) > MAX_KEY_CHARS:
                raise _refuse(f"{path} key of type {type(key).__name__}", "not a short string")
            out[key] = _walk(child, revealed, f"{path}[{key!r}]", depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_walk(c, revealed, f"{path}[{i}]", depth + 1) for i, c in enumerate(value)]
    return_type = type(value).__name__
    raise _refuse(path, f"a {return_type}")


def _revealed_copy(
    value: np.ndarray, revealed: Sequence[tuple[np.ndarray, np.ndarray]], path: str
) -> np.ndarray:
    if type(value) is not np.ndarray:  # a subclass can lie about .base
        raise _refuse(path, f"an array of type {type(value).__name__}, not a numpy array")
    for original, snapshot in revealed:
        whole = value is original or (value.base is original and value.size == original.size)
        if whole:  # a reshaped view is fine; a slice would carry a length of its own choosing
            if not _same(original, snapshot):
                raise _refuse(path, "a revealed array that was changed after the reveal")
            return np.array(value, copy=True)
    raise _refuse(path, f"a numpy array of shape {value.shape} that no reveal returned")


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
