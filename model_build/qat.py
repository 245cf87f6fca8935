"""Quantisation-aware fine-tuning (QAT) of a trained float CRNN for int8/float agreement.

After float training, :func:`qat_finetune` trains the same weights for a few more epochs through a
forward pass that rounds where the int8 converter (:func:`model_build.convert.convert_int8`) will
round, so the weights move to where the int8 model's rounding no longer flips a window's top-1.
Rounding is simulated with ``tf.quantization.fake_quant_*`` ops, whose gradient is the
straight-through estimator (identity inside the range, zero outside). Where, and how (what the
shipped graph does, read from its flatbuffer; ``bench/qat_diagnose.py`` measures what each costs):

* **input**: per-tensor asymmetric int8 over the calibration windows' range as the conversion takes
  it (:class:`model_build.convert.InputRange`: min/max, or percentiles with the windows clipped to
  them; the runtime's integer quantiser feeds exactly such codes, saturated);
* **conv1, conv2 kernels**: per-output-channel symmetric int8 (narrow range, scale ``max|w| / 127``)
  of the kernel the converter quantises: conv1's with the feature normaliser folded in (per *input*
  feature, so it changes which weights round where); batch normalisation's per-output-channel factor
  does not change a per-output-channel rounding, so it stays out;
* **relu1, relu2 outputs** (max pooling keeps their scale): per-tensor asymmetric int8 over their
  range on the calibration windows;
* **the fused LSTM**: each of the 8 gate matrices (input and recurrent kernel of the i, f, c, o
  gates) per-tensor symmetric int8, and the hidden state at *every* step to the converter's fixed
  int8 range [-1, 1] (scale 2/255, zero point -1): it is what the next step's recurrent matmul reads.
  The int16 cell state (step 2**-11) and gate intermediates are left in float (their rounding is 128x
  finer). The loop is unrolled over the window's steps (a plain Python loop over a static length);
* **logits** kernel: per-output-channel symmetric int8; its output per-tensor over its calibration range.

Batch normalisation runs in inference mode throughout (its statistics are frozen, as the converter
folds them). Activation ranges are re-measured on the calibration windows before every epoch, as the
converter would measure them on the weights of that moment. The model being tuned is the ordinary
float Keras model (shared variables): its export and conversion are unchanged, so the result is a
normal int8 model with one fused LSTM op.
"""
from __future__ import annotations

import sys
import time

import numpy as np

# TFLite's fixed int8 range of the fused LSTM's hidden state (output): scale 2/255, zero point -1
LSTM_H_MIN, LSTM_H_MAX = -127 * 2.0 / 255, 128 * 2.0 / 255


def check_options(epochs, lr, consistency: float = 0.0) -> None:
    """Raise ``ValueError`` naming the first bad QAT option (``TrainConfig.qat_epochs``, ``qat_lr``,
    ``qat_consistency``)."""
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"qat epochs must be a whole number >= 0, got {epochs!r}")
    if not (isinstance(lr, (int, float)) and np.isfinite(lr) and lr > 0):
        raise ValueError(f"qat learning rate must be > 0, got {lr!r}")
    if not (isinstance(consistency, (int, float)) and np.isfinite(consistency) and consistency >= 0):
        raise ValueError(f"qat consistency weight must be >= 0, got {consistency!r}")


def fake_quant(x, lo: float, hi: float):
    """Per-tensor asymmetric int8 rounding of ``x`` to the range [lo, hi] (nudged so 0 is a code, as
    TFLite's asymmetric quantisation), straight-through gradient inside the range."""
    import tensorflow as tf

    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    return tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=8, narrow_range=False)


def fake_quant_weights(w, per_channel: bool):
    """Symmetric int8 (codes -127..127, scale ``max|w| / 127``) of a weight tensor, per output channel
    (last axis) or per tensor, as the converter quantises weights; straight-through gradient."""
    import tensorflow as tf

    axes = list(range(len(w.shape) - 1)) if per_channel else None
    m = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(w), axis=axes), 1e-8))
    if per_channel:
        flat = tf.reshape(w, [-1, w.shape[-1]])
        q = tf.quantization.fake_quant_with_min_max_vars_per_channel(flat, -m, m, num_bits=8, narrow_range=True)
        return tf.reshape(q, tf.shape(w))
    return tf.quantization.fake_quant_with_min_max_vars(w, -m, m, num_bits=8, narrow_range=True)


