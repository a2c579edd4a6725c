"""Clipping, stochastic rounding and slot packing of model updates: the pure math of `mpc.fl`.

Responsibility: turn a float update into the integers the parties add securely, and back. An
update is clipped in L2 to `clip_norm` C (every coordinate is then at most C), scaled by 2^s
(`scale_bits`) and rounded stochastically to an integer (unbiased: E[q] = x 2^s), so each
coordinate lies in [-B, B] with B = ceil(C 2^s). Several coordinates share one ring or field
element (`SlotLayout`): each is offset by B to [0, 2B] and given `slot_bits` bits, enough for
the sum over n parties (n 2B < 2^slot_bits), so slots never carry into each other and the
packed sum is the packed vector of sums. `SlotLayout.plan` refuses (ConfigurationError, with
the largest scale that fits) a clip norm and scale whose sum could reach what the algebra
holds, before anything is shared (`mpc.bounds.check_wrap` is the same bound).
Security model: public numbers only (C, s, n, the algebra); the rounding's randomness comes
from the crypto PRG `mpc.rng.Prg` keyed by a fresh seed (`secrets`), never from numpy or torch
generators, so a party's rounding noise is as secret as its update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mpc import bounds
from mpc.algebra import Algebra
from mpc.errors import ConfigurationError, InvalidDataError
from mpc.rng import Prg, Tag

__all__ = [
    "SlotLayout",
    "check_finite",
    "clip_l2",
    "dequantize",
    "quantization_limit",
    "stochastic_round",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Bits of the uniform draw that decides each stochastic rounding.
UNIFORM_BITS = 32


def check_finite(update: FloatArray, who: str) -> None:
    """InvalidDataError naming `who` if `update` holds NaN or infinite values."""
    finite = np.isfinite(update)
    if finite.all():
        return
    n_nan = int(np.isnan(update).sum())
    n_inf = int(update.size - finite.sum()) - n_nan
    first = int(np.flatnonzero(~finite)[0])
    raise InvalidDataError(
        f"{who}: {n_nan} NaN and {n_inf} infinite value(s) (first at parameter {first}); "
        "local training diverged or the data holds NaN: lower the learning rate, check the "
        "data, or clip harder; nothing was shared"
    )


def clip_l2(update: FloatArray, clip_norm: float) -> tuple[FloatArray, float]:
    """(update scaled to L2 norm at most `clip_norm`, its norm before clipping)."""
    norm = float(np.linalg.norm(update))
    if norm <= clip_norm:
        return update, norm
    return update * (clip_norm / norm), norm


def clip_rows_l2(rows: FloatArray, clip_norm: float) -> FloatArray:
    """Each row scaled to L2 norm at most `clip_norm` (per-example clipping, DP-SGD)."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    factors = np.minimum(1.0, clip_norm / np.maximum(norms, 1e-300))
    return np.asarray(rows * factors, dtype=np.float64)


def quantization_limit(clip_norm: float, scale_bits: int) -> int:
    """B = ceil(C 2^s): the largest |q| of a coordinate of an update clipped to C."""
    return math.ceil(clip_norm * 2.0**scale_bits)


def stochastic_round(
    values: FloatArray, scale_bits: int, prg: Prg, tag: Tag | None = None
) -> IntArray:
    """round(values * 2^s) up or down at random, up with probability equal to the fraction (to
    within 2^-32: the draws are 32-bit integers from the crypto PRG `prg`, stream `tag`), so
    unbiased to 2^-32 units; always |q - values 2^s| < 1."""
    scaled = np.asarray(values, dtype=np.float64) * 2.0**scale_bits
    if scaled.size and float(np.max(np.abs(scaled))) >= 2.0**62:
        raise ConfigurationError(
            f"a value scaled by 2^{scale_bits} reaches {float(np.max(np.abs(scaled))):.3g}, "
            "beyond 2^62: lower scale_bits"
        )
    low = np.floor(scaled)
    fraction = scaled - low  # in [0, 1), exact for |scaled| < 2^52
    raw = prg.bytes(4 * scaled.size, tag)
    draws = np.frombuffer(raw, dtype="<u4").reshape(scaled.shape)
    up = draws < fraction * 2.0**UNIFORM_BITS  # P = ceil(f 2^32) / 2^32
    return low.astype(np.int64) + up


def dequantize(total: IntArray, scale_bits: int) -> FloatArray:
    """An integer sum back to reals: total / 2^s (exact in float64 below 2^53)."""
    return np.asarray(total, dtype=np.float64) * 2.0**-scale_bits


