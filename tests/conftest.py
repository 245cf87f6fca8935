"""Shared fixtures.

``tiny_model_path``: a REAL tiny int8 .tflite (fused UNIDIRECTIONAL_SEQUENCE_LSTM, int8 in/out,
``ser_edge`` metadata embedded, ``.json`` sidecar next to it) trained for a few epochs on 60
generated clips (labels neutral/happy/sad/angry, default ``FrontendConfig()``, 1 s windows,
0.5 s hop). Built once per session in a few seconds. Its accuracy is meaningless.
"""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def tiny_model_build(tmp_path_factory):
    """The :class:`model_build.pipeline.TrainedModel` behind ``tiny_model_path`` (Keras model too)."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf_keras")
    from model_build.pipeline import build_tiny_model

    out = tmp_path_factory.mktemp("tiny_model") / "tiny.tflite"
    return build_tiny_model(out)


@pytest.fixture(scope="session")
def tiny_model_path(tiny_model_build):
    """Path (``pathlib.Path``) of the tiny int8 model with embedded metadata."""
    return tiny_model_build.path
