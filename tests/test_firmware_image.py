"""The Cortex-M4 firmware image: its build, its Cortex-M code paths, and what it computes on the
target (QEMU mps2-an386): the front end's features hash and the model's scores of the self-test
signal must equal numpy's / tflite-micro's exactly."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_module, require_tool

ROOT = Path(__file__).resolve().parents[1]
M4_PATHS = ("-DSER_FE_TWIDDLE_OUTER=1", "-DSER_FE_TWIDDLE_BITS=30", "-DSER_FE_MEL_BITS=15")


def _model_cfg():
    from edge_runtime.model_metadata import read_metadata

    return read_metadata(ROOT / "edge_runtime" / "models" / "default.tflite")


def test_cortex_m_code_paths_bit_exact_on_the_host():
    """The loop order and constant shifts the M4 build selects, compiled for the host."""
    from edge_runtime.frontend import FrontendConfig, compute_features
    from firmware_bridge.cbuild import CFrontend

    rng = np.random.default_rng(3)
    signals = [rng.integers(-32768, 32768, 9000).astype(np.int16),
               (rng.standard_normal(7000) * 30).astype(np.int16), np.zeros(3000, np.int16),
               np.where(np.arange(6000) % 40 < 20, 32767, -32768).astype(np.int16)]
    for cfg in (_model_cfg().frontend_config(), FrontendConfig(output="mfcc"),
                FrontendConfig.for_version(1, output="logmel"), FrontendConfig.for_version(1, output="mfcc")):
        fe = CFrontend(cfg, extra_flags=M4_PATHS)
        for x in signals:
            np.testing.assert_array_equal(fe.compute(x), compute_features(x, cfg))
        s = fe.stream()
        x = signals[0]
        parts = [s.push(p) for p in np.split(x, [5, 300, 301, 4000])]
        np.testing.assert_array_equal(np.concatenate(parts), compute_features(x, cfg))


def _selftest_signal(n_hops: int, hop: int) -> np.ndarray:
    """mps2/selftest.c's input: an LCG with a moving envelope, C integer arithmetic."""
    out = np.empty(n_hops * hop, np.int64)
    seed = 12345
    for h in range(n_hops):
        env = 256 + ((h * 37) & 1023) * 8
        for i in range(hop):
            seed = (seed * 1664525 + 1013904223) & 0xFFFFFFFF
            v = ((seed >> 16) - 32768) * env
            out[h * hop + i] = int(v / 32768)  # C division truncates toward zero (exact in float64)
    return out.astype(np.int16)


def _fnv(feats: np.ndarray) -> int:
    h = 2166136261
    for b in np.ascontiguousarray(feats, "<i4").tobytes():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def test_selftest_on_the_m4_is_bit_exact_and_within_budget():
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    require_module("tflite_micro")
    from edge_runtime.classifier import StreamingClassifier
    from edge_runtime.frontend import compute_features
    from firmware_bridge.image import build_image, run_selftest

    r = run_selftest()
    v = r["ticks"]
    clf = StreamingClassifier.from_model(None, backend="tflm")
    cfg = clf.cfg
    x = _selftest_signal(v["frames"] + cfg.frame_length // cfg.hop_length - 1, cfg.hop_length)
    feats = compute_features(x, cfg)[: v["frames"]]
    assert len(feats) == v["frames"] and v["fe_hash"] == _fnv(feats)  # every feature of every frame
    scores = clf.model.predict_window(clf.model.quantize(feats)[-clf.window_frames:])
    assert [v[f"score{i:02d}"] for i in range(len(scores))] == [int(s) & 0xFF for s in scores]
    assert r["instructions_per_tick"] == 40.0  # -icount shift=0 on the 25 MHz SysTick
    assert 10_000 < r["fe_instructions_per_frame"] < 200_000
    assert 1_000_000 < r["nn_instructions_per_inference"] < 20_000_000
    img = build_image(semihosting=False)
    assert img.engine == "ser_nn"
    assert img.flash_bytes <= 100 * 1024 and img.ram_bytes <= 40 * 1024  # issue #12 budgets


def test_firmware_build_cli(tmp_path):
    require_tool("arm-none-eabi-gcc")
    out = subprocess.run([sys.executable, "-m", "edge_runtime", "firmware", "build", "--out", str(tmp_path / "fw")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "fw" / "ser_fw.elf").is_file() and "engine ser_nn" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "edge_runtime", "firmware", "build", "--model",
                          str(tmp_path / "missing.tflite")], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "missing.tflite" in bad.stderr


def test_firmware_run_cli_serves_a_host(tmp_path):
    """`ser-edge firmware run`: QEMU behind a pty, announced on stdout; a host handshakes with it;
    Ctrl-C ends both."""
    import re
    import signal
    import time

    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    require_module("serial")
    from edge_runtime.protocol import Hello, Info
    from firmware_bridge.image import build_image
    from firmware_bridge.qemu import RawHost

    elf = build_image().elf
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "firmware", "run", "--elf", str(elf)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        m = re.search(r"serial port: (/dev/pts/\d+)", line)
        assert m, line + proc.stderr.read()
        with RawHost(m.group(1)) as host:
            t_end = time.monotonic() + 30  # QEMU boots slowly on a loaded machine
            info = []
            while not info and time.monotonic() < t_end:
                seq = host.send(Hello())
                info = [r for r in host.recv(2, timeout=1.0) if isinstance(r, Info) and r.reply_to == seq]
            assert info and info[0].labels == _model_cfg().labels
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(20)
    assert rc == 0
