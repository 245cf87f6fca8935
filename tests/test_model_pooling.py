"""Pooling over the LSTM's time steps (``ModelConfig.pooling``): attention and mean+std statistics
pooling train, convert to a pure int8 graph of tflite-micro builtins, load through the runtime and
agree with their float model; the pooling layers compute what they claim."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow

# ops each pooling must add to the shipped graph (SQRT is float-only in tflite-micro: never allowed)
POOL_OPS = {"attention": {"SOFTMAX", "MUL", "SUM"}, "stats": {"MEAN", "RSQRT", "CONCATENATION"}}


@pytest.fixture(scope="module", params=sorted(POOL_OPS))
def pooled_model(request, tmp_path_factory):
    from tests.conftest import require_module

    require_module("tensorflow")
    require_module("tf_keras")
    from model_build.pipeline import build_tiny_model

    out = tmp_path_factory.mktemp(f"pool_{request.param}") / "tiny.tflite"
    return request.param, build_tiny_model(out, pooling=request.param)


def _windows(md, seed=7):
    """Real int8 model inputs: quantised fixed-point features of fresh synthetic clips."""
    from edge_runtime.frontend import DEFAULT_CONFIG
    from model_build.corpora.synth import generate_corpus
    from model_build.evaluate import quantize_features
    from model_build.features import fixed_point_features
    from model_build.windows import make_windows, silence_frame

    pairs = generate_corpus(n_speakers=2, clips_per_label=3, labels=tuple(md["labels"]), duration=(1.0, 2.0),
                            seed=seed)
    feats = fixed_point_features([a for _, a in pairs], DEFAULT_CONFIG, cache_dir=None, progress=False)
    Q, _, _ = make_windows(feats, md["window_frames"], md["hop_frames"], silence_frame(DEFAULT_CONFIG))
    return pairs, Q, quantize_features(Q, DEFAULT_CONFIG.frac_bits, md["input_scale"], md["input_zero_point"])


def test_pooled_model_is_pure_int8_and_runs_in_the_runtime(pooled_model):
    from edge_runtime.classifier import StreamingClassifier
    from edge_runtime.interpreter import IntModel, _fits, compare_int8, run_litert, run_tflm
    from model_build.convert import check_int8_graph

    pooling, tm = pooled_model
    data = tm.path.read_bytes()
    rep = check_int8_graph(data, require_fused_lstm=True)
    assert POOL_OPS[pooling] <= set(rep.op_counts), rep.op_counts
    assert "SQRT" not in rep.op_counts and "STRIDED_SLICE" not in rep.op_counts  # all steps used, not the last
    assert tm.metadata["model_config"]["pooling"] == pooling
    assert tm.metadata["arch"].endswith(f"-{pooling}pool-dense")

    # the runtime path (what `ser-edge run` uses): metadata checks, quantiser, window policy, gate
    clf = StreamingClassifier.from_model(tm.path)
    pairs, _, X8 = _windows(tm.metadata)
    wins, _, summary = clf.classify_clip(pairs[0][1])
    assert wins and summary.label in tm.metadata["labels"]

    # int8 graph vs its float model: the quantised pooling computes the same thing
    im = IntModel(tm.path)
    q8 = np.stack([im.dequantize(im.predict_window(w)) for w in X8])
    real = (X8.astype(np.float32) - tm.metadata["input_zero_point"]) * tm.metadata["input_scale"]
    from model_build.models import ModelConfig, export_model

    exp = export_model(tm.keras_model, ModelConfig(**tm.metadata["model_config"]), tm.metadata["window_frames"],
                       tm.metadata["n_features"], len(tm.metadata["labels"]))
    fl = exp.predict(real, verbose=0)
    assert np.mean(q8.argmax(1) == fl.argmax(1)) >= 0.8
    assert np.corrcoef(q8.ravel(), fl.ravel())[0, 1] > 0.95

    # tflite-micro runs the new ops (the micro-controller interpreter). Bound: the shipped ("last")
    # tiny model on these same windows also differs from LiteRT by up to 2 LSB, with the same top-1
    c = compare_int8(run_litert(data, X8, kernels="builtin"), run_tflm(data, X8))
    assert c["n_windows"] == len(X8) >= 8
    assert c["max_abs_lsb"] <= 2, c
    assert c["top1_agreement"] >= 0.9, c
    # fits the 32 KB arena budget, by the same bisection the build and check-model use (each probe in a
    # child process: tflite-micro can segfault in the LSTM's Prepare at some too-small arenas)
    from edge_runtime.interpreter import min_arena_size

    arena = min_arena_size(data)["arena_bytes"]
    assert 1024 < arena <= 32768
    assert _fits(data, arena, np.zeros((1, *X8.shape[1:]), np.int8))


def test_pooling_layers_compute_mean_std_and_attention():
    """The float layers themselves: statistics pooling is [mean, std] over time; attention weights sum to 1."""
    from tests.conftest import require_module

    require_module("tf_keras")
    import tf_keras

    from model_build.models import ModelConfig, build_model

    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=(3, 24, 4)).astype(np.float32)
    m = build_model(ModelConfig(arch="lstm", lstm=6, pooling="stats"), 24, 4, 3)
    h_model = tf_keras.Model(m.input, m.get_layer("lstm").output)
    h = h_model.predict(x, verbose=0).astype(np.float64)
    stats = tf_keras.Model(m.input, m.get_layer("pool_stats").output).predict(x, verbose=0)
    np.testing.assert_allclose(stats[:, :6], h.mean(1), atol=1e-5)
    np.testing.assert_allclose(stats[:, 6:], np.sqrt(h.var(1) + 1e-3), atol=1e-4)

    m = build_model(ModelConfig(arch="lstm", lstm=6, pooling="attention"), 24, 4, 3)
    w = tf_keras.Model(m.input, m.get_layer("att_softmax").output).predict(x, verbose=0)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
    h = tf_keras.Model(m.input, m.get_layer("lstm").output).predict(x, verbose=0)
    pooled = tf_keras.Model(m.input, m.get_layer("att_sum").output).predict(x, verbose=0)
    np.testing.assert_allclose(pooled, np.einsum("bt,btc->bc", w, h), atol=1e-5)


def test_pooling_option_is_checked():
    from model_build.models import ModelConfig, build_model

    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        build_model(ModelConfig(pooling="max"), 24, 4, 3)
    with pytest.raises(ValueError, match="pooling applies to the LSTM archs"):
        build_model(ModelConfig(arch="mlp", pooling="attention"), 24, 4, 3)
