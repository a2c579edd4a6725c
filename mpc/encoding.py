"""Fixed-point encoding of reals as signed 64-bit integers.

Responsibility: map reals to integers x = round(v * 2^frac_bits) and back, with a validated range.
Security model: pure local arithmetic on public or own data; it raises on NaN, inf and values out
of range instead of wrapping silently, because a wrapped value would be a silent wrong answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


class FixedPointRangeError(ValueError):
    """A value cannot be encoded: NaN, infinite, or outside the fixed-point range."""


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point format: `frac_bits` fractional bits, values with |v| < 2^int_bits."""

    frac_bits: int = 16
    int_bits: int = 24

    def __post_init__(self) -> None:
        if self.frac_bits < 0:
            raise ValueError(f"frac_bits must be >= 0, got {self.frac_bits}")
        if self.int_bits < 1:
            raise ValueError(f"int_bits must be >= 1, got {self.int_bits}")
        if self.frac_bits + self.int_bits > 52:
            raise ValueError(
                f"frac_bits + int_bits must be <= 52 (exact in float64), got "
                f"{self.frac_bits} + {self.int_bits}; lower one of them"
            )

    @property
    def scale(self) -> int:
        return 1 << self.frac_bits

    @property
    def max_abs(self) -> float:
        return float(2**self.int_bits)

    def encode(self, values: Any) -> npt.NDArray[np.int64]:
        arr = np.asarray(values, dtype=np.float64)
        if arr.size:
            if not np.all(np.isfinite(arr)):
                raise FixedPointRangeError("cannot encode NaN or infinite values")
            worst = float(np.max(np.abs(arr)))
            if worst >= self.max_abs:
                raise FixedPointRangeError(
                    f"value {worst:g} is outside the fixed-point range |v| < 2^{self.int_bits} "
                    f"= {self.max_abs:g}; rescale the data or raise int_bits"
                )
        return np.rint(arr * self.scale).astype(np.int64)

    def decode(self, ints: Any) -> npt.NDArray[np.float64]:
        return np.asarray(ints, dtype=np.int64).astype(np.float64) / self.scale
