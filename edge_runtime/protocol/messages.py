"""Typed protocol messages and their payload layouts (all integers little-endian).

Each message class has a ``TYPE`` code, ``encode_payload() -> bytes`` and a classmethod
``decode_payload(payload) -> message`` that raises :class:`PayloadError` on a malformed payload.
The byte layouts are documented field by field in docs/protocol.md; keep the two in step.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np


class PayloadError(ValueError):
    """A frame passed CRC but its payload does not match the layout of its message type."""


class MsgType(enum.IntEnum):
    HELLO = 0x01
    INFO = 0x02
    AUDIO = 0x03
    FEATURES = 0x04
    RESULT = 0x05
    ERROR = 0x06
    PING = 0x07
    PONG = 0x08
    START = 0x09
    STOP = 0x0A
    ACK = 0x0B
    GET_STATS = 0x0C
    STATS = 0x0D
    RESEND = 0x0E  # revision 2: ask the peer to send lost ranges again (device: AUDIO/FEATURES
    #                items; host: RESULT windows)


# Message-set revision a device/host speaks (negotiated with HELLO.max_version / INFO.protocol_version).
# The frame format (header version byte 1) is unchanged; revision 2 adds RESEND, SYNC (an AUDIO or
# FEATURES frame with no items), the INFO extension block and more STATS counters.
PROTOCOL_REVISION = 2
MAX_CLIENT_NAME = 64
MAX_ERROR_TEXT = 200
MAX_RESEND_RANGES = 8

# Which side sends which type (a device answers a valid frame of a device→host type with
# ERROR UNKNOWN_TYPE, except PONG: the answer to a PING the device sent).
HOST_TO_DEVICE = frozenset({MsgType.HELLO, MsgType.AUDIO, MsgType.FEATURES, MsgType.PING,
                            MsgType.PONG, MsgType.START, MsgType.STOP, MsgType.GET_STATS,
                            MsgType.RESEND})
DEVICE_TO_HOST = frozenset({MsgType.INFO, MsgType.RESULT, MsgType.ERROR, MsgType.PING,
                            MsgType.PONG, MsgType.ACK, MsgType.STATS, MsgType.RESEND})


class Mode(enum.IntEnum):
    """Session mode carried by START and reported in INFO."""

    IDLE = 0
    AUDIO = 1  # host sends AUDIO (int16 PCM); device runs front end + model
    FEATURES = 2  # host sends FEATURES (int8, already quantised); device runs the model only
    MIC_PUSH = 3  # device classifies its own audio source and pushes RESULTs unasked


class Accepts(enum.IntFlag):
    """INFO.accepts bit mask."""

    AUDIO = 0x01
    FEATURES = 0x02
    MIC_PUSH = 0x04


class ResultFlags(enum.IntFlag):
    SILENCE = 0x01  # speech gate: nothing audible; label_index is the model's top-1, not an emotion
    UNCERTAIN = 0x02  # top score below the confidence threshold
    GAP = 0x04  # the window overlaps input lost on the link (zero-filled): do not trust the label
    PUSH = 0x08  # produced from the device's own audio source (MIC_PUSH)
    NO_SPEECH = 0x10  # speech gate: audible but not speech (noise, hum, tones, clicks); not an emotion
    UTTERANCE = 0x20  # an utterance/summary record: window_index = utterance number (summary: 0xFFFFFFFF),
    #                   scores = mean int8 scores of its speech windows, label_index = its label


class InfoExtFlags(enum.IntFlag):
    """INFO extension ``flags`` (revision 2)."""

    SCORES_ARE_PROBS = 0x01  # scores dequantise to probabilities (else: logits, apply softmax)
    GATE = 0x02  # gate_dbfs is valid (the device flags quiet windows SILENCE)
    RESEND = 0x04  # the device asks for lost AUDIO/FEATURES ranges with RESEND


class AckStatus(enum.IntEnum):
    OK = 0  # carried out
    ALREADY = 1  # nothing to do: a repeated START of the current session, or STOP while idle


class ErrorCode(enum.IntEnum):
    BAD_PAYLOAD = 1  # payload length/layout wrong for its type
    UNKNOWN_TYPE = 2  # valid frame of a type this device does not handle
    NO_SESSION = 3  # AUDIO/FEATURES before START
    WRONG_MODE = 4  # AUDIO in a FEATURES session or vice versa
    BAD_DIMS = 5  # FEATURES with n_features different from INFO.n_features
    UNSUPPORTED = 6  # START with a mode this device does not accept
    ENGINE = 7  # the classifier raised; message has the reason
    GAP = 8  # informational: input stream gap detected (offset jumped); zero-filled
    STREAM_RESET = 9  # gap too large to fill; stream state reset at the new offset
    TOO_LARGE = 10  # payload larger than INFO.max_payload
    VERSION = 11  # frame version not supported (reply carries this device's version in the text)


NO_SEQ = 0xFFFF  # "no frame referenced" in reply_to / ref_seq fields
NO_GATE = -200.0  # INFO extension gate_dbfs when the device has no silence gate
INFO_FLAG_BOOT = 0x01  # INFO sent unasked right after the device (re)started

_U8_STR_MAX = 255


def _pack_str(s: str) -> bytes:
    b = s.encode("utf-8")[:_U8_STR_MAX]
    return bytes([len(b)]) + b


def _unpack_str(buf: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(buf):
        raise PayloadError("string length byte missing")
    n = buf[pos]
    end = pos + 1 + n
    if end > len(buf):
        raise PayloadError("string runs past the end of the payload")
    try:
        return buf[pos + 1:end].decode("utf-8"), end
    except UnicodeDecodeError as exc:
        raise PayloadError(f"bad UTF-8 in string: {exc}") from None


def _need(payload: bytes, n: int, name: str, exact: bool = False) -> None:
    if len(payload) < n or (exact and len(payload) != n):
        want = f"exactly {n}" if exact else f">= {n}"
        raise PayloadError(f"{name} payload is {len(payload)} bytes, expected {want}")


class Message:
    """Base class of all messages."""

    TYPE: ClassVar[MsgType]

    def encode_payload(self) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Message":  # pragma: no cover - overridden
        raise NotImplementedError


@dataclass(frozen=True)
class Hello(Message):
    """Host → device: open a conversation; the device answers with INFO."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO
    max_version: int = PROTOCOL_REVISION
    host_max_payload: int = 4096
    client: str = "ser-edge"
    _S: ClassVar[struct.Struct] = struct.Struct("<BBH")

    def encode_payload(self) -> bytes:
        name = self.client.encode()[:MAX_CLIENT_NAME]
        return self._S.pack(self.max_version, 0, self.host_max_payload) + name

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Hello":
        _need(payload, 4, "HELLO")
        if len(payload) > 4 + MAX_CLIENT_NAME:
            raise PayloadError(f"HELLO client name is {len(payload) - 4} bytes (max {MAX_CLIENT_NAME})")
        ver, _res, maxp = cls._S.unpack_from(payload)
        if ver < 1:
            raise PayloadError("HELLO max_version is 0")
        try:
            client = payload[4:].decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("HELLO client name is not UTF-8") from None
        return cls(ver, maxp, client)