def _check_supported(model) -> None:
    names = {layer.name for layer in model.layers}
    need = {"norm", "conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "pool", "lstm", "logits"}
    if not need <= names or getattr(model.get_layer("lstm"), "return_sequences", False):
        raise ValueError("QAT supports the crnn arch with pooling 'last' (the shipped recipe's model); "
                         f"this model has layers {sorted(names)}")


class QATForward:
    """The fake-quantised forward pass over a trained float crnn model's own variables."""

    def __init__(self, model, dropout: float, rounding: bool = True, input_range=None):
        from .convert import InputRange

        _check_supported(model)
        self.input_range = input_range or InputRange()  # the conversion's rule (one owner: convert.InputRange)
        self.rounding = bool(rounding)  # False: the same unrolled forward without any rounding (the control)
        self.model = model
        self.L = {n: model.get_layer(n) for n in ("norm", "conv1", "bn1", "conv2", "bn2", "pool", "lstm", "logits")}
        self.dropout = float(dropout)
        self.ranges: dict[str, tuple[float, float]] = {}

    def measure_ranges(self, calib: np.ndarray) -> dict[str, tuple[float, float]]:
        """The input range (:attr:`input_range`'s rule) and the min/max of every requantised activation over
        ``calib`` windows (float model), as the converter measures them: on the windows clipped to the
        input range when it is a percentile one (what the conversion feeds its calibrator)."""
        import tf_keras

        lo, hi = self.input_range.bounds(calib)
        calib = np.clip(np.asarray(calib, np.float32), np.float32(lo), np.float32(hi))
        m = tf_keras.Model(self.model.inputs, [self.model.get_layer(n).output for n in ("relu1", "relu2", "logits")])
        r1, r2, z = m.predict(np.asarray(calib, np.float32), batch_size=256, verbose=0)
        self.ranges = {"input": (lo, hi),
                       "relu1": (0.0, float(np.max(r1))), "relu2": (0.0, float(np.max(r2))),
                       # the Keras model ends in a softmax; its logits are the Dense layer's input to it
                       "logits": self._logit_range(calib)}
        del z
        return self.ranges

    def _logit_range(self, calib) -> tuple[float, float]:
        import tf_keras

        m = tf_keras.Model(self.model.inputs, self.model.get_layer("logits").output)
        z = m.predict(np.asarray(calib, np.float32), batch_size=256, verbose=0)
        return float(np.min(z)), float(np.max(z))

    def logits(self, x, training: bool, rounding: bool | None = None):
        """Fake-quantised logits of windows ``x`` (batch, T, F); ``rounding=False``: the same forward
        without rounding (the float model, unrolled); default: this object's ``rounding``."""
        import tensorflow as tf

        L, R = self.L, self.ranges
        rounding = self.rounding if rounding is None else rounding
        fake_quant, fake_quant_weights = self._ops(rounding)
        x = fake_quant(x, *R["input"])
        norm = L["norm"]
        s = tf.cast(norm.scale, x.dtype)  # per input feature, folded into conv1 by export_model
        x = norm(x)
        c1 = L["conv1"]
        k = fake_quant_weights(c1.kernel * s[None, :, None], per_channel=True) / s[None, :, None]
        x = tf.nn.conv1d(x, k, stride=2, padding="VALID") + c1.bias
        x = tf.nn.relu(L["bn1"](x, training=False))
        x = fake_quant(x, *R["relu1"])
        c2 = L["conv2"]
        x = tf.nn.conv1d(x, fake_quant_weights(c2.kernel, per_channel=True), stride=1, padding="SAME") + c2.bias
        x = tf.nn.relu(L["bn2"](x, training=False))
        x = fake_quant(x, *R["relu2"])
        x = L["pool"](x)
        if training and self.dropout:
            x = tf.nn.dropout(x, self.dropout / 2)
        h = self._lstm(x, rounding)
        if training and self.dropout:
            h = tf.nn.dropout(h, self.dropout)
        d = L["logits"]
        z = tf.matmul(h, fake_quant_weights(d.kernel, per_channel=True)) + d.bias
        return fake_quant(z, *R["logits"])

    @staticmethod
    def _ops(rounding: bool):
        """The rounding ops, or identities (``rounding=False``: the control, the float reference)."""
        if rounding:
            return fake_quant, fake_quant_weights
        return (lambda x, lo, hi: x), (lambda w, per_channel: w)

    def _lstm(self, x, rounding: bool):
        """The Keras LSTM (gates i, f, c, o; sigmoid / tanh) unrolled, int8 gate matrices, int8 hidden state."""
        import tensorflow as tf

        _, fake_quant_weights = self._ops(rounding)
        cell = self.L["lstm"].cell
        H = cell.units
        W = [fake_quant_weights(cell.kernel[:, g * H:(g + 1) * H], per_channel=False) for g in range(4)]
        U = [fake_quant_weights(cell.recurrent_kernel[:, g * H:(g + 1) * H], per_channel=False) for g in range(4)]
        W, U = tf.concat(W, axis=1), tf.concat(U, axis=1)
        b = cell.bias
        n = int(x.shape[1])
        xw = tf.einsum("btf,fg->btg", x, W) + b  # every step's input projection at once
        h = tf.zeros([tf.shape(x)[0], H], x.dtype)
        c = tf.zeros_like(h)
        for t in range(n):
            g = xw[:, t] + tf.matmul(h, U)
            i, f, cc, o = tf.split(g, 4, axis=1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(cc)
            h = tf.sigmoid(o) * tf.tanh(c)
            if rounding:
                h = tf.quantization.fake_quant_with_min_max_vars(h, LSTM_H_MIN, LSTM_H_MAX, num_bits=8)
        return h

    def probabilities(self, x, training: bool = False):
        import tensorflow as tf

        return tf.nn.softmax(self.logits(x, training))


def consistency_kl(z_float, z_int8):
    """Per-window ``KL(softmax(z_float) || softmax(z_int8))`` in nats: how far the simulated int8
    model's window distribution is from the float model's (0 when they agree exactly)."""
    import tensorflow as tf

    lf = tf.nn.log_softmax(z_float)
    return tf.reduce_sum(tf.exp(lf) * (lf - tf.nn.log_softmax(z_int8)), axis=-1)


def qat_finetune(model, X: np.ndarray, y: np.ndarray, n_classes: int, train_cfg, calib: np.ndarray,
                 val=None, class_mask: np.ndarray | None = None, dropout: float = 0.3, log=None,
                 input_range=None) -> dict:
    """Fine-tune the trained float crnn ``model`` in place for ``train_cfg.qat_epochs`` epochs through
    :class:`QATForward` on windows ``X`` / labels ``y`` (masked cross-entropy with the float training's
    options, class weights and batch size, ``train_cfg``: :class:`model_build.train.TrainConfig`, learning
    rate ``train_cfg.qat_lr``). ``calib``: the
    windows the converter will calibrate on (activation ranges); ``input_range``: the conversion's
    :class:`model_build.convert.InputRange` (default min/max), so the input rounds as it will. ``val = (Xv, clip_index, clip_labels)``:
    the epoch with the best validation clip UAR *of the fake-quantised model* is kept (ties: the later).
    ``train_cfg.qat_control``: the same fine-tuning with every rounding switched off (a control: what the
    extra low-learning-rate epochs alone do). ``train_cfg.qat_consistency`` (lambda > 0): the loss adds
    ``lambda * KL(float || simulated int8)`` (:func:`consistency_kl`, both forwards without dropout, the
    gradient through both), which asks the two to agree, not only the int8 one to be right.
    Returns a record for the model's metadata (per-epoch losses and validation UARs)."""
    import tensorflow as tf
    import tf_keras

    from .train import _uar, masked_loss
    from .windows import aggregate

    check_options(train_cfg.qat_epochs, train_cfg.qat_lr, train_cfg.qat_consistency)
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    if train_cfg.qat_epochs == 0:
        return {}
    tf_keras.utils.set_random_seed(train_cfg.seed + 1000)
    fw = QATForward(model, dropout, rounding=not train_cfg.qat_control, input_range=input_range)
    lam = float(train_cfg.qat_consistency)
    loss_fn = masked_loss(n_classes, train_cfg.label_smoothing, train_cfg.focal_gamma, train_cfg.margin)
    opt = tf_keras.optimizers.Adam(train_cfg.qat_lr)
    variables = [v for v in model.trainable_variables if "bn" not in v.name]  # BN frozen (folded)
    opt.build(variables)
    y = np.asarray(y)
    Y = np.eye(n_classes, dtype=np.float32)[y]
    M = np.ones_like(Y) if class_mask is None else np.asarray(class_mask, np.float32)
    wv = np.ones(n_classes, np.float32)
    if train_cfg.class_weight:
        counts = np.bincount(y, minlength=n_classes).astype(np.float64)
        wv = np.array([len(y) / (n_classes * counts[c]) if counts[c] else 0.0 for c in range(n_classes)], np.float32)

    @tf.function(reduce_retracing=True)
    def step(xb, tb, wb):
        with tf.GradientTape() as tape:
            p = fw.probabilities(xb, training=True)
            lv = tf.reduce_mean(loss_fn(tb, p) * wb)  # as Keras weighs sample_weight
            if lam:
                lv += lam * tf.reduce_mean(consistency_kl(fw.logits(xb, False, rounding=False), fw.logits(xb, False)))
        opt.apply_gradients(zip(tape.gradient(lv, variables), variables))
        return lv

    @tf.function(reduce_retracing=True)
    def predict(xb):
        return fw.probabilities(xb, training=False)

    rng = np.random.default_rng(train_cfg.seed + 1000)
    Xf = np.asarray(X, np.float32)
    hist = {"loss": [], "val_uar": []}
    best = (-1.0, -1, None)
    t0 = time.time()
    bs = train_cfg.batch_size
    for ep in range(train_cfg.qat_epochs):
        fw.measure_ranges(calib)
        # ranges are Python floats baked into the traced graph: retrace when they change
        step_ep, pred_ep = tf.function(step.python_function), tf.function(predict.python_function)
        perm = rng.permutation(len(Xf))
        losses = []
        for s in range(0, len(perm), bs):
            j = perm[s:s + bs]
            tb = np.concatenate([Y[j], M[j]], axis=1)
            losses.append(float(step_ep(Xf[j], tb, Y[j] @ wv)))
        hist["loss"].append(float(np.mean(losses)))
        msg = f"{'qat' if fw.rounding else 'qat control (no rounding)'} epoch {ep + 1}/{train_cfg.qat_epochs}  loss {hist['loss'][-1]:.3f}"
        if val is not None:
            Xv, civ, yv = val
            pv = np.concatenate([np.asarray(pred_ep(np.asarray(Xv[s:s + 256], np.float32)))
                                 for s in range(0, len(Xv), 256)])
            vuar = _uar(np.asarray(yv), aggregate(pv, civ, len(yv)).argmax(1), n_classes)
            hist["val_uar"].append(vuar)
            msg += f"  val_uar {vuar:.3f}"
            if vuar >= best[0]:
                best = (vuar, ep, model.get_weights())
        log(msg + f"  [{time.time() - t0:.0f}s]")
    if best[2] is not None:
        model.set_weights(best[2])
    return {"qat": {"epochs": train_cfg.qat_epochs, "lr": train_cfg.qat_lr, "control_without_rounding": fw.rounding is False,
                    "consistency": lam,
                    "kept_epoch": (best[1] + 1) if best[2] is not None else train_cfg.qat_epochs,
                    "history": {k: [round(v, 4) for v in vs] for k, vs in hist.items()},
                    "seconds": round(time.time() - t0, 1),
                    "method": "fake-quantised forward (input, conv/dense kernels per channel, LSTM gate matrices "
                              "per tensor, activations, LSTM hidden state every step), straight-through gradient"}}
