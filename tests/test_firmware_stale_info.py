"""A link recovery whose INFO predates the host's START must not restart the session (real firmware).

The host's recovery worker (``DeviceClient._recover``) re-HELLOs and compares the device's INFO mode
with its own: a device that answers IDLE while the host streams has lost the session, and the host
STARTs it again at the current offset. But an INFO the device wrote *before* it processed the host's
START (a recovery HELLO queued ahead of it on a slow link, e.g. QEMU's UART on a loaded machine) says
IDLE for a session the device is running: restarting it then resets the device's window history
mid-clip, and the windows after the restart are classified from other frames than the host's
(``ser-edge validate`` saw 2 of 89 windows with different int8 scores, same labels).
"""
from __future__ import annotations

import threading
import time

import numpy as np

from tests.conftest import require_module, require_tool


def test_recovery_info_older_than_start_keeps_the_session():
    require_module("serial")
    require_module("tflite_micro")
    require_tool("qemu-system-arm")
    require_tool("arm-none-eabi-gcc")
    from edge_runtime.classifier import StreamingClassifier
    from edge_runtime.protocol import Mode
    from edge_runtime.test_signals import speech_with_pauses
    from firmware_bridge.host_commands import _Sender
    from firmware_bridge.image import build_image
    from firmware_bridge.qemu import QemuDevice
    from firmware_bridge.serial_host import DeviceClient, HostFeatures

    clf = StreamingClassifier.from_model(None, backend="tflm")
    pcm = speech_with_pauses(2.5, seed=3)
    ref, ref_utts, _ = clf.classify_clip(pcm)
    with QemuDevice(build_image().elf) as q:
        dev = DeviceClient(q.port, 921600, timeout=30.0, liveness_s=60.0).open()
        try:
            feats = HostFeatures(dev.info, None)
            q.monitor("stop")  # the guest reads nothing: what the host sends queues up in order
            dev._recover_needed.set()  # a recovery (liveness, a stale NO_SESSION error...) now: HELLO
            deadline = time.monotonic() + 10
            while dev.counters()["recoveries"] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)  # the HELLO is on the wire, ahead of the START below
            started = threading.Thread(target=dev.start, args=(Mode.FEATURES,))
            started.start()
            time.sleep(0.3)
            q.monitor("cont")  # device: HELLO -> INFO (idle), then START -> ACK
            started.join(30)
            assert dev.mode == Mode.FEATURES
            time.sleep(0.5)  # let the recovery compare the (older) INFO with the host's state
            _Sender(dev, Mode.FEATURES, feats, dev.info.frame_hop_samples, False).send(pcm)
            dev.stop()
            got = {r.window_index: r for r in dev.results(timeout=30.0, count=len(ref) + len(ref_utts) + 1)
                   if r.record == "window"}
            c = dev.counters()
        finally:
            dev.close()
    assert c["recoveries"] >= 1
    assert c["session_restarts"] == 0, "the session was restarted on an INFO older than its START"
    assert sorted(got) == [w.window_index for w in ref]
    for w in ref:
        assert list(got[w.window_index].msg.scores) == [int(v) for v in w.scores_int8], w.window_index


def test_no_session_answering_a_frame_from_before_start_keeps_the_session():
    """The device answers NO_SESSION to an input frame of the previous session that reaches it after
    STOP (QEMU's UART queues them: SYNCs the host sent while waiting for the STOP's ACK did, 12 per
    8 clips of ``validate``). Arriving after the host's next START, that error must not be taken for
    the loss of the new session (a recovery: HELLO, and a restart if its INFO looked idle)."""
    require_module("serial")
    require_tool("qemu-system-arm")
    require_tool("arm-none-eabi-gcc")
    from edge_runtime.protocol import Features, Mode
    from firmware_bridge.image import build_image
    from firmware_bridge.qemu import QemuDevice
    from firmware_bridge.serial_host import DeviceClient

    with QemuDevice(build_image().elf) as q:
        dev = DeviceClient(q.port, 921600, timeout=30.0, liveness_s=60.0).open()
        try:
            n_features = dev.info.n_features
            q.monitor("stop")  # the guest reads nothing: what the host sends queues up in order
            # a late SYNC of an earlier session, then the next START, in this order on the wire
            late = dev.send(Features(0, np.zeros((0, n_features), np.int8)))
            started = threading.Thread(target=dev.start, args=(Mode.FEATURES,))
            started.start()
            time.sleep(0.3)
            q.monitor("cont")  # device: the SYNC -> ERROR NO_SESSION, then START -> ACK
            started.join(30)
            assert dev.mode == Mode.FEATURES
            time.sleep(1.0)  # a recovery would HELLO now
            c = dev.counters()
            errors = [(e.code, e.ref_seq) for e in dev.errors]
        finally:
            dev.close()
    assert errors == [(3, late)]  # NO_SESSION, answering the late frame
    assert c["recoveries"] == 0 and c["session_restarts"] == 0, c
    assert c["stale_errors"] == 1
