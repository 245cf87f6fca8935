"""On-the-fly training augmentation (SpecAugment masks, mixup) and the shipped pretrained model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_module, require_tool  # noqa: F401

from model_build.train import spec_augment

MODELS = Path(__file__).resolve().parents[1] / "edge_runtime" / "models"


def test_spec_augment_masks_stripes_with_fill():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 50, 20)).astype(np.float32)
    fill = np.full(20, 7.0, np.float32)
    Y = spec_augment(X, fill, np.random.default_rng(1), time_masks=1, time_width=10, freq_masks=0, freq_width=0)
    assert Y.shape == X.shape and not np.shares_memory(X, Y)
    masked = np.all(Y == 7.0, axis=2)  # time masks cover every feature of a frame
    assert masked.any()
    for w in range(len(Y)):  # one contiguous stripe of at most 10 frames, the rest untouched
        t = np.flatnonzero(masked[w])
        if len(t):
            assert t[-1] - t[0] + 1 == len(t) <= 10
        np.testing.assert_array_equal(Y[w][~masked[w]], X[w][~masked[w]])
    Z = spec_augment(X, fill, np.random.default_rng(1), time_masks=0, time_width=0, freq_masks=2, freq_width=4)
    cols = np.all(Z == 7.0, axis=1)  # feature masks cover every frame of a band
    assert cols.any() and cols.sum(1).max() <= 8


def test_train_with_masks_and_mixup_learns_separable_classes():
    require_module("tf_keras")
    from model_build.models import ModelConfig
    from model_build.train import TrainConfig, train

    rng = np.random.default_rng(0)
    n, T, F = 96, 20, 8
    y = np.arange(n) % 2
    X = rng.standard_normal((n, T, F)).astype(np.float32) + (2.0 * y - 1)[:, None, None]
    cfg = TrainConfig(epochs=4, batch_size=16, lr=5e-3, time_masks=1, time_mask_frames=4, freq_masks=1,
                      freq_mask_bins=2, mixup=0.3, verbose=False)
    res = train(X, y, 2, ModelConfig(arch="mlp", dense=8, dropout=0.0), cfg)
    acc = float(np.mean(res.model.predict(X, verbose=0).argmax(1) == y))
    assert acc > 0.9
    assert len(res.history["loss"]) == 4


def test_shipped_model_loads_and_matches_sidecar():
    from edge_runtime.classifier import StreamingClassifier
    from edge_runtime.frontend import FrontendConfig

    data = (MODELS / "default.tflite").read_bytes()
    assert len(data) <= 64 * 1024
    side = json.loads((MODELS / "default.json").read_text())
    assert "NON-COMMERCIAL" in side["licence"]
    assert side["frontend_hash"] == FrontendConfig(**{k: v for k, v in side["frontend"].items()}).hash
    clf = StreamingClassifier.from_model()
    assert clf.info()["labels"] == side["labels"]
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(16000 * 3) * 3000).astype(np.int16)
    results = clf.classify(pcm)
    assert results and all(r.label in side["labels"] + ["silence", "no_speech", "uncertain"] for r in results)
    total = sum(p.stat().st_size for p in MODELS.iterdir() if p.name.startswith("default"))
    assert total < 1_000_000
