"""int8 conversion: the fused LSTM survives, and the checker rejects WHILE loops and float graphs."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_tiny_model_is_fused_pure_int8(tiny_model_path):
    from model_build.convert import check_int8_graph

    rep = check_int8_graph(tiny_model_path.read_bytes(), require_fused_lstm=True)
    assert rep.op_counts.get("UNIDIRECTIONAL_SEQUENCE_LSTM") == 1
    assert "WHILE" not in rep.op_counts
    assert not any(op.startswith(("FLEX", "CUSTOM")) for op in rep.op_counts)
    assert rep.input_dtype == "INT8" and rep.output_dtype == "INT8"
    assert "FLOAT32" not in rep.tensor_types
    assert rep.input_shape[0] == 1  # batch-1 input is what makes the LSTM fuse


def test_checker_rejects_while_loop_float_graph():
    """What a Keras-3 LSTM turns into: a WHILE loop (and here float32 tensors too)."""
    import tensorflow as tf

    from model_build.convert import GraphCheckError, check_int8_graph

    @tf.function(input_signature=[tf.TensorSpec([1, 20, 4], tf.float32)])
    def recurrent(x):
        def body(i, h):
            return i + 1, tf.tanh(h + tf.gather(x, i, axis=1))

        _, h = tf.while_loop(lambda i, h: i < 20, body, [tf.constant(0), tf.zeros([1, 4])])
        return h

    conv = tf.lite.TFLiteConverter.from_concrete_functions([recurrent.get_concrete_function()])
    with pytest.raises(GraphCheckError) as ei:
        check_int8_graph(conv.convert())
    msg = str(ei.value)
    assert "forbidden op WHILE" in msg
    assert "FLOAT32" in msg
    assert "model input is FLOAT32" in msg


def test_checker_rejects_float_model_and_missing_fusion():
    """A float (non-quantised) conversion of a tf-keras model fails; so does a missing fused LSTM."""
    import tensorflow as tf
    import tf_keras

    from model_build.convert import GraphCheckError, check_int8_graph, convert_int8

    inp = tf_keras.Input((10, 3), batch_size=1)
    m = tf_keras.Model(inp, tf_keras.layers.Dense(2)(tf_keras.layers.Flatten()(inp)))
    with pytest.raises(GraphCheckError, match="tensor .* is FLOAT32"):
        check_int8_graph(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    # int8 converts fine, but a caller that asked for the fused LSTM is told it is not there
    X = np.random.default_rng(0).normal(size=(20, 10, 3)).astype(np.float32)
    with pytest.raises(GraphCheckError, match="no fused UNIDIRECTIONAL_SEQUENCE_LSTM"):
        convert_int8(m, X, n_calib=20, require_fused_lstm=True)
    data, rep = convert_int8(m, X, n_calib=20)
    assert rep.op_counts == {"RESHAPE": 1, "FULLY_CONNECTED": 1} or "FULLY_CONNECTED" in rep.op_counts


def test_export_model_folds_normaliser_exactly(tiny_model_build):
    """The batch-1 export (normaliser folded into conv1, logits out) matches the trained model."""
    from model_build.models import ModelConfig, export_model
    from model_build.windows import softmax

    km = tiny_model_build.keras_model
    cfg = ModelConfig(**tiny_model_build.metadata["model_config"])
    W, F = tiny_model_build.metadata["window_frames"], tiny_model_build.metadata["n_features"]
    exp = export_model(km, cfg, W, F, len(tiny_model_build.metadata["labels"]))
    assert "norm" not in [layer.name for layer in exp.layers]
    X = np.random.default_rng(1).normal(-5, 8, size=(3, W, F)).astype(np.float32)
    p_train = km.predict(X, verbose=0)
    p_exp = np.concatenate([softmax(exp.predict(x[None], verbose=0)) for x in X])
    np.testing.assert_allclose(p_exp, p_train, atol=1e-5)
