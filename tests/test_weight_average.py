"""Weight averaging of the float phase (TrainConfig.weight_ema, model_build.weight_average): the decay
ramp, the callback's average against its numpy reference, and what train() returns with it."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import require_module

from model_build.weight_average import check_decay, ema_decay_at, ema_update


def test_decay_ramps_up_then_caps():
    assert ema_decay_at(1, 0.999) == pytest.approx(2 / 11)
    assert ema_decay_at(90, 0.999) == pytest.approx(91 / 100)
    assert ema_decay_at(10**6, 0.999) == 0.999
    d = [ema_decay_at(n, 0.99) for n in range(1, 3000)]
    assert np.all(np.diff(d) >= 0) and max(d) == 0.99
    with pytest.raises(ValueError, match="step 0"):
        ema_decay_at(0, 0.999)


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), 2.0])
def test_decay_option_is_checked(bad):
    with pytest.raises(ValueError, match="weight_ema"):
        check_decay(bad)
    check_decay(0.0)
    check_decay(0.999)


def _tiny_crnn(seed: int = 0):
    require_module("tf_keras")
    import tf_keras

    from model_build.models import ModelConfig, build_model

    tf_keras.utils.set_random_seed(seed)
    return build_model(ModelConfig(arch="crnn", conv1=4, conv2=4, lstm=4, dropout=0.0), 12, 5, 3)


def test_callback_average_equals_the_numpy_reference():
    """Every weight (kernels, biases and the batch-norm moving statistics) follows shadow = d*shadow +
    (1-d)*weights with the ramped decay, step after step, starting from the weights it was built on."""
    from model_build.weight_average import weight_ema_callback

    model = _tiny_crnn()
    assert any("moving_mean" in w.name for w in model.weights)
    cb = weight_ema_callback(model, 0.95)
    ref = model.get_weights()
    np.testing.assert_array_equal(np.concatenate([a.ravel() for a in cb.averaged()]),
                                  np.concatenate([a.ravel() for a in ref]))
    rng = np.random.default_rng(1)
    for step in range(1, 41):
        new = [w + rng.standard_normal(w.shape).astype(w.dtype) for w in model.get_weights()]
        model.set_weights(new)
        cb.on_train_batch_end(step - 1)
        ref = ema_update(ref, new, step, 0.95)
    assert cb.steps == 40
    for got, want in zip(cb.averaged(), ref):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # 40 steps of unit-variance moves: the live weights wander, the average stays much nearer its start
    live = np.concatenate([a.ravel() for a in model.get_weights()])
    avg = np.concatenate([a.ravel() for a in cb.averaged()])
    assert np.abs(live - avg).mean() > 1.0
    with pytest.raises(ValueError, match="off"):
        weight_ema_callback(model, 0.0)


def _data(n=48, T=12, F=5, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.standard_normal((n, T, F)).astype(np.float32) + y[:, None, None].astype(np.float32)
    return X, y


def test_train_returns_the_averaged_weights_and_leaves_the_iterates_alone():
    """Averaging does not change the training trajectory (a decay near 0 gives the plain run's weights
    bit for bit); with a real decay the returned model holds the average, not the last iterate, and the
    validation UAR that early stopping read is the returned model's."""
    require_module("tf_keras")
    from model_build.models import ModelConfig
    from model_build.train import TrainConfig, _uar, train
    from model_build.windows import aggregate

    X, y = _data()
    mcfg = ModelConfig(arch="crnn", conv1=4, conv2=4, lstm=4, dropout=0.2)
    base = TrainConfig(epochs=3, batch_size=8, verbose=False, class_weight=False)
    plain = train(X, y, 3, mcfg, base)
    w_plain = plain.model.get_weights()
    near0 = train(X, y, 3, mcfg, TrainConfig(**{**base.to_dict(), "weight_ema": 1e-9}))
    for a, b in zip(near0.model.get_weights(), w_plain):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    avg = train(X, y, 3, mcfg, TrainConfig(**{**base.to_dict(), "weight_ema": 0.9}))
    diff = max(float(np.abs(a - b).max()) for a, b in zip(avg.model.get_weights(), w_plain))
    assert diff > 1e-3

    Xv, yv = _data(n=24, seed=1)
    ci = np.arange(len(yv))
    res = train(X, y, 3, mcfg, TrainConfig(**{**base.to_dict(), "weight_ema": 0.9, "epochs": 4, "patience": 4}),
                val=(Xv, ci, yv))
    pv = res.model.predict(Xv, verbose=0)
    got = _uar(yv, aggregate(pv, ci, len(yv)).argmax(1), 3)
    assert got == pytest.approx(res.history["val_uar"][res.best_epoch])
