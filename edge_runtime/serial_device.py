"""Device side of the serial link: answer a host over a UART/USB serial port (docs/protocol.md).

``SerialDevice(transport, engine)`` reads frames from ``transport`` (anything with ``read(n)``
returning ``b""`` on timeout and ``write(data)``: a pyserial ``Serial``, or :class:`TtyTransport`,
which needs only os/termios so the Pi does not need pyserial), and:

* HELLO → INFO, PING → PONG, GET_STATS → STATS, START/STOP → ACK (or ERROR);
* AUDIO / FEATURES → ``engine.push_audio`` / ``engine.push_features`` → one RESULT per window;
* bad requests (wrong mode, wrong feature dims, malformed payload, unknown type) → ERROR;
* gaps in the stream (a lost AUDIO/FEATURES frame, seen as a jump of the offset field) are filled
  with zeros so time stays aligned, and every window overlapping a gap is flagged GAP;
* with an ``audio_source`` (an iterable of int16 chunks, e.g. the microphone) it can classify its
  own audio and push RESULTs unasked (START mode MIC_PUSH, or ``push_on_boot=True`` for a robot).

No pyserial, no model code imported here: the engine is passed in (``StreamingClassifier``).
"""
from __future__ import annotations

import errno
import os
import select
import termios
import threading
import time
import tty
from collections import deque
from dataclasses import replace
from typing import Any, Iterable, Protocol

import numpy as np

from .protocol import (DEVICE_TO_HOST, HOST_TO_DEVICE, INFO_FLAG_BOOT, MAX_PAYLOAD, NO_GATE, NO_SEQ,
                       PROTOCOL_REVISION, PROTOCOL_VERSION, Accepts, Ack, AckStatus, Audio, Error,
                       ErrorCode, Features, FrameDecoder, GetStats, Hello, Info, InfoExtFlags,
                       Message, Mode, MsgType, Ping, Pong, Resend, Result, ResultFlags, Sequencer,
                       Start, Stats, Stop)
from .port_reader import PortReader
from .protocol.reassembly import StreamReassembler
from .results import UtteranceResult, WindowResult
from .window_policy import NO_SPEECH, SILENCE, UNCERTAIN

SUMMARY_INDEX = 0xFFFFFFFF  # window_index of the summary record sent after STOP

__all__ = ["Engine", "PortLost", "ResultHistory", "SerialDevice", "TtyTransport", "WriteTimeout",
           "add_cli", "result_to_message", "serve_port"]

# errno values that mean "this serial port is gone" (USB unplugged, pty master closed, gadget reset)
_LOST_ERRNOS = frozenset({errno.EIO, errno.ENXIO, errno.ENODEV, errno.EBADF, errno.EPIPE})


class PortLost(ConnectionError):
    """The serial port went away: end of file, EIO, ENXIO or ENODEV (unplugged USB, closed pty)."""


class WriteTimeout(TimeoutError):
    """A write did not complete in time (the peer stopped reading and the TX buffer is full)."""


class Engine(Protocol):
    """What :class:`SerialDevice` needs from a classifier (``StreamingClassifier`` implements it)."""

    def info(self) -> dict: ...
    def reset(self) -> None: ...
    def push_audio(self, pcm: np.ndarray) -> list[WindowResult]: ...
    def push_features(self, frames_int8: np.ndarray) -> list[WindowResult]: ...
    def finish(self) -> list[WindowResult]: ...
    def take_utterances(self) -> list: ...


class Transport(Protocol):
    def read(self, n: int) -> bytes: ...
    def write(self, data: bytes) -> Any: ...


# ---------------------------------------------------------------------------------- transport
def _baud_constant(baud: int) -> int:
    name = f"B{int(baud)}"
    if not hasattr(termios, name):
        raise ValueError(f"baud rate {baud} is not a standard termios speed on this system")
    return getattr(termios, name)


class TtyTransport:
    """A serial port opened with os/termios only: raw 8N1, no flow control, given baud rate.

    ``read(n)`` waits up to ``timeout`` seconds and returns ``b""`` when nothing arrived; it raises
    :class:`PortLost` when the port is gone (end of file or EIO/ENXIO/ENODEV: a tty that reports
    "readable" and then returns no data has been hung up, and reading it again would spin).
    ``write(data)`` gives up after ``write_timeout`` seconds (:class:`WriteTimeout`), so a peer that
    stops reading cannot block the caller for ever.
    """

    def __init__(self, path: str, baud: int = 921600, timeout: float = 0.02,
                 write_timeout: float = 0.5):
        self.path = path
        self.timeout = timeout
        self.write_timeout = write_timeout
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            tty.setraw(self.fd)
            attrs = termios.tcgetattr(self.fd)
            attrs[2] = (attrs[2] & ~(termios.PARENB | termios.CSTOPB | termios.CSIZE
                                     | getattr(termios, "CRTSCTS", 0))
                        | termios.CS8 | termios.CLOCAL | termios.CREAD)
            attrs[0] &= ~(termios.IXON | termios.IXOFF | termios.IXANY)
            speed = _baud_constant(baud)
            attrs[4] = attrs[5] = speed
            attrs[6][termios.VMIN] = 0
            attrs[6][termios.VTIME] = 0
            termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
            termios.tcflush(self.fd, termios.TCIFLUSH)  # a booting device starts with an empty FIFO
        except Exception:
            os.close(self.fd)
            raise
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)
        self._empty_reads = 0

    def _lost(self, why: str) -> PortLost:
        return PortLost(f"{self.path}: {why}")

    def read(self, n: int = 4096) -> bytes:
        buf = bytearray(n)
        return bytes(buf[:self.readinto(buf)])

    def readinto(self, buf) -> int:
        """Like :meth:`read`, into ``buf`` (a writable buffer): the number of bytes read, 0 on
        timeout. Allocates nothing per call (:class:`~edge_runtime.port_reader.PortReader`)."""
        if self.fd < 0:
            raise self._lost("closed")
        try:
            events = self._poll.poll(self.timeout * 1000)
        except (OSError, ValueError) as exc:
            raise self._lost(str(exc)) from None
        if not events:
            return 0
        revents = events[0][1]
        if revents & (select.POLLERR | select.POLLNVAL):
            raise self._lost("hung up (POLLERR)")
        try:
            k = os.readv(self.fd, [buf])
        except BlockingIOError:
            k = 0
        except OSError as exc:
            if exc.errno in _LOST_ERRNOS:
                raise self._lost(os.strerror(exc.errno)) from None
            raise
        if k:
            self._empty_reads = 0
            return k
        # "readable" but nothing read: a hung-up tty (POLLHUP: USB gone, pty master closed) -- or,
        # rarely, a raw tty (VMIN=VTIME=0) that woke poll without data, so only a hang-up or a
        # long run of such reads counts as a lost port
        self._empty_reads += 1
        if revents & select.POLLHUP or self._empty_reads >= 100:
            raise self._lost("end of file (hung up)")
        return 0

    def write(self, data: bytes, timeout: float | None = None) -> int:
        if self.fd < 0:
            raise self._lost("closed")
        deadline = time.monotonic() + (self.write_timeout if timeout is None else timeout)
        view = memoryview(data)
        while view:
            try:
                k = os.write(self.fd, view)
            except BlockingIOError:
                k = 0
            except OSError as exc:
                if exc.errno in _LOST_ERRNOS:
                    raise self._lost(os.strerror(exc.errno)) from None
                raise
            view = view[k:]
            if view and k == 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WriteTimeout(f"{self.path}: write timed out with {len(view)} of "
                                       f"{len(data)} bytes unsent")
                select.select([], [self.fd], [], min(left, 0.05))
        return len(data)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# ---------------------------------------------------------------------------------- helpers
