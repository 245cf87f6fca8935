"""Protocol codec: CRC, COBS, golden wire bytes, typed round trips, streaming decoder robustness."""
from __future__ import annotations

import random
import struct
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.protocol import (DROP_REASONS, HEADER_SIZE, MAX_ENCODED_FRAME, MAX_PAYLOAD,
                                   MESSAGE_CLASSES, STATS_FIELDS, Ack, Audio, Error, ErrorCode, Features,
                                   FrameDecoder, GetStats, Hello, Info, Mode, MsgType, Ping, Pong,
                                   Resend, Result, ResultFlags, Start, Stats, Stop, build_raw_frame,
                                   cobs_decode, cobs_encode, crc32, encode_frame, encode_message)
from edge_runtime.protocol import _cobs

H = bytes.fromhex


def crc32_bitwise(data: bytes) -> int:
    """Reference CRC-32/ISO-HDLC, written from the parameters in docs/protocol.md."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


# ---------------------------------------------------------------------------------- CRC + COBS
def test_crc_check_value_and_reference():
    assert crc32(b"123456789") == 0xCBF43926
    rng = random.Random(1)
    for n in (0, 1, 7, 100, 1000):
        d = bytes(rng.randrange(256) for _ in range(n))
        assert crc32(d) == crc32_bitwise(d)


@given(st.binary(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_cobs_python_fallback_matches_package(data):
    enc = _cobs._py_encode(data)
    assert enc == cobs_encode(data)
    assert 0 not in enc
    assert len(enc) <= _cobs.cobs_max_encoded_len(len(data))
    assert _cobs._py_decode(enc) == data == cobs_decode(enc)


@pytest.mark.parametrize("bad", [b"\x05\x01\x02", b"\x02\x00", b"\x00"])
def test_cobs_decode_rejects(bad):
    with pytest.raises(_cobs.CobsError):
        cobs_decode(bad)
    with pytest.raises(_cobs.CobsError):
        _cobs._py_decode(bad)


# ---------------------------------------------------------------------------------- golden vectors
# (message, seq, raw frame before COBS, wire bytes) -- the same examples are in docs/protocol.md
GOLDEN = [
    (Ping(H("01020304")), 7,
     "01 07 07 00 04 00 01 02 03 04 5f 01 05 6e",
     "04 01 07 07 02 04 09 01 02 03 04 5f 01 05 6e 00"),
    (Audio(0, np.array([0, 1, -1, 256], np.int16)), 1,
     "01 03 01 00 0c 00 00 00 00 00 00 00 01 00 ff ff 00 01 bb f3 88 83",
     "04 01 03 01 02 0c 01 01 01 01 01 01 02 01 03 ff ff 06 01 bb f3 88 83 00"),
    (Result(12, 1, 2, 0, 1000, 2000, 1234, (-5, 10, 100, -128)), 9,  # label 2 = the top score
     "01 05 09 00 19 00 0c 00 00 00 01 00 02 00 e8 03 00 00 d0 07 00 00 d2 04 00 00 04 fb 0a 64 80 67 69 5f 89",
     "04 01 05 09 02 19 02 0c 01 01 02 01 02 02 03 e8 03 01 03 d0 07 01 03 d2 04 01 0a 04 fb 0a 64 80 67 69 5f 89 00"),
    (Resend(1, ((512, 512),)), 4,
     "01 0e 04 00 0c 00 01 00 01 00 00 02 00 00 00 02 00 00 86 be d5 d7",
     "04 01 0e 04 02 0c 02 01 02 01 01 02 02 01 01 02 02 01 05 86 be d5 d7 00"),
    (Audio(1024, np.zeros(0, np.int16)), 5,  # SYNC
     "01 03 05 00 04 00 00 04 00 00 23 db bd e1",
     "04 01 03 05 02 04 01 02 04 01 05 23 db bd e1 00"),
    (Hello(1, 4096, "host"), 0,
     "01 01 00 00 08 00 01 00 00 10 68 6f 73 74 3d 5a dc c0",
     "03 01 01 01 02 08 02 01 01 0a 10 68 6f 73 74 3d 5a dc c0 00"),
    (Start(Mode.AUDIO, 1, 0), 1,
     "01 09 01 00 08 00 01 00 01 00 00 00 00 00 f9 4d a5 44",
     "04 01 09 01 02 08 02 01 02 01 01 01 01 01 05 f9 4d a5 44 00"),
    (Error(ErrorCode.BAD_DIMS, 3, MsgType.FEATURES, "bad dims"), 2,
     "01 06 02 00 0d 00 05 00 03 00 04 62 61 64 20 64 69 6d 73 2f b4 33 f5",
     "04 01 06 02 02 0d 02 05 02 03 0e 04 62 61 64 20 64 69 6d 73 2f b4 33 f5 00"),
]


@pytest.mark.parametrize("msg,seq,raw,wire", GOLDEN, ids=[g[0].TYPE.name for g in GOLDEN])
def test_golden_bytes(msg, seq, raw, wire):
    raw_b, wire_b = H(raw.replace(" ", "")), H(wire.replace(" ", ""))
    assert build_raw_frame(msg.TYPE, seq, msg.encode_payload()) == raw_b
    assert crc32_bitwise(raw_b[:-4]) == struct.unpack("<I", raw_b[-4:])[0]
    assert encode_message(msg, seq) == wire_b
    (got,) = FrameDecoder().feed(wire_b)
    assert got.seq == seq and got.msg == msg


def test_result_payload_offsets():
    p = Result(0x01020304, 0xBEEF, 2, ResultFlags.SILENCE | ResultFlags.GAP, 5, 6, 7, (1, 2, 3)).encode_payload()
    assert p[0:4] == H("04030201") and p[4:6] == H("efbe") and p[6] == 2 and p[7] == 0x05
    assert struct.unpack_from("<III", p, 8) == (5, 6, 7) and p[20] == 3 and p[21:] == H("010203")


def make_info(labels=("angry", "happy", "neutral", "sad"), boot=False) -> Info:
    return Info(1, 1 if boot else 0, 3, 0, 1024, 5, 16000, 64, 16, 13, 256, 0.0421, -12, -128,
                1 / 256, "0.1.0", "0123456789abcdef", "c2665390509b8d56", tuple(labels))


def test_info_layout_and_round_trip():
    info = make_info()
    p = info.encode_payload()
    assert struct.unpack_from("<I", p, 8)[0] == 16000 and struct.unpack_from("<H", p, 16)[0] == 13
    assert p[26] == 4 and p[32] == len("0.1.0")
    back = Info.decode_payload(p)
    assert back.labels == info.labels and back.frontend_hash == info.frontend_hash
    assert abs(back.input_scale - 0.0421) < 1e-7 and back.input_zero_point == -12
    assert Info.decode_payload(make_info(boot=True).encode_payload()).boot


# ---------------------------------------------------------------------------------- round trips
i8 = st.integers(-128, 127)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
text = st.text(max_size=20)

messages = st.one_of(
    st.builds(Hello, st.integers(1, 255), u16, st.text(max_size=10).filter(lambda s: len(s.encode()) <= 64)),
    st.builds(lambda labels, s: make_info(tuple(labels)), st.lists(st.text(min_size=1, max_size=12), max_size=8), text),
    st.builds(lambda off, a: Audio(off, np.array(a, np.int16)), u32, st.lists(st.integers(-32768, 32767), min_size=1, max_size=300)),
    st.builds(lambda off, n, f, seed: Features(off, np.random.default_rng(seed).integers(-128, 128, (n, f)).astype(np.int8)),
              u32, st.integers(1, 20), st.integers(1, 40), st.integers(0, 1000)),
    st.builds(lambda w, s, fl, a, b, lat, sc, li: Result(w, s, li % len(sc), fl, a, b, lat, tuple(sc)),
              u32, u16, st.integers(0, 15), u32, u32, u32, st.lists(i8, min_size=1, max_size=16), st.integers(0, 255)),
    st.builds(Error, u16, u16, st.integers(0, 255), st.text(max_size=30).filter(lambda s: len(s.encode()) <= 200)),
    st.builds(Ping, st.binary(max_size=64)),
    st.builds(lambda sess, r: Resend(sess, tuple(r)), u16,
              st.lists(st.tuples(u32, st.integers(1, 0xFFFFFFFF)), min_size=1, max_size=8)),
    st.builds(lambda labels, fl, mc, g, sess: replace(make_info(tuple(labels)), protocol_version=2,
                                                     frame_length_samples=fl, min_confidence=mc,
                                                     gate_dbfs=g, session=sess, ext_flags=7),
              st.lists(st.text(min_size=1, max_size=12), max_size=8), u16,
              st.floats(0, 1, width=32), st.floats(-120, 0, width=32), u16),
    st.builds(Pong, st.binary(max_size=64)),
    st.builds(Start, st.integers(0, 3), u16, u32),
    st.builds(Stop), st.builds(GetStats),
    st.builds(Ack, u16, st.integers(0, 255), st.integers(0, 255)),
    st.builds(lambda ref, vals: Stats(ref, dict(zip(("rx_frames", "rx_crc", "tx_frames"), vals))),
              u16, st.lists(u32, min_size=3, max_size=3)),
)


def _equal(a, b) -> bool:
    if isinstance(a, Stats):
        return a.ref_seq == b.ref_seq and all(b.counters[k] == v for k, v in a.counters.items())
    return a == b


@given(st.lists(st.tuples(messages, u16), min_size=1, max_size=8), st.data())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_round_trip_under_arbitrary_chunking(items, data):
    wire = b"".join(encode_message(m, s) for m, s in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    dec = FrameDecoder()
    out = []
    prev = 0
    for c in cuts + [len(wire)]:
        out += dec.feed(wire[prev:c])
        prev = c
    assert len(out) == len(items)
    for (m, s), r in zip(items, out):
        assert r.seq == s and _equal(m, r.msg)
    assert dec.stats.dropped_total == 0


def test_every_type_has_a_class():
    assert set(MESSAGE_CLASSES) == set(MsgType)


@pytest.mark.parametrize("n", [15, 24, len(STATS_FIELDS), len(STATS_FIELDS) + 3])
def test_stats_from_older_and_newer_devices(n):
    """STATS carries its own count n (docs/protocol.md §4.9): a revision-1 device (15 counters), a
    revision-2 device from before the receive-buffer counters (24), a current one, and one that
    appends counters this host does not know all decode; known names follow the list's order and
    nothing beyond n is invented (absent means "not reported", not 0)."""
    vals = [1000 + i for i in range(n)]
    wire = encode_frame(MsgType.STATS, 7, struct.pack("<HBx", 42, n) + struct.pack(f"<{n}I", *vals))
    ((seq, msg),) = FrameDecoder().feed(wire)
    assert seq == 7 and isinstance(msg, Stats) and msg.ref_seq == 42
    known = min(n, len(STATS_FIELDS))
    assert [msg.counters[k] for k in STATS_FIELDS[:known]] == vals[:known]
    assert not set(STATS_FIELDS[known:]) & set(msg.counters)  # an older device: not reported
    assert [msg.counters[f"counter_{i}"] for i in range(known, n)] == vals[known:]  # a newer one: kept
    assert len(msg.counters) == n


def test_stats_field_order_is_append_only():
    """The wire order is a contract: revision 1's 15, revision 2's 9, then the receive buffer's 2."""
    assert STATS_FIELDS[14] == "stale" and STATS_FIELDS[23] == "rx_unexpected_type"
    assert STATS_FIELDS[24:] == ("rx_buffer_full", "rx_buffered_max")
    payload = Stats(3, {"rx_buffer_full": 5, "rx_buffered_max": 70000}).encode_payload()
    assert payload[2] == 26 and struct.unpack_from("<2I", payload, 4 + 4 * 24) == (5, 70000)


