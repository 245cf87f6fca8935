"""End to end with the real classifier (tiny int8 LSTM, real LiteRT) over pty links: `ser-edge serve`
in a subprocess, AUDIO at 921600 baud, host-computed FEATURES at 115200 baud, `validate` and
`stream` against the device. Device RESULTs must equal the host's own int8 predictions exactly."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import require_module  # noqa: E402

serial = require_module("serial")
require_module("tensorflow")

from edge_runtime.protocol import Mode  # noqa: E402
from firmware_bridge.ptylink import PtyLink  # noqa: E402
from firmware_bridge.serial_host import DeviceClient, HostFeatures  # noqa: E402
from tests.test_runtime_helpers import speechlike, write_tiny_model  # noqa: E402
from tests.test_serial_helpers import running_device  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def reference(model_path):
    from edge_runtime.classifier import StreamingClassifier

    return StreamingClassifier.from_model(model_path)


def _ref(clf, pcm):
    """The windows a streaming device sends before STOP (the RESULT's label_index is the model's
    top-1; flags say whether it is an emotion)."""
    clf.reset()
    out = [(r.window_index, r.model_index, tuple(int(v) for v in r.scores_int8)) for r in clf.push_audio(pcm)]
    clf.reset()
    return out


def _got(results):
    return [(r.window_index, r.msg.label_index, tuple(r.msg.scores)) for r in results]


def _write_wav(path: Path, pcm: np.ndarray, sr: int = 16000) -> None:
    import wave

    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.astype("<i2").tobytes())


def test_serve_subprocess_audio_mode_and_stream_cli(model_path, reference, tmp_path):
    pcm = speechlike(3.0, seed=1)
    with PtyLink(baud=921600) as link:
        proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "serve", "--port", link.port_b,
                                 "--baud", "921600", "--model", model_path], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            with DeviceClient(link.port_a, 921600, timeout=1.0, retries=20) as dev:
                assert dev.info.model_hash == reference.info()["model_hash"]
                assert dev.info.labels == tuple(reference.labels)
                assert dev.info.frame_hop_samples == 256
                dev.start(Mode.AUDIO)
                dev.send_audio(pcm)
                want = _ref(reference, pcm)
                got = [r for r in dev.results(timeout=3.0, count=len(want) + 20) if r.record == "window"]
                assert _got(got) == want
                assert all(r.reliable for r in got)
            wav = tmp_path / "clip.wav"
            _write_wav(wav, pcm)
            out = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "stream", "--port", link.port_a,
                                  "--baud", "921600", "--quiet", "--tail", "1.0", str(wav)], cwd=ROOT,
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
            # STOP flushes the tail: the device's windows are classify()'s, then the summary record
            full = reference.classify(pcm)
            wins = [d for d in lines if d["record"] == "window"]
            assert [(d["window"], tuple(d["scores_int8"])) for d in wins] == \
                [(r.window_index, tuple(int(v) for v in r.scores_int8)) for r in full], out.stderr
            assert [d["index"] for d in wins] == [r.label_index for r in full]
            _, _, summary = reference.classify_clip(pcm)
            assert lines[-1]["record"] == "summary" and lines[-1]["index"] == summary.label_index
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_stream_warns_and_exits_1_when_the_link_stops_delivering(tmp_path):
    """The cable is pulled for good mid-stream: `stream` must not end as if all went well."""
    import threading

    pcm = speechlike(4.0, seed=5)
    wav = tmp_path / "clip.wav"
    _write_wav(wav, pcm)
    with PtyLink(baud=921600) as link, running_device(link.port_b):
        threading.Timer(2.0, link.unplug).start()
        out = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "stream", "--port", link.port_a,
                              "--baud", "921600", "--quiet", "--realtime", "--tail", "0.5", str(wav)],
                             cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert out.returncode == 1, out.stderr
    assert "stream: WARNING: the link delivered" in out.stderr and "stopped delivering" in out.stderr


def test_features_mode_at_115200_matches_audio_mode(model_path, reference):
    from edge_runtime.classifier import StreamingClassifier

    pcm = speechlike(2.5, seed=2)
    with PtyLink(baud=115200) as link, \
            running_device(link.port_b, StreamingClassifier.from_model(model_path), baud=115200):
        with DeviceClient(link.port_a, 115200, timeout=1.0) as dev:
            hf = HostFeatures(dev.info, model_path)
            dev.start(Mode.FEATURES)
            for i in range(0, pcm.size, 256):  # one hop of audio at a time, as a live stream would
                fr = hf.push(pcm[i:i + 256])
                if len(fr):
                    dev.send_features(fr)
            want = _ref(reference, pcm)
            got = list(dev.results(timeout=3.0, count=len(want)))
            assert _got(got) == want
            # without the model file the host uses its default front end, which must match too
            assert HostFeatures(dev.info).cfg.hash == dev.info.frontend_hash


def test_validate_corpus_agrees(model_path, reference, tmp_path):
    from edge_runtime.classifier import StreamingClassifier
    from firmware_bridge.host_commands import validate_corpus

    for i, lab in enumerate(("angry", "sad")):
        _write_wav(tmp_path / "corpus" / lab / f"{i}.wav", speechlike(1.5, seed=10 + i))
    files = sorted((tmp_path / "corpus").rglob("*.wav"))
    with PtyLink(baud=921600) as link, \
            running_device(link.port_b, StreamingClassifier.from_model(model_path)):
        with DeviceClient(link.port_a, 921600, timeout=1.0) as dev:
            rep = validate_corpus(dev, reference, files, tmp_path / "corpus", mode=Mode.AUDIO)
    assert rep["files"] == 2 and rep["missing"] == 0
    assert rep["agreement"] == 1.0 and rep["scores_identical"] == 1.0
    assert rep["labelled_clips"] == 2 and rep["clip_accuracy"] is not None
    assert rep["label_latency_ms"]["p50"] > 0


def test_stream_115200_against_default_serve_without_model(tmp_path):
    """The README command: `ser-edge serve` (shipped model) and `ser-edge stream --baud 115200 file.wav`,
    neither given --model. The host takes the front end the device announces (FEATURES mode)."""
    from edge_runtime.classifier import StreamingClassifier

    shipped = StreamingClassifier.from_model()
    pcm = speechlike(3.0, seed=5)
    wav = tmp_path / "clip.wav"
    _write_wav(wav, pcm)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with PtyLink(baud=115200) as link:
        proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "serve", "--port", link.port_b,
                                 "--baud", "115200"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            out = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "stream", "--port", link.port_a,
                                  "--baud", "115200", "--quiet", "--tail", "1.0", str(wav)], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=90)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert out.returncode == 0, out.stderr
    assert "FEATURES" in out.stderr.upper()
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    wins = [d for d in lines if d["record"] == "window"]
    want = shipped.classify(pcm)  # FEATURES mode: no audio on the device, so no gate: compare scores
    assert [(d["window"], tuple(d["scores_int8"])) for d in wins] == \
        [(r.window_index, tuple(int(v) for v in r.scores_int8)) for r in want]
    assert lines[-1]["record"] == "summary" and lines[-1]["index"] is not None
