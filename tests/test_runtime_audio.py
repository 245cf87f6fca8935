"""Audio sources, resampling, bad input, the `run` CLI, and numpy-only importability."""
from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.audio_sources import (AudioInputError, FileSource, Resampler, StdinSource, read_audio,
                                        resample)
from tests.conftest import require_module
from tests.test_runtime_helpers import speechlike, write_tiny_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("rt_audio"))


def _wav(path, pcm, rate=16000, channels=1):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm, "<i2").tobytes())
    return path


def test_wav_read_and_mixdown(tmp_path):
    x = speechlike(0.5)
    pcm, rate = read_audio(_wav(tmp_path / "a.wav", x))
    assert rate == 16000 and np.array_equal(pcm, x)
    st = np.stack([x, x // 2 + 1], axis=1)
    pcm, _ = read_audio(_wav(tmp_path / "s.wav", st.ravel(), channels=2))
    assert np.array_equal(pcm, np.rint((x.astype(np.float64) + x // 2 + 1) / 2).astype(np.int16))  # mean, rounded once


def test_truncated_wav(tmp_path):
    p = _wav(tmp_path / "t.wav", speechlike(0.5))
    data = p.read_bytes()
    p.write_bytes(data[:-1001])  # chops mid-sample, data chunk shorter than its header
    with pytest.raises(AudioInputError, match=r"t\.wav: truncated WAV: header declares 8000 frames"):
        read_audio(p)
    p.write_bytes(data[:30])
    with pytest.raises(AudioInputError, match=r"t\.wav: "):
        read_audio(p)
    (tmp_path / "x.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(AudioInputError, match=r"x\.wav: not readable as audio"):
        read_audio(tmp_path / "x.wav")


def test_flac_via_soundfile(tmp_path):
    sf = require_module("soundfile")
    x = speechlike(0.3)
    sf.write(tmp_path / "a.flac", x, 16000, subtype="PCM_16")
    pcm, rate = read_audio(tmp_path / "a.flac")
    assert rate == 16000 and np.array_equal(pcm, x)
    (tmp_path / "bad.flac").write_bytes(b"fLaC" + bytes(20))
    with pytest.raises(AudioInputError, match=r"bad\.flac: not readable as audio"):
        read_audio(tmp_path / "bad.flac")


def test_stdin_odd_byte_count(caplog):
    x = speechlike(0.2)
    raw = x.tobytes() + b"\x7f"  # ends mid-sample

    class Trickle(io.RawIOBase):  # returns odd-sized reads, like a pipe
        def __init__(self, data):
            self.data, self.pos = data, 0

        def readable(self):
            return True

        def read1(self, n):
            n = min(n, 333, len(self.data) - self.pos)
            out = self.data[self.pos:self.pos + n]
            self.pos += n
            return out

    src = StdinSource(Trickle(raw), chunk_ms=10)
    with caplog.at_level(logging.WARNING, logger="ser_edge.audio"):
        got = np.concatenate(list(src))
    assert np.array_equal(got, x)
    assert src.dropped_bytes == 1 and "odd byte count" in caplog.text


@pytest.mark.parametrize("src_rate", [48000, 44100, 8000])
def test_resampler(src_rate):
    t = np.arange(int(0.5 * src_rate)) / src_rate
    x = np.round(8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    y = resample(x, src_rate, 16000)
    assert abs(y.size - 8000) <= 1
    # a 1 kHz tone stays a 1 kHz tone, in phase (delay compensated), at the same level
    ty = np.arange(y.size) / 16000
    ref = 8000 * np.sin(2 * np.pi * 1000 * ty)
    mid = slice(400, y.size - 400)
    assert np.sqrt(np.mean((y[mid] - ref[mid]) ** 2)) < 8000 * 0.01
    # streaming with random chunk sizes gives the same samples
    r = Resampler(src_rate, 16000)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, x.size), 40, replace=False))
    z = np.concatenate([r.process(c) for c in np.split(x, cuts)] + [r.flush()])
    assert abs(z.size - y.size) <= 1
    n = min(z.size, y.size)
    assert np.abs(z[:n].astype(int) - y[:n]).max() <= 1  # same soxr filter, chunking changes rounding only


def test_float_wav_scores_like_its_int16_copy(tmp_path, model_path):
    """A 32/64-bit float WAV reads as the same samples (and so the same scores) as its int16 copy."""
    sf = require_module("soundfile")
    from edge_runtime.classifier import StreamingClassifier

    x = speechlike(2.5)
    ref = _wav(tmp_path / "i16.wav", x)
    clf = StreamingClassifier.from_model(model_path)
    want = clf.classify(read_audio(ref)[0])
    for sub in ("FLOAT", "DOUBLE"):
        p = tmp_path / f"f_{sub}.wav"
        sf.write(p, x.astype(np.float64) / 32768.0, 16000, subtype=sub)
        pcm, rate = read_audio(p)
        assert rate == 16000 and np.array_equal(pcm, x), sub
        got = clf.classify(FileSource(p).pcm)
        assert [r.label for r in got] == [r.label for r in want]
        assert all(np.array_equal(a.scores_int8, b.scores_int8) for a, b in zip(got, want))


def test_resampling_without_soxr_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "soxr", None)
    with pytest.raises(AudioInputError, match=r"resampling 48000 Hz -> 16000 Hz needs soxr"):
        resample(np.zeros(480, np.int16), 48000, 16000)
    assert resample(np.ones(5, np.int16), 16000, 16000).tolist() == [1] * 5  # same rate: no soxr needed


def test_file_source_resamples(tmp_path):
    x = speechlike(1.0, sr=48000)
    src = FileSource(_wav(tmp_path / "a48.wav", x, rate=48000))
    assert src.source_rate == 48000 and src.sample_rate == 16000 and abs(src.pcm.size - 16000) <= 1


def _run_cli(*args, stdin=None, env=None):
    code = "import sys; from edge_runtime.run_cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "run", *args], input=stdin, capture_output=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=120)


def test_cli_file_and_stdin(model_path, tmp_path):
    x = speechlike(2.0)
    p = _wav(tmp_path / "c.wav", x)
    r = _run_cli(str(p), "--model", model_path, "--smooth", "2")
    assert r.returncode == 0, r.stderr.decode()
    lines = [json.loads(line) for line in r.stdout.decode().splitlines()]
    windows = [d for d in lines if d["record"] == "window"]
    assert len(windows) == (1 + (x.size - 512) // 256 - 16) // 4 + 1  # 2.0 s: no tail to flush
    for d in windows:
        assert {"time", "label", "index", "reason", "probs", "scores_int8", "latency_ms"} <= set(d)
        assert (d["index"] is None) == (d["reason"] is not None)
    assert lines[-1]["record"] == "summary" and {d["record"] for d in lines} <= {"window", "utterance", "summary"}
    assert set(lines[-1]["probs"]) == set(windows[0]["probs"])
    assert "windows" in r.stderr.decode()
    s = _run_cli("--stdin", "--model", model_path, "--smooth", "2", stdin=x.tobytes() + b"\x01")
    assert s.returncode == 0, s.stderr.decode()
    lines2 = [json.loads(line) for line in s.stdout.decode().splitlines()]
    assert [(d["label"], d.get("scores_int8"), d["record"]) for d in lines2] == \
        [(d["label"], d.get("scores_int8"), d["record"]) for d in lines]
    assert "odd byte count" in s.stderr.decode()


def test_cli_errors_name_the_file(model_path, tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\0" * 100)
    r = _run_cli(str(_wav(tmp_path / "c.wav", speechlike(0.5))), "--model", str(bad))
    assert r.returncode == 2 and "bad.tflite: not a TFLite model" in r.stderr.decode()
    t = tmp_path / "t.wav"
    t.write_bytes(_wav(tmp_path / "ok.wav", speechlike(0.5)).read_bytes()[:-999])
    r = _run_cli(str(t), "--model", model_path)
    assert r.returncode == 2 and "t.wav: truncated WAV" in r.stderr.decode()
    r = _run_cli("--model", model_path, "--info")
    assert r.returncode == 0 and json.loads(r.stdout)["window_frames"] == 16


BLOCKER = r"""
import sys, importlib.abc
BLOCKED = {"tensorflow", "tf_keras", "keras", "librosa", "serial", "soundfile", "sounddevice", "scipy"}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Blocker())
import numpy as np
import edge_runtime
import edge_runtime.model_metadata, edge_runtime.interpreter, edge_runtime.classifier
import edge_runtime.audio_sources, edge_runtime.run_cli, edge_runtime.results
from edge_runtime.classifier import StreamingClassifier
clf = StreamingClassifier.from_model(sys.argv[1], backend="litert")
x = (np.sin(np.arange(32000) * 0.05) * 8000).astype(np.int16)
print(len(clf.classify(x)), sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""


def test_imports_with_only_numpy(model_path):
    r = subprocess.run([sys.executable, "-c", BLOCKER, model_path], capture_output=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    n, mods = r.stdout.decode().split(" ", 1)
    assert int(n) > 0 and mods.strip() == "[]"
