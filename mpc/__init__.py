"""mpc: a runtime for secure multi-party computation.

Import is cheap and side-effect free: nothing starts, nothing is registered from outside packages
until it is asked for. See README.md and docs/ for the user guide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["FixedPoint", "Session"]

if TYPE_CHECKING:
    from mpc.encoding import FixedPoint
    from mpc.session import Session


def __getattr__(name: str) -> Any:
    """Lazy access to the public API, so `import mpc` stays cheap (no Ray import)."""
    if name == "Session":
        from mpc.session import Session

        return Session
    if name == "FixedPoint":
        from mpc.encoding import FixedPoint

        return FixedPoint
    raise AttributeError(f"module 'mpc' has no attribute {name!r}")
