"""Audio sources for the streaming classifier: files, raw PCM on stdin, a live microphone.

Every source is an iterable of mono ``int16`` numpy chunks at ``source.sample_rate`` (the model's
rate, 16 kHz by default), so ``for r in clf.stream(source)`` works with any of them.

* WAV: read with the standard library ``wave`` module (16-bit PCM; the device install stays numpy +
  one interpreter). FLAC/OGG and non-16-bit WAV need ``soundfile`` (``pip install soundfile``).
  Multi-channel audio is mixed down to mono. A truncated WAV (data chunk shorter than its header
  says, or an odd byte count) is an :class:`AudioInputError` naming the file.
* stdin: raw signed 16-bit little-endian PCM (``arecord -f S16_LE -r 16000 -c 1 | ser-edge run
  --stdin``). A stream that ends mid-sample (odd byte count) is reported (logged, and counted in
  ``dropped_bytes``) and the half sample dropped.
* microphone: ``sounddevice`` (optional, ``pip install sounddevice``; on a Pi also ``sudo apt
  install libportaudio2``).

Sample-rate mismatch: we resample, we do not refuse. :class:`Resampler` is a streaming rational
polyphase FIR (Kaiser-windowed sinc, 32 taps per phase, delay-compensated) in numpy, so it needs no
scipy and gives the same output whatever the chunking (e.g. 48 kHz -> 16 kHz is 1/3, 44.1 kHz ->
16 kHz is 160/441). Only rates whose reduced ratio has a term above 1000 are refused.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
import wave
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

log = logging.getLogger("ser_edge.audio")

DEFAULT_RATE = 16000
_MAX_RATIO_TERM = 1000
_UNKNOWN_SIZE = 0x7FFF0000  # arecord & co. write a huge placeholder size when streaming a WAV


class AudioInputError(ValueError):
    """Audio that cannot be read as it is; the message names the file/stream and the problem."""


# ---------------------------------------------------------------------------------------------- resampling
class Resampler:
    """Streaming rational-ratio polyphase resampler for int16 audio (``from_rate -> to_rate``).

    ``process(chunk)`` returns the output samples that are fully determined so far; ``flush()`` the
    rest at the end of the stream. ``process`` over any chunking + ``flush`` gives the same samples
    as one ``process(all) + flush()``, about ``len * to_rate / from_rate`` of them.
    """

    def __init__(self, from_rate: int, to_rate: int, half_taps: int = 16, beta: float = 8.0) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise AudioInputError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
        g = math.gcd(int(from_rate), int(to_rate))
        self.up, self.down = int(to_rate) // g, int(from_rate) // g
        if max(self.up, self.down) > _MAX_RATIO_TERM:
            raise AudioInputError(
                f"cannot resample {from_rate} Hz -> {to_rate} Hz (ratio {self.up}/{self.down} is too "
                f"fine-grained); record at {to_rate} Hz or convert the file first (e.g. sox in.wav -r {to_rate} out.wav)"
            )
        self.from_rate, self.to_rate = int(from_rate), int(to_rate)
        up, down, K = self.up, self.down, half_taps
        n = 2 * K * up
        fc = 0.5 / max(up, down)  # cut-off, cycles per sample at the upsampled rate
        # Centre the filter on a whole number of output samples so the delay compensation is exact.
        self._delay = int(round((n - 1) / 2.0 / down))  # group delay in output samples
        c = self._delay * down
        t = np.arange(n) - c
        half = max(c, n - 1 - c) + 1
        win = np.i0(beta * np.sqrt(np.clip(1 - (t / half) ** 2, 0, 1))) / np.i0(beta)
        h = 2 * fc * np.sinc(2 * fc * t) * win * up
        self._phases = h.reshape(2 * K, up).T.copy()  # [p, i] = h[p + up*i]
        self._ntaps = 2 * K
        self.reset()

    def reset(self) -> None:
        self._hist = np.zeros(self._ntaps, np.float64)  # last inputs; absolute index of _hist[0] is _x0
        self._x0 = -self._ntaps
        self._n_in = 0
        self._m = 0  # next output index (before delay compensation)
        self._n_out = 0

    def _run(self, x: np.ndarray, limit: int | None = None) -> np.ndarray:
        buf = np.concatenate([self._hist, x.astype(np.float64)])
        n_avail = self._x0 + buf.size  # absolute inputs available: [x0, n_avail)
        m_max = (n_avail * self.up - 1) // self.down  # last output whose newest input exists
        if limit is not None:
            m_max = min(m_max, limit - 1 + self._delay)
        out = np.zeros(0, np.float64)
        if m_max >= self._m:
            m = np.arange(self._m, m_max + 1, dtype=np.int64)
            t = m * self.down
            base = t // self.up - self._x0
            idx = base[:, None] - np.arange(self._ntaps)[None, :]
            out = np.einsum("mi,mi->m", self._phases[t % self.up], buf[idx])
            keep = m >= self._delay
            out = out[keep]
            self._m = m_max + 1
        drop = max(0, buf.size - self._ntaps)
        self._hist = buf[drop:]
        self._x0 += drop
        self._n_out += out.size
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Resample the next int16 chunk."""
        x = np.asarray(chunk)
        self._n_in += x.size
        if self.up == self.down:
            return x.astype(np.int16)
        return self._run(x)

    def flush(self) -> np.ndarray:
        """The remaining output at the end of the stream (zero-padded input)."""
        if self.up == self.down:
            return np.zeros(0, np.int16)
        total = -(-self._n_in * self.up // self.down)
        need = total - self._n_out
        if need <= 0:
            return np.zeros(0, np.int16)
        pad = np.zeros(self._ntaps + self._delay * self.down // self.up + 2, np.int16)
        return self._run(pad, limit=total)


def resample(pcm: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample a whole int16 clip (see :class:`Resampler`)."""
    if from_rate == to_rate:
        return np.asarray(pcm, np.int16)
    r = Resampler(from_rate, to_rate)
    return np.concatenate([r.process(pcm), r.flush()])


# ---------------------------------------------------------------------------------------------- files
def _mixdown(x: np.ndarray) -> np.ndarray:
    """(n, channels) int -> mono int16, rounding the mean to nearest."""
    if x.ndim == 1 or x.shape[1] == 1:
        return x.reshape(-1).astype(np.int16)
    c = x.shape[1]
    s = x.astype(np.int32).sum(axis=1)
    return np.floor_divide(s + c // 2, c).astype(np.int16)


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """16-bit PCM WAV -> (mono int16, sample rate), standard library only."""
    p = Path(path)
    try:
        with wave.open(str(p), "rb") as w:
            ch, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            if w.getcomptype() != "NONE":
                raise AudioInputError(f"{p}: compressed WAV ({w.getcompname()}); convert to 16-bit PCM")
            if width != 2:
                raise _NeedSoundfile(f"{width * 8}-bit WAV")
            raw = w.readframes(n if n * ch * 2 < _UNKNOWN_SIZE else 1 << 31)
    except wave.Error as e:
        if "unknown format" in str(e):  # e.g. WAVE_FORMAT_EXTENSIBLE / float on older Pythons
            raise _NeedSoundfile(str(e)) from None
        raise AudioInputError(f"{p}: not a readable WAV file ({e})") from None
    except EOFError:
        raise AudioInputError(f"{p}: truncated WAV (file ends inside the header)") from None
    frame_bytes = 2 * ch
    declared = n * frame_bytes
    if declared < _UNKNOWN_SIZE and len(raw) < declared:
        raise AudioInputError(
            f"{p}: truncated WAV: header declares {n} frames ({declared} bytes), the file holds "
            f"{len(raw) // frame_bytes} frames ({len(raw)} bytes)"
        )
    if len(raw) % frame_bytes:
        raise AudioInputError(f"{p}: truncated WAV: {len(raw)} data bytes is not a whole number of "
                              f"{frame_bytes}-byte frames")
    x = np.frombuffer(raw, dtype="<i2").reshape(-1, ch)
    return _mixdown(x), rate


class _NeedSoundfile(Exception):
    pass


def _soundfile():
    try:
        import soundfile
    except ImportError:
        return None
    except OSError as e:  # libsndfile missing
        raise AudioInputError(f"soundfile is installed but libsndfile is not ({e}); sudo apt install libsndfile1") from None
    return soundfile


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a WAV (stdlib) or FLAC/OGG/other (soundfile) file as (mono int16, sample rate)."""
    p = Path(path)
    if not p.is_file():
        raise AudioInputError(f"{p}: no such audio file")
    reason = None
    if p.suffix.lower() in (".wav", ".wave"):
        try:
            return read_wav(p)
        except _NeedSoundfile as e:
            reason = str(e)
    sf = _soundfile()
    if sf is None:
        what = reason or f"{p.suffix or 'this'} files"
        raise AudioInputError(f"{p}: reading {what} needs soundfile: pip install soundfile "
                              "(16-bit PCM WAV works without it)")
    try:
        x, rate = sf.read(str(p), dtype="int16", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError with the reason
        raise AudioInputError(f"{p}: cannot read audio ({e})") from None
    if x.size == 0:
        raise AudioInputError(f"{p}: no audio samples")
    return _mixdown(x), int(rate)


def _paced(chunks: Iterator[np.ndarray], rate: int) -> Iterator[np.ndarray]:
    """Yield chunks no faster than real time."""
    t0 = time.monotonic()
    sent = 0
    for c in chunks:
        sent += c.size
        delay = t0 + sent / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield c


class FileSource:
    """Chunks of an audio file at ``sample_rate`` (resampled if the file differs).

    ``realtime=True`` paces the chunks at the audio's real duration (simulates a microphone).
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int = DEFAULT_RATE, chunk_ms: float = 64.0,
                 realtime: bool = False) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        pcm, self.source_rate = read_audio(self.path)
        self.sample_rate = int(sample_rate)
        if self.source_rate != self.sample_rate:
            log.info("%s: resampling %d Hz -> %d Hz", self.path, self.source_rate, self.sample_rate)
            pcm = resample(pcm, self.source_rate, self.sample_rate)
        self.pcm = pcm
        self.chunk = max(1, int(round(chunk_ms * self.sample_rate / 1000)))
        self.realtime = realtime

    @property
    def duration_s(self) -> float:
        return self.pcm.size / self.sample_rate

    def __iter__(self) -> Iterator[np.ndarray]:
        chunks = (self.pcm[i:i + self.chunk] for i in range(0, self.pcm.size, self.chunk))
        return _paced(chunks, self.sample_rate) if self.realtime else iter(chunks)


# ---------------------------------------------------------------------------------------------- stdin
class StdinSource:
    """Raw S16_LE mono PCM from a binary stream (default: ``sys.stdin.buffer``).

    Reads whatever is available (``read1``), so results appear as soon as audio arrives. A half
    sample at a read boundary is carried over; one at the end of the stream is dropped and reported
    (``dropped_bytes``, and a warning on the ``ser_edge.audio`` logger).
    """

    def __init__(self, stream: BinaryIO | None = None, rate: int = DEFAULT_RATE,
                 sample_rate: int = DEFAULT_RATE, chunk_ms: float = 64.0, name: str = "<stdin>") -> None:
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.name = name
        self.source_rate = int(rate)
        self.sample_rate = int(sample_rate)
        self.chunk_bytes = 2 * max(1, int(round(chunk_ms * self.source_rate / 1000)))
        self._resampler = Resampler(self.source_rate, self.sample_rate) if self.source_rate != self.sample_rate else None
        self.dropped_bytes = 0
        self.bytes_read = 0

    def _read(self) -> bytes:
        read1 = getattr(self.stream, "read1", None)
        return read1(self.chunk_bytes) if read1 is not None else self.stream.read(self.chunk_bytes)

    def __iter__(self) -> Iterator[np.ndarray]:
        carry = b""
        while True:
            data = self._read()
            if not data:
                break
            self.bytes_read += len(data)
            data = carry + data
            n = len(data) & ~1
            carry = data[n:]
            if n:
                x = np.frombuffer(data[:n], dtype="<i2").astype(np.int16)
                if self._resampler is not None:
                    x = self._resampler.process(x)
                if x.size:
                    yield x
        if carry:
            self.dropped_bytes = len(carry)
            log.warning("%s: stream ended mid-sample (odd byte count %d); dropped the last half sample",
                        self.name, self.bytes_read)
        if self._resampler is not None:
            tail = self._resampler.flush()
            if tail.size:
                yield tail


# ---------------------------------------------------------------------------------------------- microphone
class MicSource:
    """Live microphone through ``sounddevice`` (PortAudio), mono int16 at ``sample_rate``.

    Opens the device at ``sample_rate``; if the device refuses that rate, opens it at its default
    rate and resamples. Overflows (the consumer fell behind) are logged and counted in ``overflows``.
    """

    def __init__(self, sample_rate: int = DEFAULT_RATE, device: int | str | None = None,
                 chunk_ms: float = 64.0) -> None:
        try:
            import sounddevice  # noqa: F401
        except ImportError:
            raise AudioInputError("microphone input needs sounddevice: pip install sounddevice "
                                  "(and on Raspberry Pi OS: sudo apt install libportaudio2)") from None
        except OSError as e:
            raise AudioInputError(f"sounddevice cannot load PortAudio ({e}): sudo apt install libportaudio2") from None
        self.sample_rate = int(sample_rate)
        self.device = device
        self.chunk_ms = chunk_ms
        self.name = f"<mic {device if device is not None else 'default'}>"
        self.overflows = 0
        self._stop = False

    def close(self) -> None:
        self._stop = True

    def __iter__(self) -> Iterator[np.ndarray]:
        import queue

        import sounddevice as sd

        q: queue.Queue = queue.Queue(maxsize=256)

        def callback(indata, frames, time_info, status):  # PortAudio thread
            if status.input_overflow:
                self.overflows += 1
            try:
                q.put_nowait(indata[:, 0].copy())
            except queue.Full:
                self.overflows += 1

        rate = self.sample_rate
        try:
            sd.check_input_settings(device=self.device, channels=1, dtype="int16", samplerate=rate)
        except Exception:
            rate = int(sd.query_devices(self.device, "input")["default_samplerate"])
            log.info("%s: device does not take %d Hz; recording at %d Hz and resampling", self.name, self.sample_rate, rate)
        resampler = Resampler(rate, self.sample_rate) if rate != self.sample_rate else None
        block = max(1, int(round(self.chunk_ms * rate / 1000)))
        try:
            stream = sd.InputStream(samplerate=rate, device=self.device, channels=1, dtype="int16",
                                    blocksize=block, callback=callback)
        except Exception as e:
            raise AudioInputError(f"{self.name}: cannot open the microphone ({e}); list devices with "
                                  "python -m sounddevice") from None
        with stream:
            last_overflows = 0
            while not self._stop:
                try:
                    x = q.get(timeout=1.0)
                except queue.Empty:
                    continue
                if self.overflows != last_overflows:
                    log.warning("%s: audio overflow (%d so far): processing fell behind", self.name, self.overflows)
                    last_overflows = self.overflows
                yield resampler.process(x) if resampler is not None else x
