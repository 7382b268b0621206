"""Bit-packing of unsigned integer codes: ``n`` codes of ``b`` bits in ``ceil(n*b/8)`` bytes.

The layout is a plain little-endian bit stream: code ``i`` occupies bits ``i*b .. i*b+b-1`` of
the stream, least significant bit first, and stream bit ``j`` is bit ``j % 8`` of byte ``j // 8``.
It is independent of the machine's byte order, has no per-row padding (so a tensor costs exactly
``ceil(numel * b / 8)`` bytes, the figure a plan's ``size_bytes`` counts) and is the layout that
``numpy.packbits(..., bitorder="little")`` produces, so any reader can decode it in a few lines.

Work is done in chunks of whole bytes so memory stays bounded for large tensors.
"""
from __future__ import annotations

import numpy as np

__all__ = ["MAX_PACK_BITS", "packed_nbytes", "pack_codes", "unpack_codes"]

#: Widest code accepted (the quantizers allow 2..16 bits).
MAX_PACK_BITS = 16

#: Codes per chunk; a multiple of 8, so every chunk starts on a byte boundary for any width.
_CHUNK = 1 << 20


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= int(bits) <= MAX_PACK_BITS:
        raise ValueError(f"bits must be an int in 1..{MAX_PACK_BITS}, got {bits!r}")
    return int(bits)


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes taken by ``count`` codes of ``bits`` bits: ``ceil(count * bits / 8)``."""
    return (int(count) * _check_bits(bits) + 7) // 8


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack the (flattened) non-negative integer ``codes``, each ``< 2**bits``, into a uint8 array.

    Raises ``ValueError`` when a code does not fit in ``bits`` bits (it would be silently
    truncated otherwise).
    """
    bits = _check_bits(bits)
    flat = np.asarray(codes).reshape(-1)
    if flat.size and not np.issubdtype(flat.dtype, np.integer):
        raise ValueError(f"codes must be integers, got dtype {flat.dtype}")
    if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= 1 << bits):
        raise ValueError(f"codes must lie in 0..{(1 << bits) - 1} to pack at {bits} bits; "
                         f"got values in {int(flat.min())}..{int(flat.max())}")
    flat = flat.astype(np.uint32, copy=False)
    shifts = np.arange(bits, dtype=np.uint32)
    out = np.empty(packed_nbytes(flat.size, bits), dtype=np.uint8)
    for start in range(0, flat.size, _CHUNK):
        chunk = flat[start:start + _CHUNK]
        stream = ((chunk[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1)
        first = start * bits // 8
        packed = np.packbits(stream, bitorder="little")
        out[first:first + packed.size] = packed
    return out


def unpack_codes(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``count`` codes (int64) from the uint8 array ``packed``."""
    bits = _check_bits(bits)
    data = np.asarray(packed, dtype=np.uint8).reshape(-1)
    if data.size != packed_nbytes(count, bits):
        raise ValueError(f"{count} codes of {bits} bits take {packed_nbytes(count, bits)} bytes; "
                         f"got {data.size} (the packed file is truncated or corrupt)")
    shifts = np.arange(bits, dtype=np.int64)
    out = np.empty(int(count), dtype=np.int64)
    for start in range(0, int(count), _CHUNK):
        n = min(_CHUNK, int(count) - start)
        first = start * bits // 8
        stream = np.unpackbits(data[first:first + packed_nbytes(n, bits)], bitorder="little")[: n * bits]
        out[start:start + n] = (stream.reshape(n, bits).astype(np.int64) << shifts).sum(axis=1)
    return out
