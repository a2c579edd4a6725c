"""Protocol registry: find protocols by name, built in or from outside packages.

Responsibility: `register_protocol`, `get_protocol`, `available_protocols`, and the start-of-
session check that a dealer provides what a protocol needs and that (n, t) is supported.
Outside packages declare protocols in the `mpc.protocols` entry-point group
(`name = "package.module:ProtocolClass"`); they are loaded lazily, the first time the registry
is asked for a name it does not know or for the full list, never at `import mpc`.
Security model: loading an entry point runs that package's code, like any import; only installed
packages are considered.
"""

from __future__ import annotations

import threading
from importlib.metadata import entry_points

from mpc.errors import ConfigurationError
from mpc.protocols.base import Need, Protocol

ENTRY_POINT_GROUP = "mpc.protocols"

_lock = threading.RLock()
_registry: dict[str, type[Protocol]] = {}
_builtins_loaded = False
_entry_points_loaded = False


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
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    broken: list[str] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _registry:
            continue
        try:  # a broken plug-in must not hide the others: load all, then report
            register_protocol(ep.load(), name=ep.name)
        except Exception as exc:
            broken.append(f"{ep.name!r} ({ep.value}): {exc}")
    if broken:
        raise ConfigurationError(
            "could not load protocol plug-in(s) "
            + "; ".join(broken)
            + " (the other plug-ins are loaded; fix or uninstall the broken package)"
        )


def get_protocol(name: str) -> type[Protocol]:
    """The protocol class registered as `name`; ConfigurationError listing the choices if none."""
    with _lock:
        _load_builtins()
        if name not in _registry:
            _load_entry_points()
        try:
            return _registry[name]
        except KeyError:
            choices = ", ".join(sorted(_registry))
            raise ConfigurationError(
                f"unknown protocol {name!r}; available protocols: {choices}"
            ) from None


def available_protocols() -> dict[str, type[Protocol]]:
    """All registered protocols, built in and from installed plug-ins, by name."""
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
