"""Bit-packing of integer codes: round trips at every width, exact sizes, bad input refused."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant.deploy import pack_codes, packed_nbytes, unpack_codes


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 16), data=st.data())
def test_round_trip_any_width(bits, data):
    codes = np.array(data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=200)), dtype=np.int64)
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == packed_nbytes(codes.size, bits) == (codes.size * bits + 7) // 8
    assert np.array_equal(unpack_codes(packed, bits, codes.size), codes)


def test_layout_is_a_little_endian_bit_stream():
    # 3-bit codes 1, 2, 7: stream bits 100 010 111 -> byte 0 = 0b11010001, byte 1 = 0b1
    assert pack_codes(np.array([1, 2, 7]), 3).tolist() == [0b11010001, 0b1]
    assert pack_codes(np.array([0xA, 0x5]), 4).tolist() == [0x5A]


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
def test_round_trip_across_chunks(bits, monkeypatch):
    import quant.deploy.packing as packing

    monkeypatch.setattr(packing, "_CHUNK", 16)  # many chunks; boundaries must stay on whole bytes
    codes = np.random.default_rng(bits).integers(0, 1 << bits, size=1003)
    assert np.array_equal(unpack_codes(pack_codes(codes, bits), bits, codes.size), codes)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"0\.\.7 to pack at 3 bits"):
        pack_codes(np.array([0, 8]), 3)
    with pytest.raises(ValueError, match="0..3"):
        pack_codes(np.array([-1]), 2)
    with pytest.raises(ValueError, match="must be integers"):
        pack_codes(np.array([0.5]), 4)
    with pytest.raises(ValueError, match="bits must be an int"):
        pack_codes(np.array([1]), 17)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        unpack_codes(np.zeros(2, np.uint8), 3, 10)
