"""Read any speech file into the project's canonical form: int16 mono at 16 kHz.

``soundfile`` (libsndfile) detects the container from the file's content, not its extension, so
WAV, FLAC and AIFF (including AIFF data misnamed ``.wav``, as in two TESS originals) all read the
same way. Other sample rates (44.1, 48, 96 kHz, TESS's 24.414 kHz) are resampled with ``soxr``
(high quality) when installed, else ``scipy.signal.resample_poly``.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

TARGET_SR = 16000


class AudioReadError(ValueError):
    """A file could not be turned into audio; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1) to int16, rounding and clipping (full-scale +1.0 becomes 32767)."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def resample(x: np.ndarray, sr_in: int, sr_out: int = TARGET_SR) -> np.ndarray:
    """Resample 1-D float audio from ``sr_in`` to ``sr_out`` (soxr HQ, else polyphase FIR)."""
    if sr_in == sr_out or x.size == 0:
        return x
    try:
        import soxr
    except ImportError:  # soxr ships with librosa; scipy is the fallback on minimal installs
        from scipy.signal import resample_poly

        # limit_denominator handles non-integer rates like TESS's 24414.0625 Hz
        ratio = Fraction(sr_out, 1) / Fraction(sr_in).limit_denominator(10000)
        return resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32)
    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32)


def load_audio(path: str | os.PathLike, sr: int = TARGET_SR) -> np.ndarray:
    """Decode ``path`` to a 1-D int16 array at ``sr`` Hz (mono: channels averaged).

    Raises :class:`AudioReadError` naming the path for a missing, empty, unreadable, corrupt or
    non-finite file.
    """
    import soundfile as sf

    p = Path(path)
    if not p.is_file():
        raise AudioReadError(p, "file not found")
    if p.stat().st_size == 0:
        raise AudioReadError(p, "empty file (0 bytes)")
    try:
        # float32 keeps 16-bit sources exact (k/32768) and converts 24/32-bit and float sources
        data, sr_in = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioReadError(p, f"not readable as audio ({e})") from e
    if data.shape[0] == 0:
        raise AudioReadError(p, "no audio samples (0 frames)")
    if not np.isfinite(data).all():
        raise AudioReadError(p, "contains NaN or infinite samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return to_int16(resample(mono, int(sr_in), sr))


def write_wav(path: str | os.PathLike, audio: np.ndarray, sr: int = TARGET_SR) -> None:
    """Write int16 (or float in [-1, 1)) mono audio as a 16-bit PCM WAV file."""
    import soundfile as sf

    a = np.asarray(audio)
    if a.dtype != np.int16:
        a = to_int16(a)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), a, sr, subtype="PCM_16", format="WAV")