# ---------------------------------------------------------------------------------- rejection
def _wire(raw: bytes) -> bytes:
    return cobs_encode(raw) + b"\x00"


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", crc32(body))


GOOD = encode_message(Ping(b"ok"), 1)


@pytest.mark.parametrize("reason,wire", [
    ("crc", _wire(build_raw_frame(MsgType.PING, 1, b"abc")[:-1] + b"\x99")),
    ("cobs", b"\x09\x01\x02\x00"),
    ("short", _wire(b"\x01\x07\x00")),
    ("version", _wire(_with_crc(struct.pack("<BBHH", 2, MsgType.PING, 1, 0)))),
    ("length", _wire(_with_crc(struct.pack("<BBHH", 1, MsgType.PING, 1, 5) + b"ab"))),
    ("unknown_type", _wire(_with_crc(struct.pack("<BBHH", 1, 0x7E, 1, 0)))),
    ("payload", _wire(_with_crc(struct.pack("<BBHH", 1, MsgType.START, 1, 3) + b"abc"))),
    ("payload", _wire(_with_crc(struct.pack("<BBHH", 1, MsgType.AUDIO, 1, 5) + b"\0\0\0\0\1"))),
    ("oversize", b"\x01" * (MAX_ENCODED_FRAME + 10) + b"\x00"),
])
def test_bad_frames_counted_and_decoder_resyncs(reason, wire):
    dec = FrameDecoder()
    out = dec.feed(wire + GOOD)
    assert dec.stats.dropped[reason] == 1 and dec.stats.dropped_total == 1
    assert [r.msg for r in out] == [Ping(b"ok")]


