"""The one audio reader and resampler: every file becomes int16 mono at the model's rate here.

Training (``model_build`` corpora), the runtime (``ser-edge run``, ``serve --push-wav``, ``frontend``)
and the host tools all call these functions, so a clip gives the same samples wherever it is read
(no train/serve skew).

Reading (:func:`read_audio`, :func:`load_audio`):

* 16-bit PCM WAV is read with the standard library ``wave`` module, so a device install (numpy +
  one interpreter) reads the common case without libsndfile;
* anything else (float32/float64 WAV, 24/32-bit PCM, FLAC, OGG, AIFF, also AIFF data misnamed
  ``.wav``) is read with ``soundfile`` **as float** and converted by :func:`to_int16`
  (``round(x * 32768)``, clipped). Asking libsndfile for int16 instead would not scale float
  files (a float WAV would read as all zeros), which is why there is only this one path;
* channels are averaged in float and rounded once (:func:`mixdown`);
* a missing, empty, truncated, corrupt, NaN/inf-holding or 0-frame file is an
  :class:`AudioReadError` whose message names the file and the problem; so is a hostile header:
  a sample rate outside 1 kHz..768 kHz, or a length the file cannot hold (memory is bounded by the
  file's real size before anything is allocated: a 16-bit WAV reads at most its own data bytes, a
  compressed file at most 16 samples per byte of file).

Resampling (:func:`resample` for whole clips, :class:`Resampler` for streams) is ``soxr`` (libsoxr,
"HQ" quality) for any rate, including TESS's 24 414 Hz. The stream form is soxr's own
``ResampleStream``; it agrees with the whole-clip form to within one LSB. soxr is needed only when
the audio's rate differs from the model's; without it that case is a clear error.
"""
from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np

DEFAULT_RATE = 16000
_UNKNOWN_SIZE = 0x7FFF0000  # arecord & co. write a huge placeholder size when streaming a WAV
# Hostile headers: a file may claim any sample rate or length. Rates outside this range are not
# audio we can use (and a 16 Hz header would make resampling to 16 kHz allocate 1000x the file);
# decoded samples are bounded by the file's real size (uncompressed data cannot exceed it;
# compressed formats get MAX_EXPANSION samples per byte), checked before anything is allocated.
MIN_RATE, MAX_RATE = 1000, 768000
MAX_EXPANSION = 16


class AudioInputError(ValueError):
    """Audio that cannot be read or used as it is; the message names the file/stream and the problem."""


