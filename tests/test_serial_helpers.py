"""Helpers (no tests) for the serial tests: a small deterministic engine and link fixtures.

``EnergyEngine`` implements the serial Engine protocol without a model: every 256-sample frame gives
4 int8 features (log2 energy of its four 64-sample quarters); a window of ``W`` frames every ``H``
frames scores each feature by its mean, and the label is the top score. Labels therefore depend on
the audio content, so a corrupted or misaligned input gives a different, detectable label.
"""
from __future__ import annotations

import contextlib
import threading
import time

import numpy as np

from edge_runtime.results import WindowResult

SR, FRAME, NF = 16000, 256, 4
LABELS = ["q0", "q1", "q2", "q3"]


class EnergyEngine:
    def __init__(self, window_frames: int = 16, hop_frames: int = 8, delay_s: float = 0.0):
        self.W, self.H = window_frames, hop_frames
        self.delay_s = delay_s  # simulated inference time per window
        self.reset()

    def info(self) -> dict:
        return {"model_hash": "energy-test-0001", "frontend_hash": "energy-fe", "labels": LABELS,
                "sample_rate": SR, "window_frames": self.W, "hop_frames": self.H, "n_features": NF,
                "input_scale": 0.5, "input_zero_point": -128, "version": "test",
                "frame_hop_samples": FRAME, "frame_length_samples": FRAME, "output_scale": 1 / 256,
                "output_zero_point": -128}

    def reset(self) -> None:
        self._buf = np.zeros(0, np.int16)
        self._frames: list[np.ndarray] = []
        self.frames_total = 0
        self.windows = 0

    @staticmethod
    def features(pcm: np.ndarray) -> np.ndarray:
        """int8 features (n_frames, 4) of whole frames of ``pcm``."""
        n = pcm.size // FRAME
        x = pcm[:n * FRAME].astype(np.float64).reshape(n, NF, FRAME // NF)
        e = np.log2(1.0 + (x * x).mean(axis=2))  # 0 .. 30
        return np.clip(np.round(e * 8) - 128, -128, 127).astype(np.int8)

    def push_audio(self, pcm: np.ndarray) -> list[WindowResult]:
        buf = np.concatenate([self._buf, np.asarray(pcm, np.int16)])
        n = buf.size // FRAME
        self._buf = buf[n * FRAME:]
        return self.push_features(self.features(buf[:n * FRAME])) if n else []

    def push_features(self, frames_int8: np.ndarray) -> list[WindowResult]:
        f = np.asarray(frames_int8)
        if f.dtype != np.int8 or f.ndim != 2 or f.shape[1] != NF:
            raise ValueError(f"features must be int8 (n, {NF}), got {f.dtype} {f.shape}")
        out = []
        for row in f:
            self._frames.append(row)
            self.frames_total += 1
            end = self.windows * self.H + self.W
            if self.frames_total == end:
                out.append(self._classify(np.array(self._frames[-self.W:])))
            if len(self._frames) > self.W:
                del self._frames[0]
        return out

    def _classify(self, win: np.ndarray) -> WindowResult:
        t0 = time.perf_counter()
        if self.delay_s:
            time.sleep(self.delay_s)
        k = self.windows
        self.windows += 1
        scores = np.clip(np.round(win.astype(np.float64).mean(axis=0)), -128, 127).astype(np.int8)
        idx = int(np.argmax(scores))
        gated = bool(win.astype(np.int32).max() < -100)
        p = np.exp((scores - scores.max()) / 8.0)
        p /= p.sum()
        t0s = k * self.H * FRAME / SR
        return WindowResult(k, t0s, t0s + self.W * FRAME / SR, "silence" if gated else LABELS[idx],
                            idx, scores, p, (time.perf_counter() - t0) * 1000, gated=gated)


def expected_labels(pcm: np.ndarray, window_frames: int = 16, hop_frames: int = 8) -> list[tuple[int, int]]:
    """(window_index, label_index) the engine gives for ``pcm`` in one piece."""
    e = EnergyEngine(window_frames, hop_frames)
    return [(r.window_index, r.label_index) for r in e.push_audio(pcm)]


def test_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """Deterministic audio whose energy moves between frame quarters (labels vary window to window)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    x = rng.standard_normal(n) * 200
    # a loud burst in a random quarter of each frame; quarter changes every ~0.25 s
    q = np.repeat(rng.integers(0, 4, n // 4000 + 1), 4000)[:n]
    pos = (np.arange(n) % FRAME) // (FRAME // NF)
    x = x + np.where(pos == q, rng.standard_normal(n) * (3000 + 2000 * rng.random()), 0)
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


test_audio.__test__ = False  # not a pytest test


@contextlib.contextmanager
def running_device(port: str, engine=None, baud: int = 921600, write_timeout: float = 0.5, **kw):
    """Run a SerialDevice on ``port`` (termios transport) in a thread; yields the device. On exit
    the serve loop and the device's writer thread are stopped and the port closed."""
    from edge_runtime.serial_device import SerialDevice, TtyTransport

    tr = TtyTransport(port, baud, write_timeout=write_timeout)
    dev = SerialDevice(tr, engine or EnergyEngine(), **kw)
    stop = threading.Event()
    th = threading.Thread(target=dev.serve, args=(stop,), daemon=True)
    th.start()
    try:
        yield dev
    finally:
        stop.set()
        th.join(timeout=5)
        dev.close()
        tr.close()
        assert not th.is_alive(), "serve did not return within 5 s of stop"