def test_oversize_for_a_small_device_limit():
    dec = FrameDecoder(max_payload=64)
    frame = encode_message(Audio(0, np.zeros(100, np.int16)), 3)
    assert dec.feed(frame + GOOD)[0].msg == Ping(b"ok")
    assert dec.stats.dropped["oversize"] == 1
    with pytest.raises(ValueError):
        encode_frame(MsgType.AUDIO, 0, bytes(MAX_PAYLOAD + 1))


def test_on_drop_reports_seq_only_after_crc():
    seen = []
    dec = FrameDecoder(on_drop=lambda r, s, t: seen.append((r, s, t)))
    dec.feed(_wire(_with_crc(struct.pack("<BBHH", 1, 0x7E, 42, 0))) + b"\x05\x00")
    assert seen == [("unknown_type", 42, 0x7E), ("cobs", None, None)]


@given(st.binary(max_size=3000), st.integers(0, 2**31))
@settings(max_examples=300, deadline=None)
def test_garbage_never_raises_and_next_frame_survives(garbage, seed):
    dec = FrameDecoder()
    rng = random.Random(seed)
    wire = garbage + b"\x00" + GOOD  # a delimiter after garbage, then a clean frame
    out = []
    i = 0
    while i < len(wire):
        k = rng.randint(1, 64)
        out += dec.feed(wire[i:i + k])
        i += k
    assert out and out[-1].msg == Ping(b"ok")
    # anything else accepted out of random garbage would need a valid CRC-32: (practically) never
    assert len(out) == 1


