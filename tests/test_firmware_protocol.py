"""C protocol codec (firmware/ser_protocol.c) against the Python one (edge_runtime/protocol), both ways."""
from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.protocol import (MAX_PAYLOAD, Audio, FrameDecoder, Info, MsgType, Resend, Result,
                                   build_raw_frame, cobs_decode, cobs_encode, crc32, encode_frame,
                                   encode_message)
from firmware_bridge import cbuild as C
from tests.test_protocol_codec import GOLDEN, H


def test_crc_check_value():
    assert C.crc32(b"123456789") == 0xCBF43926
    assert C.crc32(b"") == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1200))
def test_crc_and_cobs_match_python(data):
    assert C.crc32(data) == crc32(data)
    enc = C.cobs_encode(data)
    assert enc == cobs_encode(data)
    assert C.cobs_decode(enc) == data


@pytest.mark.parametrize("n", [253, 254, 255, 508, 509, 1000])
def test_cobs_block_boundaries(n):
    for data in (bytes([7]) * n, bytes([7]) * n + b"\0", b"\0" + bytes([7]) * n):
        assert C.cobs_encode(data) == cobs_encode(data)
        assert C.cobs_decode(cobs_encode(data)) == data


@pytest.mark.parametrize("bad", [b"\x05\x01\x02", b"\x02\x00", b"\x00", b"\x03\x01"])
def test_cobs_decode_rejects_like_python(bad):
    with pytest.raises(ValueError):
        C.cobs_decode(bad)
    with pytest.raises(ValueError):
        cobs_decode(bad)


@pytest.mark.parametrize("msg,seq,raw,wire", GOLDEN, ids=[g[0].TYPE.name for g in GOLDEN])
def test_golden_frames_both_directions(msg, seq, raw, wire):
    wire_b = H(wire.replace(" ", ""))
    payload = msg.encode_payload()
    assert C.encode_frame(msg.TYPE, seq, payload) == wire_b  # C encodes the documented bytes
    (ev,) = C.CFrameDecoder().feed(wire_b)  # C decodes them
    assert ev.ok and ev.type == msg.TYPE and ev.seq == seq and ev.payload == payload


@settings(max_examples=150, deadline=None)
@given(mtype=st.integers(1, 13), seq=st.integers(0, 0xFFFF), payload=st.binary(max_size=600))
def test_c_encoded_frames_decode_in_python(mtype, seq, payload):
    wire = C.encode_frame(mtype, seq, payload)
    assert wire == encode_frame(mtype, seq, payload)
    dec = FrameDecoder()
    dec.feed(wire)
    # framing accepted (the payload layout may still be wrong for the type: a "payload" drop)
    assert dec.stats.dropped_total == dec.stats.dropped["payload"]
    assert dec.stats.frames_ok + dec.stats.dropped["payload"] == 1


@settings(max_examples=150, deadline=None)
@given(mtype=st.integers(0, 255), seq=st.integers(0, 0xFFFF), payload=st.binary(max_size=600),
       chunk=st.integers(1, 64))
def test_python_encoded_frames_decode_in_c(mtype, seq, payload, chunk):
    wire = encode_frame(mtype, seq, payload)
    dec = C.CFrameDecoder()
    evs = [e for i in range(0, len(wire), chunk) for e in dec.feed(wire[i:i + chunk])]
    (ev,) = evs
    if 1 <= mtype <= 14:  # 14 = RESEND (revision 2)
        assert ev.ok and (ev.type, ev.seq, ev.payload) == (mtype, seq, payload)
    else:
        assert not ev.ok and ev.reason == "unknown_type" and (ev.type, ev.seq) == (mtype, seq)


