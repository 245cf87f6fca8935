"""Helpers (no tests) for the runtime tests: a real tiny int8 LSTM model with ser_edge metadata.

Built once per session with real TF conversion (tf_keras, batch-1 LSTM, full-int8) and embedded
with TF's flatbuffer schema, independently of model_build, so the runtime's reader is checked
against TF's writer. Imported by tests/test_runtime_*.py.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os

import numpy as np
import pytest

WINDOW, HOP, N_LABELS = 16, 4, 4
LABELS = ["angry", "happy", "neutral", "sad"]

# Backends the tests run against in this process. tflite_runtime is not among them: it needs
# numpy<2 (the [all] environment has numpy 2) and aborts once tensorflow is loaded in the same
# process, so it is exercised in its own numpy<2 virtualenv by tests/test_runtime_device_install.py
# (which `make test` builds and which fails, never skips, in the full environment).
ALL_BACKENDS = ["litert", "tensorflow", "tflm"]
_MOD = {"litert": "ai_edge_litert", "tensorflow": "tensorflow", "tflm": "tflite_micro"}


def backend_params():
    """One pytest param per backend. A backend that is not installed skips outside the full
    environment and FAILS inside it (SER_EDGE_FULL_ENV=1), where every one must be present."""
    from tests.conftest import FULL_ENV

    out = []
    for b in ALL_BACKENDS:
        marks = []
        if importlib.util.find_spec(_MOD[b]) is None and not FULL_ENV:
            marks.append(pytest.mark.skip(reason=f"{b} not installed"))
        out.append(pytest.param(b, marks=marks, id=b))
    return out


@functools.lru_cache(maxsize=None)
def build_int8_lstm(window: int = WINDOW, n_features: int = 13, n_labels: int = N_LABELS,
                    units: int = 8, seed: int = 0) -> bytes:
    """Real full-int8 conversion of a batch-1 tf-keras LSTM classifier (random weights)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape=(window, n_features), batch_size=1)
    x = keras.layers.LSTM(units, recurrent_initializer=keras.initializers.RandomNormal(0, 1.0))(inp)
    out = keras.layers.Dense(n_labels, activation="softmax",
                             kernel_initializer=keras.initializers.RandomNormal(0, 0.7))(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(seed)

    def rep():
        for _ in range(32):
            # features in log2 units like the front end's (roughly -24 .. +14)
            yield [rng.normal(-4, 6, (1, window, n_features)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return bytes(conv.convert())


def io_quant(model_bytes: bytes) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model_bytes)
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    return {"input_scale": float(i["quantization"][0]), "input_zero_point": int(i["quantization"][1]),
            "output_scale": float(o["quantization"][0]), "output_zero_point": int(o["quantization"][1])}


def make_metadata(model_bytes: bytes, cfg=None, window: int = WINDOW, hop: int = HOP, **over) -> dict:
    from edge_runtime.frontend import FrontendConfig

    from edge_runtime.model_metadata import make_metadata as writer

    cfg = cfg or FrontendConfig()
    md = writer(labels=LABELS, frontend_cfg=cfg, window_frames=window, hop_frames=hop,
                quant=io_quant(model_bytes), model_name="test-lstm", arch="lstm", params=0,
                trained_on="random", feature_norm={})
    md["created"] = "2026-01-01"
    md.update(over)
    return md


def embed(model_bytes: bytes, metadata: dict | bytes | None, name: str = "ser_edge",
          external: bool = False) -> bytes:
    """Write ``metadata`` into the model with TF's schema (object API). ``external=True`` stores the
    payload after the flatbuffer via Buffer.offset/size (the >2 GB layout)."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as S

    payload = metadata if isinstance(metadata, bytes) else json.dumps(metadata).encode()
    model = S.ModelT.InitFromObj(S.Model.GetRootAsModel(model_bytes, 0))
    model.metadata = [m for m in (model.metadata or []) if m.name not in (name, name.encode())]
    if metadata is None:
        pass
    else:
        buf = S.BufferT()
        if external:
            buf.offset, buf.size = 1 << 40, len(payload)  # placeholder: same encoded size
        else:
            buf.data = list(payload)
        model.buffers.append(buf)
        entry = S.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)

    def pack() -> bytes:
        b = flatbuffers.Builder(len(model_bytes) + len(payload) + 1024)
        b.Finish(model.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    out = pack()
    if metadata is not None and external:
        start = (len(out) + 15) // 16 * 16
        buf.offset = start
        out = pack()
        assert len(out) <= start
        out = out + b"\0" * (start - len(out)) + payload
    return out


@functools.lru_cache(maxsize=None)
def tiny_model_bytes() -> bytes:
    raw = build_int8_lstm()
    return embed(raw, make_metadata(raw))


def write_tiny_model(directory) -> str:
    p = os.path.join(str(directory), "tiny_lstm.tflite")
    if not os.path.exists(p):
        with open(p, "wb") as f:
            f.write(tiny_model_bytes())
    return p


def speechlike(seconds: float, sr: int = 16000, seed: int = 0, level: float = 0.3, *, f0: float = 140.0,
               rate: float = 3.0, noise: float = 0.05) -> np.ndarray:
    """Deterministic voiced-speech-like int16 audio: harmonic bursts with a varying pitch + noise.

    ``f0``: mean pitch (Hz), ``rate``: bursts per second, ``noise``: white-noise amplitude against the
    harmonics (the defaults are the clip every test has always used)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    pitch = f0 + 40 * np.sin(2 * np.pi * 0.7 * t) + 20 * rng.standard_normal()
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = (0.55 + 0.45 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 6))) ** 2
    x = x * env + noise * rng.standard_normal(n)
    x = level * x / np.max(np.abs(x))
    return np.round(x * 32767).astype(np.int16)