@dataclass(frozen=True)
class Info(Message):
    """Device → host: what the device runs and accepts (answer to HELLO; also sent unasked at boot)."""

    TYPE: ClassVar[MsgType] = MsgType.INFO
    protocol_version: int
    flags: int
    accepts: int
    mode: int
    max_payload: int
    reply_to: int
    sample_rate: int
    window_frames: int
    hop_frames: int
    n_features: int
    frame_hop_samples: int
    input_scale: float
    input_zero_point: int
    output_zero_point: int
    output_scale: float
    version: str
    model_hash: str
    frontend_hash: str
    labels: tuple[str, ...]
    # revision-2 extension block (after the labels; absent from revision-1 devices: defaults)
    frame_length_samples: int = 0  # analysis frame length (0 = unknown)
    ext_flags: int = 0  # InfoExtFlags
    min_confidence: float = 0.0  # UNCERTAIN when the top softmax probability is below this
    gate_dbfs: float = NO_GATE  # SILENCE when the window's mean-square level is below this
    session: int = 0  # current session id (0 when idle or pushing from boot)
    resend_hold_ms: int = 0  # how long the device waits for a RESEND before zero-filling
    _S: ClassVar[struct.Struct] = struct.Struct("<BBBBHHIHHHHfbbBxf")  # 32 bytes
    _X: ClassVar[struct.Struct] = struct.Struct("<HBxffHH")  # 16-byte extension, after a u8 length

    def __post_init__(self) -> None:
        # The wire carries float32: store what a decoder will see, so encode/decode round-trips.
        for k in ("input_scale", "output_scale", "min_confidence", "gate_dbfs"):
            object.__setattr__(self, k, float(np.float32(getattr(self, k))))
        object.__setattr__(self, "labels", tuple(self.labels))

    @property
    def boot(self) -> bool:
        return bool(self.flags & INFO_FLAG_BOOT)

    def encode_payload(self) -> bytes:
        if len(self.labels) > 255:
            raise ValueError("at most 255 labels")
        head = self._S.pack(
            self.protocol_version, self.flags, self.accepts, self.mode, self.max_payload,
            self.reply_to, self.sample_rate, self.window_frames, self.hop_frames, self.n_features,
            self.frame_hop_samples, self.input_scale, self.input_zero_point,
            self.output_zero_point, len(self.labels), self.output_scale,
        )
        tail = b"".join(_pack_str(s) for s in (self.version, self.model_hash, self.frontend_hash))
        body = head + tail + b"".join(_pack_str(s) for s in self.labels)
        if self.protocol_version >= 2:
            ext = self._X.pack(self.frame_length_samples, self.ext_flags, self.min_confidence,
                               self.gate_dbfs, self.session & 0xFFFF, self.resend_hold_ms)
            body += bytes([len(ext)]) + ext
        return body

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Info":
        _need(payload, cls._S.size, "INFO")
        (pv, flags, acc, mode, maxp, reply, sr, wf, hf, nf, fhs, iscale, izp, ozp, nl,
         oscale) = cls._S.unpack_from(payload)
        pos = cls._S.size
        strs = []
        for _ in range(3 + nl):
            s, pos = _unpack_str(payload, pos)
            strs.append(s)
        ext: tuple = ()
        if pos < len(payload):  # revision-2 extension: u8 length + fields (longer = future fields)
            n = payload[pos]
            if pos + 1 + n != len(payload) or n < cls._X.size:
                raise PayloadError(f"INFO extension of {len(payload) - pos - 1} bytes says {n}")
            ext = cls._X.unpack_from(payload, pos + 1)
        return cls(pv, flags, acc, mode, maxp, reply, sr, wf, hf, nf, fhs, iscale, izp, ozp,
                   oscale, strs[0], strs[1], strs[2], tuple(strs[3:]), *ext)


