"""SerialDevice over a real pty link, driven frame by frame from a pyserial port (no DeviceClient)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from tests.conftest import require_module, require_tool  # noqa: F401

serial = require_module("serial")

from edge_runtime.protocol import (Ack, Audio, Error, ErrorCode, Features, FrameDecoder, GetStats,  # noqa: E402
                                   Hello, Info, Mode, MsgType, Ping, Pong, Result, ResultFlags,
                                   Sequencer, Start, Stats, Stop, encode_frame)
from edge_runtime.serial_device import SerialDevice, result_to_message  # noqa: E402
from firmware_bridge.ptylink import PtyLink  # noqa: E402
from firmware_bridge.qemu import RawHost as Host  # noqa: E402  (send messages, collect replies)
from tests.test_serial_helpers import (LABELS, EnergyEngine, expected_labels, running_device,  # noqa: E402
                                 test_audio)



@pytest.fixture
def link():
    with PtyLink(baud=921600) as lk:
        yield lk


def test_boot_info_hello_ping_stats(link):
    host = Host(link.port_a)
    try:
        with running_device(link.port_b) as dev:
            (boot,) = host.recv(1)
            assert isinstance(boot, Info) and boot.boot and boot.labels == tuple(LABELS)
            seq = host.send(Hello())
            (info,) = host.recv(1)
            assert isinstance(info, Info) and not info.boot and info.reply_to == seq
            assert (info.sample_rate, info.n_features, info.window_frames, info.hop_frames) == (16000, 4, 16, 8)
            assert info.frame_hop_samples == 256 and info.model_hash == "energy-test-0001"
            host.send(Ping(b"\x01\x02"))
            assert host.recv(1) == [Pong(b"\x01\x02")]
            seq = host.send(GetStats())
            (st,) = host.recv(1)
            assert isinstance(st, Stats) and st.ref_seq == seq and st.counters["rx_frames"] == 3
            assert dev.stats()["tx_frames"] == 4
    finally:
        host.close()


def test_audio_session_results_match_engine(link):
    host = Host(link.port_a)
    pcm = test_audio(2.0, seed=1)
    try:
        with running_device(link.port_b):
            host.recv(1)  # boot INFO
            seq = host.send(Start(Mode.AUDIO, session=7))
            assert host.recv(1) == [Ack(seq, MsgType.START, 0)]
            for i in range(0, pcm.size, 700):  # odd chunking on purpose
                host.send(Audio(i, pcm[i:i + 700]))
            want = expected_labels(pcm)
            got = host.recv(len(want), types={MsgType.RESULT})
            assert [(r.window_index, r.label_index) for r in got] == want
            assert all(r.session == 7 and not r.flags & ResultFlags.GAP for r in got)
            assert got[1].t_start_ms == 128 and got[1].t_end_ms == 384  # hop 8 x 256 samples
            assert all(0 < r.latency_us < 1_000_000 for r in got)
            seq = host.send(Stop())
            assert host.recv(1) == [Ack(seq, MsgType.STOP, 0)]
    finally:
        host.close()


def test_features_session_and_bad_requests(link):
    host = Host(link.port_a)
    pcm = test_audio(1.0, seed=2)
    feats = EnergyEngine.features(pcm)
    try:
        with running_device(link.port_b):
            host.recv(1)
            s_audio = host.send(Audio(0, pcm[:512]))
            (e,) = host.recv(1)
            assert isinstance(e, Error) and e.code == ErrorCode.NO_SESSION and e.ref_seq == s_audio
            host.send(Start(Mode.FEATURES, 1))
            host.recv(1)
            s_bad = host.send(Features(0, np.zeros((3, 5), np.int8)))
            (e,) = host.recv(1)
            assert e.code == ErrorCode.BAD_DIMS and e.ref_seq == s_bad and "4" in e.message
            host.send(Audio(0, pcm[:512]))
            assert host.recv(1)[0].code == ErrorCode.WRONG_MODE
            s_mic = host.send(Start(Mode.MIC_PUSH, 2))  # no audio source on this device
            assert host.recv(1)[0].code == ErrorCode.UNSUPPORTED
            s_unk = host.port.write(encode_frame(0x55, 99, b"")) and 99
            assert host.recv(1)[0] == Error(ErrorCode.UNKNOWN_TYPE, s_unk, 0x55, "unknown message type 0x55")
            host.port.write(encode_frame(MsgType.START, 100, b"\x01"))  # malformed START
            assert host.recv(1)[0].code == ErrorCode.BAD_PAYLOAD
            host.send(Result(0, 0, 0, 0, 0, 0, 0, (1,)))  # device->host type sent to the device
            assert host.recv(1)[0].code == ErrorCode.UNKNOWN_TYPE
            # the session is still alive after all that
            for i in range(0, len(feats), 5):
                host.send(Features(i, feats[i:i + 5]))
            want = expected_labels(pcm)
            got = host.recv(len(want), types={MsgType.RESULT})
            assert [(r.window_index, r.label_index) for r in got] == want
            assert all(r.session == 1 for r in got)
            assert s_mic is not None
    finally:
        host.close()


def test_lost_audio_frame_is_zero_filled_and_flagged(link):
    host = Host(link.port_a)
    pcm = test_audio(3.0, seed=3)
    try:
        with running_device(link.port_b) as dev:
            host.recv(1)
            host.send(Start(Mode.AUDIO, 3))
            host.recv(1)
            chunk = 512
            lost = range(16384, 16384 + 2 * chunk)  # samples [16384, 17408) never arrive
            for i in range(0, pcm.size, chunk):
                if i not in lost:
                    host.send(Audio(i, pcm[i:i + chunk]))
            host.send(Audio(0, pcm[:chunk]))  # a stale duplicate: ignored
            want = dict(expected_labels(pcm))
            got = host.recv(len(want), types={MsgType.RESULT})
            assert len(got) == len(want)  # time stayed aligned: same number of windows
            for r in got:
                lo, hi = r.t_start_ms * 16, r.t_end_ms * 16
                overlaps = lo < lost.stop and lost.start < hi
                assert bool(r.flags & ResultFlags.GAP) == overlaps, (r.window_index, lo, hi)
                if not overlaps:
                    assert r.label_index == want[r.window_index]
            host.send(Ping(b"sync"))  # answered after the stale frame was handled
            host.recv(1, types={MsgType.PONG})
            st = dev.stats()
            assert st["gap_samples"] == 1024 and st["stale"] == 1
    finally:
        host.close()


def test_push_mode_results_unasked(link):
    pcm = test_audio(2.0, seed=4)
    chunks = [pcm[i:i + 400] for i in range(0, pcm.size, 400)]
    host = Host(link.port_a)
    try:
        with running_device(link.port_b, audio_source=iter(chunks), push_on_boot=True):
            want = expected_labels(pcm)
            got = host.recv(len(want), types={MsgType.RESULT})
            assert [(r.window_index, r.label_index) for r in got] == want
            assert all(r.flags & ResultFlags.PUSH for r in got)
    finally:
        host.close()


def test_result_message_from_window_result():
    e = EnergyEngine()
    (r, *_) = e.push_audio(np.zeros(16 * 256, np.int16))
    m = result_to_message(r, session=5)
    assert m.flags & ResultFlags.SILENCE and m.session == 5 and len(m.scores) == 4
    assert Result.decode_payload(m.encode_payload()) == m


def test_device_importable_without_pyserial():
    import subprocess
    import sys

    code = ("import sys; sys.modules['serial'] = None; sys.modules['cobs'] = None\n"
            "import edge_runtime.serial_device as d, edge_runtime.protocol as p\n"
            "assert p.COBS_BACKEND == 'python'\n"
            "f = p.encode_message(p.Audio(0, __import__('numpy').zeros(300, 'int16')), 1); assert p.FrameDecoder().feed(f)[0].msg.pcm.size == 300\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(
        __import__("pathlib").Path(__file__).resolve().parents[1]))
    assert out.stdout.strip() == "ok", out.stderr


def test_serial_device_accepts_plain_file_like_transport():
    """Anything with read/write works (here: a pyserial port on the link's other side)."""
    with PtyLink() as lk:
        dev_port = serial.Serial(lk.port_b, timeout=0.02)
        host = Host(lk.port_a)
        try:
            dev = SerialDevice(dev_port, EnergyEngine())
            host.send(Ping(b"p"))
            t_end = time.monotonic() + 2
            while time.monotonic() < t_end and not dev.poll():
                pass
            msgs = host.recv(2)
            assert isinstance(msgs[0], Info) and msgs[1] == Pong(b"p")
        finally:
            host.close()
            dev_port.close()


def test_result_history_keeps_the_last_windows_in_fixed_memory():
    """RESEND's history: the last ``size`` windows by index, decoded back to the same RESULT; older
    ones and ones never sent are None; its memory is allocated once."""
    from edge_runtime.protocol import Result
    from edge_runtime.serial_device import ResultHistory

    h = ResultHistory(8)
    buffers = (h._keys.ctypes.data, h._data.ctypes.data)
    sent = [Result(k, 3, k % 8, 0x04 * (k % 2), 1000 * k, 1000 * k + 1008, 77 + k,
                   tuple(int(v) for v in (np.arange(8) * (k + 1)) % 256 - 128)) for k in range(40)]
    for m in sent:
        h.put(m)
    assert [h.get(k) for k in range(32, 40)] == sent[32:]
    assert all(h.get(k) is None for k in range(32)) and h.get(40) is None
    assert (h._keys.ctypes.data, h._data.ctypes.data) == buffers
    h.clear()
    assert h.get(39) is None
    assert not ResultHistory(0) and ResultHistory(0).get(3) is None
