"""Train a window classifier with tf-keras; early stopping on the validation speakers' clip UAR.

Early stopping on validation *loss* stopped RAVDESS runs far too early (UAR 0.40 vs 0.48 when
stopping on the validation speakers' unweighted average recall), so the monitored quantity is the
clip-level UAR of held-out validation speakers (windows aggregated by mean probability), and the
best epoch's weights are restored.
"""
from __future__ import annotations

import functools
import math
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .models import ModelConfig, build_model

# learning-rate schedules of the float phase (TrainConfig.lr_schedule); the QAT phase keeps its constant qat_lr
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 32
    lr: float = 2e-3
    # "constant": Adam at ``lr`` throughout; "cosine": per optimizer step from ``lr`` down to ``lr * lr_floor``
    # over ``epochs`` (the maximum, whether or not early stopping ends training sooner); see learning_rate_at
    lr_schedule: str = "constant"
    lr_floor: float = 0.05
    patience: int = 10
    class_weight: bool = True
    label_smoothing: float = 0.0
    seed: int = 0
    verbose: bool = True
    # on-the-fly augmentation of the training windows, redrawn every epoch (0 = off)
    time_masks: int = 0  # SpecAugment: number of time masks per window
    time_mask_frames: int = 12  # max width of one time mask (frames)
    freq_masks: int = 0  # SpecAugment: number of feature (mel band / coefficient) masks per window
    freq_mask_bins: int = 6  # max width of one feature mask
    mixup: float = 0.0  # mixup Beta(a, a) parameter; 0 = no mixup
    focal_gamma: float = 0.0  # focal loss (1 - p)**gamma factor; 0 = plain cross-entropy
    margin: float = 0.0  # additive margin (log-probability units) off the true class's logit; 0 = none
    # quantisation-aware fine-tuning after float training (model_build.qat): epochs (0 = none) and its
    # learning rate
    qat_epochs: int = 0
    qat_lr: float = 2e-4
    qat_control: bool = False  # the same fine-tuning without rounding (what the extra epochs alone do)
    qat_consistency: float = 0.0  # weight of KL(float || simulated int8) in the QAT loss; 0 = none
    # float phase: exponential moving average of the weights per optimizer step (model_build.weight_average);
    # early stopping reads, and training returns, the averaged weights. 0 = off (the plain iterates)
    weight_ema: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    model: object  # the trained tf-keras model (dynamic batch, with normaliser and softmax)
    history: dict = field(default_factory=dict)  # per-epoch lists: loss, acc, val_loss, val_uar...
    best_epoch: int = 0
    seconds: float = 0.0
    mean: np.ndarray | None = None
    std: np.ndarray | None = None


def feature_stats(X: np.ndarray, min_std: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Global per-feature mean/std over all frames of the training windows (float64)."""
    flat = np.asarray(X, np.float64).reshape(-1, X.shape[-1])
    return flat.mean(0), np.maximum(flat.std(0), min_std)


def spec_augment(X: np.ndarray, fill: np.ndarray, rng: np.random.Generator, time_masks: int,
                 time_width: int, freq_masks: int, freq_width: int) -> np.ndarray:
    """SpecAugment-style masking of windows ``X`` (N, T, F): random time / feature stripes set to
    ``fill`` (the training mean per feature, i.e. 0 after normalisation). Returns a new array."""
    X = np.array(X, np.float32, copy=True)
    n, t, f = X.shape
    fill = np.asarray(fill, np.float32)
    for _ in range(time_masks):
        w = rng.integers(0, time_width + 1, n)
        s = rng.integers(0, np.maximum(t - w, 1))
        ar = np.arange(t)[None, :]
        m = (ar >= s[:, None]) & (ar < (s + w)[:, None])  # (N, T)
        X = np.where(m[:, :, None], fill[None, None, :], X)
    for _ in range(freq_masks):
        w = rng.integers(0, freq_width + 1, n)
        s = rng.integers(0, np.maximum(f - w, 1))
        ar = np.arange(f)[None, :]
        m = (ar >= s[:, None]) & (ar < (s + w)[:, None])  # (N, F)
        X = np.where(m[:, None, :], fill[None, None, :], X)
    return X


def learning_rate_at(step: int, total_steps: int, lr: float, schedule: str = "constant",
                     floor: float = 0.05) -> float:
    """The float phase's learning rate at optimizer step ``step`` (0-based) of ``total_steps``.

    ``constant``: ``lr``. ``cosine``: ``lr * (floor + (1 - floor) * (1 + cos(pi * t)) / 2)`` with
    ``t = min(step, total_steps) / total_steps``: ``lr`` at the first step, ``lr * (1 + floor) / 2`` half way,
    ``lr * floor`` from the last step on (tf_keras's ``CosineDecay`` with ``alpha = floor``, which
    :func:`optimizer_learning_rate` hands the optimizer).
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"learning-rate schedule {schedule!r}: expected one of {', '.join(LR_SCHEDULES)}")
    if schedule == "constant":
        return float(lr)
    if total_steps < 1:
        raise ValueError(f"cosine schedule over {total_steps} steps: need >= 1")
    t = min(max(step, 0), total_steps) / total_steps
    return float(lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))))


