"""COBS (Consistent Overhead Byte Stuffing) encode/decode.

Uses the C-accelerated `cobs` package when it is installed (the host and most Pis); falls back to
the small pure-Python implementation below so that ``edge_runtime`` keeps working on a device
without it. Both produce identical bytes (tested).
"""
from __future__ import annotations


class CobsError(ValueError):
    """The byte string is not a valid COBS encoding."""


def _py_encode(data: bytes) -> bytes:
    out = bytearray()
    code_idx = 0
    out.append(0)  # placeholder for the first code byte
    code = 1
    n = len(data)
    for i, b in enumerate(data):
        if b == 0:
            out[code_idx] = code
            code_idx = len(out)
            out.append(0)
            code = 1
        else:
            out.append(b)
            code += 1
            # A full 254-byte block; open a new one only if data follows (no trailing 0x01).
            if code == 0xFF and i + 1 < n:
                out[code_idx] = code
                code_idx = len(out)
                out.append(0)
                code = 1
    out[code_idx] = code
    return bytes(out)


def _py_decode(data: bytes) -> bytes:
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise CobsError("zero byte inside COBS data")
        end = i + code
        if end > n:
            raise CobsError("COBS code byte points past the end of the data")
        block = data[i + 1:end]
        if 0 in block:
            raise CobsError("zero byte inside COBS data")
        out += block
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


try:  # prefer the C implementation
    from cobs import cobs as _cobs_pkg

    def cobs_encode(data: bytes) -> bytes:
        """COBS-encode ``data`` (result contains no 0x00 byte; delimiter not appended)."""
        return _cobs_pkg.encode(data)

    def cobs_decode(data: bytes) -> bytes:
        """Decode one COBS block (without its 0x00 delimiter); raises :class:`CobsError`."""
        try:
            return _cobs_pkg.decode(data)
        except _cobs_pkg.DecodeError as exc:
            raise CobsError(str(exc)) from None

    COBS_BACKEND = "cobs"
except ImportError:  # pragma: no cover - exercised on devices without the package
    cobs_encode = _py_encode
    cobs_decode = _py_decode
    COBS_BACKEND = "python"


def cobs_max_encoded_len(n: int) -> int:
    """Worst-case COBS output length for ``n`` input bytes (one code byte per 254 data bytes)."""
    return n + n // 254 + 1
