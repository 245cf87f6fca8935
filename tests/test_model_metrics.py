"""Metrics against hand-computed examples; windowing and aggregation."""
from __future__ import annotations

import numpy as np
import pytest

from model_build.evaluate import confusion_matrix, metrics
from model_build.windows import aggregate, clip_windows, make_windows, softmax
from tests.conftest import require_module


def test_metrics_hand_computed():
    labels = ["a", "b", "c"]
    y_true = [0, 0, 0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 1, 2, 1, 0, 2, 2]
    m = metrics(y_true, y_pred, labels)
    # confusion: a: 2 a, 1 b, 1 c ; b: 1 a, 1 b ; c: 2 c
    assert m["confusion"] == [[2, 1, 1], [1, 1, 0], [0, 0, 2]]
    assert m["accuracy"] == pytest.approx(5 / 8)
    # recalls 2/4, 1/2, 2/2 -> UAR 2/3
    assert m["uar"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    # precisions: a 2/3, b 1/2, c 2/3
    pa, pb, pc = 2 / 3, 1 / 2, 2 / 3
    f1 = [2 * pa * 0.5 / (pa + 0.5), 2 * pb * 0.5 / (pb + 0.5), 2 * pc * 1.0 / (pc + 1.0)]
    assert m["per_class"]["a"]["precision"] == pytest.approx(pa)
    assert m["per_class"]["c"]["f1"] == pytest.approx(f1[2])
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["per_class"]["b"]["support"] == 2


def test_metrics_absent_and_never_predicted_classes():
    m = metrics([0, 0, 1], [0, 0, 0], ["x", "y", "z"])
    assert m["per_class"]["y"]["precision"] == 0.0 and m["per_class"]["y"]["recall"] == 0.0
    assert m["uar"] == pytest.approx(0.5)  # z absent from y_true: excluded
    assert m["per_class"]["z"]["support"] == 0


def test_metrics_agree_with_sklearn():
    sk = require_module("sklearn.metrics")
    rng = np.random.default_rng(0)
    yt, yp = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    m = metrics(yt, yp, list("abcde"))
    assert m["uar"] == pytest.approx(sk.balanced_accuracy_score(yt, yp))
    assert m["macro_f1"] == pytest.approx(sk.f1_score(yt, yp, average="macro"))
    assert np.array_equal(confusion_matrix(yt, yp, 5), sk.confusion_matrix(yt, yp, labels=range(5)))


def test_no_label_is_a_miss():
    m = metrics([0, 0, 1, 1], [0, -1, 1, -1], ["a", "b"])
    assert m["uar"] == pytest.approx(0.5) and m["no_label"] == 2 and m["per_class"]["a"]["support"] == 2
    assert m["confusion"] == [[1, 0], [0, 1]]


def test_training_windows_are_the_runtime_windows():
    """make_windows cuts clips with the runtime's plan_windows (policy: W=125, H=62, flush 16, min 28)."""
    from edge_runtime.window_policy import WindowPolicy, plan_windows

    pol = WindowPolicy().resolve(125, 62)
    feats = [np.zeros((220, 3)), np.ones((40, 3)), np.ones((20, 3))]  # 3.5 s, 0.64 s, 0.32 s (too short)
    X, ci, y = make_windows(feats, 125, 62, np.full(3, -1.0), labels=[5, 7, 9])
    assert [len(plan_windows(len(f), pol)) for f in feats] == [3, 1, 0]
    assert X.shape == (4, 125, 3) and ci.tolist() == [0, 0, 0, 1] and y.tolist() == [5, 5, 5, 7]
    assert (X[3, 40:] == -1).all() and (X[3, :40] == 1).all()
    w = clip_windows(feats[1], 125, 62, pad_frame=np.array([-9, -9, -9]))
    assert w.shape == (1, 125, 3) and (w[0, 40:] == -9).all()


def test_aggregate_is_the_mean_log_probability():
    ci = np.array([0, 0, 1])
    p = np.array([[0.9, 0.1], [0.05, 0.95], [0.2, 0.8]])
    agg = aggregate(p, ci, 3)
    g = np.exp(np.log(p[:2]).mean(0))
    np.testing.assert_allclose(agg[0], g / g.sum())  # geometric mean: 0.95 * 0.1 > 0.9 * 0.05
    assert agg[0].argmax() == 1 and np.allclose(agg[1], [0.2, 0.8]) and np.allclose(agg[2], [0.5, 0.5])
    np.testing.assert_allclose(softmax(np.array([[0.0, np.log(3)]])), [[0.25, 0.75]])


def test_silence_frame_is_the_log_floor():
    from edge_runtime.frontend import FrontendConfig
    from model_build.windows import silence_frame

    cfg = FrontendConfig(output="logmel", algorithm_version=1)
    s = silence_frame(cfg)
    assert s.shape == (cfg.n_mels,)
    assert np.allclose(s / 2**cfg.frac_bits, cfg.log_floor)
    # front end v2 subtracts the running mean: a stream's first frame (here: silence) is all zeros
    assert not np.any(silence_frame(FrontendConfig(output="logmel")))
