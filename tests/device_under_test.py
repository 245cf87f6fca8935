"""The two devices the protocol suite runs against (no tests here).

``python``: ``SerialDevice`` (what ``ser-edge serve`` runs) over a linked pty pair, with the shipped
model on the ``tflm`` backend. ``qemu``: the Cortex-M4 firmware image for the same model
(``firmware_bridge.image.build_image``) running in ``qemu-system-arm -M mps2-an386`` behind a pty.
Both announce ``max_payload`` 1024 (the firmware's limit), so every answer can be compared exactly.

The reference for RESULTs is ``StreamingClassifier`` on the ``tflm`` backend: the tflite-micro
interpreter, i.e. TFLite Micro's reference kernels.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np

from firmware_bridge.qemu import RawHost

DEVICES = ("python", "qemu")
MAX_PAYLOAD = 1024
QEMU_BYTES_PER_S = 18_000  # the emulated CMSDK UART (wall clock), for timeouts


class Host(RawHost):
    """Minimal raw host on a pyserial port (firmware_bridge.qemu.RawHost)."""


@dataclass
class Dut:
    kind: str
    port: str
    has_engine: bool
    resume: object = None  # qemu: lets the paused CPU run (after the host opened the port)

    def transfer_timeout(self, n_bytes: int) -> float:
        """Seconds to allow for moving ``n_bytes`` to the device and classifying them (QEMU's UART
        is slow, and a busy 2-core machine slows the emulation further; waits end at the answer)."""
        return 5.0 + (10.0 + 5.0 * n_bytes / QEMU_BYTES_PER_S if self.kind == "qemu" else 0.0)


def reference_classifier():
    from edge_runtime.classifier import StreamingClassifier

    return StreamingClassifier.from_model(None, backend="tflm")


@contextlib.contextmanager
def open_device(kind: str, require_tool, require_module):
    """Start one device; yields a :class:`Dut` whose boot INFO is still unread (the CPU of the QEMU
    device waits until ``dut.resume()``; the Python device boots when the host side is open)."""
    if kind == "python":
        from firmware_bridge.ptylink import PtyLink
        from tests.test_serial_helpers import running_device

        require_module("tflite_micro")
        with PtyLink(baud=921600) as link:
            holder: dict = {}

            def resume():
                holder["cm"] = running_device(link.port_b, reference_classifier(), max_payload=MAX_PAYLOAD)
                holder["cm"].__enter__()

            try:
                yield Dut("python", link.port_a, True, resume)
            finally:
                if "cm" in holder:
                    holder["cm"].__exit__(None, None, None)
        return
    require_tool("qemu-system-arm")
    require_tool("arm-none-eabi-gcc")
    from firmware_bridge.image import build_image
    from firmware_bridge.qemu import QemuDevice

    img = build_image()
    dev = QemuDevice(img.elf, start_paused=True)
    with dev:
        yield Dut("qemu", dev.port, img.engine != "none", dev.resume)


def reference_session(reference, chunks, session, features=False, gap=None):
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


def features_int8(pcm: np.ndarray) -> np.ndarray:
    """The int8 frames a FEATURES host sends for ``pcm`` (the model's front end + quantiser)."""
    from edge_runtime.frontend import compute_features

    clf = reference_classifier()
    return clf.model.quantize(compute_features(pcm, clf.cfg))