def check_lr_options(schedule: str, floor: float) -> None:
    """Raise ``ValueError`` naming the bad option (``TrainConfig.lr_schedule`` / ``lr_floor``)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule {schedule!r}: expected one of {', '.join(LR_SCHEDULES)}")
    if not (isinstance(floor, (int, float)) and math.isfinite(floor) and 0.0 <= floor <= 1.0):
        raise ValueError(f"lr_floor {floor!r}: must be in [0, 1] (a fraction of lr)")


def optimizer_learning_rate(cfg: TrainConfig, steps_per_epoch: int):
    """What the float phase's Adam gets as its learning rate: ``cfg.lr`` (constant) or a tf_keras
    ``CosineDecay`` over ``cfg.epochs * steps_per_epoch`` steps, equal to :func:`learning_rate_at`.
    The optimizer's step counter runs on across the per-epoch ``fit`` calls, so the decay spans them all."""
    check_lr_options(cfg.lr_schedule, cfg.lr_floor)
    if cfg.lr_schedule == "constant":
        return cfg.lr
    import tf_keras

    return tf_keras.optimizers.schedules.CosineDecay(cfg.lr, decay_steps=max(1, cfg.epochs * steps_per_epoch),
                                                     alpha=cfg.lr_floor)


def _uar(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    rec = [np.mean(y_pred[y_true == c] == c) for c in range(n_classes) if np.any(y_true == c)]
    return float(np.mean(rec)) if rec else 0.0


def masked_loss(n_classes: int, label_smoothing: float = 0.0, focal_gamma: float = 0.0, margin: float = 0.0):
    """Cross-entropy over the classes *present in each example's corpus*.

    ``y_true`` packs ``[target (C) | mask (C)]``: the mask is 1 for the classes the example's corpus
    has. The model's probabilities are renormalised over those classes (the same as a softmax over
    the unmasked logits), so a class a corpus lacks is *absent* for its examples, not a negative:
    an ASED clip never teaches the model "this is not calm". Label smoothing spreads over the
    present classes only; ``focal_gamma > 0`` multiplies each term by ``(1 - p)**gamma``.

    ``margin > 0`` is an additive margin (AM-softmax style): ``margin`` is subtracted from the true
    class's logit before the masked softmax, so the loss only gets small once that logit is ``margin``
    above the others. The logits are ``log p`` (a softmax's logits up to a per-row constant, which no
    softmax sees), so this is ``p_true * exp(-margin)`` before the renormalisation. The margin follows
    the target before smoothing (a mixed target gets each class's share of it). ``margin == 0`` takes
    exactly the code path without it.
    """
    import tensorflow as tf

    C = n_classes

    def loss(y_true, p):
        y, m = y_true[:, :C], y_true[:, C:]
        pm = p * m
        if margin:
            # the true class's logit minus the margin; a margin pushes the decision away from the
            # boundary, where int8 rounding would flip it
            pm = pm * tf.exp(-margin * y)
        pm = pm / tf.maximum(tf.reduce_sum(pm, axis=-1, keepdims=True), 1e-12)
        pm = tf.clip_by_value(pm, 1e-7, 1.0)
        if label_smoothing:
            y = (1.0 - label_smoothing) * y + label_smoothing * m / tf.reduce_sum(m, axis=-1, keepdims=True)
        ce = -y * tf.math.log(pm)
        if focal_gamma:
            ce = ce * tf.pow(1.0 - pm, focal_gamma)
        return tf.reduce_sum(ce, axis=-1)

    return loss


def masked_accuracy(n_classes: int):
    """Top-1 accuracy over the present classes (``y_true`` packed as in :func:`masked_loss`)."""
    import tensorflow as tf

    C = n_classes

    def accuracy(y_true, p):
        y, m = y_true[:, :C], y_true[:, C:2 * C]  # any further block (teacher logits) is not read
        return tf.cast(tf.equal(tf.argmax(p * m, -1), tf.argmax(y, -1)), tf.float32)

    return accuracy


@functools.lru_cache(maxsize=1)
def epoch_batches_class():
    """The :class:`tf_keras.utils.Sequence` that feeds one epoch (built lazily: tf_keras is imported late)."""
    import tf_keras

    class _EpochBatches(tf_keras.utils.Sequence):
        """One epoch's batches, gathered batch by batch: ``X[take[i*bs:(i+1)*bs]]`` (``take`` None: in order)
        with the same rows of ``Y`` and of the sample weights ``sw`` (already in epoch order).

        Why not ``model.fit(X[perm], ...)`` once per epoch: every such call converts the whole epoch into
        a new tensor that TensorFlow does not give back (+0.9 GB per epoch on 44 k windows of 125x40 in
        this run: a 20-epoch fold grew past 10 GB); batches from a Sequence hold one batch at a time,
        and keep the same batches in the same order."""

        def __init__(self, X, take, Y, sw, batch_size):
            super().__init__()
            self.X, self.take, self.Y, self.sw, self.bs = X, take, Y, sw, int(batch_size)

        def __len__(self):
            return -(-len(self.Y) // self.bs)

        def __getitem__(self, i):
            sl = slice(i * self.bs, (i + 1) * self.bs)
            x = self.X[sl] if self.take is None else self.X[self.take[sl]]
            return (x, self.Y[sl]) if self.sw is None else (x, self.Y[sl], self.sw[sl])

        def release(self) -> None:
            """Drop the arrays once ``fit`` is done. tf_keras feeds a Sequence through
            ``tf.data.Dataset.from_generator``, whose generator state outlives ``fit`` (and ``clear_session``
            and ``gc.collect``): every fitted Sequence stays alive, and with its arrays it kept one fold's
            training windows each (+0.6 to 1.1 GB per cross-validation fold, measured)."""
            self.X = self.take = self.Y = self.sw = None

    return _EpochBatches


def EpochBatches(X, take, Y, sw, batch_size):  # noqa: N802 (a class, built on first use)
    """One epoch of training batches (see :func:`epoch_batches_class`)."""
    return epoch_batches_class()(X, take, Y, sw, batch_size)


def train(X: np.ndarray, y: np.ndarray, n_classes: int, model_cfg: ModelConfig, cfg: TrainConfig,
          val: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, log=None,
          class_mask: np.ndarray | None = None, teacher_logits: np.ndarray | None = None,
          distill=None) -> TrainResult:
    """Train on windows ``X`` (N, T, F) float log2 units with labels ``y`` (N,).

    ``val = (Xv, clip_index_v, clip_labels_v)``: validation windows, their clip index and the
    clips' labels; its clip-level UAR drives early stopping. Without it, training runs all epochs.
    ``class_mask`` (N, n_classes) 0/1: the classes each window's corpus has (default: all); the
    loss ignores the others (:func:`masked_loss`). Class weights count windows per class.
    ``teacher_logits`` (N, n_classes) with ``distill`` (:class:`model_build.distill.DistillConfig`):
    train on the distillation loss (:func:`model_build.distill.kd_loss`) towards those soft targets.
    """
    import tf_keras

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    tf_keras.utils.set_random_seed(cfg.seed)
    y = np.asarray(y)
    mean, std = feature_stats(X)
    model = build_model(model_cfg, X.shape[1], X.shape[2], n_classes, mean=mean, std=std)
    loss = masked_loss(n_classes, cfg.label_smoothing, cfg.focal_gamma, cfg.margin)
    Z = None  # teacher logits, packed after the targets and masks
    if teacher_logits is not None:
        from .distill import kd_loss

        if distill is None:
            raise ValueError("teacher_logits need a DistillConfig (distill=...)")
        if cfg.mixup or cfg.time_masks or cfg.freq_masks:
            # the teacher's logits are of the windows as given: per-epoch changes would not match them
            raise ValueError("distillation with precomputed teacher logits excludes mixup and SpecAugment")
        Z = np.asarray(teacher_logits, np.float32)
        if Z.shape != (len(X), n_classes):
            raise ValueError(f"teacher_logits must be ({len(X)}, {n_classes}), got {Z.shape}")
        loss = kd_loss(n_classes, distill.alpha, distill.temperature, cfg.label_smoothing, cfg.focal_gamma,
                       cfg.margin)
    steps_per_epoch = -(-len(X) // cfg.batch_size)  # fit() runs the last partial batch too
    ema = None
    if cfg.weight_ema:
        from .weight_average import weight_ema_callback

        ema = weight_ema_callback(model, cfg.weight_ema)
    model.compile(optimizer=tf_keras.optimizers.Adam(optimizer_learning_rate(cfg, steps_per_epoch)), loss=loss,
                  metrics=[masked_accuracy(n_classes)])
    cw = None
    if cfg.class_weight:
        counts = np.bincount(y, minlength=n_classes).astype(np.float64)
        cw = {c: float(len(y) / (n_classes * counts[c])) if counts[c] else 0.0 for c in range(n_classes)}
    M = np.ones((len(y), n_classes), np.float32) if class_mask is None else np.asarray(class_mask, np.float32)
    if M.shape != (len(y), n_classes):
        raise ValueError(f"class_mask must be ({len(y)}, {n_classes}), got {M.shape}")
    if not np.all(M[np.arange(len(y)), y] == 1):
        raise ValueError("class_mask excludes some windows' own label")
    Y = tf_keras.utils.to_categorical(y, n_classes)
    # lr: the learning rate the optimizer applied at each epoch's last step (tf_keras keeps the last value
    # a schedule gave it), so the history shows the schedule was followed
    hist: dict[str, list] = {"loss": [], "accuracy": [], "val_loss": [], "val_uar": [], "val_acc": [], "lr": []}
    best = (-1.0, 0, None)
    t0 = time.time()
    rng = np.random.default_rng(cfg.seed)
    ds_X = np.asarray(X, np.float32)
    wait = 0
    for ep in range(cfg.epochs):
        perm = rng.permutation(len(ds_X))
        Xe, Ye, Me = ds_X, Y[perm], M[perm]  # Xe: the windows, batches taken at ``take`` (the permutation)
        take = perm
        if cfg.time_masks or cfg.freq_masks:
            Xe, take = spec_augment(ds_X[perm], mean, rng, cfg.time_masks, cfg.time_mask_frames, cfg.freq_masks,
                                    cfg.freq_mask_bins), None
        sw = None
        if cfg.mixup > 0:
            # mix each window with another random one; class weights follow the mixed labels
            lam = rng.beta(cfg.mixup, cfg.mixup, len(Xe)).astype(np.float32)
            lam = np.maximum(lam, 1 - lam)  # the first window dominates
            j = rng.permutation(len(Ye))
            Xp = Xe if take is None else Xe[take]
            Xe, take = lam[:, None, None] * Xp + (1 - lam[:, None, None]) * Xp[j], None
            Ye = lam[:, None] * Ye + (1 - lam[:, None]) * Ye[j]
            Me = np.maximum(Me, Me[j])  # a mixed window may be either corpus's class
        if cw is not None:  # as sample weights: y_true is packed, so Keras's class_weight cannot read it
            wv = np.array([cw[c] for c in range(n_classes)], np.float32)
            sw = Ye @ wv
        packed = [Ye, Me] if Z is None else [Ye, Me, Z[perm]]
        batches = EpochBatches(Xe, take, np.concatenate(packed, axis=1), sw, cfg.batch_size)
        try:
            h = model.fit(batches, epochs=1, verbose=0, shuffle=False, callbacks=[ema] if ema is not None else None)
        finally:
            batches.release()  # TensorFlow keeps the Sequence itself (see release): let it keep no data
        live = None
        if ema is not None and val is not None:  # validate and keep the average; train on from the live weights
            live = model.get_weights()
            model.set_weights(ema.averaged())
        hist["loss"].append(float(h.history["loss"][-1]))
        hist["accuracy"].append(float(h.history["accuracy"][-1]))
        hist["lr"].append(float(np.asarray(model.optimizer.learning_rate)))
        msg = (f"epoch {ep + 1:3d}/{cfg.epochs}  lr {hist['lr'][-1]:.2e}  loss {hist['loss'][-1]:.3f}  "
               f"acc {hist['accuracy'][-1]:.3f}")
        if val is not None:
            Xv, civ, yv_clip = val
            pv = model.predict(np.asarray(Xv, np.float32), batch_size=256, verbose=0)
            yv_win = np.asarray(yv_clip)[civ]
            vloss = float(np.mean(-np.log(np.maximum(pv[np.arange(len(pv)), yv_win], 1e-7))))
            from .windows import aggregate

            pc = aggregate(pv, civ, len(yv_clip)).argmax(1)
            vuar = _uar(np.asarray(yv_clip), pc, n_classes)
            vacc = float(np.mean(pc == np.asarray(yv_clip)))
            hist["val_loss"].append(vloss)
            hist["val_uar"].append(vuar)
            hist["val_acc"].append(vacc)
            msg += f"  val_loss {vloss:.3f}  val_uar {vuar:.3f}"
            if vuar > best[0] + 1e-9:
                best = (vuar, ep, model.get_weights())
                wait = 0
                msg += " *"
            else:
                wait += 1
        if live is not None:
            model.set_weights(live)
        if cfg.verbose:
            log(msg + f"  [{time.time() - t0:.0f}s]")
        if val is not None and wait >= cfg.patience:
            if cfg.verbose:
                log(f"early stop: no val UAR gain for {cfg.patience} epochs; best epoch {best[1] + 1}")
            break
    best_epoch = len(hist["loss"]) - 1
    if ema is not None and best[2] is None:  # no validation: the last epoch's average
        model.set_weights(ema.averaged())
    if best[2] is not None:
        model.set_weights(best[2])
        best_epoch = best[1]
    return TrainResult(model=model, history=hist, best_epoch=best_epoch, seconds=time.time() - t0,
                       mean=mean, std=std)