def test_messages_built_in_c_decode_as_python_messages():
    scores = np.array([-5, 10, 100, -128], np.int8)
    p = C.result_payload(12, 1, 3, 0, 1000, 2000, 1234, scores)
    assert p == Result(12, 1, 3, 0, 1000, 2000, 1234, tuple(scores.tolist())).encode_payload()
    (got,) = FrameDecoder().feed(C.encode_frame(MsgType.RESULT, 9, p))
    assert got.msg == Result(12, 1, 3, 0, 1000, 2000, 1234, (-5, 10, 100, -128)) and got.seq == 9
    with pytest.raises(ValueError):
        C.result_payload(0, 0, 4, 0, 0, 0, 0, scores)  # label_index out of range
    # AUDIO from Python, parsed in C
    pcm = np.array([0, 1, -1, 32767, -32768, 256], np.int16)
    wire = encode_message(Audio(77, pcm), 5)
    (ev,) = C.CFrameDecoder().feed(wire)
    lib = C.load_library()
    import ctypes

    off = ctypes.c_uint32()
    buf = ctypes.create_string_buffer(ev.payload, len(ev.payload))
    assert lib.ser_audio_parse(buf, len(ev.payload), ctypes.byref(off)) == pcm.size and off.value == 77
    assert lib.ser_audio_parse(buf, 5, None) == -1  # odd sample bytes
    assert lib.ser_audio_parse(buf, 4, ctypes.byref(off)) == 0 and off.value == 77  # a SYNC (revision 2)
    # RESEND (revision 2) built in C decodes in Python, and Python's parses in C
    first = (ctypes.c_uint32 * 2)(512, 4096)
    count = (ctypes.c_uint32 * 2)(512, 3)
    out = ctypes.create_string_buffer(64)
    n = lib.ser_resend_payload(7, first, count, 2, out, 64)
    assert out.raw[:n] == Resend(7, ((512, 512), (4096, 3))).encode_payload()
    assert lib.ser_resend_payload(7, first, (ctypes.c_uint32 * 2)(0, 1), 2, out, 64) == 0  # count 0
    p = Resend(9, ((1, 2), (3, 4), (5, 6))).encode_payload()
    sess, f3, c3 = ctypes.c_uint16(), (ctypes.c_uint32 * 8)(), (ctypes.c_uint32 * 8)()
    assert lib.ser_resend_parse(p, len(p), ctypes.byref(sess), f3, c3, 8) == 3
    assert sess.value == 9 and list(f3)[:3] == [1, 3, 5] and list(c3)[:3] == [2, 4, 6]
    assert lib.ser_resend_parse(p, len(p) - 1, None, None, None, 0) == -1


def _corrupt(wire: bytes, rng: random.Random) -> bytes:
    b = bytearray(wire)
    kind = rng.randrange(6)
    if kind == 0:  # flip a bit anywhere (may hit the delimiter: then two broken segments)
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # drop a byte
        del b[rng.randrange(len(b) - 1)]
    elif kind == 2:  # truncate
        b = b[: rng.randrange(1, len(b))] + b"\0"
    elif kind == 3:  # insert a stray byte
        b.insert(rng.randrange(len(b)), rng.randrange(1, 256))
    elif kind == 4:  # a valid-CRC frame with a wrong version / length field
        raw = bytearray(build_raw_frame(MsgType.PING, 3, b"abc"))
        raw[0 if rng.random() < 0.5 else 4] += 1
        raw[-4:] = struct.pack("<I", crc32(bytes(raw[:-4])))
        b = bytearray(cobs_encode(bytes(raw)) + b"\0")
    else:  # noise
        b = bytearray(rng.randrange(1, 256) for _ in range(rng.randrange(1, 40))) + b"\0"
    return bytes(b)


@pytest.mark.parametrize("max_payload", [MAX_PAYLOAD, 300])
def test_corrupted_stream_same_verdicts_as_python(max_payload):
    """One long byte stream of good, corrupted, oversize and junk frames: the C decoder drops
    exactly what the Python one drops, for the same reasons, and keeps the same good frames."""
    rng = random.Random(max_payload)
    stream, n_good = bytearray(), 0
    for i in range(400):
        payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 10, 100, 290, 400])))
        wire = encode_frame(MsgType.PING if len(payload) <= 64 else MsgType.AUDIO, i, payload)
        if rng.random() < 0.4:
            wire = _corrupt(wire, rng)
        elif rng.random() < 0.05:
            wire = b"\0\0" + wire  # empty segments
        stream += wire
    stream += bytes([1]) * 5000 + b"\0"  # an oversize segment
    py = FrameDecoder(max_payload)
    py_ok = [(r.seq, r.msg.TYPE) for r in py.feed(bytes(stream))]
    cd = C.CFrameDecoder(max_payload)
    evs = [e for i in range(0, len(stream), 97) for e in cd.feed(stream[i:i + 97])]
    c_ok = [(e.seq, e.type) for e in evs if e.ok]
    cs, ps = cd.stats, py.stats
    # frames that pass framing but fail the Python payload layout (e.g. AUDIO with odd bytes) are
    # handed to the C message helpers instead: they count as ok in the C frame decoder
    assert len(c_ok) == len(py_ok) + ps.dropped["payload"]
    assert set(py_ok) <= set(c_ok)
    for reason in ("cobs", "short", "crc", "version", "length", "oversize", "unknown_type"):
        assert cs["dropped"][reason] == ps.dropped[reason], reason
    assert cs["empty"] == ps.empty and cs["bytes_in"] == ps.bytes_in
    assert sum(cs["dropped"].values()) > 50 and cs["dropped"]["oversize"] >= 1
    assert cs["seq_lost"] == ps.seq_lost if ps.dropped["payload"] == 0 else True
    assert cs["seq_resync"] == ps.seq_resync if ps.dropped["payload"] == 0 else True