def _is_timeout(exc: BaseException) -> bool:
    """A write timeout from our transport (TimeoutError) or pyserial (SerialTimeoutException)."""
    return isinstance(exc, TimeoutError) or "timeout" in type(exc).__name__.lower()


def result_to_message(r: WindowResult | UtteranceResult, session: int, extra_flags: int = 0,
                      latency_us: int | None = None) -> Result:
    """The RESULT message for one window, utterance or summary record.

    ``label_index`` is the emotion; when the record has none (``reason`` set), it is the model's
    top-1 of the scores sent and a flag says why: SILENCE, NO_SPEECH or UNCERTAIN.
    """
    flags = extra_flags
    reason = r.reason if r.reason is not None or not getattr(r, "gated", False) else SILENCE
    flags |= {SILENCE: ResultFlags.SILENCE, NO_SPEECH: ResultFlags.NO_SPEECH,
              UNCERTAIN: ResultFlags.UNCERTAIN}.get(reason, 0)
    # tuple(list), not tuple(generator): a generator's tuple is built at a guessed size and
    # resized, so it bypasses CPython's free list of 8-tuples and then lands in it when freed --
    # one more parked 128-byte block per window until the list holds 2000 (the ~0.25 MB RSS
    # ramp over the first 35 minutes of a `serve` soak)
    scores = tuple(np.asarray(r.scores_int8, dtype=np.int8).ravel().tolist())
    index = r.label_index if r.label_index is not None else int(np.argmax(scores)) if scores else 0
    if isinstance(r, UtteranceResult):
        flags |= ResultFlags.UTTERANCE
        if reason is not None and reason not in (SILENCE, NO_SPEECH, UNCERTAIN):  # too_short
            flags |= ResultFlags.SILENCE
        number = SUMMARY_INDEX if r.record == "summary" else r.utterance_index
        return Result(window_index=number, session=session & 0xFFFF, label_index=int(index), flags=int(flags),
                      t_start_ms=int(round(r.t_start_s * 1000)), t_end_ms=int(round(r.t_end_s * 1000)),
                      latency_us=0 if latency_us is None else max(0, int(latency_us)), scores=scores)
    if latency_us is None:
        latency_us = int(round(r.latency_ms * 1000))
    return Result(
        window_index=int(r.window_index), session=session & 0xFFFF, label_index=int(index),
        flags=int(flags), t_start_ms=int(round(r.t_start_s * 1000)),
        t_end_ms=int(round(r.t_end_s * 1000)), latency_us=max(0, int(latency_us)), scores=scores)


def info_message(info: dict, *, accepts: int, mode: int, max_payload: int, reply_to: int,
                 boot: bool, revision: int = PROTOCOL_REVISION, session: int = 0,
                 resend_hold_ms: int = 0) -> Info:
    """Build INFO from ``engine.info()`` (extra optional keys: frame_hop_samples, output_scale,
    output_zero_point, frame_length_samples, gate_dbfs, min_confidence, scores_are_probs)."""
    gate = info.get("gate_dbfs")
    ext = ((InfoExtFlags.SCORES_ARE_PROBS if info.get("scores_are_probs") else 0)
           | (InfoExtFlags.GATE if gate is not None else 0)
           | (InfoExtFlags.RESEND if resend_hold_ms else 0))
    return Info(
        protocol_version=revision, flags=INFO_FLAG_BOOT if boot else 0, accepts=accepts,
        mode=mode, max_payload=max_payload, reply_to=reply_to,
        sample_rate=int(info["sample_rate"]), window_frames=int(info["window_frames"]),
        hop_frames=int(info["hop_frames"]), n_features=int(info["n_features"]),
        frame_hop_samples=int(info.get("frame_hop_samples", 0) or 0),
        input_scale=float(info["input_scale"]), input_zero_point=int(info["input_zero_point"]),
        output_zero_point=int(info.get("output_zero_point", 0) or 0),
        output_scale=float(info.get("output_scale", 0.0) or 0.0),
        version=str(info.get("version", "")), model_hash=str(info.get("model_hash", "")),
        frontend_hash=str(info.get("frontend_hash", "")),
        labels=tuple(str(x) for x in info["labels"]),
        frame_length_samples=int(info.get("frame_length_samples", 0) or 0), ext_flags=int(ext),
        min_confidence=float(info.get("min_confidence", 0.0) or 0.0),
        gate_dbfs=float(gate) if gate is not None else NO_GATE, session=session & 0xFFFF,
        resend_hold_ms=int(resend_hold_ms))


