"""Protocol registry: find protocols by name, built in or from outside packages.

Responsibility: `register_protocol`, `get_protocol`, `available_protocols`, and the start-of-
session check that a dealer provides what a protocol needs and that (n, t) is supported.
Outside packages declare protocols in the `mpc.protocols` entry-point group
(`name = "package.module:ProtocolClass"`); they are loaded lazily, the first time the registry
is asked for a name it does not know or for the full list, never at `import mpc`. A plug-in that
fails to load is left out with a `PluginWarning` naming it (`broken_plugins()`); the built-ins
and the other plug-ins stay available, and asking for the broken one by name says why it failed.
Security model: loading an entry point runs that package's code, like any import; only installed
packages are considered.
"""

from __future__ import annotations

import threading
import warnings
from importlib.metadata import EntryPoint, entry_points

from mpc.errors import ConfigurationError
from mpc.protocols.base import Need, Protocol

ENTRY_POINT_GROUP = "mpc.protocols"

_lock = threading.RLock()
_registry: dict[str, type[Protocol]] = {}
_builtins_loaded = False
_entry_points_loaded = False
#: Entry points that failed to load at the last loading: name -> what went wrong.
_broken: dict[str, str] = {}


class PluginWarning(UserWarning):
    """A protocol plug-in (entry point) could not be loaded and is left out."""


def register_protocol(cls: type[Protocol], *, name: str | None = None) -> type[Protocol]:
    """Register a protocol class under `name` (default: `cls.name`); refuse duplicates.

    Usable as a decorator. Raises ConfigurationError if the name is taken or the class does not
    subclass `mpc.protocols.base.Protocol`.
    """
    if not (isinstance(cls, type) and issubclass(cls, Protocol)):
        raise ConfigurationError(f"{cls!r} is not a subclass of mpc.protocols.base.Protocol")
    key = name or getattr(cls, "name", None)
    if not key or not isinstance(key, str):
        raise ConfigurationError(f"protocol class {cls.__name__} needs a string `name`")
    with _lock:
        _load_builtins()
        existing = _registry.get(key)
        if existing is not None and existing is not cls:
            raise ConfigurationError(
                f"a protocol named {key!r} is already registered ({existing.__module__}."
                f"{existing.__qualname__}); choose another name"
            )
        _registry[key] = cls
    return cls


def unregister_protocol(name: str) -> None:
    """Remove a registered protocol (for tests and plug-in reloads)."""
    with _lock:
        _registry.pop(name, None)


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    from mpc.protocols.additive import AdditiveBeaver
    from mpc.protocols.shamir import ShamirBeaver, ShamirDegreeReduction

    for cls in (AdditiveBeaver, ShamirDegreeReduction, ShamirBeaver):
        _registry[cls.name] = cls


def _load_entry_points() -> None:
    global _entry_points_loaded, _broken
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    broken: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _registry:
            continue
        try:  # a broken plug-in must not hide the others: load all, then report
            register_protocol(ep.load(), name=ep.name)
        except Exception as exc:
            broken[ep.name] = _describe_failure(ep, exc)
    _broken = broken
    for problem in broken.values():
        warnings.warn(problem, PluginWarning, stacklevel=3)


def _describe_failure(ep: EntryPoint, exc: Exception) -> str:
    """One line: which entry point, from which distribution, failed how, and what to do."""
    dist = getattr(getattr(ep, "dist", None), "name", None)
    source = f", declared by the distribution {dist!r}" if dist else ""
    reason = " ".join(str(exc).split()) or "(no message)"
    return (
        f"protocol plug-in {ep.name!r} ({ep.value}{source}) could not be loaded and is left "
        f"out: {type(exc).__name__}: {reason}; fix or uninstall the package that declares it"
    )


def broken_plugins() -> dict[str, str]:
    """The protocol plug-ins that failed to load, by entry-point name, each with a one-line
    description of the failure (loads the entry points if that was not done yet)."""
    with _lock:
        _load_builtins()
        _load_entry_points()
        return dict(_broken)


def get_protocol(name: str) -> type[Protocol]:
    """The protocol class registered as `name`; ConfigurationError listing the choices if none."""
    with _lock:
        _load_builtins()
        if name not in _registry:
            _load_entry_points()
        try:
            return _registry[name]
        except KeyError:
            pass
        if name in _broken:
            raise ConfigurationError(_broken[name])
        choices = ", ".join(sorted(_registry))
        left_out = f" (left out, failed to load: {', '.join(sorted(_broken))})" if _broken else ""
        raise ConfigurationError(
            f"unknown protocol {name!r}; available protocols: {choices}{left_out}"
        )


def available_protocols() -> dict[str, type[Protocol]]:
    """All registered protocols, built in and from installed plug-ins, by name; a plug-in that
    fails to load is left out with a `PluginWarning` (see `broken_plugins`)."""
    with _lock:
        _load_builtins()
        _load_entry_points()
        return dict(sorted(_registry.items()))


def check_compatibility(
    protocol: type[Protocol], n: int, threshold: int | None, provides: frozenset[Need] | None
) -> int:
    """Check (n, t) and the dealer before a session starts; return the threshold to use."""
    t = protocol.check_parties(n, threshold)
    missing = protocol.needs - (provides or frozenset())
    if missing:
        what = ", ".join(sorted(m.value for m in missing))
        if provides is None:
            raise ConfigurationError(
                f"protocol {protocol.name!r} needs a dealer for {what}, but no dealer was "
                "given; pass dealer='trusted' (or 'local-insecure' with allow_insecure=True "
                "for tests)"
            )
        raise ConfigurationError(
            f"the chosen dealer does not provide {what}, which protocol {protocol.name!r} "
            "needs; choose a dealer that does"
        )
    return t
