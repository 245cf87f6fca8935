"""Host side of the serial link (pyserial): talk to a device running ``ser-edge serve`` or firmware.

``DeviceClient(port, baud)`` opens the port, handshakes (HELLO → INFO), starts sessions, streams
AUDIO or FEATURES in chunks, and delivers RESULTs (iterator :meth:`DeviceClient.results` or an
``on_result`` callback). A reader thread decodes everything the device sends; garbled frames are
dropped and counted (:meth:`DeviceClient.counters`).

Recovery: if the port fails (USB unplugged) the reader reopens it with exponential backoff; if the
device restarts (unsolicited boot INFO, or ERROR NO_SESSION while streaming) or goes silent (no
frame for ``liveness_s`` while we are streaming, e.g. a pulled cable), a recovery worker re-HELLOs
and, when the device lost its session, re-STARTs it with a new session id at the current stream
offset. RESULTs of any other session are discarded (counted ``stale_results``), so a result from
before a restart is never taken for a current one.

Link speed: :func:`audio_baud_needed` / :func:`plan_link` say whether raw 16 kHz audio fits the
baud rate; if not, :class:`HostFeatures` computes the features on the host with the same
fixed-point front end and int8 quantisation as the device, and the client sends FEATURES.
"""
from __future__ import annotations

import bisect
import contextlib
import itertools
import math
import queue
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from edge_runtime.protocol import (MAX_PAYLOAD, NO_SEQ, PROTOCOL_REVISION, Accepts, Ack, Audio,
                                   Error, ErrorCode, Features, FrameDecoder, GetStats, Hello, Info, InfoExtFlags,
                                   Message, Mode, MsgType, Ping, Pong, Resend, Result, ResultFlags,
                                   Sequencer, Start, Stats, Stop, cobs_encode)
from edge_runtime.protocol.framing import CRC_SIZE, HEADER_SIZE
from edge_runtime.records import make as make_record

__all__ = ["DeviceClient", "DeviceError", "DeviceResult", "HostFeatures", "LinkPlan", "SentHistory",
           "audio_baud_needed", "features_baud_needed", "frame_wire_bytes", "plan_link", "result_label"]

BITS_PER_BYTE = 10  # 8N1: start + 8 data + stop
STANDARD_BAUDS = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600,
                  1000000, 1500000, 2000000, 3000000)


class DeviceError(RuntimeError):
    """The device answered a request with ERROR, or did not answer in time."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------- link budget
def frame_wire_bytes(payload_len: int) -> int:
    """Bytes on the wire for one frame: header + payload + CRC, COBS overhead, delimiter."""
    raw = HEADER_SIZE + payload_len + CRC_SIZE
    return raw + raw // 254 + 1 + 1


def audio_baud_needed(sample_rate: int = 16000, chunk_samples: int = 512) -> int:
    """Baud rate (8N1) that carries int16 mono audio in AUDIO frames of ``chunk_samples``."""
    frames_per_s = sample_rate / chunk_samples
    return int(math.ceil(frames_per_s * frame_wire_bytes(4 + 2 * chunk_samples) * BITS_PER_BYTE))


def features_baud_needed(n_features: int, frame_hop_samples: int, sample_rate: int = 16000,
                         frames_per_msg: int = 1) -> int:
    """Baud rate that carries int8 feature frames (``frames_per_msg`` per FEATURES message)."""
    msgs_per_s = sample_rate / frame_hop_samples / frames_per_msg
    return int(math.ceil(msgs_per_s * frame_wire_bytes(8 + n_features * frames_per_msg) * BITS_PER_BYTE))


@dataclass(frozen=True)
class LinkPlan:
    mode: Mode
    baud: int
    audio_baud_needed: int
    features_baud_needed: int | None
    reason: str


def plan_link(baud: int, info: Info | None = None, *, sample_rate: int = 16000, n_features: int = 40,
              frame_hop_samples: int = 256, chunk_samples: int = 512, headroom: float = 0.85,
              prefer: str = "auto") -> LinkPlan:
    """Choose AUDIO or FEATURES for a link of ``baud`` (using at most ``headroom`` of it).

    Raises ``ValueError`` saying which baud rate is needed when neither fits (or ``prefer`` asks
    for a mode that does not fit).
    """
    if info is not None:
        sample_rate, n_features = info.sample_rate, info.n_features
        frame_hop_samples = info.frame_hop_samples or frame_hop_samples
    need_a = audio_baud_needed(sample_rate, chunk_samples)
    need_f = features_baud_needed(n_features, frame_hop_samples, sample_rate)
    usable = baud * headroom
    acc_a = info is None or bool(info.accepts & Accepts.AUDIO)
    acc_f = info is None or bool(info.accepts & Accepts.FEATURES)
    fits_a, fits_f = acc_a and need_a <= usable, acc_f and need_f <= usable
    std = next((b for b in STANDARD_BAUDS if b * headroom >= need_a), None)
    if prefer == "audio" and not fits_a:
        raise ValueError(f"raw {sample_rate} Hz int16 audio needs >= {need_a} baud of link (8N1, "
                         f"incl. framing; use {std or 'a faster link'}); {baud} baud is too slow. "
                         "Send features instead (--mode features)")
    if prefer == "features" and not fits_f:
        raise ValueError(f"features need >= {need_f} baud; {baud} baud is too slow")
    if fits_a and prefer in ("auto", "audio"):
        return LinkPlan(Mode.AUDIO, baud, need_a, need_f,
                        f"raw audio needs {need_a} baud, link has {baud}: sending AUDIO")
    if fits_f:
        return LinkPlan(Mode.FEATURES, baud, need_a, need_f,
                        f"raw audio needs {need_a} baud (> {headroom:.0%} of {baud}): computing "
                        f"features on the host and sending FEATURES ({need_f} baud)")
    raise ValueError(f"{baud} baud carries neither raw audio (needs {need_a}) nor features "
                     f"(needs {need_f}); raise the baud rate")


# ---------------------------------------------------------------------------------- host features
class HostFeatures:
    """The device's front end + int8 quantisation, run on the host (for FEATURES mode).

    The front end is the one the device announces (INFO ``frontend_hash``), found among
    ``model_path``'s, the shipped model's and this runtime's default front ends
    (:func:`edge_runtime.classifier.frontend_for_hash`); a device that announces none gets
    ``model_path``'s or the shipped model's. Anything else is refused, because features from a
    different front end would be silently wrong.
    """

    def __init__(self, info: Info, model_path: str | None = None):
        from edge_runtime.classifier import frontend_for_hash, shipped_frontend
        from edge_runtime.frontend import DEFAULT_CONFIG, StreamingFrontend
        from edge_runtime.interpreter import FeatureQuantizer

        if info.frontend_hash:
            cfg = frontend_for_hash(info.frontend_hash, model_path)
        elif model_path is not None:
            from edge_runtime.model_metadata import read_metadata

            cfg = read_metadata(model_path).frontend_config()
        else:
            cfg = shipped_frontend() or DEFAULT_CONFIG
        if info.frontend_hash and cfg.hash != info.frontend_hash:
            src = model_path or "the host's default front end"
            raise ValueError(f"front-end mismatch: device runs {info.frontend_hash}, {src} is "
                             f"{cfg.hash}; pass --model with the device's model file")
        if cfg.n_features != info.n_features:
            raise ValueError(f"device expects {info.n_features} features, front end gives {cfg.n_features}")
        self.cfg = cfg
        self.frontend = StreamingFrontend(cfg)
        self.quantizer = FeatureQuantizer(2.0 ** -cfg.frac_bits, info.input_scale, info.input_zero_point)

    def reset(self) -> None:
        self.frontend.reset()

    def push(self, pcm: np.ndarray) -> np.ndarray:
        """int16 audio → int8 frames ``(k, n_features)`` completed by it."""
        feats = self.frontend.push(pcm)
        if len(feats) == 0:
            return np.zeros((0, self.cfg.n_features), np.int8)
        return np.asarray(self.quantizer(feats), dtype=np.int8)


# ---------------------------------------------------------------------------------- results
def result_label(msg: Result, labels) -> str:
    """The label a host shows for a RESULT: its emotion's name, or why it has none (``gap``: input
    lost on the link, never a label; ``silence``, ``no_speech``, ``uncertain``: the device's flags)."""
    if msg.flags & ResultFlags.GAP:
        return "gap"
    if msg.flags & ResultFlags.SILENCE:
        return "silence"
    if msg.flags & ResultFlags.NO_SPEECH:
        return "no_speech"
    if msg.flags & ResultFlags.UNCERTAIN:
        return "uncertain"
    return labels[msg.label_index] if msg.label_index < len(labels) else str(msg.label_index)