@dataclass(frozen=True, eq=False)
class Audio(Message):
    """Host → device: a chunk of int16 mono PCM starting at stream sample ``offset``.

    With no samples (revision 2) it is a SYNC: "every sample before ``offset`` has been sent", so
    the device can notice (and ask again for) a lost last frame."""

    TYPE: ClassVar[MsgType] = MsgType.AUDIO
    offset: int
    pcm: np.ndarray  # int16, 1-D

    def encode_payload(self) -> bytes:
        pcm = np.asarray(self.pcm)
        if pcm.dtype != np.int16 or pcm.ndim != 1:
            raise ValueError("AUDIO pcm must be a 1-D int16 array")
        return struct.pack("<I", self.offset & 0xFFFFFFFF) + pcm.astype("<i2", copy=False).tobytes()

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Audio":
        _need(payload, 4, "AUDIO")
        if (len(payload) - 4) % 2:
            raise PayloadError("AUDIO sample bytes are odd (int16 expected)")
        (off,) = struct.unpack_from("<I", payload)
        return cls(off, np.frombuffer(payload, dtype="<i2", offset=4).astype(np.int16))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Audio) and self.offset == other.offset
                and np.array_equal(self.pcm, other.pcm))


@dataclass(frozen=True, eq=False)
class Features(Message):
    """Host → device: int8 feature frames (n_frames × n_features, row-major) from frame ``offset``.

    ``n_frames == 0`` (revision 2) is a SYNC, as for :class:`Audio`."""

    TYPE: ClassVar[MsgType] = MsgType.FEATURES
    offset: int
    frames: np.ndarray  # int8, (n_frames, n_features)
    _S: ClassVar[struct.Struct] = struct.Struct("<IHH")

    def encode_payload(self) -> bytes:
        fr = np.asarray(self.frames)
        if fr.dtype != np.int8 or fr.ndim != 2:
            raise ValueError("FEATURES frames must be a 2-D int8 array")
        return self._S.pack(self.offset & 0xFFFFFFFF, fr.shape[0], fr.shape[1]) + fr.tobytes()

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Features":
        _need(payload, cls._S.size, "FEATURES")
        off, n, nf = cls._S.unpack_from(payload)
        if nf == 0 or len(payload) != cls._S.size + n * nf:
            raise PayloadError(
                f"FEATURES header says {n}x{nf} but carries {len(payload) - cls._S.size} bytes")
        data = np.frombuffer(payload, dtype=np.int8, offset=cls._S.size).reshape(n, nf).copy()
        return cls(off, data)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Features) and self.offset == other.offset
                and np.array_equal(self.frames, other.frames))


