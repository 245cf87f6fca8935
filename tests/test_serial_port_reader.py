"""A busy device loses no input to a line-rate burst, and a host write timeout is not a lost port
(real ptys paced at 921600 baud, pyserial on the host side)."""
from __future__ import annotations

import threading
import time

from tests.conftest import require_module

serial = require_module("serial")

from edge_runtime.port_reader import PortReader  # noqa: E402
from edge_runtime.protocol import (Audio, FrameDecoder, GetStats, Mode, ResultFlags, Sequencer, Start,  # noqa: E402
                                   Stats)
from edge_runtime.serial_device import TtyTransport  # noqa: E402
from firmware_bridge.ptylink import PtyLink  # noqa: E402
from firmware_bridge.serial_host import DeviceClient  # noqa: E402
from tests.test_serial_helpers import EnergyEngine, expected_labels, running_device, test_audio  # noqa: E402


def _wire_stats(host, tx: Sequencer) -> dict:
    """The device's STATS counters as a host gets them: GET_STATS over the link, the reply decoded
    by the protocol's own decoder (RESULTs still on their way are skipped)."""
    dec = FrameDecoder()
    for _ in range(3):  # a GET_STATS lost to an overrun is asked again
        seq, frame = tx.encode(GetStats())
        host.write(frame)
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:
            for _, msg in dec.feed(host.read(4096)):
                if isinstance(msg, Stats) and msg.ref_seq == seq:
                    return msg.counters
    raise AssertionError("no STATS reply")


def _burst_into_busy_device(rx_buffer: int, overrun: str = "drop") -> tuple[dict, dict, int, dict]:
    """A host sends 2 s of AUDIO at wire speed (2.8x real time) to a device whose engine takes
    0.2 s per window (a loaded CPU): (device stats, link A->B counters, frames sent, the STATS
    reply the host got afterwards)."""
    pcm = test_audio(2.0, seed=3)
    with PtyLink(baud=921600, overrun=overrun) as link, \
            running_device(link.port_b, EnergyEngine(delay_s=0.2), rx_buffer=rx_buffer) as dev:
        host = serial.Serial(link.port_a, 921600, timeout=0.02, write_timeout=5.0)
        tx = Sequencer()
        try:
            host.write(tx.encode(Start(Mode.AUDIO, 1, 0))[1])
            time.sleep(0.2)
            frames = 1
            for i in range(0, pcm.size, 512):
                host.write(tx.encode(Audio(i, pcm[i:i + 512]))[1])
                frames += 1
            # every window of the burst classified (15 windows x 0.2 s), or the input was lost
            t_end = time.monotonic() + 10
            while time.monotonic() < t_end and dev.stats()["rx_frames"] + dev.stats()["rx_seq_lost"] < frames:
                time.sleep(0.1)
            link.wait_idle()
            st = dev.stats()
            return st, dict(link.counters["a_to_b"]), frames, _wire_stats(host, tx)
        finally:
            host.close()


def test_reader_thread_absorbs_a_burst_the_tty_alone_overruns():
    # without the reader thread the ~12 KB a pty holds overflow while the loop classifies
    st0, link0, frames, wire0 = _burst_into_busy_device(rx_buffer=0)
    assert link0["overrun_dropped"] > 0 and st0["rx_frames"] < frames
    # a device without the thread still sends the two receive-buffer counters, as 0
    assert wire0["rx_buffer_full"] == wire0["rx_buffered_max"] == 0
    # with it (serve's default), every byte is taken off the port and every frame decoded
    st, link, frames, wire = _burst_into_busy_device(rx_buffer=256 * 1024)
    assert link["overrun_dropped"] == 0
    assert st["rx_frames"] == frames and st["rx_seq_lost"] == 0 and st["rx_cobs"] == st["rx_crc"] == 0
    assert 16 * 1024 < st["rx_buffered_max"] <= 256 * 1024  # it did hold a backlog, bounded
    assert st["gap_samples"] == 0
    # the host sees the same through STATS: the backlog's high-water mark, and a ring that never filled
    assert wire["rx_buffered_max"] == st["rx_buffered_max"] and wire["rx_buffer_full"] == 0


def test_a_ring_too_small_for_the_burst_fills_and_stats_says_so():
    """A 4 KiB ring (one read) fills again and again while the loop classifies; with flow control
    (the link holds the host back) nothing is lost, and STATS reports how often it filled."""
    st, link, frames, wire = _burst_into_busy_device(rx_buffer=4096, overrun="block")
    assert link["overrun_dropped"] == 0
    assert st["rx_frames"] == frames and st["rx_seq_lost"] == 0 and st["gap_samples"] == 0
    assert wire["rx_buffer_full"] >= 1 and wire["rx_buffer_full"] >= st["rx_buffer_full"]
    assert 0 < wire["rx_buffered_max"] <= 4096 and wire["rx_buffered_max"] == st["rx_buffered_max"]


