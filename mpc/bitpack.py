"""Bit planes packed into uint64 words, for boolean (XOR-shared) circuits on many elements.

Responsibility: convert between a vector of N uint64 values and its *bit planes*: plane i is
bit i of every element, packed 64 elements per word (element 64 w + j at bit j of word w), so
that one numpy AND/XOR on a (planes, W) array evaluates a gate for 64 elements at once
(W = ceil(N / 64) words; the padding bits of the last word are zero on packing and ignored on
unpacking).

Security model: pure data layout on whatever it is given; no secrets, state or randomness.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

U64Array = npt.NDArray[np.uint64]

WORD_BITS = 64
_LE_U64 = np.dtype("<u8")  # the byte order the bit layout is defined in


def words_for(count: int) -> int:
    """Words needed for one plane of `count` elements."""
    return (count + WORD_BITS - 1) // WORD_BITS


# Masks of the 64 x 64 bit-matrix transpose (Hacker's Delight, 2nd ed., sect. 7-3), for each
# block size j: the low j bits of every 2j-bit group.
_TRANSPOSE_STEPS = tuple(
    (j, np.uint64(int(("0" * j + "1" * j) * (32 // j), 2))) for j in (32, 16, 8, 4, 2, 1)
)


def _transpose_blocks(rows: U64Array) -> U64Array:
    """Transpose the 64 x 64 bit matrix of every block, in place: `rows` has shape (B, 64) and
    bit i of row j moves to bit j of row i (bit 0 = least significant)."""
    for j, mask in _TRANSPOSE_STEPS:
        pairs = rows.reshape(len(rows), WORD_BITS // (2 * j), 2, j)
        low, high = pairs[:, :, 0, :], pairs[:, :, 1, :]
        swap = ((low >> np.uint64(j)) ^ high) & mask
        high ^= swap
        low ^= swap << np.uint64(j)
    return rows


def pack_planes(values: U64Array, planes: int = WORD_BITS) -> U64Array:
    """The low `planes` bit planes of a 1-D uint64 vector, shape (planes, words_for(N))."""
    if values.ndim != 1:
        raise ValueError(f"pack_planes takes a 1-D vector, got shape {values.shape}")
    if not 1 <= planes <= WORD_BITS:
        raise ValueError(f"planes must be in 1..{WORD_BITS}, got {planes}")
    words = words_for(values.size)
    blocks = np.zeros((words, WORD_BITS), dtype=np.uint64)
    blocks.reshape(-1)[: values.size] = values
    return np.ascontiguousarray(_transpose_blocks(blocks).T[:planes])


def unpack_plane(words: U64Array, count: int) -> U64Array:
    """One plane (W words) back to `count` values 0/1 (uint64)."""
    bits = np.unpackbits(_as_bytes(words), bitorder="little")[:count]
    return bits.astype(np.uint64)


def planes_value(planes: U64Array, count: int) -> U64Array:
    """The values sum_i 2^i * plane_i of `count` elements, from planes of shape (k, W), k <= 64."""
    k, words = planes.shape
    if not 1 <= k <= WORD_BITS:
        raise ValueError(f"expected 1..{WORD_BITS} planes, got {k}")
    blocks = np.zeros((words, WORD_BITS), dtype=np.uint64)
    blocks[:, :k] = planes.T
    return _transpose_blocks(blocks).reshape(-1)[:count].copy()


def _as_bytes(words: U64Array) -> npt.NDArray[np.uint8]:
    little: npt.NDArray[np.uint8] = np.ascontiguousarray(words, dtype=_LE_U64).view(np.uint8)
    return little
