"""Quantisation-aware fine-tuning (model_build.qat): the fake-quant ops round as the int8 converter does,
the fine-tuning moves the weights, and what it gives converts to a normal int8 model."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import require_module


def test_weight_fake_quant_matches_the_converters_int8_kernel(tiny_model_build):
    """The logits kernel the converter wrote (int8 codes x per-channel scales) is what
    fake_quant_weights makes of the float kernel: the same rounding, the same scales."""
    import tensorflow as tf

    from model_build.models import export_model
    from model_build.pipeline import load_float
    from model_build.qat import fake_quant_weights

    keras, mcfg, calib = load_float(tiny_model_build.path.with_name("tiny_float.npz"))
    exp = export_model(keras, mcfg, calib.shape[1], calib.shape[2], len(tiny_model_build.metadata["labels"]))
    k = exp.get_layer("logits").kernel.numpy()  # (H, C): output channels last
    it = tf.lite.Interpreter(model_content=tiny_model_build.model_bytes)
    t = next(d for d in it.get_tensor_details() if d["name"].endswith("logits/MatMul"))
    codes = it.get_tensor(t["index"]).astype(np.float64)  # (C, H) int8
    scales = t["quantization_parameters"]["scales"]
    assert len(scales) == k.shape[1]  # per output channel
    want = (codes * scales[:, None]).T
    got = fake_quant_weights(tf.constant(k), per_channel=True).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6 * np.abs(k).max())
    assert np.abs(codes).max() == 127  # symmetric, narrow range: each channel's largest weight is +-127


def test_weight_fake_quant_per_tensor_and_per_channel():
    require_module("tensorflow")
    import tensorflow as tf

    from model_build.qat import fake_quant_weights

    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 4, 3)).astype(np.float32) * np.array([0.1, 1.0, 10.0], np.float32)
    pc = fake_quant_weights(tf.constant(w), per_channel=True).numpy()
    for c in range(3):
        s = np.abs(w[..., c]).max() / 127
        np.testing.assert_allclose(pc[..., c], np.round(w[..., c] / s) * s, rtol=1e-5, atol=1e-7)
    pt = fake_quant_weights(tf.constant(w), per_channel=False).numpy()
    s = np.abs(w).max() / 127
    np.testing.assert_allclose(pt, np.round(w / s) * s, rtol=1e-5, atol=1e-6)
    assert len(np.unique(np.round(pt / s))) <= 255
    # the 0.1-scaled channel is coarsely rounded by one per-tensor scale, finely by its own
    assert np.abs(pt[..., 0] - w[..., 0]).max() > 10 * np.abs(pc[..., 0] - w[..., 0]).max()


def test_activation_fake_quant_rounds_to_256_levels_with_a_straight_through_gradient():
    require_module("tensorflow")
    import tensorflow as tf

    from model_build.qat import fake_quant

    x = tf.constant(np.linspace(-3.0, 5.0, 2001), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        q = fake_quant(x, -1.0, 2.0)
    g = tape.gradient(q, x).numpy()
    q, xv = q.numpy(), x.numpy()
    step = 3.0 / 255
    assert len(np.unique(q)) <= 256
    assert 0.0 in q  # zero is exactly representable (asymmetric int8, nudged zero point)
    inside = (xv > -0.99) & (xv < 1.99)
    assert np.abs(q - xv)[inside].max() <= step / 2 + 1e-6
    codes = (q - q.min()) / step
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)  # on the int8 grid
    assert q.min() == pytest.approx(-1.0, abs=step) and q.max() == pytest.approx(2.0, abs=step)  # clamped
    assert np.all(g[inside] == 1.0) and np.all(g[(xv < -1.1) | (xv > 2.1)] == 0.0)  # STE


def test_qat_forward_is_closer_to_the_int8_model_than_the_float_model_is(tiny_model_build):
    """The simulated rounding is the converter's: the fake-quantised logits sit nearer the real int8
    model's (LiteRT) than the float logits do."""
    import tf_keras

    from edge_runtime.interpreter import IntModel
    from model_build.pipeline import load_float
    from model_build.qat import LSTM_H_MAX, LSTM_H_MIN, QATForward

    keras, _, calib = load_float(tiny_model_build.path.with_name("tiny_float.npz"))
    fw = QATForward(keras, dropout=0.1)
    r = fw.measure_ranges(calib)
    assert r["relu1"][0] == 0.0 and r["input"][0] < 0 < r["input"][1]
    zf = tf_keras.Model(keras.inputs, keras.get_layer("logits").output).predict(calib, verbose=0)
    zq = fw.logits(calib.astype(np.float32), training=False).numpy()
    m = IntModel(tiny_model_build.model_bytes)
    md = tiny_model_build.metadata
    x8 = np.clip(np.round(calib / md["input_scale"]) + md["input_zero_point"], -128, 127).astype(np.int8)
    z8 = np.stack([(m.predict_window(w).astype(np.float64) - md["output_zero_point"]) * md["output_scale"] for w in x8])
    rms = lambda a, b: float(np.sqrt(np.mean((a - b) ** 2)))  # noqa: E731
    assert rms(zq, zf) > 0  # it does round
    # the control (no rounding) is the float model, unrolled: the LSTM loop and the folds are exact
    fc = QATForward(keras, dropout=0.1, rounding=False)
    fc.measure_ranges(calib)
    np.testing.assert_allclose(fc.logits(calib.astype(np.float32), training=False).numpy(), zf, atol=1e-4)
    assert rms(z8, zq) < 0.75 * rms(z8, zf), (rms(z8, zq), rms(z8, zf))
    assert LSTM_H_MIN == pytest.approx(-1.0, abs=0.01) and LSTM_H_MAX == pytest.approx(1.0, abs=0.01)


