"""Training memory: an epoch's batches are gathered one batch at a time, and the feature
conversion makes no float64 copies, so a long training run does not grow by the training set per epoch."""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from bench.common import rss_mb
from tests.conftest import require_module


def test_to_real_equals_the_float64_route_on_all_of_int32():
    from model_build.features import to_real

    q = np.random.default_rng(0).integers(-2**31, 2**31, 2_000_000, dtype=np.int64).astype(np.int32)
    q[:4] = [0, 1, -2**31, 2**31 - 1]
    for frac in (0, 8, 16):
        want = (q.astype(np.float64) / float(1 << frac)).astype(np.float32)
        got = to_real(q, SimpleNamespace(frac_bits=frac))
        assert got.dtype == np.float32 and np.array_equal(got, want)


def test_epoch_batches_are_the_permuted_rows_in_order():
    require_module("tf_keras")
    from model_build.train import EpochBatches

    rng = np.random.default_rng(1)
    X, Y, sw = rng.standard_normal((103, 4, 3)), rng.standard_normal((103, 5)), rng.standard_normal(103)
    perm = rng.permutation(103)
    b = EpochBatches(X, perm, Y[perm], sw[perm], 10)
    assert len(b) == 11
    xs, ys, ws = zip(*(b[i] for i in range(len(b))))
    assert np.array_equal(np.concatenate(xs), X[perm]) and np.array_equal(np.concatenate(ys), Y[perm])
    assert np.array_equal(np.concatenate(ws), sw[perm]) and len(xs[-1]) == 3
    x, y = EpochBatches(X, None, Y, None, 50)[1]  # in order, no sample weights
    assert np.array_equal(x, X[50:100]) and np.array_equal(y, Y[50:100])


def test_training_does_not_grow_by_the_training_set_each_epoch():
    """Five epochs on 200 MB of windows: resident memory after epoch 5 within 80 MB of epoch 1
    (one `model.fit(X[perm])` per epoch, the old way, kept ~ the whole set per epoch: +0.9 GB per
    epoch at 44 k windows)."""
    require_module("tf_keras")
    from model_build.models import ModelConfig
    from model_build.train import TrainConfig, train

    rng = np.random.default_rng(2)
    X = rng.standard_normal((10_000, 125, 40), dtype=np.float32)  # 200 MB, the shipped window shape
    y = rng.integers(0, 4, len(X))
    rss = {}

    def log(msg: str) -> None:
        m = re.match(r"epoch\s+(\d+)/", msg)
        if m:
            rss[int(m.group(1))] = rss_mb()

    train(X, y, 4, ModelConfig(arch="mlp", dense=8, dropout=0.0),
          TrainConfig(epochs=5, batch_size=256, seed=0, class_weight=True), log=log)
    assert sorted(rss) == [1, 2, 3, 4, 5]
    assert rss[5] - rss[1] < 80, rss


def test_a_finished_training_keeps_no_training_windows():
    """tf_keras keeps every Sequence it has fitted alive (through tf.data's generator state); once
    ``train`` returns, none of them may still hold the training windows, or a cross-validation grows by
    one fold's windows per fold (measured: +0.6 to 1.1 GB per fold before this)."""
    require_module("tf_keras")
    import gc
    import weakref

    from model_build.models import ModelConfig
    from model_build.train import TrainConfig, epoch_batches_class, train

    rng = np.random.default_rng(3)
    X = rng.standard_normal((600, 125, 40), dtype=np.float32)
    y = rng.integers(0, 4, len(X))
    gone = weakref.ref(X)
    train(X, y, 4, ModelConfig(arch="mlp", dense=8, dropout=0.0), TrainConfig(epochs=2, batch_size=64, seed=0),
          log=lambda _: None)
    del X
    gc.collect()
    assert gone() is None, "the training windows outlived train()"
    kept = [o for o in gc.get_objects() if isinstance(o, epoch_batches_class())]
    assert all(o.X is None and o.Y is None and o.sw is None and o.take is None for o in kept)