@dataclass(frozen=True)
class DeviceResult:
    """A RESULT as received: the message plus host-side context."""

    msg: Result
    label: str  # label name; "gap" / "silence" / "uncertain" when flagged (never a plain label then)
    t_rx: float  # time.monotonic() at reception
    seq: int
    stream_offset_s: float = 0.0  # START offset of its session, in seconds
    probs: np.ndarray | None = None  # class probabilities (window: of its scores; else: mean of its windows)
    labels: tuple[str, ...] = ()  # the device's labels (INFO), to name the probabilities

    @property
    def window_index(self) -> int:
        return self.msg.window_index

    @property
    def reliable(self) -> bool:
        """False when the window overlapped input lost on the link (GAP flag)."""
        return not self.msg.flags & ResultFlags.GAP

    @property
    def record(self) -> str:
        """``"window"``, ``"utterance"`` or ``"summary"`` (the device's record kinds)."""
        if not self.msg.flags & ResultFlags.UTTERANCE:
            return "window"
        return "summary" if self.msg.window_index == 0xFFFFFFFF else "utterance"

    @property
    def emotion_index(self) -> int | None:
        """The emotion's index, or None when a flag says there is none (silence/no_speech/uncertain)
        or the window cannot be trusted (gap: input lost on the link)."""
        none = ResultFlags.SILENCE | ResultFlags.NO_SPEECH | ResultFlags.UNCERTAIN | ResultFlags.GAP
        return None if self.msg.flags & none else self.msg.label_index

    def to_json_dict(self, labels: list[str] | tuple[str, ...] | None = None) -> dict:
        """The record ``stream``/``listen`` print: the same schema as ``run``'s
        (:mod:`edge_runtime.records`), with the device's latency, session and flags."""
        m = self.msg
        rec = self.record
        labels = self.labels if labels is None else labels
        t_end = round(self.stream_offset_s + m.t_end_ms / 1000, 3)
        index = self.emotion_index
        d = {"time": t_end, "t_start": round(self.stream_offset_s + m.t_start_ms / 1000, 3), "t_end": t_end,
             "label": self.label, "index": index, "reason": None if index is not None else self.label,
             "scores_int8": list(m.scores), "device_latency_ms": round(m.latency_us / 1000, 3),
             "session": m.session}
        if rec == "window":
            d["window"] = m.window_index
        elif rec == "utterance":
            d["utterance"] = m.window_index
        if self.probs is not None:
            # the same two keys as run's records (edge_runtime.results): a window's top probability,
            # an utterance's/summary's probability of its label (0 when it has none)
            conf = float(self.probs.max()) if rec == "window" else (
                float(self.probs[index]) if index is not None and index < self.probs.size else 0.0)
            d["confidence"] = round(conf, 4)
            p = [round(float(x), 4) for x in self.probs]
            d["probs"] = dict(zip(labels, p)) if labels and len(labels) == len(p) else p
        flags = [f.name.lower() for f in ResultFlags if m.flags & f]
        if flags:
            d["flags"] = flags
        return make_record(rec, d)