class AudioReadError(AudioInputError):
    """A file could not be turned into audio; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


# ---------------------------------------------------------------------------------------------- samples
def to_int16(x: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1) to int16, rounding half to even and clipping (+1.0 becomes 32767)."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def mixdown(x: np.ndarray) -> np.ndarray:
    """``(n, channels)`` float or int16 audio -> mono int16 (channel mean, rounded once)."""
    a = np.asarray(x)
    if a.ndim == 1 or a.shape[1] == 1:
        a = a.reshape(-1)
        return a.astype(np.int16) if a.dtype == np.int16 else to_int16(a)
    scale = 32768.0 if a.dtype == np.int16 else 1.0
    return to_int16(a.astype(np.float64).mean(axis=1) / scale)


# ---------------------------------------------------------------------------------------------- resampling
def _soxr(from_rate, to_rate):
    try:
        import soxr
    except ImportError:
        raise AudioInputError(f"resampling {from_rate} Hz -> {to_rate} Hz needs soxr: pip install soxr "
                              f"(or give audio at {to_rate} Hz)") from None
    return soxr


def _check_rates(from_rate, to_rate) -> None:
    if not (from_rate > 0 and to_rate > 0):
        raise AudioInputError(f"sample rates must be positive, got {from_rate} -> {to_rate}")


def resample(x: np.ndarray, from_rate: float, to_rate: float = DEFAULT_RATE) -> np.ndarray:
    """Resample a whole clip with soxr HQ. int16 in -> int16 out; float in -> float32 out."""
    a = np.asarray(x)
    _check_rates(from_rate, to_rate)
    if from_rate == to_rate or a.size == 0:
        return a.astype(np.int16) if a.dtype == np.int16 else a.astype(np.float32)
    soxr = _soxr(from_rate, to_rate)
    if a.dtype == np.int16:
        y = soxr.resample(a.astype(np.float32) / 32768.0, from_rate, to_rate, quality="HQ")
        return to_int16(y)
    return soxr.resample(a.astype(np.float32), from_rate, to_rate, quality="HQ").astype(np.float32)


class Resampler:
    """Streaming int16 resampler (soxr ``ResampleStream``, HQ): ``process(chunk)`` then ``flush()``.

    The output of any chunking agrees with :func:`resample` of the whole signal to within 1 LSB
    and has the same length (± 1 sample).
    """

    def __init__(self, from_rate: float, to_rate: float = DEFAULT_RATE) -> None:
        _check_rates(from_rate, to_rate)
        self.from_rate, self.to_rate = from_rate, to_rate
        self._soxr = _soxr(from_rate, to_rate) if from_rate != to_rate else None
        self.reset()

    def reset(self) -> None:
        """Forget the stream (a new one starts)."""
        self._stream = (self._soxr.ResampleStream(self.from_rate, self.to_rate, 1, dtype="float32", quality="HQ")
                        if self._soxr is not None else None)

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Resample the next int16 chunk."""
        x = np.asarray(chunk)
        if self._stream is None:
            return x.astype(np.int16)
        return to_int16(self._stream.resample_chunk(x.astype(np.float32) / 32768.0, last=False))

    def flush(self) -> np.ndarray:
        """The remaining output at the end of the stream."""
        if self._stream is None:
            return np.zeros(0, np.int16)
        return to_int16(self._stream.resample_chunk(np.zeros(0, np.float32), last=True))


# ---------------------------------------------------------------------------------------------- files
class _NeedSoundfile(Exception):
    pass


def _check_rate(p: Path, rate: int) -> None:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioReadError(p, f"implausible sample rate {rate} Hz in the header "
                                f"(accepted: {MIN_RATE}..{MAX_RATE} Hz)")


