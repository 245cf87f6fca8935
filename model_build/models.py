"""Compact classifiers for fixed-size feature windows, built with tf-keras (Keras 2).

Why tf-keras and not Keras 3: only Keras 2 LSTMs with a *batch-1* input convert to one fused
``UNIDIRECTIONAL_SEQUENCE_LSTM`` op in full int8 (Keras 3 gives a WHILE loop, which the int8
calibrator crashes on; GRU never fuses). So we train a normal dynamic-batch model and copy its
weights into an identical batch-1 model for conversion (:func:`export_model`).

Feature normalisation: the device feeds *raw* front-end features (int16 / 2**frac_bits, quantised
by the model's input scale). Training uses a fixed (non-trainable) per-feature affine layer
``(x - mean) / std`` with the training set's global statistics; the export model folds that affine
into the first Conv1D / Dense / LSTM kernel and bias (exact in float because the first layer uses
'valid' padding / acts per frame), so the int8 graph starts directly with that layer.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

ARCHES = ("crnn", "lstm", "mlp")
# How the LSTM's time steps become one vector for the classifier (crnn and lstm archs):
#   last      - the final hidden state (the shipped recipe; Keras ``return_sequences=False``)
#   mean      - the mean of the hidden states over time (MEAN)
#   stats     - mean and standard deviation over time, concatenated (2 x lstm units); std as
#               sqrt(mean((h - mean)^2) + eps) (SUB, MUL, MEAN, ADD, RSQRT, MUL)
#   attention - a Dense(1) score per step, softmax over time, weighted sum of the steps
#               (FULLY_CONNECTED, SOFTMAX, MUL, SUM)
POOLINGS = ("last", "mean", "stats", "attention")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters (all archs share the fields they need)."""

    arch: str = "crnn"
    conv1: int = 32
    conv1_kernel: int = 5  # frames seen by the first convolution (wider = more context per step)
    conv2: int = 64
    lstm: int = 64
    dense: int = 64
    dropout: float = 0.3
    pooling: str = "last"  # one of POOLINGS: how the LSTM's time steps are reduced

    def to_dict(self) -> dict:
        return asdict(self)


def _tfk():
    import tf_keras

    return tf_keras


def _affine_layer():
    """A fixed per-feature affine ``x * scale + bias`` (the training-time normaliser)."""
    tfk = _tfk()
    import tensorflow as tf

    class FeatureAffine(tfk.layers.Layer):
        def __init__(self, scale, bias, **kw):
            super().__init__(**kw)
            self._scale0 = np.asarray(scale, np.float32)
            self._bias0 = np.asarray(bias, np.float32)

        def build(self, input_shape):
            self.scale = self.add_weight("scale", shape=self._scale0.shape, trainable=False,
                                         initializer=tfk.initializers.Constant(self._scale0))
            self.bias = self.add_weight("bias", shape=self._bias0.shape, trainable=False,
                                        initializer=tfk.initializers.Constant(self._bias0))

        def call(self, x):
            return x * tf.cast(self.scale, x.dtype) + tf.cast(self.bias, x.dtype)

    return FeatureAffine


def _pool_layers():
    """Time-axis reductions as small layers (not Lambdas: plain ops, so the int8 graph stays builtin)."""
    tfk = _tfk()
    import tensorflow as tf

    class TimeSum(tfk.layers.Layer):
        """``sum_t x[:, t, :]`` (the attention-weighted steps already carry weights summing to 1)."""

        def call(self, x):
            return tf.reduce_sum(x, axis=1)

    class TimeStd(tfk.layers.Layer):
        """Standard deviation over time per channel, ``sqrt(mean_t (x - mean_t x)^2 + eps)``.

        The explicit centred form (not ``E[x^2] - E[x]^2``) keeps every int8 intermediate
        non-negative and small; ``eps`` keeps the root's input away from 0, where its slope is
        infinite. The root is ``v * rsqrt(v)``: tflite-micro's SQRT kernel is float-only, its RSQRT
        takes int8."""

        def __init__(self, eps: float = 1e-3, **kw):
            super().__init__(**kw)
            self.eps = eps

        def call(self, x):
            d = x - tf.reduce_mean(x, axis=1, keepdims=True)
            v = tf.reduce_mean(d * d, axis=1) + self.eps
            return v * tf.math.rsqrt(v)

    return TimeSum, TimeStd


def _pool(x, cfg: ModelConfig, n_steps: int):
    """Reduce LSTM outputs ``(batch, steps, units)`` to ``(batch, units')`` as ``cfg.pooling`` says."""
    L = _tfk().layers
    TimeSum, TimeStd = _pool_layers()
    if cfg.pooling == "mean":
        return L.GlobalAveragePooling1D(name="pool_mean")(x)
    if cfg.pooling == "stats":
        mu = L.GlobalAveragePooling1D(name="pool_mean")(x)
        sd = TimeStd(name="pool_std")(x)
        return L.Concatenate(name="pool_stats")([mu, sd])
    # attention: one score per step, softmax over the steps, weighted sum
    s = L.Dense(1, name="att_score")(x)  # (batch, steps, 1)
    s = L.Reshape((n_steps,), name="att_flat")(s)
    w = L.Softmax(name="att_softmax")(s)
    w = L.Reshape((n_steps, 1), name="att_weights")(w)
    return TimeSum(name="att_sum")(L.Multiply(name="att_apply")([x, w]))