def test_qat_finetune_from_a_kept_model_gives_a_normal_int8_model(tiny_model_build, tmp_path):
    from edge_runtime.frontend import DEFAULT_CONFIG
    from edge_runtime.interpreter import IntModel, available_backends
    from model_build.convert import check_int8_graph
    from model_build.corpora.synth import generate_corpus
    from model_build.features import fixed_point_features
    from model_build.pipeline import LICENCES, load_float, train_and_convert
    from model_build.train import TrainConfig

    src = tiny_model_build.path.with_name("tiny_float.npz")
    md0 = tiny_model_build.metadata
    labels = tuple(md0["labels"])
    # the tiny model's own training clips (build_tiny_model's corpus, seed 0)
    pairs = generate_corpus(n_speakers=3, clips_per_label=15, labels=labels, duration=(0.8, 1.6), seed=0)
    feats = fixed_point_features([a for _, a in pairs], DEFAULT_CONFIG, cache_dir=None, progress=False)
    y = [labels.index(c.label) for c, _ in pairs]
    _, mcfg, _ = load_float(src)
    W = md0["window_frames"]
    out = tmp_path / "qat.tflite"
    tm = train_and_convert(feats, y, labels, DEFAULT_CONFIG, mcfg,
                           TrainConfig(epochs=3, batch_size=16, seed=0, verbose=False, qat_epochs=1, qat_lr=1e-3,
                                       qat_consistency=1.0),
                           window_frames=W, hop_frames=W // 2, train_hop_frames=max(1, W // 4), out_path=out,
                           val_feats=feats[::5], val_labels=np.array(y[::5]), model_name="tiny_qat",
                           trained_on="synth (test)", n_calib=200, extra_metadata={"licence": LICENCES["synth"]},
                           start_from=src, log=lambda s: None)
    # the fine-tuning moved the trainable weights; batch normalisation stays frozen (the converter folds it)
    before, _, _ = load_float(src)
    after, _, _ = load_float(out.with_name("qat_float.npz"))
    for name in ("conv1", "conv2", "lstm", "logits"):
        d = max(float(np.abs(a - b).max()) for a, b in zip(before.get_layer(name).get_weights(),
                                                           after.get_layer(name).get_weights()))
        assert d > 1e-5, name
    for name in ("bn1", "bn2", "norm"):
        for a, b in zip(before.get_layer(name).get_weights(), after.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    q = tm.metadata["qat"]
    assert q["consistency"] == 1.0 and q["control_without_rounding"] is False
    assert q["epochs"] == 1 and q["kept_epoch"] == 1 and len(q["history"]["loss"]) == 1 and len(q["history"]["val_uar"]) == 1
    # a normal model: pure int8, one fused LSTM, the same operators and metadata keys as the float-trained one
    rep = check_int8_graph(tm.model_bytes, require_fused_lstm=True)
    assert rep.op_counts == tiny_model_build.graph.op_counts
    assert set(md0) - set(tm.metadata) == set() and set(tm.metadata) - set(md0) == {"qat"}
    x = IntModel(tm.model_bytes).quantize(feats[0][:W] if len(feats[0]) >= W else np.resize(feats[0], (W, feats[0].shape[1])))
    outs = {b: IntModel(tm.model_bytes, backend=b).predict_window(x) for b in ("litert", "tflm")
            if b in available_backends() or b == "tflm"}
    assert outs["litert"].dtype == np.int8
    assert np.abs(outs["litert"].astype(int) - outs["tflm"].astype(int)).max() <= 1  # TFLite Micro runs it too


def test_consistency_kl_is_the_float_to_int8_kl():
    require_module("tensorflow")
    import tensorflow as tf

    from model_build.qat import consistency_kl

    zf = np.array([[2.0, 0.0, -1.0], [0.5, 0.4, 0.0]])
    zq = np.array([[1.8, 0.1, -1.0], [0.5, 0.4, 0.0]])
    pf = np.exp(zf) / np.exp(zf).sum(1, keepdims=True)
    pq = np.exp(zq) / np.exp(zq).sum(1, keepdims=True)
    want = (pf * np.log(pf / pq)).sum(1)
    got = consistency_kl(tf.constant(zf), tf.constant(zq)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[1] == 0.0 and got[0] > 0  # identical logits: no cost
    np.testing.assert_allclose(consistency_kl(tf.constant(zf + 3.0), tf.constant(zq)).numpy(), want, rtol=1e-5, atol=1e-12)  # shift-free


def test_bad_qat_options_are_refused(tmp_path, capsys):
    require_module("tensorflow")
    from bench.accuracy import parse_args
    from model_build.qat import check_options

    for argv, msg in ((["--qat-epochs", "-1"], "--qat-epochs -1: must be >= 0"),
                      (["--qat-epochs", "2", "--qat-lr", "0"], "--qat-lr 0.0: must be > 0"),
                      (["--qat-control"], "--qat-control without --qat-epochs"),
                      (["--qat-epochs", "2", "--qat-consistency", "-1"], "--qat-consistency -1.0: must be >= 0"),
                      (["--qat-epochs", "2", "--qat-control", "--qat-consistency", "1"], "--qat-consistency needs"),
                      (["--qat-from", str(tmp_path)], "--qat-from without --qat-epochs"),
                      (["--qat-epochs", "2", "--qat-from", str(tmp_path)], "no manifest.json"),
                      (["--qat-epochs", "2", "--pooling", "mean"], "--qat-epochs with --pooling mean"),
                      (["--qat-epochs", "2", "--distill-alpha", "0.5"], "--qat-epochs with --distill-alpha")):
        with pytest.raises(SystemExit) as e:
            parse_args(argv)
        assert e.value.code == 2, argv
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, (argv, err)
    a = parse_args(["--qat-epochs", "3"])
    assert (a.qat_epochs, a.qat_lr, a.qat_from) == (3, 2e-4, None)
    assert parse_args([]).qat_epochs == 0
    for epochs, lr, lam in ((-1, 1e-3, 0), (1.5, 1e-3, 0), (2, 0.0, 0), (2, float("nan"), 0), (2, 1e-3, -0.5)):
        with pytest.raises(ValueError, match="qat"):
            check_options(epochs, lr, lam)
    check_options(0, 1e-3)


def test_start_from_refuses_another_architecture(tiny_model_build, tmp_path):
    from edge_runtime.frontend import DEFAULT_CONFIG
    from model_build.models import ModelConfig
    from model_build.pipeline import train_and_convert
    from model_build.train import TrainConfig

    W = tiny_model_build.metadata["window_frames"]
    rng = np.random.default_rng(0)
    feats = [rng.integers(-3000, 3000, size=(W + 10, tiny_model_build.metadata["n_features"])).astype(np.int32) for _ in range(8)]
    with pytest.raises(ValueError, match="tiny_float.npz"):
        train_and_convert(feats, [0, 1, 2, 3] * 2, ("neutral", "happy", "sad", "angry"), DEFAULT_CONFIG,
                          ModelConfig(conv1=32), TrainConfig(epochs=1, qat_epochs=1), window_frames=W,
                          hop_frames=W // 2, train_hop_frames=W // 2, start_from=tiny_model_build.path.with_name("tiny_float.npz"),
                          log=lambda s: None)
