"""The device side of the serial protocol, run against BOTH devices: the Python ``SerialDevice``
(``ser-edge serve``) and the Cortex-M4 firmware under QEMU (``-M mps2-an386``), each serving the
shipped model. Same requests, same expected bytes: INFO fields, PONG, ACK, ERROR codes and texts,
STATS counters, and RESULTs equal to the tflite-micro interpreter's windows (scores, labels, flags,
times, GAP flags), frame by frame."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from edge_runtime.protocol import (Ack, Audio, Error, ErrorCode, Features, GetStats, Hello, Info,
                                   Mode, MsgType, Ping, Pong, Result, ResultFlags, Start, Stats, Stop,
                                   encode_frame)
from edge_runtime.protocol.framing import build_raw_frame
from tests.conftest import require_module, require_tool
from tests.device_under_test import DEVICES, Host, features_int8, open_device, reference_classifier
from tests.test_runtime_helpers import speechlike

pytestmark = pytest.mark.slow


@pytest.fixture(params=DEVICES)
def dut(request):
    require_module("serial")
    with open_device(request.param, require_tool, require_module) as d:
        yield d


@pytest.fixture(scope="module")
def reference():
    require_module("tflite_micro")
    return reference_classifier()


def _host(dut) -> Host:
    host = Host(dut.port)
    dut.resume()
    (boot,) = host.recv(1, timeout=10.0)
    assert isinstance(boot, Info) and boot.boot and boot.reply_to == 0xFFFF
    return host


def _stats(host) -> dict:
    seq = host.send(GetStats())
    (st,) = host.recv(1, types={MsgType.STATS})
    assert isinstance(st, Stats) and st.ref_seq == seq
    return st.counters


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def _reference_session(reference, chunks, session, features=False, gap=None):
    """The RESULT messages the Python device sends for a session fed ``chunks`` then STOP, in order:
    each chunk's windows then the utterances they closed; at STOP the flushed tail window, the open
    utterance and the summary (``SerialDevice._send_results`` / ``_finish_stream``)."""
    from edge_runtime.serial_device import result_to_message

    reference.reset()
    out = []

    def emit(windows):
        for r in windows:
            out.append(result_to_message(r, session, gap(r) if gap else 0))
        out.extend(result_to_message(u, session) for u in reference.take_utterances())

    for c in chunks:
        emit(reference.push_features(c) if features else reference.push_audio(c))
    emit(reference.finish())
    return out


def _fields(msgs):
    """Everything of a RESULT but the measured latency."""
    return [(m.window_index, m.session, m.label_index, m.flags, m.t_start_ms, m.t_end_ms, m.scores) for m in msgs]


def _stop_and_collect(dut, host, want, n_bytes):
    """STOP, then every RESULT up to the STOP's ACK (or, on firmware without inference kernels,
    the ERROR ENGINE answer of each window)."""
    s = host.send(Stop())
    msgs = host.recv(len(want) + 1, timeout=dut.transfer_timeout(n_bytes), types={MsgType.RESULT, MsgType.ACK,
                                                                                   MsgType.ERROR})
    assert msgs and msgs[-1] == Ack(s, MsgType.STOP, 0), msgs[-3:]
    got = msgs[:-1]
    if not dut.has_engine:
        assert all(isinstance(m, Error) and m.code == ErrorCode.ENGINE for m in got if not isinstance(m, Result))
        return None
    assert all(isinstance(m, Result) for m in got)
    assert all(0 < m.latency_us < 1_000_000 for m in got if not m.flags & ResultFlags.UTTERANCE)
    return got


def test_boot_info_hello_ping_stats(dut, reference):
    host = _host(dut)
    try:
        info = reference.info()
        seq = host.send(Hello())
        (got,) = host.recv(1)
        assert isinstance(got, Info) and not got.boot and got.reply_to == seq and got.mode == 0
        assert (got.model_hash, got.frontend_hash, got.labels) == (info["model_hash"], info["frontend_hash"],
                                                                    tuple(info["labels"]))
        assert (got.sample_rate, got.window_frames, got.hop_frames, got.n_features, got.frame_hop_samples) == (
            16000, info["window_frames"], info["hop_frames"], info["n_features"], 256)
        assert got.input_scale == _f32(info["input_scale"]) and got.input_zero_point == info["input_zero_point"]
        assert got.output_scale == _f32(info["output_scale"]) and got.output_zero_point == info["output_zero_point"]
        assert got.max_payload == 1024 and got.accepts == 3  # AUDIO | FEATURES, no microphone
        host.send(Ping(b"\x01\x02\x00\xff"))
        assert host.recv(1) == [Pong(b"\x01\x02\x00\xff")]
        st = _stats(host)
        assert (st["rx_frames"], st["tx_frames"], st["errors"], st["rx_seq_lost"]) == (3, 3, 0, 0)
    finally:
        host.close()


def test_bad_requests_errors_and_counters(dut):
    host = _host(dut)
    pcm = speechlike(0.1, seed=2)
    try:
        s = host.send(Audio(0, pcm[:300]))
        assert host.recv(1) == [Error(ErrorCode.NO_SESSION, s, MsgType.AUDIO, "send START first")]
        s = host.send(Start(Mode.FEATURES, 1))
        assert host.recv(1) == [Ack(s, MsgType.START, 0)]
        s = host.send(Features(0, np.zeros((3, 5), np.int8)))
        assert host.recv(1) == [Error(ErrorCode.BAD_DIMS, s, MsgType.FEATURES,
                                      "got 5 features per frame, this model takes 40")]
        s = host.send(Audio(0, pcm[:300]))
        assert host.recv(1) == [Error(ErrorCode.WRONG_MODE, s, MsgType.AUDIO, "session is FEATURES, got AUDIO")]
        s = host.send(Start(Mode.MIC_PUSH, 2))
        assert host.recv(1) == [Error(ErrorCode.UNSUPPORTED, s, MsgType.START, "this device has no audio source")]
        s = host.send(Start(7, 2))
        assert host.recv(1) == [Error(ErrorCode.UNSUPPORTED, s, MsgType.START, "unknown mode 7")]
        host.port.write(encode_frame(0x55, 99, b""))
        assert host.recv(1) == [Error(ErrorCode.UNKNOWN_TYPE, 99, 0x55, "unknown message type 0x55")
                                if dut.kind == "python" else Error(ErrorCode.UNKNOWN_TYPE, 99, 0x55, "unknown_type")]
        host.port.write(encode_frame(MsgType.START, 100, b"\x01"))  # malformed START
        assert host.recv(1) == [Error(ErrorCode.BAD_PAYLOAD, 100, MsgType.START, "payload")]
        host.port.write(encode_frame(MsgType.AUDIO, 101, b"\0\0\0\0\1\2\3"))  # odd sample bytes
        assert host.recv(1) == [Error(ErrorCode.BAD_PAYLOAD, 101, MsgType.AUDIO, "payload")]
        host.port.write(encode_frame(MsgType.HELLO, 102, b"\1\0\0\x10\xff"))  # name not UTF-8
        assert host.recv(1) == [Error(ErrorCode.BAD_PAYLOAD, 102, MsgType.HELLO, "payload")]
        s = host.send(Result(0, 0, 0, 0, 0, 0, 0, (1,)))  # a device->host type sent to the device
        assert host.recv(1) == [Error(ErrorCode.UNKNOWN_TYPE, s, MsgType.RESULT, "RESULT is not a request")]
        from edge_runtime.protocol import cobs_encode

        host.port.write(cobs_encode(build_raw_frame(MsgType.PING, 103, b"", version=2)) + b"\0")
        assert host.recv(1) == [Error(ErrorCode.VERSION, 103, MsgType.PING, "this device speaks protocol version 1")]
        host.port.write(encode_frame(MsgType.AUDIO, 104, b"\0" * 1030))  # longer than any 1 KB frame:
        host.send(Ping(b"after"))
        # serve buffers up to the protocol's 4 KB ceiling, checks the CRC and answers TOO_LARGE; the
        # firmware's 1 KB receive buffer overflows first: dropped as oversize, no answer
        too_large = [Error(ErrorCode.TOO_LARGE, 104, MsgType.AUDIO, "max payload is 1024 bytes")]
        assert host.recv(2 if dut.kind == "python" else 1) == (too_large if dut.kind == "python" else []) + [Pong(b"after")]
        bad = bytearray(encode_frame(MsgType.PING, 105, b"abc"))
        bad[3] ^= 0x40  # corrupt: CRC drop, no answer (seq and type cannot be trusted)
        host.port.write(bytes(bad))
        s = host.send(Stop())
        summary, ack = host.recv(2)  # an empty session still gets its summary record before the ACK
        assert ack == Ack(s, MsgType.STOP, 0) and summary.window_index == 0xFFFFFFFF
        assert summary.flags == ResultFlags.UTTERANCE | ResultFlags.SILENCE  # nothing was classified
        st = _stats(host)
        # the two devices count identically (the firmware's C decoder mirrors FrameDecoder)
        assert {k: st[k] for k in ("rx_payload", "rx_unknown_type", "rx_version", "rx_oversize", "rx_crc",
                                   "errors", "results")} == {
            "rx_payload": 3, "rx_unknown_type": 1, "rx_version": 1, "rx_oversize": 1, "rx_crc": 1,
            "errors": 11 + (dut.kind == "python"), "results": 1}  # serve also answers TOO_LARGE
    finally:
        host.close()


def test_features_session_matches_tflite_micro(dut, reference):
    pcm = speechlike(4.5, seed=3)
    feats = features_int8(pcm)
    chunks = [feats[i:i + 20] for i in range(0, len(feats), 20)]
    host = _host(dut)
    try:
        host.send(Start(Mode.FEATURES, 9, start_offset=1000))
        host.recv(1)
        for i, c in enumerate(chunks):  # 20 frames (808-byte payloads) per frame
            host.send(Features(1000 + 20 * i, c))
        want = _reference_session(reference, chunks, 9, features=True)
        assert sum(not m.flags & ResultFlags.UTTERANCE for m in want) >= 3
        got = _stop_and_collect(dut, host, want, feats.size)
        if got is not None:
            assert _fields(got) == _fields(want)
    finally:
        host.close()


def test_audio_session_gate_flush_and_records_match(dut, reference):
    # 1 s of speech, 1 s of near-silence, then 0.6 s of speech: windows pass and close the gate,
    # an utterance closes, STOP flushes the tail window and sends the utterance and summary records
    rng = np.random.default_rng(4)
    pcm = np.concatenate([speechlike(1.0, seed=4), rng.integers(-3, 4, 16000).astype(np.int16),
                          speechlike(0.6, seed=5)])
    chunks = [pcm[i:i + 500] for i in range(0, pcm.size, 500)]  # odd chunking on purpose
    host = _host(dut)
    try:
        host.send(Start(Mode.AUDIO, 7))
        host.recv(1)
        for i, c in enumerate(chunks):
            host.send(Audio(500 * i, c))
        want = _reference_session(reference, chunks, 7)
        kinds = [(m.window_index, m.flags & (ResultFlags.UTTERANCE | ResultFlags.SILENCE | ResultFlags.NO_SPEECH))
                 for m in want]
        assert any(f & ResultFlags.UTTERANCE for _, f in kinds) and kinds[-1][0] == 0xFFFFFFFF
        got = _stop_and_collect(dut, host, want, 2 * pcm.size)
        if got is not None:
            assert _fields(got) == _fields(want)
    finally:
        host.close()


def test_short_utterance_gets_a_label(dut, reference):
    pcm = speechlike(0.8, seed=6)  # shorter than one 2 s window: padded and classified at STOP
    host = _host(dut)
    try:
        host.send(Start(Mode.AUDIO, 2))
        host.recv(1)
        for i in range(0, pcm.size, 510):
            host.send(Audio(i, pcm[i:i + 510]))
        want = _reference_session(reference, [pcm], 2)
        assert len(want) == 3 and want[0].window_index == 0  # the short window, its utterance, the summary
        got = _stop_and_collect(dut, host, want, 2 * pcm.size)
        if got is not None:
            assert _fields(got) == _fields(want)
    finally:
        host.close()


def test_lost_audio_frame_is_zero_filled_and_flagged(dut, reference):
    pcm = speechlike(3.1, seed=5)  # 2 windows; the gap is inside window 0 only
    chunk = 500
    lost = range(5000, 6000)  # two chunks never arrive
    host = _host(dut)
    try:
        host.send(Start(Mode.AUDIO, 3))
        host.recv(1)
        for i in range(0, pcm.size, chunk):
            if i not in lost:
                host.send(Audio(i, pcm[i:i + chunk]))
        host.send(Audio(0, pcm[:chunk]))  # a stale duplicate: ignored
        filled = pcm.copy()
        filled[lost.start:lost.stop] = 0

        def gap(r):
            lo, hi = round(r.t_start_s * 16000), round(r.t_end_s * 16000)
            return ResultFlags.GAP if lo < lost.stop and lost.start < hi else 0

        want = _reference_session(reference, [filled], 3, gap=gap)
        wins = [m for m in want if not m.flags & ResultFlags.UTTERANCE]
        assert wins[0].flags & ResultFlags.GAP and not wins[-1].flags & ResultFlags.GAP
        got = _stop_and_collect(dut, host, want, 2 * pcm.size)
        if got is not None:
            assert _fields(got) == _fields(want)
        st = _stats(host)
        assert (st["gap_samples"], st["stale"]) == (1000, 1)
    finally:
        host.close()