def engine_info(engine) -> dict:
    """``engine.info()`` plus what INFO's extension reports, read from a StreamingClassifier's
    attributes when its info() does not name them (frame length, gate, confidence threshold)."""
    info = dict(engine.info())
    cfg = getattr(engine, "cfg", None)
    if "frame_length_samples" not in info and cfg is not None:
        info["frame_length_samples"] = int(getattr(cfg, "frame_length", 0) or 0)
    if "gate_dbfs" not in info and hasattr(engine, "gate_dbfs"):
        info["gate_dbfs"] = engine.gate_dbfs
    if "min_confidence" not in info and hasattr(engine, "min_confidence"):
        info["min_confidence"] = engine.min_confidence
    return info


class ResultHistory:
    """The last ``size`` window RESULTs of a session, for a host's RESEND, in memory allocated once.

    Each RESULT is kept as its encoded payload in slot ``window_index % size`` of a preallocated
    byte matrix (windows come in order, so a new one replaces the oldest), and decoded again when
    asked for. A dict of ``Result`` objects did the same, but its 512 long-lived objects, replaced
    one per window among short-lived ones of the same sizes, kept spreading over more of Python's
    allocator pools for the first ~40 minutes of a stream (RSS growth in bench/soak_fast.py).
    """

    WIDTH = Result._S.size + 255  # the largest RESULT payload (255 scores)

    def __init__(self, size: int):
        self.size = max(0, int(size))
        self._keys = np.full(self.size, -1, np.int64)
        self._len = np.zeros(self.size, np.int32)
        self._data = np.zeros((self.size, self.WIDTH), np.uint8)

    def __bool__(self) -> bool:
        return self.size > 0

    def clear(self) -> None:
        self._keys[:] = -1

    def put(self, msg: Result) -> None:
        if not self.size:
            return
        payload = msg.encode_payload()
        slot = msg.window_index % self.size
        self._keys[slot] = msg.window_index
        self._len[slot] = len(payload)
        self._data[slot, :len(payload)] = np.frombuffer(payload, np.uint8)

    def get(self, window_index: int) -> Result | None:
        if not self.size:
            return None
        slot = window_index % self.size
        if self._keys[slot] != window_index:
            return None
        return Result.decode_payload(self._data[slot, :self._len[slot]].tobytes())


