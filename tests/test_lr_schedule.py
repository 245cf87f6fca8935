"""Float-phase learning-rate schedule (TrainConfig.lr_schedule): the pure schedule, the optimizer's
learning rate that implements it, and that training actually steps through it."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import require_module

from model_build.train import TrainConfig, check_lr_options, learning_rate_at


def test_constant_schedule_is_lr_everywhere():
    for step in (0, 1, 50, 100, 10_000):
        assert learning_rate_at(step, 100, 2e-3, "constant") == 2e-3


def test_cosine_schedule_start_middle_end_and_floor():
    lr, total, floor = 2e-3, 400, 0.05
    assert learning_rate_at(0, total, lr, "cosine", floor) == pytest.approx(lr)
    assert learning_rate_at(total // 2, total, lr, "cosine", floor) == pytest.approx(lr * (1 + floor) / 2)
    assert learning_rate_at(total // 4, total, lr, "cosine", floor) == pytest.approx(
        lr * (floor + (1 - floor) * (1 + math.cos(math.pi / 4)) / 2))
    assert learning_rate_at(total, total, lr, "cosine", floor) == pytest.approx(lr * floor)
    # past the last step (the last partial epoch, a longer run) it stays at the floor, never rises again
    assert learning_rate_at(total + 37, total, lr, "cosine", floor) == pytest.approx(lr * floor)
    v = [learning_rate_at(s, total, lr, "cosine", floor) for s in range(total + 1)]
    assert np.all(np.diff(v) < 0) and min(v) >= lr * floor * (1 - 1e-12)
    assert learning_rate_at(total, total, lr, "cosine", 0.0) == pytest.approx(0.0, abs=1e-15)


def test_schedule_options_are_checked():
    with pytest.raises(ValueError, match="step"):
        learning_rate_at(0, 100, 2e-3, "step")
    with pytest.raises(ValueError, match="lr_floor"):
        check_lr_options("cosine", 1.5)
    with pytest.raises(ValueError, match="lr_floor"):
        check_lr_options("cosine", float("nan"))
    with pytest.raises(ValueError, match="lr_schedule"):
        check_lr_options("linear", 0.05)


def test_optimizer_schedule_equals_the_pure_function():
    require_module("tf_keras")
    from model_build.train import optimizer_learning_rate

    cfg = TrainConfig(epochs=5, lr=2e-3, lr_schedule="cosine", lr_floor=0.05)
    sched = optimizer_learning_rate(cfg, steps_per_epoch=7)
    for step in (0, 1, 10, 17, 34, 35, 50):
        assert float(sched(step)) == pytest.approx(learning_rate_at(step, 35, 2e-3, "cosine", 0.05), rel=1e-5)
    assert optimizer_learning_rate(TrainConfig(lr=2e-3), 7) == 2e-3  # constant: a plain float, as before


def test_training_steps_through_the_cosine_schedule():
    """The per-epoch fit() calls share one optimizer step counter: the learning rate the optimizer applied
    at each epoch's last step is the schedule's at that step, the last one next to the floor."""
    require_module("tf_keras")
    from model_build.models import ModelConfig
    from model_build.train import train

    rng = np.random.default_rng(0)
    n, T, F = 40, 10, 6
    y = np.arange(n) % 2
    X = rng.standard_normal((n, T, F)).astype(np.float32) + (2.0 * y - 1)[:, None, None]
    spe = math.ceil(n / 16)  # 3 steps per epoch, the last one partial
    cfg = TrainConfig(epochs=4, batch_size=16, lr=4e-3, lr_schedule="cosine", lr_floor=0.1, verbose=False)
    res = train(X, y, 2, ModelConfig(arch="mlp", dense=8, dropout=0.0), cfg)
    want = [learning_rate_at((e + 1) * spe - 1, 4 * spe, 4e-3, "cosine", 0.1) for e in range(4)]
    np.testing.assert_allclose(res.history["lr"], want, rtol=1e-5)
    assert int(res.model.optimizer.iterations) == 4 * spe
    assert 4e-3 * 0.1 < res.history["lr"][-1] < 4e-3 * 0.12  # one step before the end: just above the floor

    flat = train(X, y, 2, ModelConfig(arch="mlp", dense=8, dropout=0.0),
                 TrainConfig(epochs=2, batch_size=16, lr=4e-3, verbose=False))
    np.testing.assert_allclose(flat.history["lr"], [4e-3, 4e-3], rtol=1e-6)