@dataclass(frozen=True)
class SlotLayout:
    """How integer coordinates in [-limit, limit] are packed, `slots` to an element of
    `slot_bits` bits each, for a sum over `parties` parties (public).

    Element e holds coordinates e*slots .. e*slots + slots - 1, the first in the lowest bits,
    each offset by `limit`. A party's element is at most `party_bound` and the sum of the
    parties' elements at most 2^(slots*slot_bits) - 1, below what the algebra holds.
    """

    limit: int
    parties: int
    slot_bits: int
    slots: int

    @staticmethod
    def plan(
        clip_norm: float,
        scale_bits: int,
        parties: int,
        algebra: Algebra,
        what: str = "the quantised updates",
    ) -> SlotLayout:
        """The densest layout for coordinates of |x| <= clip_norm at scale 2^scale_bits whose
        sum over `parties` cannot wrap in `algebra`; ConfigurationError (before anything is
        shared) if a single coordinate's sum would not fit."""
        if parties < 1:
            raise ConfigurationError(f"need at least one party, got {parties}")
        usable = min(62, algebra.bits - 2)  # what an integer input may hold (mpc.program)
        limit = quantization_limit(clip_norm, scale_bits)
        slot_bits = (2 * parties * limit).bit_length()
        if slot_bits > usable:
            fits = [s for s in range(scale_bits) if _slot_bits(clip_norm, s, parties) <= usable]
            hint = (
                f"scale_bits <= {fits[-1]} for clip_norm {clip_norm:g}"
                if fits
                else f"a clip_norm below {2.0**usable / (2 * parties):.3g}"
            )
            raise ConfigurationError(
                f"{what}: a coordinate of the sum over {parties} parties can reach "
                f"{bounds.log2_text(2.0 * parties * limit)} (clip_norm {clip_norm:g} times "
                f"2^{scale_bits}, times 2 for the sign, times {parties} parties), beyond the "
                f"2^{usable} that {algebra.name} holds without wrapping; lower clip_norm or "
                f"scale_bits ({hint})"
            )
        layout = SlotLayout(limit, parties, slot_bits, usable // slot_bits)
        bounds.check_wrap(float(layout.sum_bound), 0, algebra, what)
        return layout

    @property
    def party_bound(self) -> int:
        """The largest element one party inputs (every slot at 2 * limit)."""
        return 2 * self.limit * ((1 << (self.slots * self.slot_bits)) - 1) // self.mask

    @property
    def sum_bound(self) -> int:
        """The largest element of the sum over the parties."""
        return self.parties * self.party_bound

    @property
    def mask(self) -> int:
        return (1 << self.slot_bits) - 1

    def elements(self, size: int) -> int:
        """Elements that hold `size` coordinates."""
        return -(-size // self.slots)

    def pack(self, q: IntArray) -> IntArray:
        """Coordinates in [-limit, limit] (1-D) to packed elements (int64)."""
        flat = np.asarray(q, dtype=np.int64).reshape(-1)
        if flat.size and int(np.max(np.abs(flat))) > self.limit:
            raise InvalidDataError(
                f"a quantised coordinate is beyond the public limit {self.limit}: it was not "
                "clipped (a bug, not bad data)"
            )
        padded = np.zeros(self.elements(flat.size) * self.slots, dtype=np.int64)
        padded[: flat.size] = flat
        offset = (padded + self.limit).reshape(-1, self.slots)
        out = np.zeros(offset.shape[0], dtype=np.int64)
        for k in range(self.slots):
            out += offset[:, k] << (k * self.slot_bits)
        return out

    def unpack_sum(self, packed: IntArray, size: int) -> IntArray:
        """The packed sum over the parties to the `size` summed coordinates (offsets removed)."""
        arr = np.asarray(packed, dtype=np.int64).reshape(-1)
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > self.sum_bound):
            raise InvalidDataError("a revealed packed sum is out of range: the sum wrapped")
        columns = [(arr >> (k * self.slot_bits)) & self.mask for k in range(self.slots)]
        sums = np.stack(columns, axis=1).reshape(-1)[:size]
        return np.asarray(sums - self.parties * self.limit, dtype=np.int64)


def _slot_bits(clip_norm: float, scale_bits: int, parties: int) -> int:
    return (2 * parties * quantization_limit(clip_norm, scale_bits)).bit_length()
