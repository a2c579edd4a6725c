"""Fixed-point encoding of real numbers as signed integers.

Responsibility
--------------
Map real values to int64 integers ``round(v * 2**frac_bits)`` and back, with
explicit range checking.  Embedding those integers into a share algebra
(``Algebra.from_signed``) and truncation after multiplication are done
elsewhere; this module only fixes the scale and the admissible range.

Security model
--------------
Pure, deterministic, local computation on a party's own plaintext inputs or
on already-revealed outputs; it holds no secrets and draws no randomness.
Range errors are raised *before* any sharing, so they only reveal facts about
a party's own input to that party.  The range bound ``|v| < 2**int_bits`` is
what lets downstream protocols (signed lifts, probabilistic truncation) stay
correct; silently wrapping an out-of-range value would corrupt results, so we
refuse instead.  ``frac_bits + int_bits <= 52`` keeps ``v * 2**frac_bits``
exact in float64, so encoding is exact up to the final rounding step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["FixedPoint", "FixedPointRangeError"]

_MAX_TOTAL_BITS = 52


class FixedPointRangeError(ValueError):
    """A value cannot be fixed-point encoded (NaN, infinite or too large)."""


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point format: ``frac_bits`` fractional bits, values ``|v| < 2**int_bits``, and
    ``failure_bits`` k: a probabilistic truncation is allowed only where its failure probability
    is at most 2^-k per element (`mpc.bounds.check_truncation`)."""

    frac_bits: int = 16
    int_bits: int = 24
    failure_bits: int = 20

    def __post_init__(self) -> None:
        for field_name in ("frac_bits", "int_bits", "failure_bits"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{field_name} must be an int, got {value!r}")
        if self.frac_bits < 0:
            raise ValueError(f"frac_bits must be >= 0, got {self.frac_bits}")
        if not 1 <= self.failure_bits <= 60:
            raise ValueError(f"failure_bits must be in [1, 60], got {self.failure_bits}")
        if self.int_bits < 1:
            raise ValueError(f"int_bits must be >= 1, got {self.int_bits}")
        if self.frac_bits + self.int_bits > _MAX_TOTAL_BITS:
            raise ValueError(
                f"frac_bits + int_bits must be <= {_MAX_TOTAL_BITS} so encoding is exact in "
                f"float64, got {self.frac_bits} + {self.int_bits} = "
                f"{self.frac_bits + self.int_bits}; lower frac_bits or int_bits"
            )

    @property
    def scale(self) -> int:
        """``2**frac_bits``: the integer that represents 1.0."""
        return 1 << self.frac_bits

    @property
    def max_abs(self) -> float:
        """Exclusive bound on ``|v|``: ``2.0**int_bits``."""
        return float(1 << self.int_bits)

    def encode(self, values: Any) -> npt.NDArray[np.int64]:
        """Encode reals/ints as int64 ``round(v * scale)`` (round half to even).

        Accepts Python scalars, (nested) lists and numpy arrays of ints, floats
        or bools; returns an int64 array of the same shape (0-d for scalars).
        Raises :class:`FixedPointRangeError` for NaN, +-inf or ``|v| >= max_abs``.
        """
        try:
            arr = np.asarray(values, dtype=np.float64)
        except OverflowError as exc:  # Python int too large for a float
            raise FixedPointRangeError(
                f"fixed-point encode: a value is too large to convert to float "
                f"(bound |v| < 2**{self.int_bits} = {self.max_abs:g}); "
                f"rescale the data or raise int_bits"
            ) from exc
        finite = np.isfinite(arr)
        if not finite.all():
            n_nan = int(np.isnan(arr).sum())
            n_inf = int(arr.size - finite.sum()) - n_nan
            raise FixedPointRangeError(
                f"fixed-point encode: input contains {n_nan} NaN and {n_inf} infinite "
                f"value(s); only finite values with |v| < 2**{self.int_bits} can be "
                "encoded; clean the data first"
            )
        if arr.size:
            worst = float(np.abs(arr).max())
            if worst >= self.max_abs:
                raise FixedPointRangeError(
                    f"fixed-point encode: max |v| = {worst:g} is not below the bound "
                    f"2**int_bits = 2**{self.int_bits} = {self.max_abs:g}; rescale the "
                    f"data or raise int_bits (frac_bits + int_bits <= {_MAX_TOTAL_BITS}, "
                    f"currently frac_bits={self.frac_bits})"
                )
        # Multiplying by a power of two is exact; rint rounds half to even.
        return np.asarray(np.rint(arr * float(self.scale)), dtype=np.int64)

    def decode(self, ints: Any) -> npt.NDArray[np.float64]:
        """Decode integers (e.g. ``Algebra.to_signed`` output) to float64 ``x / scale``."""
        arr = np.asarray(ints)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"fixed-point decode expects integers, got dtype {arr.dtype}")
        return np.asarray(np.divide(arr, float(self.scale), dtype=np.float64))
