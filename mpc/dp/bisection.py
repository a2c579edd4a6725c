"""Bisection on a monotone predicate, for the numerical calibrations of `mpc.dp`.

Responsibility: shrink an interval [lo, hi] around the point where a monotone predicate turns
from True (below it) to False (at or above it). Used by the analytic Gaussian calibration, the
zCDP conversions and the audit's confidence bounds.
Security model: pure floating-point arithmetic on public parameters; no secrets, no randomness.
"""

from __future__ import annotations

from collections.abc import Callable


def bisect(
    below: Callable[[float], bool], lo: float, hi: float, steps: int, rel_tol: float = 0.0
) -> tuple[float, float]:
    """The interval after `steps` halvings (or once hi - lo <= rel_tol * hi): `below(x)` must
    be True for x under the sought point and False above it, and the point lie in [lo, hi]."""
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if below(mid):
            lo = mid
        else:
            hi = mid
        if hi - lo <= rel_tol * hi:
            break
    return lo, hi