def build_model(cfg: ModelConfig, window_frames: int, n_features: int, n_classes: int,
                mean: np.ndarray | None = None, std: np.ndarray | None = None,
                batch_size: int | None = None, fold_norm: bool = False, with_softmax: bool = True):
    """Build a tf-keras model ``(batch, window_frames, n_features) -> (batch, n_classes)``.

    ``mean``/``std``: global per-feature statistics of the raw training features. With
    ``fold_norm=False`` they become a fixed affine layer; with ``fold_norm=True`` the model has no
    normaliser and :func:`export_model` folds it into the first layer's weights instead.
    ``batch_size=1`` is required for the fused int8 LSTM conversion.
    """
    tfk = _tfk()
    L = tfk.layers
    if cfg.arch not in ARCHES:
        raise ValueError(f"unknown arch {cfg.arch!r}; choose from {ARCHES}")
    if cfg.pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {cfg.pooling!r}; choose from {POOLINGS}")
    if cfg.pooling != "last" and cfg.arch == "mlp":
        raise ValueError("pooling applies to the LSTM archs (crnn, lstm); mlp always means over time")
    seq = cfg.pooling != "last"
    mean = np.zeros(n_features, np.float32) if mean is None else np.asarray(mean, np.float32)
    std = np.ones(n_features, np.float32) if std is None else np.asarray(std, np.float32)
    inp = L.Input(shape=(window_frames, n_features), batch_size=batch_size, name="features")
    x = inp
    if not fold_norm:
        x = _affine_layer()(1.0 / std, -mean / std, name="norm")(x)
    if cfg.arch == "crnn":
        x = L.Conv1D(cfg.conv1, cfg.conv1_kernel, strides=2, padding="valid", name="conv1")(x)
        x = L.BatchNormalization(name="bn1")(x)
        x = L.ReLU(name="relu1")(x)
        x = L.Conv1D(cfg.conv2, 3, padding="same", name="conv2")(x)
        x = L.BatchNormalization(name="bn2")(x)
        x = L.ReLU(name="relu2")(x)
        x = L.MaxPooling1D(2, name="pool")(x)
        x = L.Dropout(cfg.dropout / 2, name="drop1")(x)
        x = L.LSTM(cfg.lstm, return_sequences=seq, name="lstm")(x)
    elif cfg.arch == "lstm":
        x = L.LSTM(cfg.lstm, return_sequences=seq, name="lstm")(x)
    else:  # mlp: per-frame dense layers, then mean over time
        x = L.Dense(cfg.dense, activation="relu", name="fc1")(x)
        x = L.Dense(cfg.dense, activation="relu", name="fc2")(x)
        x = L.GlobalAveragePooling1D(name="gap")(x)
    if seq:
        x = _pool(x, cfg, int(x.shape[1]))
    x = L.Dropout(cfg.dropout, name="drop2")(x)
    x = L.Dense(n_classes, name="logits")(x)
    if with_softmax:
        x = L.Softmax(name="probs")(x)
    return tfk.Model(inp, x, name=f"ser_{cfg.arch}")


def count_params(model) -> int:
    """Number of trainable + non-trainable parameters, excluding the fixed normaliser."""
    return int(sum(np.prod(w.shape) for layer in model.layers if layer.name != "norm"
                   for w in layer.weights))


def _fold(weights: list[np.ndarray], layer_name: str, scale: np.ndarray, bias: np.ndarray):
    """Fold ``x' = x*scale + bias`` (per input feature) into a first layer's kernel and bias."""
    w = [np.array(a, np.float64) for a in weights]
    if layer_name == "conv1":  # kernel (k, F, C); valid padding -> exact
        k, b = w[0], w[1]
        w[1] = b + np.einsum("kfc,f->c", k, bias)
        w[0] = k * scale[None, :, None]
    elif layer_name == "lstm":  # kernel (F, 4H), recurrent (H, 4H), bias (4H)
        k = w[0]
        w[2] = w[2] + bias @ k
        w[0] = k * scale[:, None]
    elif layer_name == "fc1":  # kernel (F, H), bias (H)
        k = w[0]
        w[1] = w[1] + bias @ k
        w[0] = k * scale[:, None]
    else:
        raise ValueError(f"cannot fold normaliser into layer {layer_name!r}")
    return [a.astype(np.float32) for a in w]


def export_model(trained, cfg: ModelConfig, window_frames: int, n_features: int, n_classes: int,
                 with_softmax: bool = False):
    """An identical batch-1 model with the normaliser folded into the first layer (for TFLite).

    By default it outputs *logits* (no softmax): int8 logits keep far more resolution for the
    top-1 decision than int8 probabilities (which tie whenever two classes are within 1/256), and
    the host applies softmax after dequantising. Logits match ``trained`` to float32 rounding.
    """
    out = build_model(cfg, window_frames, n_features, n_classes, batch_size=1, fold_norm=True,
                      with_softmax=with_softmax)
    norm = trained.get_layer("norm")
    scale = np.asarray(norm.scale.numpy(), np.float64)
    bias = np.asarray(norm.bias.numpy(), np.float64)
    first = {"crnn": "conv1", "lstm": "lstm", "mlp": "fc1"}[cfg.arch]
    for layer in out.layers:
        if not layer.weights:
            continue
        w = trained.get_layer(layer.name).get_weights()
        if layer.name == first:
            w = _fold(w, first, scale, bias)
        layer.set_weights(w)
    return out
