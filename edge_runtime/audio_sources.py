"""Audio sources for the streaming classifier: files, raw PCM on stdin, a live microphone.

Every source is an iterable of mono ``int16`` numpy chunks at ``source.sample_rate`` (the model's
rate, 16 kHz by default), so ``for r in clf.stream(source)`` works with any of them.

* files: :func:`edge_runtime.audio_io.load_audio_rate` (the one reader: 16-bit PCM WAV with the
  standard library, every other format as float through ``soundfile``, resampled with soxr).
* stdin: raw signed 16-bit little-endian PCM (``arecord -f S16_LE -r 16000 -c 1 | ser-edge run
  --stdin``). A stream that ends mid-sample (odd byte count) is reported (logged, and counted in
  ``dropped_bytes``) and the half sample dropped.
* microphone: ``sounddevice`` (optional, ``pip install sounddevice``; on a Pi also ``sudo apt
  install libportaudio2``).

Sample-rate mismatch: we resample (:class:`edge_runtime.audio_io.Resampler`, soxr), we do not refuse.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from .audio_io import (DEFAULT_RATE, AudioInputError, AudioReadError, Resampler, load_audio_rate,  # noqa: F401
                       read_audio, resample)

log = logging.getLogger("ser_edge.audio")


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
        self.sample_rate = int(sample_rate)
        self.pcm, self.source_rate = load_audio_rate(self.path, self.sample_rate)
        if self.source_rate != self.sample_rate:
            log.info("%s: resampled %d Hz -> %d Hz", self.path, self.source_rate, self.sample_rate)
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
