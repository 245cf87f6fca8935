"""The device side survives a vanishing port and a host that stops reading (real ptys, pyserial)."""
from __future__ import annotations

import os
import threading
import time

from tests.conftest import require_module

serial = require_module("serial")

from edge_runtime.protocol import (Audio, FrameDecoder, Info, Mode, Ping, Pong, Result,  # noqa: E402
                                   Sequencer, Start)
from edge_runtime.serial_device import PortLost, SerialDevice, TtyTransport, serve_port  # noqa: E402
from firmware_bridge.ptylink import PtyLink  # noqa: E402
from tests.test_serial_helpers import EnergyEngine, running_device, test_audio  # noqa: E402


def _recv(port, dec, want_type, timeout=3.0):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        for r in dec.feed(port.read(4096)):
            if isinstance(r.msg, want_type):
                return r.msg
    return None


def test_tty_transport_reports_a_hung_up_port():
    with PtyLink(stable_paths=True) as link:
        tr = TtyTransport(link.port_b, 921600, timeout=0.05)
        try:
            assert tr.read() == b""  # nothing yet: a timeout, not an error
            link.hangup("b")
            t_end = time.monotonic() + 2
            lost = None
            while time.monotonic() < t_end and lost is None:
                try:
                    tr.read()
                except PortLost as exc:
                    lost = exc
            assert lost is not None and "port_b" in str(lost)
            assert not os.path.exists(link.port_b)  # the device node is gone until replugged
        finally:
            tr.close()


def test_serve_port_reopens_after_replug_without_spinning():
    """Unplugged: serve_port sleeps between reopen attempts (CPU far below 5 %); replugged: a new
    boot INFO arrives and the device answers again."""
    with PtyLink(stable_paths=True) as link:
        stop = threading.Event()
        th = threading.Thread(target=serve_port, args=(link.port_b, 921600, EnergyEngine()),
                              kwargs={"stop": stop, "log": lambda s: None}, daemon=True)
        host = serial.Serial(link.port_a, 921600, timeout=0.02)
        dec = FrameDecoder()
        try:
            th.start()
            boot = _recv(host, dec, Info)
            assert boot is not None and boot.boot
            link.hangup("b")
            time.sleep(0.3)  # let serve notice
            c0, t0 = time.process_time(), time.monotonic()
            time.sleep(2.0)
            cpu = (time.process_time() - c0) / (time.monotonic() - t0)
            assert cpu < 0.05, f"{cpu:.1%} CPU while unplugged"
            t_plug = time.monotonic()
            link.replug("b")
            boot2 = _recv(host, dec, Info, timeout=3.0)
            assert boot2 is not None and boot2.boot
            assert time.monotonic() - t_plug < 2.0
            tx = Sequencer()
            host.write(tx.encode(Ping(b"again"))[1])
            assert _recv(host, dec, Pong) == Pong(b"again")
        finally:
            stop.set()
            th.join(timeout=5)
            host.close()
        assert not th.is_alive()


def test_stalled_host_does_not_block_the_device():
    """The host keeps sending AUDIO but never reads: the device's writes time out, its TX queue drops
    the oldest RESULTs, and it keeps reading input; when the host reads again it answers."""
    pcm = test_audio(20.0, seed=5)
    eng = EnergyEngine(window_frames=4, hop_frames=1)  # a RESULT every 256 samples: floods the host
    with PtyLink(overrun="block", tx_buffer=512) as link, \
            running_device(link.port_b, eng, write_timeout=0.1, tx_queue=8) as dev:
        host = serial.Serial(link.port_a, 921600, timeout=0.02, write_timeout=2.0)
        tx = Sequencer()
        try:
            host.write(tx.encode(Start(Mode.AUDIO, 1, 0))[1])
            t0 = time.monotonic()
            for i in range(0, pcm.size, 512):  # ~1250 RESULTs back, none read
                host.write(tx.encode(Audio(i, pcm[i:i + 512]))[1])
            send_s = time.monotonic() - t0
            time.sleep(0.5)
            st = dev.stats()
            assert st["rx_frames"] == 1 + pcm.size // 512 + (pcm.size % 512 > 0)  # every input read
            assert st["tx_dropped_results"] > 0  # the writer fell behind; input was still read
            assert send_s < 15
            host.reset_input_buffer()
            dec = FrameDecoder()
            deadline = time.monotonic() + 5
            pong = None
            while pong is None and time.monotonic() < deadline:
                host.write(tx.encode(Ping(b"alive"))[1])
                t1 = time.monotonic() + 0.5
                while time.monotonic() < t1 and pong is None:
                    for r in dec.feed(host.read(4096)):
                        if isinstance(r.msg, Pong):
                            pong = r.msg
            assert pong == Pong(b"alive")
        finally:
            host.close()


def test_tx_queue_drops_oldest_results_first():
    class Sink:
        def __init__(self):
            self.block = threading.Event()
            self.frames = []

        def read(self, n):
            return b""

        def write(self, data):
            self.block.wait()
            self.frames.append(data)
            return len(data)

    sink = Sink()
    dev = SerialDevice(sink, EnergyEngine(), tx_queue=4, announce=False)
    try:
        dev._send(Pong(b"first"))  # taken by the writer (blocked in write)
        time.sleep(0.1)
        for k in range(6):
            dev._send(Result(k, 1, 0, 0, 0, 1, 0, (1, 2, 3, 4)))
        dev._send(Pong(b"last"))
        assert dev.counters["tx_dropped_results"] == 3 and dev.counters["tx_dropped"] == 0
        sink.block.set()
        assert dev.flush(2.0)
        dec = FrameDecoder()
        msgs = [m.msg for f in sink.frames for m in dec.feed(f)]
        assert msgs[0] == Pong(b"first") and msgs[-1] == Pong(b"last")
        assert [m.window_index for m in msgs if isinstance(m, Result)] == [3, 4, 5]
    finally:
        sink.block.set()
        dev.close()


def test_engine_memory_does_not_grow_with_session_length():
    """`serve` runs one session for days: the engine's session state (utterance + summary
    accumulators) must not keep every window (the 1 h soak measured ~25 kB/min when it did)."""
    import gc
    import tracemalloc

    from edge_runtime.classifier import StreamingClassifier
    from edge_runtime.test_signals import speech_with_pauses

    clf = StreamingClassifier.from_model(None)
    pcm = speech_with_pauses(60.0, seed=9)
    for i in range(0, pcm.size, 4000):
        clf.push_audio(pcm[i:i + 4000])
    clf.take_utterances()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(6):  # six more minutes of speech
        for i in range(0, pcm.size, 4000):
            clf.push_audio(pcm[i:i + 4000])
        clf.take_utterances()
    gc.collect()
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    assert grown < 50_000, f"{grown} bytes more after 6 more minutes"
    assert clf._all.n_speech > 100  # the summary still counts every speech window
