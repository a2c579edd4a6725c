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


def _as_u64(little_endian_bytes: npt.NDArray[np.uint8]) -> U64Array:
    return np.ascontiguousarray(little_endian_bytes).view(_LE_U64).astype(np.uint64, copy=False)


def pack_planes(values: U64Array, planes: int = WORD_BITS) -> U64Array:
    """The low `planes` bit planes of a 1-D uint64 vector, shape (planes, words_for(N))."""
    if values.ndim != 1:
        raise ValueError(f"pack_planes takes a 1-D vector, got shape {values.shape}")
    if not 1 <= planes <= WORD_BITS:
        raise ValueError(f"planes must be in 1..{WORD_BITS}, got {planes}")
    words = words_for(values.size)
    padded = np.zeros(words * WORD_BITS, dtype=_LE_U64)
    padded[: values.size] = values
    # (elements, 64) bits, column i = bit i of the element; then planes first.
    bits = np.unpackbits(padded.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
    packed = np.packbits(bits[:, :planes].T, axis=1, bitorder="little")  # (planes, words * 8)
    return _as_u64(packed).reshape(planes, words)


def unpack_plane(words: U64Array, count: int) -> U64Array:
    """One plane (W words) back to `count` values 0/1 (uint64)."""
    bits = np.unpackbits(_as_bytes(words), bitorder="little")[:count]
    return bits.astype(np.uint64)


def planes_value(planes: U64Array, count: int) -> U64Array:
    """The values sum_i 2^i * plane_i of `count` elements, from planes of shape (k, W), k <= 64."""
    k = planes.shape[0]
    if not 1 <= k <= WORD_BITS:
        raise ValueError(f"expected 1..{WORD_BITS} planes, got {k}")
    bits = np.unpackbits(_as_bytes(planes).reshape(k, -1), axis=1, bitorder="little")
    per_element = np.zeros((count, WORD_BITS), dtype=np.uint8)
    per_element[:, :k] = bits[:, :count].T
    return _as_u64(np.packbits(per_element, axis=1, bitorder="little")).reshape(count)


def _as_bytes(words: U64Array) -> npt.NDArray[np.uint8]:
    little: npt.NDArray[np.uint8] = np.ascontiguousarray(words, dtype=_LE_U64).view(np.uint8)
    return little
