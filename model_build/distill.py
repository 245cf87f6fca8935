"""Knowledge distillation: a larger float teacher's soft targets for the <= 64 KB student.

Per training set (one CV fold, one shipped model), :func:`teacher_logits` trains a wider float CRNN
(the teacher; never converted or shipped, no size limit) on the same training windows and
validation speakers as the student, and returns its logits on the student's training windows.
The student then trains on (:func:`kd_loss`)::

    (1 - alpha) * masked CE(hard labels) + alpha * T**2 * KL(softmax(z_t / T) || softmax(z_s / T))

where both softmaxes run over the classes the window's corpus has only (the per-corpus mask of
:func:`model_build.train.masked_loss`): a TESS window's teacher has an opinion on ``calm``, but
TESS has no calm clips, so that class is absent from its targets, never a soft negative. ``T**2``
keeps the soft term's gradient scale independent of ``T`` (Hinton et al. 2015).

The augmentation of the recipe is offline (augmented copies, :mod:`model_build.recipe`), so the
teacher's logits are computed once per training set; per-epoch input changes (SpecAugment, mixup)
would need the teacher in the training step and are refused together with distillation
(:func:`model_build.train.train`).

Teachers can be kept (``cache``): the CV trains one teacher per fold and reuses it for every seed of
the student (the teacher of a fold is trained on the first seed's training windows of that fold;
later seeds' augmented copies differ, but hold the same speakers, never the test ones).

The teacher can also be an **ensemble** of float models already trained on the same training set
(:func:`ensemble_logits`: the log of their mean probability), e.g. the fold models that other seeds
of a CV kept (``bench/accuracy.py --distill-ensemble``): no teacher is trained then.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .models import ModelConfig


def _default_teacher() -> ModelConfig:
    return ModelConfig(arch="crnn", conv1=64, conv1_kernel=5, conv2=128, lstm=128, dropout=0.3)


@dataclass(frozen=True)
class DistillConfig:
    """Distillation options. ``alpha = 0`` is plain training on the hard labels (no teacher)."""

    alpha: float = 0.5  # weight of the soft (teacher) term
    temperature: float = 2.0  # softmax temperature of both teacher and student in the soft term
    teacher: ModelConfig = field(default_factory=_default_teacher)  # float only: no size limit
    teacher_seed: int = 0  # training seed of the teacher (the CV uses its fold seed)

    def __post_init__(self):
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"distillation alpha must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ValueError(f"distillation temperature must be > 0, got {self.temperature}")

    def to_dict(self) -> dict:
        return asdict(self)


def masked_kl(teacher_logits, student_logits, mask, temperature: float):
    """``KL(softmax(z_t/T) || softmax(z_s/T))`` per row, both softmaxes over the classes where
    ``mask`` is 1 (TensorFlow tensors or arrays, shape (N, C); returns (N,))."""
    import tensorflow as tf

    m = tf.cast(mask, tf.float32) > 0
    off = tf.constant(-1e9, tf.float32)  # an absent class: probability exactly 0 after the softmax
    zt = tf.where(m, tf.cast(teacher_logits, tf.float32) / temperature, off)
    zs = tf.where(m, tf.cast(student_logits, tf.float32) / temperature, off)
    log_pt = tf.nn.log_softmax(zt, axis=-1)
    log_ps = tf.nn.log_softmax(zs, axis=-1)
    # where(m) rather than a product: 0 * (huge - huge) must not leak a NaN from an absent class
    terms = tf.where(m, tf.exp(log_pt) * (log_pt - log_ps), tf.zeros_like(log_pt))
    return tf.reduce_sum(terms, axis=-1)


def kd_loss(n_classes: int, alpha: float, temperature: float, label_smoothing: float = 0.0,
            focal_gamma: float = 0.0, margin: float = 0.0):
    """Keras loss ``(1 - alpha) * hard + alpha * T**2 * masked_kl`` for a model that outputs
    probabilities. ``y_true`` packs ``[target (C) | mask (C) | teacher logits (C)]``; the hard term
    is :func:`model_build.train.masked_loss` on the first two blocks (with its smoothing, focal
    and margin options). The student's logits are
    ``log p`` (a softmax's logits up to a per-row constant, which no softmax sees)."""
    import tensorflow as tf

    from .train import masked_loss

    C = n_classes
    hard = masked_loss(C, label_smoothing, focal_gamma, margin)

    def loss(y_true, p):
        h = hard(y_true[:, :2 * C], p)
        if alpha == 0:
            return h
        zs = tf.math.log(tf.maximum(p, 1e-30))
        kl = masked_kl(y_true[:, 2 * C:3 * C], zs, y_true[:, C:2 * C], temperature)
        return (1.0 - alpha) * h + alpha * temperature ** 2 * kl

    return loss


def logits_of(model, X: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Pre-softmax outputs (layer ``logits``) of a model from :func:`model_build.models.build_model`."""
    import tf_keras

    sub = tf_keras.Model(model.input, model.get_layer("logits").output)
    return np.asarray(sub.predict(np.asarray(X, np.float32), batch_size=batch_size, verbose=0), np.float32)


class MeanProbabilityEnsemble:
    """Models that output probabilities (as :func:`model_build.models.build_model` builds them),
    averaged: the Keras calls the evaluation uses (``model(x, training=False)``, ``predict``), so an
    ensemble runs wherever one float model does (e.g. :class:`model_build.evaluate.KerasWindowModel`)."""

    def __init__(self, models) -> None:
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = list(models)

    def __call__(self, x, training: bool = False) -> np.ndarray:
        return np.mean([np.asarray(m(x, training=training), np.float64) for m in self.models], axis=0)

    def predict(self, X, batch_size: int = 256, verbose: int = 0) -> np.ndarray:
        X = np.asarray(X, np.float32)
        return np.mean([np.asarray(m.predict(X, batch_size=batch_size, verbose=verbose), np.float64)
                        for m in self.models], axis=0)


def ensemble_logits(models, X: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of an ensemble: ``log(mean_k softmax(z_k))`` (:class:`MeanProbabilityEnsemble`).
    Averaging probabilities, not logits, is the usual ensemble; its log is a logit vector up to a
    per-row constant."""
    p = MeanProbabilityEnsemble(models).predict(X, batch_size=batch_size)
    return np.log(np.maximum(p, 1e-12)).astype(np.float32)


def ensemble_teacher(paths, X: np.ndarray, n_classes: int, log=None) -> tuple[np.ndarray, dict]:
    """Load the float models kept at ``paths`` (``*_float.npz`` of :func:`model_build.pipeline.save_float`)
    and return their ensemble's logits on ``X`` (:func:`ensemble_logits`) plus a record of them."""
    from .models import count_params
    from .pipeline import load_float

    log = log or (lambda s: None)
    models = []
    for p in paths:
        m, _, calib = load_float(p)
        if tuple(calib.shape[1:]) != tuple(X.shape[1:]) or int(m.output_shape[-1]) != n_classes:
            raise ValueError(f"{p}: ensemble member takes {calib.shape[1:]} -> {m.output_shape[-1]} classes, "
                             f"the student {X.shape[1:]} -> {n_classes}")
        models.append(m)
    log(f"teacher: ensemble of {len(models)} kept float models")
    info = {"kind": "ensemble", "members": [str(p) for p in paths], "params": int(sum(count_params(m) for m in models))}
    return ensemble_logits(models, X), info


def _key(cfg: DistillConfig, X: np.ndarray, n_classes: int) -> dict:
    """What a kept teacher must match to be reused: its architecture, seed and the input shape."""
    return {"teacher": cfg.teacher.to_dict(), "teacher_seed": cfg.teacher_seed,
            "window": list(X.shape[1:]), "n_classes": int(n_classes)}


def save_teacher(path: Path, model, key: dict, info: dict) -> Path:
    """Keep a teacher's weights (normaliser included) and what it was trained as (``.json``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **{f"w{i:03d}": w for i, w in enumerate(model.get_weights())})
    path.with_suffix(".json").write_text(json.dumps({**key, **info}, indent=1) + "\n")
    return path


def load_teacher(path: Path, key: dict | None = None):
    """The kept teacher at ``path`` if it was trained as ``key`` says (any, without ``key``), else None."""
    from .models import build_model

    path = Path(path)
    meta = path.with_suffix(".json")
    if not (path.exists() and meta.exists()):
        return None
    info = json.loads(meta.read_text())
    if key is None:
        key = {k: info[k] for k in ("teacher", "teacher_seed", "window", "n_classes")}
    if any(info.get(k) != v for k, v in key.items()):
        return None
    model = build_model(ModelConfig(**key["teacher"]), key["window"][0], key["window"][1], key["n_classes"])
    with np.load(path) as z:
        model.set_weights([z[k] for k in sorted(z.files)])
    return model


def teacher_logits(X: np.ndarray, y: np.ndarray, n_classes: int, cfg: DistillConfig, train_cfg,
                   val=None, class_mask: np.ndarray | None = None, cache: str | Path | None = None,
                   log=None) -> tuple[np.ndarray, dict]:
    """Train (or reuse from ``cache``) the teacher on windows ``X``/``y`` and return its logits on
    ``X`` plus a record of it (``teacher_val_uar``, ``reused``...).

    ``train_cfg``: the student's :class:`model_build.train.TrainConfig`; the teacher uses its
    epochs, patience, batch size, learning rate, class weights and loss options with
    ``cfg.teacher_seed``. ``val`` / ``class_mask`` as for :func:`model_build.train.train`: the
    teacher stops early on the same validation speakers and masks the same absent classes.
    """
    from dataclasses import replace

    from .train import train

    log = log or (lambda s: None)
    key = _key(cfg, X, n_classes)
    model = load_teacher(Path(cache), key) if cache else None
    info: dict = {"kind": "trained", "reused": model is not None, **({"path": str(cache)} if cache else {})}
    if model is None:
        log(f"training the teacher {cfg.teacher.to_dict()} (seed {cfg.teacher_seed})")
        tcfg = replace(train_cfg, seed=cfg.teacher_seed)
        res = train(X, y, n_classes, cfg.teacher, tcfg, val=val, log=log, class_mask=class_mask)
        model = res.model
        info.update({"best_epoch": res.best_epoch + 1, "seconds": round(res.seconds, 1),
                     "val_uar": max(res.history["val_uar"]) if res.history.get("val_uar") else None,
                     "trained_on_windows": int(len(X))})
        if cache:
            save_teacher(Path(cache), model, key, info)
    else:
        prev = json.loads(Path(cache).with_suffix(".json").read_text())
        info.update({k: prev.get(k) for k in ("best_epoch", "val_uar", "trained_on_windows")})
        log(f"reusing the teacher {cache} (validation UAR {info.get('val_uar')})")
    from .models import count_params

    info["params"] = count_params(model)
    return logits_of(model, X), info
