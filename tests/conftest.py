"""Shared fixtures.

``tiny_model_path``: a REAL tiny int8 .tflite (fused UNIDIRECTIONAL_SEQUENCE_LSTM, int8 in/out,
``ser_edge`` metadata embedded, ``.json`` sidecar next to it) trained for a few epochs on 60
generated clips (labels neutral/happy/sad/angry, default ``FrontendConfig()``, 1 s windows,
0.5 s hop). Built once per session in a few seconds. Its accuracy is meaningless.
"""
from __future__ import annotations

import importlib
import os
import shutil

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# `make test` sets SER_EDGE_FULL_ENV=1: there every dependency must be present, so a missing one
# is a FAILURE, not a skip (a skip would hide a missing install step from CI). Outside it (a partial
# install, e.g. the edge extra only) the same tests skip with the reason.
FULL_ENV = os.environ.get("SER_EDGE_FULL_ENV") == "1"


def write_pcm_wav(path, pcm, rate: int = 16000):
    """Write int16 mono ``pcm`` as a 16-bit WAV at ``path`` (parents created); returns ``path``."""
    import wave
    from pathlib import Path

    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm).astype("<i2").tobytes())
    return path


def _missing(reason: str):
    if FULL_ENV:
        pytest.fail(f"missing in the full test environment: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str):
    """Import and return module ``name``; skip without it, or fail in the full environment."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        _missing(f"python module {name!r} not importable ({exc})")


def require_tool(name: str) -> str:
    """Path of executable ``name``; skip without it, or fail in the full environment."""
    path = shutil.which(name)
    if path is None:
        _missing(f"executable {name!r} not on PATH (see .ci/apt-packages.txt)")
    return path


@pytest.fixture(scope="session")
def tiny_model_build(tmp_path_factory):
    """The :class:`model_build.pipeline.TrainedModel` behind ``tiny_model_path`` (Keras model too)."""
    require_module("tensorflow")
    require_module("tf_keras")
    from model_build.pipeline import build_tiny_model

    out = tmp_path_factory.mktemp("tiny_model") / "tiny.tflite"
    return build_tiny_model(out)


@pytest.fixture(scope="session")
def tiny_model_path(tiny_model_build):
    """Path (``pathlib.Path``) of the tiny int8 model with embedded metadata."""
    return tiny_model_build.path