def test_reader_stops_reading_when_full_and_hands_over_a_lost_port():
    """Bounded: a full buffer stops the reads (the port's own flow control takes over, here the
    link's blocking mode, so nothing is lost); a hang-up is raised by get() after the data."""
    with PtyLink(overrun="block", stable_paths=True) as link:
        tr = TtyTransport(link.port_b, 921600)
        host = serial.Serial(link.port_a, 921600, timeout=0.02, write_timeout=5.0)
        reader = PortReader(tr, read_size=1024, max_bytes=8192).start()
        try:
            payload = bytes(range(256)) * 160  # 40 KB
            th = threading.Thread(target=host.write, args=(payload,), daemon=True)
            th.start()
            time.sleep(0.5)
            assert reader.buffered <= 8192 and reader.counters["full"] >= 1
            got = reader.get(0.1, limit=100)
            assert len(got) == 100  # at most the limit, oldest first
            t_end = time.monotonic() + 5
            while len(got) < len(payload) and time.monotonic() < t_end:
                got += reader.get(0.1)
            assert got == payload  # nothing dropped, in order
            link.hangup("b")
            lost = None
            t_end = time.monotonic() + 3
            while lost is None and time.monotonic() < t_end:
                try:
                    reader.get(0.1)
                except OSError as exc:
                    lost = exc
            assert lost is not None and "port_b" in str(lost)
        finally:
            reader.stop()
            tr.close()
            host.close()


def test_host_write_timeout_resyncs_instead_of_reconnecting():
    """A device that stops reading for a while makes the host's writes time out: the client keeps
    its port (no reconnect, so nothing sent meanwhile is thrown away), starts the next frame with
    a delimiter (pyserial may time out after part or all of a frame went out), and audio the device
    missed is asked for again (RESEND), so every window arrives clean."""
    pcm = test_audio(1.0, seed=4)
    with PtyLink(baud=921600, overrun="block", tx_buffer=512) as link:
        # no reader thread and a slow engine: the device's tty fills and the host's writes block
        with running_device(link.port_b, EnergyEngine(delay_s=0.25), rx_buffer=0) as dev:
            client = DeviceClient(link.port_a, 921600, timeout=2.0, retries=5,
                                  serial_factory=lambda p, b: serial.Serial(p, b, timeout=0.02,
                                                                            write_timeout=0.1)).open()
            try:
                client.start(Mode.AUDIO)
                client.send_audio(pcm, chunk_samples=512)
                c = client.counters()
                assert c["tx_timeouts"] >= 1, c
                got = {}
                t_end = time.monotonic() + 20
                want = expected_labels(pcm)
                while time.monotonic() < t_end and len(got) < len(want):
                    for r in client.results(timeout=0.5, count=1):
                        got[r.msg.window_index] = r
                c = client.counters()
                assert c["reconnects"] == 0, c
                assert sorted((k, r.msg.label_index) for k, r in got.items()) == want
                assert not any(r.msg.flags & ResultFlags.GAP for r in got.values())
                assert client.ping() >= 0  # the link still works both ways
            finally:
                client.close()
            st = dev.stats()
        assert st["gap_samples"] == 0, st  # whatever a timed-out write lost was sent again


def test_stream_cli_prints_the_devices_receive_buffer_counters(tmp_path):
    """`ser-edge stream` (no --quiet) ends with one JSON line on stderr: the host's counters and the
    device's STATS, so a user sees how far the device's receive buffer filled during the file."""
    import json
    import subprocess
    import sys
    import wave
    from pathlib import Path

    pcm = test_audio(2.0, seed=6)
    wav = tmp_path / "clip.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.astype("<i2").tobytes())
    root = Path(__file__).resolve().parents[1]
    # a device a little slower than the wire (the file is sent at wire speed): a backlog builds up
    with PtyLink(baud=921600) as link, running_device(link.port_b, EnergyEngine(delay_s=0.05)) as dev:
        out = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "stream", "--port", link.port_a,
                              "--baud", "921600", "--tail", "0.5", str(wav)],
                             cwd=root, capture_output=True, text=True, timeout=60)
        st = dev.stats()
    assert out.returncode == 0, out.stderr
    (summary,) = [json.loads(x) for x in out.stderr.splitlines() if x.startswith('{"host"')]
    shown = summary["device"]
    assert shown["results"] >= len(expected_labels(pcm)) and shown["rx_crc"] == 0
    assert shown["rx_buffer_full"] == 0 and 1024 < shown["rx_buffered_max"] <= 256 * 1024
    assert shown["rx_buffered_max"] == st["rx_buffered_max"]  # what serve counted, end to end