class ResultProbabilities:
    """Probabilities of the RESULTs of one device, as ``run`` computes them for its own records.

    A window's are those of its int8 scores (INFO's output scale/zero point and ``SCORES_ARE_PROBS``,
    through :func:`edge_runtime.window_policy.score_log_probabilities`, the rule ``run`` uses). An
    utterance or summary record carries only the *mean scores* of its speech windows, whose softmax
    is not the mean probability ``run`` reports, so its probabilities are the mean over the speech
    windows (not flagged silence/no_speech) received in its span (utterance) or session (summary);
    softmax of its scores only when none of them arrived.
    """

    MAX_HELD = 4096  # speech windows held per session awaiting their utterance record (bounds memory)

    def __init__(self, info) -> None:
        self.scale, self.zero_point = float(info.output_scale), int(info.output_zero_point)
        self.are_probs = bool(info.ext_flags & InfoExtFlags.SCORES_ARE_PROBS)
        self._held: dict[int, list[tuple[int, int, np.ndarray]]] = {}  # session -> (t_start_ms, t_end_ms, p)
        self._sums: dict[int, tuple[np.ndarray, int]] = {}  # session -> (sum of probs, windows)

    def of_scores(self, scores) -> np.ndarray | None:
        """Probabilities of one set of RESULT scores (None without an output scale to dequantise)."""
        from edge_runtime.window_policy import score_log_probabilities

        if not self.scale or not len(scores):
            return None
        return np.exp(score_log_probabilities(np.asarray(scores), self.scale, self.zero_point, self.are_probs))

    def add(self, msg: Result) -> np.ndarray | None:
        """The probabilities for this RESULT (and remember a speech window's for its utterance)."""
        if not msg.flags & ResultFlags.UTTERANCE:
            p = self.of_scores(msg.scores)
            if p is not None and not msg.flags & (ResultFlags.SILENCE | ResultFlags.NO_SPEECH):
                held = self._held.setdefault(msg.session, [])
                held.append((msg.t_start_ms, msg.t_end_ms, p))
                del held[:-self.MAX_HELD]
                total, n = self._sums.get(msg.session, (0.0, 0))
                self._sums[msg.session] = (total + p, n + 1)
            return p
        if msg.window_index == 0xFFFFFFFF:  # summary: every speech window of the session
            self._held.pop(msg.session, None)
            total, n = self._sums.pop(msg.session, (0.0, 0))
            return total / n if n else self.of_scores(msg.scores)
        held = self._held.get(msg.session, [])
        mine = [p for s, e, p in held if s >= msg.t_start_ms and e <= msg.t_end_ms]
        self._held[msg.session] = [h for h in held if h[1] > msg.t_end_ms]
        return np.mean(mine, axis=0) if mine else self.of_scores(msg.scores)


# ---------------------------------------------------------------------------------- resend buffer
# a revision-2 device asks for a missing range again this often (docs/protocol.md §6.1)
RESEND_ASK_INTERVAL_S = 0.1


class SentHistory:
    """The last ``capacity`` items (samples or frames) sent, by stream position, so ranges a device
    reports lost (RESEND) can be sent again. Bounded: older items are forgotten. Lookups bisect the
    chunk start positions (a device may ask for hundreds of ranges a second)."""

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self._pos: list[int] = []  # unwrapped start position of each chunk, increasing
        self._chunks: list[np.ndarray] = []
        self._head = 0  # index of the oldest chunk still held
        self._items = 0
        self._end = 0  # unwrapped position after the newest item
        self._lock = threading.Lock()
        # (start, end, when) of ranges sent again recently, unwrapped: see not_resent_since
        self._resent: list[tuple[int, int, float]] = []

    def reset(self, offset: int = 0) -> None:
        with self._lock:
            self._pos, self._chunks, self._head, self._items = [], [], 0, 0
            self._end = offset
            self._resent = []

    def _unwrap(self, offset: int) -> int:
        """The unwrapped position of wire ``offset`` nearest the newest item (lock held)."""
        d = (offset - self._end) % (1 << 32)
        return self._end + (d - (1 << 32) if d >= 1 << 31 else d)

    def mark_resent(self, offset: int, count: int, when: float) -> None:
        """``[offset, offset + count)`` was sent again and will have left the host by ``when``."""
        with self._lock:
            start = self._unwrap(offset)
            self._resent.append((start, start + count, when))

    def not_resent_since(self, offset: int, count: int, since: float) -> list[tuple[int, int]]:
        """The parts of ``[offset, offset + count)`` not marked re-sent at or after ``since``, as
        wire ``(offset, count)`` ranges, in order."""
        with self._lock:
            self._resent = [r for r in self._resent if r[2] >= since]
            start = self._unwrap(offset)
            todo = [(start, start + count)]
            for rs, re_, _ in self._resent:
                todo = [piece for lo, hi in todo
                        for piece in ((lo, min(hi, rs)), (max(lo, re_), hi)) if piece[0] < piece[1]]
            return [(lo & 0xFFFFFFFF, hi - lo) for lo, hi in todo]

    def add(self, items: np.ndarray) -> None:
        with self._lock:
            self._pos.append(self._end)
            self._chunks.append(items)
            self._end += len(items)
            self._items += len(items)
            while self._head < len(self._chunks) - 1 and self._items - len(self._chunks[self._head]) >= self.capacity:
                self._items -= len(self._chunks[self._head])
                self._chunks[self._head] = None
                self._head += 1
            if self._head > 4096 and self._head * 2 > len(self._chunks):  # compact now and then
                del self._pos[:self._head], self._chunks[:self._head]
                self._head = 0

    def get(self, offset: int, count: int) -> list[tuple[int, np.ndarray]]:
        """``(wire offset, items)`` pieces of ``[offset, offset + count)`` still held (may be fewer)."""
        with self._lock:
            start = self._unwrap(offset)
            end = start + count
            i = max(self._head, bisect.bisect_right(self._pos, start, self._head) - 1)
            out = []
            while i < len(self._chunks) and self._pos[i] < end:
                pos, items = self._pos[i], self._chunks[i]
                lo, hi = max(start, pos), min(end, pos + len(items))
                if lo < hi:
                    out.append((lo & 0xFFFFFFFF, items[lo - pos:hi - pos]))
                i += 1
            return out