class SerialDevice:
    """Serve one serial link. Call :meth:`serve` (blocking) or :meth:`poll` from your own loop.

    ``max_payload``: largest payload accepted (advertised in INFO). ``max_gap_s``: a stream gap up
    to this long is zero-filled; a longer one resets the stream (ERROR STREAM_RESET).

    Sending never blocks the receive loop: frames go into a bounded queue (``tx_queue`` frames)
    drained by a writer thread. When the host stops reading, each write gives up after the
    transport's write timeout (``tx_timeouts``) and, once the queue is full, the oldest RESULT is
    dropped (``tx_dropped_results``; other frames only if no RESULT is queued, ``tx_dropped``), so
    input keeps being read and answered. Receiving never waits for classifying either: :meth:`serve`
    drains the port in a reader thread into a ring of ``rx_buffer`` bytes (:mod:`.port_reader`;
    ``rx_buffer=0``: read in the loop), so a burst at line rate is not lost while a window is
    classified. How far behind the loop got is in STATS: ``rx_buffered_max``, the most bytes the
    ring held at once, and ``rx_buffer_full``, how many times it filled (the thread then stops
    reading until the loop takes some; both stay 0 with ``rx_buffer=0``). The
    last ``result_history`` window RESULTs are kept (:class:`ResultHistory`) for a host's RESEND.
    A port that is gone (:class:`PortLost`, raised by the transport on EOF/EIO/ENXIO) ends
    :meth:`serve` with that exception; :func:`serve_port` reopens.
    """

    def __init__(self, transport: Transport, engine: Engine, *, max_payload: int = MAX_PAYLOAD,
                 audio_source: Iterable[np.ndarray] | None = None, push_on_boot: bool = False,
                 max_gap_s: float = 10.0, announce: bool = True, read_size: int = 4096,
                 tx_queue: int = 64, resend_hold_s: float = 3.0, resend_retry_s: float = 0.1,
                 reorder_bytes: int = 256 * 1024, result_history: int = 512,
                 rx_buffer: int = 256 * 1024):
        self.transport = transport
        self.engine = engine
        self.max_payload = min(max_payload, MAX_PAYLOAD)
        self.audio_source = audio_source
        self.read_size = read_size
        self.rx_buffer = rx_buffer  # bytes :meth:`serve`'s reader thread may hold (0: no thread)
        self._reader: PortReader | None = None
        self._info = engine_info(engine)
        self.sample_rate = int(self._info["sample_rate"])
        self.n_features = int(self._info["n_features"])
        self.window_frames = int(self._info["window_frames"])
        self.hop_frames = int(self._info["hop_frames"])
        self.zero_point = int(self._info["input_zero_point"])
        self.max_gap_samples = int(max_gap_s * self.sample_rate)
        fhs = int(self._info.get("frame_hop_samples", 0) or 0)
        self.max_gap_frames = int(max_gap_s * self.sample_rate / fhs) if fhs else 1000
        self.frame_hop_samples = fhs
        # selective retransmission (revision 2): wait up to resend_hold_s for a lost range, asking
        # again every resend_retry_s, while buffering at most reorder_bytes of later input
        self.resend_hold_s = resend_hold_s
        self.resend_retry_s = resend_retry_s
        self.reorder_bytes = reorder_bytes
        self.peer_revision = 1  # until a HELLO says more: no RESEND frames to unknown hosts
        self.host_max_payload = MAX_PAYLOAD
        self._stream: StreamReassembler | None = None
        self._start_key: tuple | None = None  # (mode, session, start_offset) of the current START
        self._engine_pos = 0  # items fed to the engine since its last reset
        self._win_base = 0  # window numbering continues across a STREAM_RESET
        self._t_base_s = 0.0  # and so do window times (seconds since the session's start_offset)
        self._last_window = -1
        self._result_history = ResultHistory(result_history)  # for a host's RESEND
        self._result_history_max = result_history
        self.accepts = Accepts.AUDIO | Accepts.FEATURES | (Accepts.MIC_PUSH if audio_source is not None else 0)
        self.decoder = FrameDecoder(self.max_payload, on_drop=self._on_drop)
        self.tx = Sequencer()
        self._tx_lock = threading.Lock()
        self._engine_lock = threading.Lock()
        self.mode = Mode.IDLE
        self.session = 0
        self._gaps: list[tuple[int, int]] = []  # [start, end) in engine units (samples/frames)
        self._push_thread: threading.Thread | None = None
        self._push_stop = threading.Event()
        self._stop = threading.Event()
        self._txq: deque[tuple[bool, bytes]] = deque()  # (is_result, wire bytes), oldest first
        self._tx_max = max(1, int(tx_queue))
        self._tx_cv = threading.Condition()
        self._tx_busy = False
        self._tx_resync = False  # a write timed out mid-frame: start the next one with a delimiter
        self._tx_closed = False
        self._lost: BaseException | None = None  # set by the writer when the port disappeared
        self._writer = threading.Thread(target=self._write_loop, name="serial-tx", daemon=True)
        self._writer.start()
        self.counters = {"tx_frames": 0, "results": 0, "errors": 0, "gap_samples": 0,
                         "gap_frames": 0, "stale": 0, "sessions": 0, "tx_dropped_results": 0,
                         "tx_dropped": 0, "tx_timeouts": 0, "resend_requests": 0,
                         "resend_recovered": 0, "gap_windows": 0, "rx_unexpected_type": 0,
                         "results_resent": 0, "rx_buffer_full": 0, "rx_buffered_max": 0}
        if announce:
            self._send(self._info_msg(NO_SEQ, boot=True))
        if push_on_boot:
            if audio_source is None:
                raise ValueError("push_on_boot needs an audio_source")
            self._start_push(session=0)

    # ------------------------------------------------------------------ main loop
    def serve(self, stop: threading.Event | None = None, duration: float | None = None) -> None:
        """Read and answer frames until ``stop`` is set (or ``duration`` seconds pass)."""
        stop = stop or self._stop
        t_end = None if duration is None else time.monotonic() + duration
        if self.rx_buffer and self._reader is None:
            # the port is drained in its own thread while this loop classifies: a burst at line
            # rate must not overflow the few KB the tty itself holds (docs/protocol.md §1)
            self._reader = PortReader(self.transport, read_size=self.read_size,
                                      max_bytes=max(self.rx_buffer, self.read_size)).start()
        try:
            while not stop.is_set() and (t_end is None or time.monotonic() < t_end):
                self.poll()
        finally:
            reader, self._reader = self._reader, None
            if reader is not None:
                reader.stop()
                self.counters["rx_buffer_full"] += reader.counters["full"]
                self.counters["rx_buffered_max"] = max(self.counters["rx_buffered_max"],
                                                       reader.counters["max_buffered"])
            self._stop_push()
            self.flush(timeout=0.5)

    def stop(self) -> None:
        """Ask :meth:`serve` (running in another thread) to return."""
        self._stop.set()

    def close(self) -> None:
        """Stop the push and writer threads (queued frames not yet written are discarded)."""
        self._stop_push()
        with self._tx_cv:
            self._tx_closed = True
            self._txq.clear()
            self._tx_cv.notify_all()
        if self._writer is not threading.current_thread():
            self._writer.join(timeout=2)

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until every queued frame has been written (or dropped); True if that happened."""
        deadline = time.monotonic() + timeout
        with self._tx_cv:
            while (self._txq or self._tx_busy) and self._lost is None and not self._tx_closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._tx_cv.wait(left)
        return not self._txq

    def poll(self) -> int:
        """Read once (the transport's timeout bounds the wait) and handle complete frames.

        Raises :class:`PortLost` (or the transport's OSError) when the port is gone."""
        if self._lost is not None:
            raise self._lost
        reader = self._reader
        if reader is not None:  # serve()'s reader thread holds what arrived meanwhile
            data = reader.get(float(getattr(self.transport, "timeout", None) or 0.02), self.read_size)
        else:
            data = self.transport.read(self.read_size)
        if self._stream is not None:
            self._service_stream()
        if not data:
            return 0
        received = self.decoder.feed(data)
        for seq, msg in received:
            t_rx = time.perf_counter()
            try:
                self._handle(seq, msg, t_rx)
            except Exception as exc:  # never let one request kill the device loop
                self._error(ErrorCode.ENGINE, seq, msg.TYPE, f"{type(exc).__name__}: {exc}")
        return len(received)

    def stats(self) -> dict:
        """Device counters (decoder drops by reason, tx, results, errors, gaps)."""
        s = self.decoder.stats
        d = {"rx_frames": s.frames_ok, "rx_seq_lost": s.seq_lost, "rx_bytes": s.bytes_in}
        d.update({f"rx_{k}": v for k, v in s.dropped.items()})
        d.update(self.counters)
        reader = self._reader
        if reader is not None:  # the live reader thread's counts too
            d["rx_buffer_full"] += reader.counters["full"]
            d["rx_buffered_max"] = max(d["rx_buffered_max"], reader.counters["max_buffered"])
        if self._stream is not None:  # the live session's reassembler counts too
            d["resend_recovered"] += self._stream.counters["recovered_items"]
            d["stale"] += self._stream.counters["stale"]
        return d

    def _info_msg(self, reply_to: int, boot: bool) -> Info:
        revision = PROTOCOL_REVISION if boot else min(self.peer_revision, PROTOCOL_REVISION)
        hold = int(self.resend_hold_s * 1000) if revision >= 2 else 0
        return info_message(self._info, accepts=int(self.accepts), mode=int(self.mode),
                            max_payload=self.max_payload, reply_to=reply_to, boot=boot,
                            revision=revision, session=self.session if self.mode else 0,
                            resend_hold_ms=hold)

    # ------------------------------------------------------------------ sending
    def _send(self, msg: Message) -> None:
        """Queue ``msg`` for the writer thread (never blocks; drops the oldest RESULT when full)."""
        payload_len = len(msg.encode_payload())
        if payload_len > self.host_max_payload:  # HELLO said the host cannot take it
            self.counters["tx_dropped"] += 1
            if msg.TYPE != MsgType.ERROR:
                self._error(ErrorCode.TOO_LARGE, NO_SEQ, msg.TYPE,
                            f"{msg.TYPE.name} needs {payload_len} bytes, host accepts {self.host_max_payload}")
            return
        with self._tx_lock:
            _, frame = self.tx.encode(msg)
        with self._tx_cv:
            if self._tx_closed:
                return
            if len(self._txq) >= self._tx_max:
                victim = next((i for i, (is_res, _) in enumerate(self._txq) if is_res), 0)
                is_res, _ = self._txq[victim]
                del self._txq[victim]
                self.counters["tx_dropped_results" if is_res else "tx_dropped"] += 1
            self._txq.append((msg.TYPE == MsgType.RESULT, frame))
            self._tx_cv.notify_all()

    def _write_loop(self) -> None:
        while True:
            with self._tx_cv:
                while not self._txq and not self._tx_closed:
                    self._tx_cv.wait()
                if self._tx_closed:
                    return
                _, frame = self._txq.popleft()
                self._tx_busy = True
                if self._tx_resync:
                    frame = b"\x00" + frame
                    self._tx_resync = False
            try:
                self.transport.write(frame)
                self.counters["tx_frames"] += 1
            except Exception as exc:  # noqa: BLE001 - classify, never let the writer die silently
                if _is_timeout(exc):
                    self.counters["tx_timeouts"] += 1
                    self._tx_resync = True  # the peer may hold half a frame: terminate it first
                else:
                    with self._tx_cv:
                        self._lost = exc if isinstance(exc, OSError) else PortLost(str(exc))
                        self._tx_closed = True
                        self._txq.clear()
            finally:
                with self._tx_cv:
                    self._tx_busy = False
                    self._tx_cv.notify_all()

    def _error(self, code: int, ref_seq: int = NO_SEQ, ref_type: int = 0, text: str = "") -> None:
        self.counters["errors"] += 1
        self._send(Error(int(code), ref_seq, int(ref_type), text))

    def _on_drop(self, reason: str, seq: int | None, mtype: int | None) -> None:
        # Only frames that passed the CRC have a trustworthy seq/type worth answering.
        if seq is None:
            return
        if reason == "payload" and mtype in DEVICE_TO_HOST and mtype not in HOST_TO_DEVICE:
            # a device→host-only type is refused as such, whatever its payload (PING, PONG and
            # RESEND go both ways: a malformed one is BAD_PAYLOAD like any request)
            reason = "unknown_type"
        code = {"unknown_type": ErrorCode.UNKNOWN_TYPE, "payload": ErrorCode.BAD_PAYLOAD,
                "oversize": ErrorCode.TOO_LARGE, "version": ErrorCode.VERSION,
                "length": ErrorCode.BAD_PAYLOAD}.get(reason)
        if code is not None:
            text = {"version": f"this device speaks protocol version {PROTOCOL_VERSION}",
                    "oversize": f"max payload is {self.max_payload} bytes",
                    "unknown_type": (f"{MsgType(mtype).name} is not a request" if mtype in DEVICE_TO_HOST
                                     else f"unknown message type 0x{(mtype or 0):02x}")}.get(reason, reason)
            self._error(code, seq, mtype or 0, text)

    def _send_results(self, results: list[WindowResult], t_rx: float, extra_flags: int = 0) -> None:
        for r in results:
            gap = self._overlaps_gap(r)
            flags = extra_flags | (ResultFlags.GAP if gap else 0)
            self.counters["gap_windows"] += bool(gap)
            if self._win_base or self._t_base_s:  # after a STREAM_RESET: numbering continues
                r = replace(r, window_index=r.window_index + self._win_base,
                            t_start_s=r.t_start_s + self._t_base_s, t_end_s=r.t_end_s + self._t_base_s)
            self._last_window = max(self._last_window, r.window_index)
            lat = int((time.perf_counter() - t_rx) * 1e6)
            msg = result_to_message(r, self.session, flags, latency_us=lat)
            if self._result_history_max and not msg.flags & ResultFlags.PUSH:
                self._result_history.put(msg)
            self._send(msg)
            self.counters["results"] += 1
        take = getattr(self.engine, "take_utterances", None)
        for u in (take() if take is not None else []):
            self._send(result_to_message(u, self.session, extra_flags))
            self.counters["results"] += 1

    def _finish_stream(self, t_rx: float) -> None:
        """End of a session's stream (STOP): flush the tail window and send the utterance and
        summary records (window policy, docs/protocol.md)."""
        finish = getattr(self.engine, "finish", None)
        if finish is None or self.mode not in (Mode.AUDIO, Mode.FEATURES):
            return
        with self._engine_lock:
            results = finish()
        self._send_results(results, t_rx)

    # ------------------------------------------------------------------ requests
    def _handle(self, seq: int, msg: Message, t_rx: float) -> None:
        t = msg.TYPE
        if t == MsgType.AUDIO:
            self._on_audio(seq, msg, t_rx)
        elif t == MsgType.FEATURES:
            self._on_features(seq, msg, t_rx)
        elif t == MsgType.PING:
            self._send(Pong(msg.data))
        elif t == MsgType.HELLO:
            self.peer_revision = max(1, min(int(msg.max_version), PROTOCOL_REVISION))
            self.host_max_payload = max(64, int(msg.host_max_payload))
            self.decoder.reset_seq()  # a new conversation: the host's counter may have restarted
            self._send(self._info_msg(seq, boot=False))
        elif t == MsgType.START:
            self._on_start(seq, msg)
        elif t == MsgType.STOP:
            self._stop_push()
            idle = self.mode == Mode.IDLE
            self._flush_stream(t_rx)  # input still held for a RESEND goes in (holes zero-filled)
            self._finish_stream(t_rx)  # the tail window, utterance and summary come before the ACK
            self._end_stream()
            self.mode = Mode.IDLE
            self._start_key = None
            self._send(Ack(seq, MsgType.STOP, AckStatus.ALREADY if idle else AckStatus.OK))
        elif t == MsgType.GET_STATS:
            self._send(Stats(seq, self.stats()))
        elif t == MsgType.PONG:
            pass  # the answer to a PING this device sent
        elif t == MsgType.RESEND:  # the host missed RESULTs: send the ones still held again
            if msg.session == self.session:
                for first, count in msg.ranges:
                    for k in range(first, first + min(count, self._result_history_max)):
                        old = self._result_history.get(k & 0xFFFFFFFF)
                        if old is not None:
                            self._send(old)
                            self.counters["results_resent"] += 1
        else:  # a device→host type sent to the device
            self.counters["rx_unexpected_type"] += 1
            self._error(ErrorCode.UNKNOWN_TYPE, seq, t, f"{t.name} is not a request")

    def _on_start(self, seq: int, msg: Start) -> None:
        try:
            mode = Mode(msg.mode)
        except ValueError:
            mode = None
        if mode is None or mode == Mode.IDLE:
            self._error(ErrorCode.UNSUPPORTED, seq, MsgType.START,
                        f"unknown mode {msg.mode}" if mode is None else "mode 0 is not a session; send STOP")
            return
        key = (mode, msg.session, msg.start_offset)
        if key == self._start_key and self.mode == mode:
            # a retry after a lost ACK: acknowledge again, keep the stream (audio may already flow)
            self._send(Ack(seq, MsgType.START, AckStatus.ALREADY))
            return
        if mode == Mode.MIC_PUSH and self.audio_source is None:
            self._error(ErrorCode.UNSUPPORTED, seq, MsgType.START, "this device has no audio source")
            return
        self._stop_push()
        self._end_stream()
        self.session = msg.session
        self._start_key = key
        self._reset_stream(msg.start_offset)
        self._win_base, self._t_base_s, self._last_window = 0, 0.0, -1
        self._result_history.clear()
        if mode in (Mode.AUDIO, Mode.FEATURES):
            self._stream = StreamReassembler(
                msg.start_offset, resend=self.peer_revision >= 2 and self.resend_hold_s > 0,
                hold_s=self.resend_hold_s, retry_s=self.resend_retry_s,
                max_buffered=max(1, self.reorder_bytes // (2 if mode == Mode.AUDIO else self.n_features)),
                max_gap=self.max_gap_samples if mode == Mode.AUDIO else self.max_gap_frames)
        self.mode = mode
        self.counters["sessions"] += 1
        self._send(Ack(seq, MsgType.START))
        if mode == Mode.MIC_PUSH:
            self._start_push(msg.session)

    def _reset_stream(self, offset: int) -> None:
        with self._engine_lock:
            self.engine.reset()
        self._engine_pos = 0
        self._gaps.clear()

    def _flush_stream(self, t_rx: float) -> None:
        """End of input (STOP): give up the holes still open and feed everything held."""
        st = self._stream
        if st is not None and self.mode in (Mode.AUDIO, Mode.FEATURES):
            pieces = st.flush()
            if pieces:
                self._apply(pieces, MsgType.AUDIO if self.mode == Mode.AUDIO else MsgType.FEATURES,
                            t_rx, NO_SEQ)

    def _end_stream(self) -> None:
        """Leaving an AUDIO/FEATURES session: count what the reassembler saw; drop what it held."""
        st = self._stream
        if st is not None:
            self.counters["stale"] += st.counters["stale"]
            self.counters["resend_recovered"] += st.counters["recovered_items"]
            self._stream = None

    def _check_session(self, seq: int, want: Mode, got_type: MsgType) -> bool:
        if self.mode == want:
            return True
        if self.mode == Mode.IDLE:
            self._error(ErrorCode.NO_SESSION, seq, got_type, "send START first")
        else:
            self._error(ErrorCode.WRONG_MODE, seq, got_type,
                        f"session is {self.mode.name}, got {got_type.name}")
        return False

    def _on_audio(self, seq: int, msg: Audio, t_rx: float) -> None:
        if not self._check_session(seq, Mode.AUDIO, MsgType.AUDIO):
            return
        self._on_stream(seq, MsgType.AUDIO, msg.offset, msg.pcm, t_rx)

    def _on_features(self, seq: int, msg: Features, t_rx: float) -> None:
        if not self._check_session(seq, Mode.FEATURES, MsgType.FEATURES):
            return
        fr = msg.frames
        if fr.shape[1] != self.n_features:
            self._error(ErrorCode.BAD_DIMS, seq, MsgType.FEATURES,
                        f"got {fr.shape[1]} features per frame, this model takes {self.n_features}")
            return
        self._on_stream(seq, MsgType.FEATURES, msg.offset, fr, t_rx)

    def _on_stream(self, seq: int, mtype: MsgType, offset: int, items: np.ndarray, t_rx: float) -> None:
        """One AUDIO/FEATURES chunk (or SYNC) through the reassembler, then into the engine."""
        st = self._stream
        pieces = st.push(offset, items, time.monotonic())
        self._apply(pieces, mtype, t_rx, seq)
        self._service_stream()

    def _service_stream(self) -> None:
        """Give up holes that waited too long; ask the host (RESEND) for the ones still missing."""
        st = self._stream
        if st is None:
            return
        pieces, ranges = st.poll(time.monotonic())
        if pieces:
            self._apply(pieces, MsgType.AUDIO if self.mode == Mode.AUDIO else MsgType.FEATURES,
                        time.perf_counter(), NO_SEQ)
        if ranges:
            self.counters["resend_requests"] += 1
            self._send(Resend(self.session, tuple(ranges)))

    def _apply(self, pieces: list, mtype: MsgType, t_rx: float, seq: int) -> None:
        audio = mtype == MsgType.AUDIO
        results: list[WindowResult] = []
        with self._engine_lock:
            for kind, val in pieces:
                if kind == "data":
                    results += self.engine.push_audio(val) if audio else self.engine.push_features(val)
                    self._engine_pos += len(val)
                elif kind == "fill":
                    self.counters["gap_samples" if audio else "gap_frames"] += val
                    self._gaps.append((self._engine_pos, self._engine_pos + val))
                    if audio:
                        results += self.engine.push_audio(np.zeros(val, np.int16))
                    else:
                        results += self.engine.push_features(
                            np.full((val, self.n_features), self.zero_point, np.int8))
                    self._engine_pos += val
                else:  # "reset": a gap too long to fill; numbering and times continue
                    if results:
                        self._send_results(results, t_rx)
                        results = []
                    unit = 1.0 / self.sample_rate if audio else self.frame_hop_samples / self.sample_rate
                    self._win_base = self._last_window + 1
                    self._t_base_s = val * unit
                    self.engine.reset()
                    self._engine_pos = 0
                    self._gaps.clear()
                    self._error(ErrorCode.STREAM_RESET, seq, mtype,
                                f"gap too long to fill; stream restarted at offset "
                                f"{self._stream.offset_of(val)}; windows continue at {self._win_base}")
        if results:
            self._send_results(results, t_rx)

    def _overlaps_gap(self, r: WindowResult) -> bool:
        if not self._gaps:
            return False
        if self.mode == Mode.FEATURES and self.frame_hop_samples:
            # the window's real frames, from its times: a flushed, short or tie-break window is not
            # at window_index * hop_frames
            fl = int(self._info.get("frame_length_samples", 0) or 0)
            lo = int(round(r.t_start_s * self.sample_rate / self.frame_hop_samples))
            hi = int(round((r.t_end_s * self.sample_rate - fl) / self.frame_hop_samples)) + 1
        elif self.mode == Mode.FEATURES:
            lo = r.window_index * self.hop_frames
            hi = lo + self.window_frames
        else:
            lo = int(r.t_start_s * self.sample_rate)
            hi = int(np.ceil(r.t_end_s * self.sample_rate))
        # windows come in order: gaps that end before this window can be forgotten
        self._gaps = [g for g in self._gaps if g[1] > lo]
        return any(g[0] < hi and lo < g[1] for g in self._gaps)

    # ------------------------------------------------------------------ push mode (robot)
    def _start_push(self, session: int) -> None:
        self.session = session
        self.mode = Mode.MIC_PUSH
        with self._engine_lock:
            self.engine.reset()
        self._push_stop.clear()
        self._push_thread = threading.Thread(target=self._push_loop, name="serial-push", daemon=True)
        self._push_thread.start()

    def _stop_push(self) -> None:
        th = self._push_thread
        if th is not None:
            self._push_stop.set()
            if th is not threading.current_thread():
                th.join(timeout=2)
            self._push_thread = None

    def _push_loop(self) -> None:
        try:
            for chunk in self.audio_source:
                if self._push_stop.is_set():
                    break
                t0 = time.perf_counter()
                with self._engine_lock:
                    results = self.engine.push_audio(np.asarray(chunk, dtype=np.int16).ravel())
                self._send_results(results, t0, ResultFlags.PUSH)
        except Exception as exc:  # report, do not die silently
            try:
                self._error(ErrorCode.ENGINE, NO_SEQ, 0, f"audio source: {type(exc).__name__}: {exc}")
            except OSError:
                pass
        finally:
            if self.mode == Mode.MIC_PUSH and not self._push_stop.is_set():
                self.mode = Mode.IDLE  # source exhausted


# ---------------------------------------------------------------------------------- sources + CLI
def looped(source: Iterable[np.ndarray]):
    """Iterate an audio source forever (a file replayed for the push mode)."""
    while True:
        yield from source


def serve_port(port: str, baud: int, engine: Engine, *, audio_source=None, push_on_boot=False,
               max_payload: int = MAX_PAYLOAD, stop: threading.Event | None = None,
               log=print, min_backoff: float = 0.05, max_backoff: float = 1.0) -> None:
    """Open ``port`` and serve it until ``stop`` is set.

    A port that goes away (:class:`PortLost`: EOF, EIO, ENXIO, ENODEV -- a USB cable pulled, a
    USB gadget reset, a pty closed) or cannot be opened is closed and reopened with exponential
    backoff (``min_backoff`` → ``max_backoff`` seconds), sleeping in between, so an unplugged
    device costs no CPU. Every (re)open starts a fresh :class:`SerialDevice`, which announces
    itself with a boot INFO; the backoff is reset only once a reopened port has really worked (a
    valid frame received, or 5 s without failing), so a port that opens and hangs up at once does
    not spin.
    """
    stop = stop or threading.Event()
    backoff = min_backoff
    failed_before = False
    while not stop.is_set():
        try:
            tr = TtyTransport(port, baud)
        except OSError as exc:
            if not failed_before:
                log(f"serve: cannot open {port}: {exc}; retrying with backoff up to {max_backoff:g} s")
            failed_before = True
            stop.wait(backoff)
            backoff = min(backoff * 2, max_backoff)
            continue
        log(f"serve: listening on {port} at {baud} baud")
        t_open = time.monotonic()
        dev = None
        try:
            dev = SerialDevice(tr, engine, max_payload=max_payload, audio_source=audio_source,
                               push_on_boot=push_on_boot)
            dev.serve(stop)
        except OSError as exc:
            log(f"serve: {port} lost ({exc}); reopening")
        finally:
            if dev is not None:
                dev.close()
            tr.close()
        worked = (dev is not None and dev.decoder.stats.frames_ok > 0) or time.monotonic() - t_open > 5
        backoff = min_backoff if worked else min(backoff * 2, max_backoff)
        failed_before = False
        if not stop.is_set():
            stop.wait(backoff)


def _device_arg(dev: str | None):
    return int(dev) if dev is not None and dev.isdigit() else dev


def _check_port_opens(port: str, baud: int) -> None:
    """Open and close ``port`` once; raise the CLI's one-line error if it is not a usable serial port."""
    import termios

    from .cli_errors import BadInput, Failure

    try:
        TtyTransport(port, baud).close()
    except termios.error:
        raise BadInput(f"--port {port}: not a serial port (not a terminal device)") from None
    except ValueError as e:  # a baud rate termios does not know
        raise BadInput(f"--baud {baud}: {e}") from None
    except FileNotFoundError:
        raise BadInput(f"--port {port}: no such serial port") from None
    except PermissionError:
        raise Failure(f"--port {port}: permission denied (add the user to the 'dialout' group)") from None
    except OSError as e:
        raise Failure(f"--port {port}: cannot open ({e.strerror or e})") from None


def _cmd_serve(args) -> int:
    from .classifier import StreamingClassifier  # heavy (interpreter) import only here

    from .mqtt import PublishingEngine, publisher_from_args

    if args.push_mic:
        from .cli_errors import require

        require("ser-edge serve --push-mic", "sounddevice")
    _check_port_opens(args.port, args.baud)  # a wrong --port fails now, not in the reconnect loop
    from .model_select import ModelChoice, load_choice, resolve_model

    choice = args.model if isinstance(args.model, ModelChoice) else resolve_model(args.model)
    choice, engine = load_choice(choice, StreamingClassifier.from_model)
    info = engine.info()
    pub = publisher_from_args(args, labels=info["labels"], model=info.get("model_name") or info["model_hash"])
    if pub is not None:
        engine = PublishingEngine(engine, pub)
        print(f"serve: publishing every window to {pub.target} as ser-edge/{pub.device_id}/", flush=True)
    source = None
    if args.push_wav or args.push_mic:
        from .audio_sources import FileSource, MicSource

        sr = int(info["sample_rate"])
        source = (looped(FileSource(args.push_wav, sr, chunk_ms=32, realtime=True)) if args.push_wav
                  else MicSource(sr, device=_device_arg(args.mic_device), chunk_ms=32))
    print(f"serve: {choice.describe()}", flush=True)
    print(f"serve: model {info.get('model_hash')} labels {info['labels']}", flush=True)
    try:
        serve_port(args.port, args.baud, engine, audio_source=source,
                   push_on_boot=source is not None, max_payload=args.max_payload,
                   log=lambda s: print(s, flush=True))
    except KeyboardInterrupt:
        pass
    finally:
        if pub is not None:
            pub.close()
    return 0


def add_cli(subparsers) -> None:
    """Add the ``serve`` subcommand (device side of the serial link)."""
    from .cli_types import baud_rate, existing_file, model_spec, positive_int, serial_port

    p = subparsers.add_parser(
        "serve", help="answer a host over a serial port (binary protocol, docs/protocol.md)",
        description="Classify audio/features sent by a host over UART/USB serial and send RESULT "
                    "frames back; with --push-mic, classify the device microphone and push results.")
    p.add_argument("--port", required=True, type=serial_port, help="serial device, e.g. /dev/ttyAMA0 or /dev/ttyGS0")
    p.add_argument("--baud", type=baud_rate, default=921600, help="baud rate (default 921600)")
    p.add_argument("--model", default="auto", type=model_spec, metavar="NAME|PATH",
                   help="a shipped model (small, alias mcu; pi), a .tflite, or auto (default: $SER_EDGE_MODEL "
                        "if set, else pi on a Raspberry Pi when shipped, else small)")
    p.add_argument("--push-mic", action="store_true",
                   help="classify the device microphone and push RESULTs unasked (robot mode)")
    p.add_argument("--push-wav", default=None, type=existing_file, help="like --push-mic but replay an audio file in a loop")
    p.add_argument("--mic-device", default=None, help="sounddevice input device (name or index)")
    p.add_argument("--max-payload", type=positive_int, default=MAX_PAYLOAD,
                   help=f"largest frame payload accepted (default {MAX_PAYLOAD})")
    from .mqtt import add_mqtt_args

    add_mqtt_args(p)
    p.set_defaults(func=_cmd_serve)
