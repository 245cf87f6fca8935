"""Knowledge distillation (``model_build.distill``): the loss is what it claims (hard-label loss at
alpha 0, zero soft term when the student's logits match the teacher's up to a constant, absent
classes ignored, matching a plain numpy KL), and a tiny distilled student trains, converts to int8,
records its teacher, loads through the runtime, and reuses a kept teacher instead of retraining."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import require_module

C = 5


def _tf():
    require_module("tf_keras")
    return require_module("tensorflow")


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _batch(seed=0, n=16):
    """Random hard labels, per-row class masks (each row's label present), teacher and student logits."""
    rng = np.random.default_rng(seed)
    m = (rng.random((n, C)) < 0.6).astype(np.float32)
    y = rng.integers(0, C, n)
    m[np.arange(n), y] = 1
    Y = np.eye(C, dtype=np.float32)[y]
    zt = rng.normal(0, 3, (n, C)).astype(np.float32)
    zs = rng.normal(0, 3, (n, C)).astype(np.float32)
    return Y, m, zt, zs


def _numpy_kl(zt, zs, m, T):
    """KL(softmax(zt/T) || softmax(zs/T)) over the present classes of each row, in float64."""
    out = []
    for a, b, mm in zip(zt.astype(np.float64), zs.astype(np.float64), m > 0):
        pt, ps = _softmax(a[mm] / T), _softmax(b[mm] / T)
        out.append(float(np.sum(pt * (np.log(pt) - np.log(ps)))))
    return np.array(out)


def test_kd_loss_at_alpha_zero_is_the_masked_hard_loss():
    tf = _tf()
    from model_build.distill import kd_loss
    from model_build.train import masked_loss

    Y, m, zt, zs = _batch(1)
    p = tf.nn.softmax(zs)
    packed = tf.constant(np.concatenate([Y, m, zt], 1))
    got = kd_loss(C, alpha=0.0, temperature=2.0, label_smoothing=0.1)(packed, p).numpy()
    want = masked_loss(C, label_smoothing=0.1)(tf.constant(np.concatenate([Y, m], 1)), p).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # and alpha > 0 really adds something once the student disagrees with the teacher
    mixed = kd_loss(C, alpha=0.5, temperature=2.0, label_smoothing=0.1)(packed, p).numpy()
    assert np.max(np.abs(mixed - want)) > 1e-3
    # the hard term takes the margin option along (model_build.train.masked_loss)
    got_m = kd_loss(C, alpha=0.0, temperature=2.0, label_smoothing=0.1, margin=1.0)(packed, p).numpy()
    want_m = masked_loss(C, label_smoothing=0.1, margin=1.0)(tf.constant(np.concatenate([Y, m], 1)), p).numpy()
    np.testing.assert_allclose(got_m, want_m, rtol=1e-6)
    assert np.max(np.abs(got_m - got)) > 1e-2  # (with smoothing not always larger: the off-class terms gain)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_masked_kl_matches_numpy_over_present_classes(T):
    _tf()
    from model_build.distill import masked_kl

    _, m, zt, zs = _batch(2)
    got = masked_kl(zt, zs, m, T).numpy()
    np.testing.assert_allclose(got, _numpy_kl(zt, zs, m, T), rtol=1e-4, atol=1e-6)
    # absent classes are absent: any logits there change nothing (no soft negatives)
    rng = np.random.default_rng(3)
    zt2 = np.where(m > 0, zt, rng.normal(0, 50, zt.shape)).astype(np.float32)
    zs2 = np.where(m > 0, zs, rng.normal(0, 50, zs.shape)).astype(np.float32)
    np.testing.assert_allclose(masked_kl(zt2, zs2, m, T).numpy(), got, rtol=1e-5, atol=1e-6)


def test_soft_term_is_minimised_where_the_student_matches_the_teacher():
    tf = _tf()
    from model_build.distill import kd_loss

    Y, m, zt, _ = _batch(4)
    packed = tf.constant(np.concatenate([Y, m, zt], 1))
    loss = kd_loss(C, alpha=1.0, temperature=3.0)
    # the student's probabilities softmax(zt + c): its logits equal the teacher's up to a constant
    at_teacher = loss(packed, tf.nn.softmax(zt + 7.0)).numpy()
    np.testing.assert_allclose(at_teacher, 0.0, atol=1e-4)
    rng = np.random.default_rng(5)
    for _ in range(5):
        off = loss(packed, tf.nn.softmax(zt + rng.normal(0, 1, zt.shape).astype(np.float32))).numpy()
        assert np.all(off >= at_teacher - 1e-6) and off.mean() > at_teacher.mean() + 1e-3
    # and the gradient w.r.t. the student's logits vanishes there
    z = tf.Variable(zt)
    with tf.GradientTape() as tape:
        v = tf.reduce_sum(loss(packed, tf.nn.softmax(z)))
    assert float(tf.reduce_max(tf.abs(tape.gradient(v, z)))) < 1e-3


def test_distill_config_rejects_bad_values():
    from model_build.distill import DistillConfig

    with pytest.raises(ValueError, match="alpha"):
        DistillConfig(alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        DistillConfig(temperature=0)


def test_train_refuses_teacher_logits_with_per_epoch_augmentation():
    _tf()
    from model_build.distill import DistillConfig
    from model_build.models import ModelConfig
    from model_build.train import TrainConfig, train

    X = np.random.default_rng(0).normal(size=(8, 20, 6)).astype(np.float32)
    y = np.arange(8) % 2
    with pytest.raises(ValueError, match="mixup and SpecAugment"):
        train(X, y, 2, ModelConfig(arch="mlp", dense=4), TrainConfig(epochs=1, mixup=0.2, verbose=False),
              teacher_logits=np.zeros((8, 2), np.float32), distill=DistillConfig())


@pytest.mark.slow
def test_distilled_tiny_student_converts_records_its_teacher_and_runs_in_the_runtime(tmp_path):
    _tf()
    from edge_runtime.classifier import StreamingClassifier
    from model_build.convert import check_int8_graph
    from model_build.corpora.synth import generate_corpus
    from model_build.distill import DistillConfig
    from model_build.models import ModelConfig
    from model_build.pipeline import TINY_LABELS, build_tiny_model

    cfg = DistillConfig(alpha=0.7, temperature=2.0,
                        teacher=ModelConfig(arch="crnn", conv1=16, conv2=32, lstm=32, dropout=0.1), teacher_seed=3)
    cache = tmp_path / "teachers" / "fold0.npz"
    tm = build_tiny_model(tmp_path / "student.tflite", epochs=2, distill=cfg, teacher_cache=cache)
    check_int8_graph(tm.path.read_bytes(), require_fused_lstm=True)
    rec = tm.metadata["distillation"]
    assert rec["alpha"] == 0.7 and rec["teacher"]["lstm"] == 32 and rec["teacher_run"]["reused"] is False
    # the teacher is the larger model; the student is the shipped-size tiny one
    assert rec["teacher_run"]["params"] > tm.params
    assert cache.exists() and json.loads(cache.with_suffix(".json").read_text())["teacher_seed"] == 3

    clf = StreamingClassifier.from_model(tm.path)
    clip = generate_corpus(n_speakers=1, clips_per_label=1, labels=TINY_LABELS, duration=(1.2, 1.6), seed=9)[0][1]
    wins, _, summary = clf.classify_clip(clip)
    assert wins and summary.label in TINY_LABELS

    # a second student with the same teacher options reuses the kept teacher (no retraining)
    tm2 = build_tiny_model(tmp_path / "student2.tflite", seed=1, epochs=1, distill=cfg, teacher_cache=cache)
    assert tm2.metadata["distillation"]["teacher_run"]["reused"] is True
    # other teacher options do not match the kept one: trained afresh
    other = DistillConfig(alpha=0.7, teacher=ModelConfig(arch="crnn", conv1=8, conv2=16, lstm=24), teacher_seed=3)
    tm3 = build_tiny_model(tmp_path / "student3.tflite", epochs=1, distill=other, teacher_cache=cache)
    assert tm3.metadata["distillation"]["teacher_run"]["reused"] is False

    # an ensemble of kept float models as the teacher: nothing is trained for it, its members are recorded
    members = [tm.path.with_name("student_float.npz"), tm2.path.with_name("student2_float.npz")]
    tm4 = build_tiny_model(tmp_path / "student4.tflite", epochs=1, distill=cfg, teacher_members=members)
    run = tm4.metadata["distillation"]["teacher_run"]
    assert run["kind"] == "ensemble" and run["members"] == [str(p) for p in members]
    assert run["params"] == tm.params + tm2.params
    assert StreamingClassifier.from_model(tm4.path).classify_clip(clip)[2].label in TINY_LABELS


def test_ensemble_logits_are_the_log_mean_probability():
    _tf()
    from model_build.distill import ensemble_logits
    from model_build.models import ModelConfig, build_model

    X = np.random.default_rng(6).normal(size=(12, 20, 6)).astype(np.float32)
    ms = [build_model(ModelConfig(arch="mlp", dense=8), 20, 6, C) for _ in range(3)]
    ps = [m.predict(X, verbose=0).astype(np.float64) for m in ms]
    z = ensemble_logits(ms, X)
    np.testing.assert_allclose(_softmax(z.astype(np.float64)), np.mean(ps, 0), rtol=1e-4, atol=1e-6)
    # one member: its own log-probabilities, i.e. its logits up to a per-row constant
    np.testing.assert_allclose(_softmax(ensemble_logits(ms[:1], X).astype(np.float64)), ps[0], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        ensemble_logits([], X)
