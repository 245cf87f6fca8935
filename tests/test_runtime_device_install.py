"""The device install, for real: a separate virtualenv with only numpy<2 + tflite-runtime + ser-edge
(no TensorFlow, no librosa, no pyserial) runs ``ser-edge run`` on a model built here and gives the
same int8 scores as LiteRT in the full environment.

``make test`` builds that virtualenv (``.venv-device``) and points ``SER_EDGE_DEVICE_PYTHON`` at it;
where tflite-runtime has no wheel (CPython > 3.11) the test skips with the reason.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

DEVICE_PY = os.environ.get("SER_EDGE_DEVICE_PYTHON", "")
ROOT = Path(__file__).resolve().parent.parent



@pytest.fixture(autouse=True)
def _device_venv():
    """`make test` builds .venv-device (tflite-runtime + numpy<2) and passes its python; in the full
    environment a missing device venv is a failure (it means the device install broke)."""
    if not (DEVICE_PY and Path(DEVICE_PY).exists()):
        from tests.conftest import _missing

        _missing(f"no device virtualenv (SER_EDGE_DEVICE_PYTHON={DEVICE_PY!r}); `make test` builds "
                 ".venv-device with tflite-runtime and numpy<2")


def _run(python: str, backend: str, model: Path, wav: Path) -> list[dict]:
    out = subprocess.run([python, "-m", "edge_runtime", "run", "--backend", backend, "--model", str(model), str(wav)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_device_venv_has_no_host_packages():
    code = ("import importlib.util as u, numpy, edge_runtime.classifier, edge_runtime.serial_device;"
            "print(numpy.__version__, [m for m in ('tensorflow','librosa','serial','tflite_runtime') if u.find_spec(m)])")
    out = subprocess.run([DEVICE_PY, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    numpy_version, found = out.stdout.split(" ", 1)
    assert numpy_version.startswith("1."), numpy_version  # tflite-runtime 2.14 needs numpy < 2
    assert found.strip() == "['tflite_runtime']"


def test_tflite_runtime_on_device_matches_litert_here(tiny_model_path, tmp_path):
    from edge_runtime.audio_io import write_wav

    from edge_runtime.test_signals import harmonic_vowel, white_noise

    wav = tmp_path / "speechlike.wav"
    write_wav(wav, np.concatenate([harmonic_vowel(2.0, seed=1), white_noise(1.0, -20), harmonic_vowel(2.0, f0=220, seed=2)]))
    device = [d for d in _run(DEVICE_PY, "tflite_runtime", tiny_model_path, wav) if d["record"] == "window"]
    host = [d for d in _run(sys.executable, "litert", tiny_model_path, wav) if d["record"] == "window"]
    assert len(device) == len(host) >= 4
    diff = max(np.max(np.abs(np.subtract(d["scores_int8"], h["scores_int8"]))) for d, h in zip(device, host))
    assert diff <= 1, diff
    assert [d["window"] for d in device] == [h["window"] for h in host]