@dataclass(frozen=True)
class Result(Message):
    """Device → host: one classified window."""

    TYPE: ClassVar[MsgType] = MsgType.RESULT
    window_index: int
    session: int
    label_index: int
    flags: int
    t_start_ms: int
    t_end_ms: int
    latency_us: int
    scores: tuple[int, ...]  # int8 model outputs
    _S: ClassVar[struct.Struct] = struct.Struct("<IHBBIIIB")  # 21 bytes

    def encode_payload(self) -> bytes:
        return self._S.pack(
            self.window_index & 0xFFFFFFFF, self.session & 0xFFFF, self.label_index, self.flags,
            self.t_start_ms & 0xFFFFFFFF, self.t_end_ms & 0xFFFFFFFF,
            min(int(self.latency_us), 0xFFFFFFFF), len(self.scores),
        ) + np.asarray(self.scores, dtype=np.int8).tobytes()

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Result":
        _need(payload, cls._S.size, "RESULT")
        w, sess, li, fl, ts, te, lat, n = cls._S.unpack_from(payload)
        if len(payload) != cls._S.size + n:
            raise PayloadError(f"RESULT says {n} scores but carries {len(payload) - cls._S.size}")
        if n and li >= n:
            raise PayloadError(f"RESULT label_index {li} out of range for {n} scores")
        scores = tuple(np.frombuffer(payload, np.int8, offset=cls._S.size).tolist())  # see serial_device.result_to_message
        return cls(w, sess, li, fl, ts, te, lat, scores)


@dataclass(frozen=True)
class Error(Message):
    """Either direction (normally device → host): something was wrong with a request."""

    TYPE: ClassVar[MsgType] = MsgType.ERROR
    code: int
    ref_seq: int = NO_SEQ
    ref_type: int = 0
    message: str = ""
    _S: ClassVar[struct.Struct] = struct.Struct("<HHB")

    def encode_payload(self) -> bytes:
        text = self.message.encode()[:MAX_ERROR_TEXT].decode("utf-8", errors="ignore").encode()
        return self._S.pack(self.code, self.ref_seq, self.ref_type) + text

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Error":
        _need(payload, cls._S.size, "ERROR")
        if len(payload) > cls._S.size + MAX_ERROR_TEXT:
            raise PayloadError(f"ERROR text is {len(payload) - cls._S.size} bytes (max {MAX_ERROR_TEXT})")
        code, ref, rtype = cls._S.unpack_from(payload)
        msg = payload[cls._S.size:].decode("utf-8", errors="replace")
        return cls(code, ref, rtype, msg)


@dataclass(frozen=True)
class Ping(Message):
    """Either direction: echo request; ``data`` (0..64 opaque bytes) comes back in PONG."""

    TYPE: ClassVar[MsgType] = MsgType.PING
    data: bytes = b""

    def encode_payload(self) -> bytes:
        if len(self.data) > 64:
            raise ValueError("PING data is at most 64 bytes")
        return bytes(self.data)

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Ping":
        if len(payload) > 64:
            raise PayloadError("PING data is at most 64 bytes")
        return cls(bytes(payload))


@dataclass(frozen=True)
class Pong(Ping):
    TYPE: ClassVar[MsgType] = MsgType.PONG


@dataclass(frozen=True)
class Start(Message):
    """Host → device: reset the stream state and start a session (answered by ACK or ERROR)."""

    TYPE: ClassVar[MsgType] = MsgType.START
    mode: int
    session: int = 0
    start_offset: int = 0
    _S: ClassVar[struct.Struct] = struct.Struct("<BxHI")

    def encode_payload(self) -> bytes:
        return self._S.pack(self.mode, self.session & 0xFFFF, self.start_offset & 0xFFFFFFFF)

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Start":
        _need(payload, cls._S.size, "START", exact=True)
        return cls(*cls._S.unpack(payload))


@dataclass(frozen=True)
class _Empty(Message):
    def encode_payload(self) -> bytes:
        return b""

    @classmethod
    def decode_payload(cls, payload: bytes):
        if payload:
            raise PayloadError(f"{cls.TYPE.name} takes no payload, got {len(payload)} bytes")
        return cls()


@dataclass(frozen=True)
class Stop(_Empty):
    """Host → device: end the session (device goes IDLE; answered by ACK)."""

    TYPE: ClassVar[MsgType] = MsgType.STOP


@dataclass(frozen=True)
class GetStats(_Empty):
    """Host → device: request the device's link counters (answered by STATS)."""

    TYPE: ClassVar[MsgType] = MsgType.GET_STATS


