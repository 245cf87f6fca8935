"""Input checks: what the front end accepts, and the clear errors for what it does not."""
from __future__ import annotations

import numpy as np


class FrontendInputError(ValueError):
    """Audio the front end cannot take as it is (the message names the input and the problem)."""


def ensure_pcm16(x: object, sample_rate: int | None = None, expected_rate: int = 16000, name: str = "audio") -> np.ndarray:
    """Validate mono int16 PCM and return it as a contiguous 1-D ``int16`` array.

    Accepted: a 1-D array of int16, or of any integer type whose values all fit int16 (converted
    exactly), or a 2-D array with one channel. Refused with :class:`FrontendInputError`: float input
    (scale it yourself: ``np.round(x * 32767).astype(np.int16)``; silently guessing a scale would
    produce garbage features), NaN, stereo, an empty array, values out of int16 range, and a
    ``sample_rate`` that differs from ``expected_rate``. An empty array is an error; a clip shorter
    than one frame is valid and simply yields zero frames.
    """
    if sample_rate is not None and int(sample_rate) != int(expected_rate):
        raise FrontendInputError(
            f"{name}: sample rate {sample_rate} Hz, the front end needs {expected_rate} Hz (resample first)"
        )
    a = np.asarray(x)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    elif a.ndim == 2:
        raise FrontendInputError(f"{name}: {a.shape[1] if a.shape[0] > a.shape[1] else a.shape[0]}-channel audio of shape {a.shape}; the front end takes mono (mix down first)")
    if a.ndim != 1:
        raise FrontendInputError(f"{name}: expected 1-D mono PCM, got an array of shape {a.shape}")
    if a.size == 0:
        raise FrontendInputError(f"{name}: empty audio (0 samples)")
    if a.dtype == np.int16:
        return np.ascontiguousarray(a)
    if np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.complexfloating):
        bad = "NaN values" if np.isnan(a).any() else f"{a.dtype} samples"
        raise FrontendInputError(
            f"{name}: {bad}; the front end takes int16 PCM (convert floats in [-1, 1] with "
            "np.round(x * 32767).astype(np.int16))"
        )
    if np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_:
        if a.size and (a.min() < -32768 or a.max() > 32767):
            raise FrontendInputError(f"{name}: {a.dtype} values outside int16 range [{a.min()}, {a.max()}]")
        return a.astype(np.int16)
    raise FrontendInputError(f"{name}: unsupported sample type {a.dtype}")