def test_encode_respects_capacity():
    assert C.encode_frame(MsgType.PING, 1, b"x" * 10, cap=10) == b""
    full = encode_frame(MsgType.PING, 1, b"x" * 10)
    assert C.encode_frame(MsgType.PING, 1, b"x" * 10, cap=len(full)) == full
    assert C.encode_frame(MsgType.AUDIO, 1, b"\1" * (MAX_PAYLOAD + 1), cap=10000) == b""


def _payload_variants(rng: random.Random) -> list[tuple[int, bytes]]:
    """(type, payload) of every message type: well formed, and broken the ways messages.py checks."""
    import struct

    good_info = Info(1, 0, 3, 0, 1024, 0xFFFF, 16000, 125, 62, 40, 256, 0.15, 30, -22, 0.08, "fw",
                     "0123456789abcdef", "f87a45e1b3aff79a", ("a", "bé")).encode_payload()
    out = [
        (MsgType.HELLO, b"\x01\x00\x00\x10host"), (MsgType.HELLO, b"\x01\x00\x00"),
        (MsgType.HELLO, b"\x01\x00\x00\x10\xff\xfe"), (MsgType.HELLO, b"\x01\x00\x00\x10\xed\xa0\x80"),
        (MsgType.HELLO, b"\x01\x00\x00\x10\xf0\x9f\x98\x80"), (MsgType.HELLO, b"\x01\x00\x00\x10\xc0\xaf"),
        (MsgType.INFO, good_info), (MsgType.INFO, good_info[:-1]), (MsgType.INFO, good_info + b"x"),
        (MsgType.INFO, good_info[:31]),
        (MsgType.AUDIO, b"\0" * 4 + b"\1\2"), (MsgType.AUDIO, b"\0" * 4), (MsgType.AUDIO, b"\0" * 7),
        (MsgType.FEATURES, struct.pack("<IHH", 0, 2, 3) + b"\1" * 6),
        (MsgType.FEATURES, struct.pack("<IHH", 0, 2, 3) + b"\1" * 5),
        (MsgType.FEATURES, struct.pack("<IHH", 0, 0, 3)), (MsgType.FEATURES, b"\0" * 7),
        (MsgType.RESULT, Result(1, 2, 1, 0, 0, 10, 5, (1, 2)).encode_payload()),
        (MsgType.RESULT, Result(1, 2, 1, 0, 0, 10, 5, (1, 2)).encode_payload()[:-1]),
        (MsgType.RESULT, bytes(6) + b"\x05" + bytes(13) + b"\x02\x01\x02"),  # label 5 of 2 scores
        (MsgType.ERROR, b"\x01\x00\xff\xff\x00bad \xff text"), (MsgType.ERROR, b"\x01\x00\xff\xff"),
        (MsgType.PING, b"x" * 64), (MsgType.PING, b"x" * 65), (MsgType.PONG, b""), (MsgType.PONG, b"y" * 65),
        (MsgType.START, b"\x01\x00\x01\x00\x00\x00\x00\x00"), (MsgType.START, b"\x01" * 9),
        (MsgType.STOP, b""), (MsgType.STOP, b"\0"), (MsgType.GET_STATS, b""), (MsgType.GET_STATS, b"\1"),
        (MsgType.ACK, b"\1\0\x09\0"), (MsgType.ACK, b"\1\0\x09"),
        (MsgType.STATS, b"\1\0\x02\0" + bytes(8)), (MsgType.STATS, b"\1\0\x02\0" + bytes(7)),
    ]
    out += [(MsgType.RESEND, b"\1\0\x01\0" + struct.pack("<II", 5, 3)),
            (MsgType.RESEND, b"\1\0\x01\0" + struct.pack("<II", 5, 0)),
            (MsgType.RESEND, b"\1\0\x02\0" + struct.pack("<II", 5, 3)), (MsgType.RESEND, b"\1\0\0\0")]
    for _ in range(200):  # random payloads of random types: mostly malformed
        out.append((rng.randrange(1, 16), bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))))
    return out


def test_c_message_check_same_verdicts_as_python():
    """With ser_message_check in the decoder (as the firmware runs it), the C decoder accepts and
    drops exactly the frames the Python FrameDecoder does, for every message type, including
    payload layouts, string bounds and strict UTF-8, and counts sequence gaps the same way."""
    rng = random.Random(12)
    stream = b"".join(encode_frame(t, i, p) for i, (t, p) in enumerate(_payload_variants(rng)))
    py = FrameDecoder()
    py_ok = [(r.seq, int(r.msg.TYPE)) for r in py.feed(stream)]
    cd = C.CFrameDecoder(check_messages=True)
    c_ok = [(e.seq, e.type) for e in cd.feed(stream) if e.ok]
    assert c_ok == py_ok
    assert cd.stats["dropped"] == dict(py.stats.dropped) and cd.stats["dropped"]["payload"] > 50
    assert cd.stats["seq_lost"] == py.stats.seq_lost and cd.stats["frames_ok"] == py.stats.frames_ok