@dataclass(frozen=True)
class Ack(Message):
    """Device → host: the request with sequence ``ref_seq`` was carried out."""

    TYPE: ClassVar[MsgType] = MsgType.ACK
    ref_seq: int
    ref_type: int
    status: int = 0
    _S: ClassVar[struct.Struct] = struct.Struct("<HBB")

    def encode_payload(self) -> bytes:
        return self._S.pack(self.ref_seq, self.ref_type, self.status)

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Ack":
        _need(payload, cls._S.size, "ACK", exact=True)
        return cls(*cls._S.unpack(payload))


# Order of the u32 counters in a STATS payload (append only; readers ignore extra counters).
STATS_FIELDS: tuple[str, ...] = (
    "rx_frames", "rx_crc", "rx_cobs", "rx_length", "rx_version", "rx_unknown_type",
    "rx_oversize", "rx_payload", "rx_seq_lost", "tx_frames", "results", "errors",
    "gap_samples", "gap_frames", "stale",
    # revision 2
    "rx_short", "tx_dropped_results", "tx_dropped", "tx_timeouts", "resend_requests",
    "resend_recovered", "gap_windows", "sessions", "rx_unexpected_type",
    # revision 2, appended later (a device from before them sends n = 24): serve's reader thread
    "rx_buffer_full", "rx_buffered_max",
)


@dataclass(frozen=True)
class Stats(Message):
    """Device → host: link counters, named by :data:`STATS_FIELDS` in order.

    Decoding follows ``n``: a device that sends fewer counters (an older one) gives only those
    names, and counters beyond :data:`STATS_FIELDS` (a newer one) are kept as ``counter_<i>``."""

    TYPE: ClassVar[MsgType] = MsgType.STATS
    ref_seq: int
    counters: dict = field(default_factory=dict)
    _S: ClassVar[struct.Struct] = struct.Struct("<HBx")

    def encode_payload(self) -> bytes:
        vals = [int(self.counters.get(k, 0)) & 0xFFFFFFFF for k in STATS_FIELDS]
        return self._S.pack(self.ref_seq, len(vals)) + struct.pack(f"<{len(vals)}I", *vals)

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Stats":
        _need(payload, cls._S.size, "STATS")
        ref, n = cls._S.unpack_from(payload)
        if len(payload) != cls._S.size + 4 * n:
            raise PayloadError(f"STATS says {n} counters but carries {len(payload) - 4} bytes")
        vals = struct.unpack_from(f"<{n}I", payload, cls._S.size)
        names = list(STATS_FIELDS) + [f"counter_{i}" for i in range(len(STATS_FIELDS), n)]
        return cls(ref, dict(zip(names, vals)))


@dataclass(frozen=True)
class Resend(Message):
    """Either direction (revision 2): send these ranges of the current session again.

    Device → host: ``(offset, count)`` pairs of AUDIO samples / FEATURES frames it did not get.
    Host → device: ``(window_index, count)`` pairs of RESULTs it did not get.
    1..MAX_RESEND_RANGES ranges, counts >= 1."""

    TYPE: ClassVar[MsgType] = MsgType.RESEND
    session: int
    ranges: tuple[tuple[int, int], ...]
    _S: ClassVar[struct.Struct] = struct.Struct("<HBx")
    _R: ClassVar[struct.Struct] = struct.Struct("<II")

    def __post_init__(self) -> None:
        object.__setattr__(self, "ranges", tuple((int(o), int(c)) for o, c in self.ranges))

    def encode_payload(self) -> bytes:
        if not 1 <= len(self.ranges) <= MAX_RESEND_RANGES:
            raise ValueError(f"RESEND carries 1..{MAX_RESEND_RANGES} ranges")
        return self._S.pack(self.session & 0xFFFF, len(self.ranges)) + b"".join(
            self._R.pack(o & 0xFFFFFFFF, c) for o, c in self.ranges)

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Resend":
        _need(payload, cls._S.size, "RESEND")
        sess, n = cls._S.unpack_from(payload)
        if not 1 <= n <= MAX_RESEND_RANGES or len(payload) != cls._S.size + n * cls._R.size:
            raise PayloadError(f"RESEND says {n} ranges in {len(payload)} bytes")
        ranges = tuple(cls._R.unpack_from(payload, cls._S.size + i * cls._R.size) for i in range(n))
        if any(c == 0 for _, c in ranges):
            raise PayloadError("RESEND range with count 0")
        return cls(sess, ranges)


MESSAGE_CLASSES: dict[int, type[Message]] = {
    c.TYPE: c for c in (Hello, Info, Audio, Features, Result, Error, Ping, Pong, Start, Stop, Ack,
                        GetStats, Stats, Resend)
}