def _read_wav16(p: Path) -> tuple[np.ndarray, int]:
    """16-bit PCM WAV -> (mono int16, rate) with the standard library; _NeedSoundfile otherwise."""
    size = p.stat().st_size
    try:
        with wave.open(str(p), "rb") as w:
            ch, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            if w.getcomptype() != "NONE":
                raise _NeedSoundfile(w.getcompname())
            if width != 2:
                raise _NeedSoundfile(f"{width * 8}-bit WAV")
            _check_rate(p, rate)
            # never ask for more than the file holds: readframes(n) allocates n frames up front
            raw = w.readframes(min(n, size // (2 * ch) + 1))
    except AudioReadError:
        raise
    except Exception as e:  # wave raises Error/EOFError, and RuntimeError/struct.error on garbage
        # float (format 3), EXTENSIBLE float, A-law, AIFF content named .wav...: libsndfile reads
        # them by content; a file it cannot read either is reported from there
        raise _NeedSoundfile(str(e)) from None
    frame_bytes = 2 * ch
    declared = n * frame_bytes
    if declared < _UNKNOWN_SIZE and len(raw) < declared:
        raise AudioReadError(p, f"truncated WAV: header declares {n} frames ({declared} bytes), the file "
                                f"holds {len(raw) // frame_bytes} frames ({len(raw)} bytes)")
    if len(raw) % frame_bytes:
        raise AudioReadError(p, f"truncated WAV: {len(raw)} data bytes is not a whole number of "
                                f"{frame_bytes}-byte frames")
    if len(raw) == 0:
        raise AudioReadError(p, "no audio samples (0 frames)")
    x = np.frombuffer(raw, dtype="<i2").reshape(-1, ch)
    return mixdown(x), rate


def _read_float(p: Path) -> tuple[np.ndarray, int]:
    """Any libsndfile format as float64 ``(n, channels)`` and its rate."""
    try:
        import soundfile as sf
    except ImportError:
        raise AudioReadError(p, "reading this format needs soundfile: pip install soundfile "
                                "(16-bit PCM WAV works without it)") from None
    except OSError as e:  # libsndfile missing
        raise AudioReadError(p, f"soundfile is installed but libsndfile is not ({e}); "
                                "sudo apt install libsndfile1") from None
    size = p.stat().st_size
    try:
        with sf.SoundFile(str(p)) as f:
            rate, ch, frames = int(f.samplerate), int(f.channels), int(f.frames)
            _check_rate(p, rate)
            if ch < 1 or ch > 64:
                raise AudioReadError(p, f"implausible channel count {ch} in the header")
            cap = MAX_EXPANSION * size // ch + 1  # frames this file could really decode to
            if frames > cap:
                raise AudioReadError(p, f"header declares {frames} frames of {ch} channel(s), more than a "
                                        f"{size}-byte file can hold")
            # float keeps 16-bit sources exact (k/32768) and scales 24/32-bit and float sources
            data = f.read(frames, dtype="float64", always_2d=True)
    except AudioReadError:
        raise
    except Exception as e:  # LibsndfileError / RuntimeError / TypeError / MemoryError: the reason
        raise AudioReadError(p, f"not readable as audio ({type(e).__name__}: {e})") from None
    if data.shape[0] == 0:
        raise AudioReadError(p, "no audio samples (0 frames)")
    if not np.isfinite(data).all():
        raise AudioReadError(p, "contains NaN or infinite samples")
    return data, int(rate)


def _read_mono(p: Path) -> tuple[np.ndarray, int]:
    """``(mono samples, rate)``: int16 for 16-bit PCM WAV, float64 in [-1, 1) otherwise."""
    if not p.is_file():
        raise AudioReadError(p, "file not found" if not p.exists() else "not a regular file")
    try:
        size = p.stat().st_size
    except OSError as e:
        raise AudioReadError(p, f"cannot read ({e.strerror})") from None
    if size == 0:
        raise AudioReadError(p, "empty file (0 bytes)")
    if p.suffix.lower() in (".wav", ".wave"):
        try:
            return _read_wav16(p)
        except _NeedSoundfile:
            pass
    data, rate = _read_float(p)
    return (data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)), rate


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file as ``(mono int16, sample rate)`` at the file's own rate."""
    x, rate = _read_mono(Path(path))
    return (x if x.dtype == np.int16 else to_int16(x)), rate


def load_audio(path: str | os.PathLike, sr: int = DEFAULT_RATE) -> np.ndarray:
    """Read an audio file as mono int16 at ``sr`` Hz (resampled with soxr HQ if it differs).

    What training, ``ser-edge run`` and the host tools all use. A file that needs resampling is
    resampled from float and rounded to int16 once, after the filter.
    """
    return load_audio_rate(path, sr)[0]


def load_audio_rate(path: str | os.PathLike, sr: int = DEFAULT_RATE) -> tuple[np.ndarray, int]:
    """:func:`load_audio` that also returns the file's own sample rate."""
    p = Path(path)
    x, rate = _read_mono(p)
    if rate == sr:
        return (x if x.dtype == np.int16 else to_int16(x)), rate
    f = x.astype(np.float32) / 32768.0 if x.dtype == np.int16 else x.astype(np.float32)
    try:
        return to_int16(resample(f, rate, sr)), rate
    except AudioInputError as e:
        raise AudioReadError(p, str(e)) from None


def write_wav(path: str | os.PathLike, audio: np.ndarray, sr: int = DEFAULT_RATE) -> Path:
    """Write int16 (or float in [-1, 1)) mono audio as a 16-bit PCM WAV (standard library)."""
    a = np.asarray(audio)
    if a.dtype != np.int16:
        a = to_int16(a)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sr))
        w.writeframes(a.astype("<i2").tobytes())
    return p
