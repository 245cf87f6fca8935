"""Exponential moving average of a model's weights during training (Polyak averaging).

With a constant Adam learning rate the iterates keep moving around a minimum; their running average
sits nearer its middle, which is what a small ensemble of one run's snapshots would give without any
extra model at inference. The average covers every weight of the model, the batch-norm moving
statistics included (they are averaged like the rest, as the parameters that use them are).

The decay at optimizer step ``n`` (counting from 1) is ``min(decay, (1 + n) / (10 + n))``: the first
steps' random weights fade out quickly instead of dominating the average for thousands of steps.
"""
from __future__ import annotations

import numpy as np


def ema_decay_at(step: int, decay: float) -> float:
    """Decay applied at optimizer step ``step`` (1 = the first update): the warm-up ramp capped at ``decay``."""
    if step < 1:
        raise ValueError(f"step {step}: the first update is step 1")
    return min(float(decay), (1.0 + step) / (10.0 + step))


def check_decay(decay: float) -> None:
    """Raise ``ValueError`` naming ``weight_ema`` unless it is 0 (off) or in (0, 1)."""
    if not (np.isfinite(decay) and 0.0 <= decay < 1.0):
        raise ValueError(f"weight_ema {decay!r}: must be 0 (off) or in (0, 1), e.g. 0.999")


def ema_update(shadow: list[np.ndarray], weights: list[np.ndarray], step: int, decay: float) -> list[np.ndarray]:
    """One averaging step in numpy (the reference the TF callback is tested against)."""
    d = ema_decay_at(step, decay)
    return [d * s + (1.0 - d) * w for s, w in zip(shadow, weights)]


def weight_ema_callback(model, decay: float):
    """A tf-keras callback that keeps the moving average of ``model.weights`` after every training batch.

    ``cb.averaged()`` returns the averaged weights in ``model.get_weights()`` order (the live weights until
    the first update); ``cb.steps`` counts the updates. The average lives in TF variables updated by one
    compiled function per batch, so it costs a few element-wise ops per step, not a numpy round trip.
    """
    import tensorflow as tf
    import tf_keras

    check_decay(decay)
    if decay == 0:
        raise ValueError("weight_ema 0 means off: do not build the callback")

    class WeightEMA(tf_keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self._vars = list(model.weights)
            self._shadow = [tf.Variable(v, trainable=False, name="ema_" + v.name.replace(":", "_"))
                            for v in self._vars]
            self._n = tf.Variable(0.0, dtype=tf.float32, trainable=False)
            self._decay = float(decay)

            @tf.function
            def _update():
                self._n.assign_add(1.0)
                d = tf.minimum(self._decay, (1.0 + self._n) / (10.0 + self._n))
                for s, v in zip(self._shadow, self._vars):
                    s.assign(d * s + (1.0 - d) * tf.cast(v, s.dtype))

            self._update = _update

        @property
        def steps(self) -> int:
            return int(self._n.numpy())

        def on_train_batch_end(self, batch, logs=None):
            self._update()

        def averaged(self) -> list[np.ndarray]:
            return [s.numpy() for s in self._shadow]

    return WeightEMA()
