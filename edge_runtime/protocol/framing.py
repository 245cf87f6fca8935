"""Frame layer: header + payload + CRC-32, COBS-encoded, 0x00-delimited.

Raw frame (before COBS)::

    0  u8   version   (PROTOCOL_VERSION)
    1  u8   type      (MsgType)
    2  u16  seq       (per-sender counter, little-endian, wraps)
    4  u16  length    (payload bytes, little-endian, <= MAX_PAYLOAD)
    6  ...  payload
    6+length u32 CRC-32/ISO-HDLC (zlib.crc32) of bytes 0 .. 6+length-1, little-endian

On the wire: ``cobs(raw) + b"\\x00"``. See docs/protocol.md for the rationale and examples.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple

from ._cobs import CobsError, cobs_decode, cobs_encode, cobs_max_encoded_len
from .messages import MESSAGE_CLASSES, Message, PayloadError

PROTOCOL_VERSION = 1
HEADER = struct.Struct("<BBHH")
HEADER_SIZE = HEADER.size  # 6
CRC_SIZE = 4
MAX_PAYLOAD = 4096  # protocol ceiling; a device advertises its own (smaller) limit in INFO
MAX_RAW_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE  # 4106
MAX_ENCODED_FRAME = cobs_max_encoded_len(MAX_RAW_FRAME)  # 4123, excluding the 0x00 delimiter
DELIMITER = b"\x00"

DROP_REASONS = ("cobs", "short", "crc", "version", "length", "oversize", "unknown_type", "payload")
# A forward sequence jump of this many frames or more is taken as a resynchronisation (the peer
# restarted or reconnected mid-count), not as that many lost frames.
MAX_SEQ_GAP = 1024


def crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC: poly 0x04C11DB7 (reflected 0xEDB88320), init/xorout 0xFFFFFFFF, reflected.

    ``crc32(b"123456789") == 0xCBF43926``.
    """
    return zlib.crc32(data) & 0xFFFFFFFF


