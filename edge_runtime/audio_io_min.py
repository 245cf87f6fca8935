"""Minimal audio reading for the device: PCM16 WAV through the standard library, FLAC/other through
soundfile when it is installed. No resampling here (the caller decides)."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


class AudioFileError(ValueError):
    """An audio file that cannot be read as 16-bit PCM (the message names the file)."""


def read_pcm16(path: str | Path) -> tuple[np.ndarray, int]:
    """Read ``path`` as mono int16 PCM; returns ``(samples, sample_rate)``.

    Multi-channel audio is averaged to mono (rounded). A truncated WAV (data chunk shorter than its
    header says, or an odd number of bytes) raises :class:`AudioFileError`.
    """
    path = Path(path)
    if not path.exists():
        raise AudioFileError(f"{path}: no such file")
    try:
        with wave.open(str(path), "rb") as w:
            width, ch, sr, n = w.getsampwidth(), w.getnchannels(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
        if width != 2:
            raise AudioFileError(f"{path}: {8 * width}-bit WAV; expected 16-bit PCM")
        if len(raw) != n * ch * width:
            raise AudioFileError(
                f"{path}: truncated WAV: header says {n} frames, file holds {len(raw) // (ch * width)}"
                + (" and a partial sample" if len(raw) % (ch * width) else "")
            )
        pcm = np.frombuffer(raw, dtype="<i2").reshape(-1, ch)
    except (wave.Error, EOFError) as exc:
        try:
            import soundfile as sf
        except ImportError:
            raise AudioFileError(f"{path}: not a PCM WAV ({exc}); install soundfile to read other formats") from None
        try:
            data, sr = sf.read(str(path), dtype="int16", always_2d=True)
        except Exception as exc2:  # soundfile raises its own error types
            raise AudioFileError(f"{path}: unreadable audio ({exc2})") from None
        pcm = data
    if pcm.shape[0] == 0:
        raise AudioFileError(f"{path}: no samples")
    if pcm.shape[1] > 1:
        pcm = np.round(pcm.astype(np.int32).mean(axis=1)).astype(np.int16)
    else:
        pcm = pcm[:, 0]
    return np.ascontiguousarray(pcm, dtype=np.int16), int(sr)