def test_single_bit_flips_always_detected():
    frames = [encode_message(m, i) for i, (m, *_r) in enumerate(GOLDEN)]
    for f in frames:
        for pos in range(len(f) - 1):
            for bit in range(8):
                bad = bytearray(f)
                bad[pos] ^= 1 << bit
                dec = FrameDecoder()
                out = dec.feed(bytes(bad) + b"\x00" + GOOD)
                assert [r.msg for r in out] == [Ping(b"ok")], (f.hex(), pos, bit)


def test_seq_gaps_counted_and_restart_not():
    dec = FrameDecoder()
    for s in (1, 2, 5, 6, 0xFFFD, 0xFFFF, 0, 2):  # lost: 3, 4 | (6 -> 0xFFFD: restart) | 0xFFFE, 1
        dec.feed(encode_message(Ping(), s))
    assert dec.stats.seq_lost == 4
    dec2 = FrameDecoder()
    for s in (100, 101, 0, 1):  # backwards jump: the peer restarted, not a loss
        dec2.feed(encode_message(Ping(), s))
    assert dec2.stats.seq_lost == 0


def test_empty_segments_are_padding():
    dec = FrameDecoder()
    out = dec.feed(b"\x00\x00" + GOOD + b"\x00")
    assert len(out) == 1 and dec.stats.dropped_total == 0 and dec.stats.empty == 3


def test_reasons_are_complete():
    assert set(FrameDecoder().stats.dropped) == set(DROP_REASONS)
    assert HEADER_SIZE == 6