def build_raw_frame(msg_type: int, seq: int, payload: bytes, version: int = PROTOCOL_VERSION) -> bytes:
    """Header + payload + CRC, before COBS (exposed for tests and docs)."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD={MAX_PAYLOAD}")
    body = HEADER.pack(version, int(msg_type), seq & 0xFFFF, len(payload)) + payload
    return body + struct.pack("<I", crc32(body))


def encode_frame(msg_type: int, seq: int, payload: bytes) -> bytes:
    """A complete wire frame: COBS(header + payload + CRC) followed by the 0x00 delimiter."""
    return cobs_encode(build_raw_frame(msg_type, seq, payload)) + DELIMITER


def encode_message(msg: Message, seq: int) -> bytes:
    """Wire bytes for a typed message."""
    return encode_frame(msg.TYPE, seq, msg.encode_payload())


class Sequencer:
    """Per-sender u16 sequence counter that turns messages into wire frames."""

    def __init__(self, start: int = 0):
        self.next_seq = start & 0xFFFF
        self.frames = 0

    def encode(self, msg: Message) -> tuple[int, bytes]:
        """Return ``(seq, wire_bytes)`` for ``msg`` and advance the counter."""
        seq = self.next_seq
        self.next_seq = (seq + 1) & 0xFFFF
        self.frames += 1
        return seq, encode_message(msg, seq)


class Received(NamedTuple):
    """One valid frame out of :class:`FrameDecoder`."""

    seq: int
    msg: Message


@dataclass
class DecoderStats:
    """What a :class:`FrameDecoder` has seen. ``dropped`` counts rejected frames by reason."""

    bytes_in: int = 0
    frames_ok: int = 0
    empty: int = 0  # zero-length segments (0x00 0x00): legal padding, not errors
    seq_lost: int = 0  # frames missing according to sequence-number gaps
    seq_resync: int = 0  # sequence jumps too large (or backwards) to be losses: peer restarted
    dropped: dict = field(default_factory=lambda: {r: 0 for r in DROP_REASONS})

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def as_dict(self) -> dict:
        d = {"bytes_in": self.bytes_in, "frames_ok": self.frames_ok, "empty": self.empty,
             "seq_lost": self.seq_lost, "seq_resync": self.seq_resync,
             "dropped_total": self.dropped_total}
        d.update({f"dropped_{k}": v for k, v in self.dropped.items()})
        return d


DropCallback = Callable[[str, "int | None", "int | None"], None]


class FrameDecoder:
    """Streaming decoder: feed arbitrary byte chunks, get validated messages.

    Splits on 0x00, COBS-decodes, checks minimum size, CRC, version, length field, size limit,
    type and payload layout. A bad frame is dropped and counted in ``stats.dropped[reason]``; the
    decoder never raises from :meth:`feed` and resynchronises at the next delimiter. ``on_drop``
    (optional) is called with ``(reason, seq, type)`` — seq/type are ``None`` unless the frame
    passed its CRC — so a device can answer a well-formed but unknown request with ERROR.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD, on_drop: DropCallback | None = None):
        self.max_payload = min(max_payload, MAX_PAYLOAD)
        # Buffer up to the protocol's largest frame whatever our own limit, so that a too-large
        # frame still gets its CRC checked and can be answered (TOO_LARGE) by seq and type.
        self._max_encoded = MAX_ENCODED_FRAME
        self._buf = bytearray()
        self._discarding = False  # inside an oversize segment: skip until the next delimiter
        self._last_seq: int | None = None
        self.on_drop = on_drop
        self.stats = DecoderStats()

    def reset(self) -> None:
        """Forget any partial frame and the sequence history (e.g. after reopening the port)."""
        self._buf.clear()
        self._discarding = False
        self._last_seq = None

    def reset_seq(self) -> None:
        """Forget the last sequence number (peer restarted; its counter starts again)."""
        self._last_seq = None

    def feed(self, data: bytes) -> list[Received]:
        """Consume ``data``; return the messages completed by it (possibly none)."""
        out: list[Received] = []
        self.stats.bytes_in += len(data)
        start = 0
        n = len(data)
        while start < n:
            z = data.find(0, start)
            if z < 0:
                self._append(data[start:])
                break
            self._append(data[start:z])
            if self._discarding:
                self._discarding = False
            elif self._buf:
                self._decode_segment(bytes(self._buf), out)
            else:
                self.stats.empty += 1
            self._buf.clear()
            start = z + 1
        return out

    def __call__(self, data: bytes) -> Iterator[Received]:
        return iter(self.feed(data))

    def _append(self, chunk: bytes) -> None:
        if self._discarding or not chunk:
            return
        self._buf += chunk
        if len(self._buf) > self._max_encoded:
            self._drop("oversize")
            self._buf.clear()
            self._discarding = True

    def _drop(self, reason: str, seq: int | None = None, mtype: int | None = None) -> None:
        self.stats.dropped[reason] += 1
        if self.on_drop is not None:
            try:
                self.on_drop(reason, seq, mtype)
            except Exception:  # a callback bug must not kill the feed loop
                pass

    def _decode_segment(self, seg: bytes, out: list[Received]) -> None:
        try:
            raw = cobs_decode(seg)
        except CobsError:
            self._drop("cobs")
            return
        if len(raw) < HEADER_SIZE + CRC_SIZE:
            self._drop("short")
            return
        body = raw[:-CRC_SIZE]
        (crc_rx,) = struct.unpack_from("<I", raw, len(raw) - CRC_SIZE)
        if crc32(body) != crc_rx:
            self._drop("crc")
            return
        version, mtype, seq, length = HEADER.unpack_from(raw)
        if version != PROTOCOL_VERSION:
            self._drop("version", seq, mtype)
            return
        if length != len(body) - HEADER_SIZE:
            self._drop("length", seq, mtype)
            return
        if length > self.max_payload:
            self._drop("oversize", seq, mtype)
            return
        cls = MESSAGE_CLASSES.get(mtype)
        if cls is None:
            self._drop("unknown_type", seq, mtype)
            return
        try:
            msg = cls.decode_payload(body[HEADER_SIZE:])
        except (PayloadError, ValueError):
            self._drop("payload", seq, mtype)
            return
        if self._last_seq is not None:
            gap = (seq - self._last_seq - 1) & 0xFFFF
            if gap < MAX_SEQ_GAP:
                self.stats.seq_lost += gap
            else:  # backwards or a huge jump: the peer restarted its counter, not a loss
                self.stats.seq_resync += 1
        self._last_seq = seq
        self.stats.frames_ok += 1
        out.append(Received(seq, msg))
