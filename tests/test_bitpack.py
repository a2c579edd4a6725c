"""Bit planes packed 64 elements per word (mpc.bitpack), against a bit-by-bit reference."""

from __future__ import annotations

import numpy as np
import pytest

from mpc.bitpack import pack_planes, planes_value, unpack_plane, words_for


@pytest.mark.parametrize("count", [1, 63, 64, 65, 1000])
def test_planes_match_the_bits_and_round_trip(count: int) -> None:
    values = np.random.default_rng(count).integers(0, 2**64, count, dtype=np.uint64)
    planes = pack_planes(values)
    assert planes.shape == (64, words_for(count))
    for i in (0, 1, 31, 62, 63):
        expected = (values >> np.uint64(i)) & np.uint64(1)
        np.testing.assert_array_equal(unpack_plane(planes[i], count), expected)
        # Element 64 w + j sits at bit j of word w; the padding bits are zero.
        word, bit = divmod(count - 1, 64)
        assert (int(planes[i][word]) >> bit) & 1 == int(expected[-1])
        assert int(planes[i][word]) >> (bit + 1) == 0
    np.testing.assert_array_equal(planes_value(planes, count), values)
    low = pack_planes(values, 10)
    np.testing.assert_array_equal(planes_value(low, count), values & np.uint64(1023))


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="1-D"):
        pack_planes(np.zeros((2, 2), dtype=np.uint64))
    with pytest.raises(ValueError, match="planes"):
        pack_planes(np.zeros(3, dtype=np.uint64), 65)