# ---------------------------------------------------------------------------------- client
class _Waiter:
    __slots__ = ("event", "value")

    def __init__(self):
        self.event = threading.Event()
        self.value = None


class DeviceClient:
    """Talk to a ser-edge device over a serial port. Use as a context manager::

        with DeviceClient("/dev/ttyUSB0", 921600) as dev:
            print(dev.info.labels)
            dev.start(Mode.AUDIO)
            dev.send_audio(pcm)
            for r in dev.results(timeout=2.0): print(r.label)

    Lost input is sent again when the device asks (RESEND) from the last ``resend_buffer_s`` seconds
    sent. The device asks every ~0.1 s until a hole is filled, so asks cross a long answer on the
    wire: an ask that arrives before all of an earlier answer longer than 0.1 s on the wire has left
    at ``baud``, plus ``resend_guard_s`` (at most a quarter of the device's hold), is not answered
    again for that answer's items (counted ``resend_suppressed``); later asks are, however late the
    resend thread gets to them.
    ``resend_guard_s=None`` answers every ask in full (a 2.4 s hole then went out ~5 times).
    """

    def __init__(self, port: str, baud: int = 921600, *, timeout: float = 1.0, retries: int = 3,
                 reconnect: bool = True, liveness_s: float = 1.0, max_backoff: float = 2.0,
                 on_result: Callable[[DeviceResult], None] | None = None,
                 accept_push: bool = False, client_name: str = "ser-edge-host",
                 open_timeout: float = 10.0, serial_factory: Callable | None = None,
                 resend_buffer_s: float = 30.0, sync_interval_s: float = 0.2,
                 resend_guard_s: float | None = 0.05):
        self.port = port
        self.baud = baud
        self.timeout = timeout
        self.retries = retries
        self.reconnect = reconnect
        self.liveness_s = liveness_s
        self.max_backoff = max_backoff
        self.on_result = on_result
        self.accept_push = accept_push
        self.client_name = client_name
        self.open_timeout = open_timeout
        self._serial_factory = serial_factory
        self.resend_buffer_s = resend_buffer_s
        self.sync_interval_s = sync_interval_s
        self.resend_guard_s = resend_guard_s
        self._history = SentHistory(0)
        self._resend_q: queue.Queue = queue.Queue()
        self._resender: threading.Thread | None = None
        self._last_data_tx = 0.0
        self._windows_seen: set[int] = set()  # window indexes received in the current session
        self._window_asks: dict[int, int] = {}  # window index -> RESENDs sent for it
        self._last_result_check = 0.0
        self.result_check_s = 0.15
        self._last_sync = 0.0
        self._syncs_since_data = 0
        self.info: Info | None = None
        self._probs: ResultProbabilities | None = None  # per INFO: probabilities of its RESULTs
        self._probs_info: Info | None = None
        self.decoder = FrameDecoder()
        self.tx = Sequencer()
        self._ser = None
        self._tx_lock = threading.Lock()
        self._state_lock = threading.RLock()
        self._waiters: dict[tuple, _Waiter] = {}
        self._results: queue.Queue[DeviceResult] = queue.Queue()
        self.errors: list[Error] = []
        self._early: list[tuple[int, Result, float]] = []
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._recovering = threading.Lock()
        self._recover_needed = threading.Event()
        self._recovery_thread: threading.Thread | None = None
        self._connected = threading.Event()
        self._last_rx = time.monotonic()
        self._last_ping = 0.0
        self._ping_ids = itertools.count(1)
        # session state (what we would restore after a device restart)
        self.mode = Mode.IDLE
        self.session = 0
        self._session_offsets: dict[int, int] = {}  # session -> START offset (stream units)
        self.offset = 0  # next stream offset (samples for AUDIO, frames for FEATURES)
        # +1 at every START/STOP the host completes: a recovery's INFO is only compared with the
        # session state it was asked under (see _recover)
        self._session_epoch = 0
        # where the current session's frames begin (our seq and frame count at its START), so an
        # ERROR answering a frame sent before it is not taken for the loss of this session
        self._session_first_seq, self._session_first_frame = 0, 0
        # True from the ACK of a START to the sending of its STOP: SYNCs and re-sent input go out only
        # then (checked under the send lock), so none can precede the START or follow the STOP on the
        # wire, where the device answers them NO_SESSION (and STOP takes in or zero-fills what it holds)
        self._streaming = False
        self._counters = {"reconnects": 0, "device_restarts": 0, "recoveries": 0,
                          "stale_results": 0, "results": 0, "gap_results": 0, "errors_rx": 0,
                          "tx_frames": 0, "tx_dropped": 0, "timeouts": 0, "pings": 0,
                          "session_restarts": 0, "resend_requests": 0, "resent_items": 0,
                          "resend_unavailable": 0, "resend_suppressed": 0, "syncs": 0, "duplicate_results": 0,
                          "result_resend_requests": 0, "tx_timeouts": 0, "stale_infos": 0,
                          "stale_errors": 0}
        self._tx_resync = False  # a write timed out mid-frame: start the next one with a delimiter
        self._tx_clear_at = 0.0  # when what was written so far will have left at ``baud`` (estimate)

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> "DeviceClient":
        """Open the port (retrying up to ``open_timeout``), start the reader and handshake."""
        self._stop.clear()
        self._open_port(deadline=time.monotonic() + self.open_timeout)
        self._reader = threading.Thread(target=self._read_loop, name="serial-host-rx", daemon=True)
        self._reader.start()
        self._recovery_thread = threading.Thread(target=self._recovery_loop, name="serial-host-recover",
                                                 daemon=True)
        self._recovery_thread.start()
        self._resender = threading.Thread(target=self._resend_loop, name="serial-host-resend", daemon=True)
        self._resender.start()
        try:
            self.hello()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop the threads and close the port."""
        self._stop.set()
        self._recover_needed.set()
        self._resend_q.put(None)
        for th in (self._reader, self._recovery_thread, self._resender):
            if th is not None and th is not threading.current_thread():
                th.join(timeout=3)
        self._close_port()

    def __enter__(self) -> "DeviceClient":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _make_serial(self):
        if self._serial_factory is not None:
            return self._serial_factory(self.port, self.baud)
        import serial  # pyserial

        return serial.Serial(self.port, self.baud, timeout=0.02, write_timeout=2.0)

    def _open_port(self, deadline: float) -> None:
        backoff = 0.05
        while True:
            try:
                ser = self._make_serial()
                break
            except (OSError, ValueError) as exc:  # SerialException is an OSError subclass
                if time.monotonic() + backoff > deadline or self._stop.is_set():
                    raise ConnectionError(f"cannot open {self.port}: {exc}") from exc
                time.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
        with contextlib.suppress(Exception):
            ser.reset_input_buffer()
        self._ser = ser
        self.decoder.reset()
        self._last_rx = time.monotonic()
        self._connected.set()
        self._write_raw(b"\x00")  # flush any partial frame in the device's decoder

    def _close_port(self) -> None:
        self._connected.clear()
        ser, self._ser = self._ser, None
        if ser is not None:
            with contextlib.suppress(Exception):
                ser.close()

    # ------------------------------------------------------------------ sending
    def _write_raw(self, data: bytes) -> bool:
        ser = self._ser
        if ser is None:
            return False
        if self._tx_resync:  # the last write timed out part-way: end that frame first
            data = b"\x00" + data
        try:
            ser.write(data)
            self._tx_resync = False
            # when these bytes will have left at the line rate (8N1: 10 bits a byte); a write returns
            # once the bytes are buffered, which can be long before they are on the wire
            now = time.monotonic()
            self._tx_clear_at = max(now, self._tx_clear_at) + len(data) * 10 / self.baud
            return True
        except Exception as exc:  # noqa: BLE001 - classified below
            if "timeout" in type(exc).__name__.lower():
                # A write timeout is a slow or stalled link, not a lost port: reopening would drop
                # every frame sent meanwhile (one timeout in an hour-long soak cost 98 AUDIO
                # frames). The frame may be half sent, so the next one starts with a delimiter; the
                # device asks for the lost audio again (RESEND) and requests are retried.
                self._counters["tx_timeouts"] += 1
                self._tx_resync = True
                return False
            self._port_failed()  # port gone: the reader reopens it
            return False

    def send(self, msg: Message, *, streaming_only: bool = False) -> int | None:
        """Send one message; returns its seq, or None if the link is down (counted tx_dropped).
        ``streaming_only``: only between the ACK of a START and its STOP, else not at all (None)."""
        with self._tx_lock:
            if streaming_only and not self._streaming:
                return None
            seq, frame = self.tx.encode(msg)
            ok = self._write_raw(frame)
        if ok:
            self._counters["tx_frames"] += 1
            return seq
        self._counters["tx_dropped"] += 1
        return None

    def _request(self, msg: Message, key_fn: Callable[[int], tuple], timeout: float | None = None,
                 retries: int | None = None):
        """Send ``msg`` and wait for the reply keyed by ``key_fn(seq)``; retry on timeout."""
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        last = None
        for _ in range(retries + 1):
            if not self._connected.wait(timeout):
                last = "link down"
                continue
            with self._tx_lock:
                seq, frame = self.tx.encode(msg)
                key = key_fn(seq)
                w = self._waiters[key] = _Waiter()
                self._waiters[("err", seq)] = w
                ok = self._write_raw(frame)
            if ok:
                self._counters["tx_frames"] += 1
            try:
                if ok and w.event.wait(timeout):
                    if isinstance(w.value, Error):
                        e = w.value
                        raise DeviceError(f"device refused {msg.TYPE.name}: "
                                          f"{_error_name(e.code)}: {e.message}", e.code)
                    return w.value
            finally:
                self._waiters.pop(key, None)
                self._waiters.pop(("err", seq), None)
            self._counters["timeouts"] += 1
            last = "timeout"
        raise DeviceError(f"no answer to {msg.TYPE.name} from {self.port} after {retries + 1} tries ({last})")

    # ------------------------------------------------------------------ requests
    def hello(self, timeout: float | None = None) -> Info:
        """HELLO → INFO; stores and returns the device's :class:`Info`."""
        info = self._request(Hello(PROTOCOL_REVISION, MAX_PAYLOAD, self.client_name),
                             lambda s: ("info", s), timeout)
        self.info = info
        early, self._early = self._early, []
        for seq, msg, t in early:  # pushed results that arrived before we knew the label names
            self._on_result(seq, msg, t)
        return info

    def ping(self, timeout: float | None = None) -> float:
        """Round-trip time of a PING in seconds."""
        token = next(self._ping_ids) & 0xFFFFFFFF
        t0 = time.perf_counter()
        self._request(Ping(struct.pack("<IQ", token, time.monotonic_ns())), lambda s: ("pong", token),
                      timeout)
        return time.perf_counter() - t0

    def start(self, mode: Mode | int, start_offset: int = 0) -> int:
        """START a session (resets the device's stream state); returns the new session id."""
        with self._state_lock:
            old = (self.mode, self.session)
            session = (self.session + 1) & 0xFFFF
            # switch before sending, so results of the old session are discarded from now on
            self.mode, self.session = Mode(mode), session
            self._session_offsets[session] = start_offset
            self.offset = start_offset
            self._reset_history(mode, start_offset)
            self._set_streaming(False)
            self._mark_session_start()
            try:
                self._request(Start(int(mode), session, start_offset), lambda s: ("ack", s))
                self._set_streaming(True)
            except Exception:
                self.mode, self.session = old
                raise
            finally:
                self._session_epoch += 1
        return session

    def stop(self) -> None:
        """STOP the session. The device flushes its tail window and sends the utterance and summary
        records before its ACK, so they are accepted as this session's results."""
        with self._state_lock:
            self._set_streaming(False)  # no SYNC after the STOP
            try:
                self._request(Stop(), lambda s: ("ack", s))
            finally:
                self.mode = Mode.IDLE
                self._session_epoch += 1

    def _set_streaming(self, on: bool) -> None:
        with self._tx_lock:  # ordered with every frame sent
            self._streaming = on

    def _mark_session_start(self) -> None:
        """Remember where this session's frames begin (call just before sending its START)."""
        with self._tx_lock:
            self._session_first_seq, self._session_first_frame = self.tx.next_seq, self.tx.frames

    def _sent_this_session(self, seq: int) -> bool:
        """Whether our frame ``seq`` was sent at or after the current session's START (when more
        than 65536 frames were sent since, seq numbers are ambiguous: assume it was)."""
        sent = self.tx.frames - self._session_first_frame
        return sent > 0x10000 or (seq - self._session_first_seq) & 0xFFFF < sent

    def get_stats(self) -> dict:
        """The device's counters (STATS)."""
        return self._request(GetStats(), lambda s: ("stats", s)).counters

    def _reset_history(self, mode, offset: int) -> None:
        """A fresh resend buffer for a new session: ``resend_buffer_s`` seconds of its items."""
        sr = self.info.sample_rate if self.info else 16000
        hop = (self.info.frame_hop_samples if self.info else 0) or 256
        per_s = sr if Mode(mode) == Mode.AUDIO else sr / hop
        self._history = SentHistory(max(1, int(self.resend_buffer_s * per_s)))
        self._history.reset(offset)
        self._windows_seen = set()
        self._window_asks = {}

    def expected_windows(self) -> int | None:
        """Windows the device owes for what this session has sent so far (None if INFO lacks the
        frame length needed to know)."""
        info = self.info
        if info is None or self.mode not in (Mode.AUDIO, Mode.FEATURES) or not info.hop_frames:
            return None
        n = (self.offset - self._session_offsets.get(self.session, 0)) % (1 << 32)
        if self.mode == Mode.AUDIO:
            L, hop = info.frame_length_samples, info.frame_hop_samples
            if not L or not hop:
                return None
            n = 0 if n < L else 1 + (n - L) // hop
        return 0 if n < info.window_frames else 1 + (n - info.window_frames) // info.hop_frames

    def missing_windows(self) -> list[int]:
        """Window indexes owed (see :meth:`expected_windows`) but not received in this session."""
        exp = self.expected_windows()
        top = exp if exp is not None else (max(self._windows_seen) + 1 if self._windows_seen else 0)
        seen = self._windows_seen
        return [k for k in range(top) if k not in seen]

    def _check_results(self, now: float) -> None:
        """Ask the device again (RESEND) for RESULTs lost on the way back."""
        if now - self._last_result_check < self.result_check_s or not self.resend_supported:
            return
        self._last_result_check = now
        if self.mode not in (Mode.AUDIO, Mode.FEATURES):
            return
        top_seen = max(self._windows_seen) if self._windows_seen else -1
        idle = now - self._last_data_tx > 0.3
        want = [k for k in self.missing_windows() if (k < top_seen or idle)
                and self._window_asks.get(k, 0) < 60]
        if not want:
            return
        ranges: list[list[int]] = []
        for k in want:
            self._window_asks[k] = self._window_asks.get(k, 0) + 1
            if ranges and ranges[-1][0] + ranges[-1][1] == k:
                ranges[-1][1] += 1
            elif len(ranges) < 8:
                ranges.append([k, 1])
        self._counters["result_resend_requests"] += 1
        self.send(Resend(self.session, tuple((a, b) for a, b in ranges)))

    @property
    def resend_supported(self) -> bool:
        """The device asks for lost ranges (revision 2 and INFO's RESEND flag)."""
        return bool(self.info and self.info.protocol_version >= 2 and self.info.resend_hold_ms)

    def sync(self) -> None:
        """Tell the device where the stream has got to (an empty AUDIO/FEATURES frame), so it can
        ask again for a lost last frame."""
        if self.mode == Mode.AUDIO:
            msg = Audio(self.offset, np.zeros(0, np.int16))
        elif self.mode == Mode.FEATURES and self.info is not None:
            msg = Features(self.offset, np.zeros((0, self.info.n_features), np.int8))
        else:
            return
        if self.send(msg, streaming_only=True) is not None:
            self._counters["syncs"] += 1

    @property
    def max_payload(self) -> int:
        return min(self.info.max_payload if self.info else 1024, MAX_PAYLOAD)

    def send_audio(self, pcm: np.ndarray, chunk_samples: int | None = None) -> int:
        """Send int16 audio as AUDIO frames (stream offsets advance); returns frames sent."""
        pcm = np.asarray(pcm)
        if pcm.dtype != np.int16 or pcm.ndim != 1:
            raise ValueError("audio must be 1-D int16")
        chunk = chunk_samples or (self.max_payload - 4) // 2
        chunk = min(chunk, (self.max_payload - 4) // 2)
        sent = 0
        for i in range(0, pcm.size, chunk):
            piece = pcm[i:i + chunk]
            self._history.add(piece)
            if self.send(Audio(self.offset, piece)) is not None:
                sent += 1
            self.offset = (self.offset + piece.size) & 0xFFFFFFFF
            self._data_sent()
        return sent

    def send_features(self, frames: np.ndarray, frames_per_msg: int | None = None) -> int:
        """Send int8 feature frames ``(n, n_features)`` as FEATURES frames; returns frames sent."""
        fr = np.asarray(frames)
        if fr.dtype != np.int8 or fr.ndim != 2:
            raise ValueError("features must be int8 of shape (n, n_features)")
        per = frames_per_msg or max(1, (self.max_payload - 8) // max(1, fr.shape[1]))
        sent = 0
        for i in range(0, len(fr), per):
            piece = fr[i:i + per]
            self._history.add(piece)
            if self.send(Features(self.offset, piece)) is not None:
                sent += 1
            self.offset = (self.offset + len(piece)) & 0xFFFFFFFF
            self._data_sent()
        return sent

    def _data_sent(self) -> None:
        self._last_data_tx = time.monotonic()
        self._syncs_since_data = 0

    def results(self, timeout: float | None = None, count: int | None = None) -> Iterator[DeviceResult]:
        """Yield RESULTs as they arrive; stop after ``timeout`` s without one or ``count`` results."""
        n = 0
        while count is None or n < count:
            try:
                r = self._results.get(timeout=timeout)
            except queue.Empty:
                return
            n += 1
            yield r

    def drain_results(self) -> list[DeviceResult]:
        """All RESULTs received so far and not yet consumed."""
        out = []
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                return out

    def counters(self) -> dict:
        """Host-side counters: decoder drops by reason, lost frames by seq, reconnects, ..."""
        d = dict(self._counters)
        d.update({f"rx_{k}": v for k, v in self.decoder.stats.as_dict().items()})
        return d

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # ------------------------------------------------------------------ receiving
    def _read_loop(self) -> None:
        while not self._stop.is_set():
            ser = self._ser
            if ser is None:
                if not self.reconnect:
                    return
                try:
                    self._open_port(deadline=time.monotonic() + 3600)
                except ConnectionError:
                    continue
                self._counters["reconnects"] += 1
                self._recover_needed.set()
                continue
            try:
                data = ser.read(min(65536, ser.in_waiting or 1))
            except Exception:
                self._port_failed()
                continue
            now = time.monotonic()
            if data:
                for seq, msg in self.decoder.feed(data):
                    self._last_rx = now
                    self._dispatch(seq, msg, now)
            self._check_liveness(now)
            self._check_results(now)

    def _port_failed(self) -> None:
        if self._ser is not None:
            self._close_port()

    def _check_liveness(self, now: float) -> None:
        if (self.mode in (Mode.AUDIO, Mode.FEATURES) and self._streaming and self.resend_supported
                and self.sync_interval_s
                and now - self._last_data_tx > self.sync_interval_s
                and now - self._last_sync > self.sync_interval_s and self._syncs_since_data < 50):
            # the stream paused (or ended): say where it is, so a lost last frame gets asked for
            self._last_sync = now
            self._syncs_since_data += 1
            self.sync()
        if self.mode == Mode.IDLE or self.mode == Mode.MIC_PUSH and not self.liveness_s:
            return
        silent = now - self._last_rx
        if silent > self.liveness_s and now - self._last_ping > self.liveness_s / 2:
            self._last_ping = now
            self._counters["pings"] += 1
            self.send(Ping(b"keepalive"))
        if silent > 3 * self.liveness_s:
            self._last_rx = now  # one recovery attempt per silent period
            self._recover_needed.set()

    def _dispatch(self, seq: int, msg: Message, now: float) -> None:
        t = msg.TYPE
        if t == MsgType.RESULT:
            self._on_result(seq, msg, now)
        elif t == MsgType.INFO:
            if msg.boot:
                self._counters["device_restarts"] += 1
                self.decoder.reset_seq()
                if self.info is not None:
                    self._recover_needed.set()
            self._resolve(("info", msg.reply_to), msg)
        elif t == MsgType.PONG:
            if len(msg.data) >= 4 and msg.data != b"keepalive":
                self._resolve(("pong", struct.unpack_from("<I", msg.data)[0]), msg)
        elif t == MsgType.ACK:
            self._resolve(("ack", msg.ref_seq), msg)
        elif t == MsgType.STATS:
            self._resolve(("stats", msg.ref_seq), msg)
        elif t == MsgType.ERROR:
            self._counters["errors_rx"] += 1
            self.errors.append(msg)
            if len(self.errors) > 1000:
                del self.errors[:500]
            if not self._resolve(("err", msg.ref_seq), msg):
                if msg.code == ErrorCode.NO_SESSION and self.mode in (Mode.AUDIO, Mode.FEATURES):
                    if self._sent_this_session(msg.ref_seq):
                        self._recover_needed.set()  # the device lost our session (restart)
                    else:  # answers a frame of an earlier session (e.g. a SYNC that followed its STOP)
                        self._counters["stale_errors"] += 1
        elif t == MsgType.PING:
            self.send(Pong(msg.data))
        elif t == MsgType.RESEND:
            if msg.session == self.session and self.mode in (Mode.AUDIO, Mode.FEATURES):
                self._counters["resend_requests"] += 1
                # the session's mode and buffer travel with the job: a START racing it cannot mix them
                self._resend_q.put((msg.session, self.mode, self._history, msg.ranges, now))

    def _resend_loop(self) -> None:
        """Send requested ranges again from the history (own thread: the reader never blocks)."""
        while not self._stop.is_set():
            job = self._resend_q.get()
            if job is None:
                return
            session, mode, history, ranges, asked_at = job
            sent: list[tuple[int, int]] = []
            sent_bytes = 0
            guard = self._resend_guard()
            try:
                for asked_offset, asked_count in ranges:
                    # an ask that arrived before a resend of these items could have reached the device
                    # (and an ask seeing it come back) crossed that resend on the wire: not again yet
                    fresh = ([(asked_offset, asked_count)] if guard is None else
                             history.not_resent_since(asked_offset, asked_count, asked_at - guard))
                    self._counters["resend_suppressed"] += asked_count - sum(n for _, n in fresh)
                    for offset, count in fresh:
                        pieces = history.get(offset, count)
                        self._counters["resend_unavailable"] += count - sum(len(p) for _, p in pieces)
                        for off, items in pieces:
                            if session != self.session:  # a new session started meanwhile
                                break
                            msg = Audio(off, items) if mode == Mode.AUDIO else Features(off, items)
                            if self.send(msg, streaming_only=True) is not None:
                                self._counters["resent_items"] += len(items)
                                sent.append((off, len(items)))
                                sent_bytes += items.nbytes
                # One answer is one unit in flight: none of it is due again until all of it has left.
                # Only an answer longer on the wire than the device's ask interval is held back: a
                # shorter one arrives before the next ask anyway, and answering the few asks that
                # cross it again is cheap and is what recovers a lossy link quickly (holding back
                # single-frame answers cost windows on the firmware's slow emulated UART).
                if guard is not None and sent_bytes * 10 / self.baud >= RESEND_ASK_INTERVAL_S:
                    for off, n in sent:
                        history.mark_resent(off, n, self._tx_clear_at)
            except Exception:  # noqa: BLE001 - never let this thread die; the device will ask again
                self._counters["resend_failures"] = self._counters.get("resend_failures", 0) + 1

    def _resend_guard(self) -> float | None:
        """Seconds after a re-sent item has left (at the line rate) during which asks for it again
        are taken to have crossed it on the wire. At most a quarter of the device's hold, so an
        item whose resend was lost is still sent a few more times before the device gives it up.
        None (``resend_guard_s=None``): every ask is answered in full."""
        if self.resend_guard_s is None:
            return None
        hold_s = (self.info.resend_hold_ms / 1000) if self.info and self.info.resend_hold_ms else 0.0
        return min(self.resend_guard_s, hold_s / 4) if hold_s else self.resend_guard_s

    def _resolve(self, key: tuple, value) -> bool:
        w = self._waiters.get(key)
        if w is None:
            return False
        w.value = value
        w.event.set()
        return True

    def _on_result(self, seq: int, msg: Result, now: float) -> None:
        if self.info is None:  # before the handshake: keep (bounded) until INFO names the labels
            if len(self._early) < 256:
                self._early.append((seq, msg, now))
            return
        push = bool(msg.flags & ResultFlags.PUSH)
        if not ((push and self.accept_push) or (msg.session == self.session and self.mode != Mode.IDLE)):
            self._counters["stale_results"] += 1
            return
        labels = self.info.labels if self.info else ()
        label = result_label(msg, labels)
        if not push and not msg.flags & ResultFlags.UTTERANCE:
            if msg.window_index in self._windows_seen:  # a RESEND answer we no longer need
                self._counters["duplicate_results"] += 1
                return
            self._windows_seen.add(msg.window_index)
        off = self._session_offsets.get(msg.session, 0)
        unit = self._unit_seconds()
        if self._probs is None or self._probs_info is not self.info:
            self._probs, self._probs_info = ResultProbabilities(self.info), self.info
        r = DeviceResult(msg, label, now, seq, off * unit, probs=self._probs.add(msg), labels=tuple(labels))
        self._counters["results"] += 1
        if msg.flags & ResultFlags.GAP:
            self._counters["gap_results"] += 1
        if self.on_result is not None:
            try:
                self.on_result(r)
            except Exception:
                pass
        else:
            self._results.put(r)

    def _unit_seconds(self) -> float:
        if self.info is None or not self.info.sample_rate:
            return 0.0
        if self.mode == Mode.FEATURES:
            return (self.info.frame_hop_samples or 0) / self.info.sample_rate
        return 1.0 / self.info.sample_rate

    # ------------------------------------------------------------------ recovery
    def _recovery_loop(self) -> None:
        while not self._stop.is_set():
            self._recover_needed.wait()
            if self._stop.is_set():
                return
            self._recover_needed.clear()
            try:
                self._recover()
            except Exception:
                time.sleep(0.1)
                if self.mode != Mode.IDLE or self.info is None:
                    self._recover_needed.set()  # try again (device still away)

    def _recover(self) -> None:
        """Re-handshake; restart the session if the device lost it."""
        self._counters["recoveries"] += 1
        # The INFO describes the device when it read our HELLO. A START or STOP the host completed
        # after the HELLO left (it may have queued ahead of them on a slow link, e.g. QEMU's UART on
        # a loaded machine) makes that INFO older than the session: its IDLE does not mean the
        # device lost the session, and restarting would reset the device's window history mid-clip
        # (windows then classified from other frames than the host's). Taken under the state lock,
        # so a START in flight is acknowledged before the HELLO goes out.
        with self._state_lock:
            epoch = self._session_epoch
        info = self._request(Hello(PROTOCOL_REVISION, MAX_PAYLOAD, self.client_name), lambda s: ("info", s),
                             timeout=max(0.2, self.timeout / 2), retries=1)  # short tries: the loop retries
        self.info = info
        with self._state_lock:
            if epoch != self._session_epoch:
                self._counters["stale_infos"] += 1
                return  # a session that really was lost answers its next frame NO_SESSION: recover then
            if self.mode in (Mode.AUDIO, Mode.FEATURES, Mode.MIC_PUSH) and info.mode != self.mode:
                session = (self.session + 1) & 0xFFFF
                off = self.offset  # frames sent from now on start here (a racing one is zero-filled)
                self._session_offsets[session] = off
                self.session = session
                self._windows_seen, self._window_asks = set(), {}
                self._set_streaming(False)
                self._mark_session_start()
                self._request(Start(int(self.mode), session, off), lambda s: ("ack", s))
                self._set_streaming(True)
                self._session_epoch += 1
                self._counters["session_restarts"] += 1


def _error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"code {code}"
