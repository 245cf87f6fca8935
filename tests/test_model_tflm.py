"""int8 inference in LiteRT and TensorFlow Lite Micro: state reset, agreement, arena size."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def int8_windows(tiny_model_build):
    """Real int8 inputs: quantised fixed-point features of freshly generated clips."""
    from edge_runtime.frontend import DEFAULT_CONFIG
    from model_build.corpora.synth import generate_corpus
    from model_build.evaluate import quantize_features
    from model_build.features import fixed_point_features
    from model_build.windows import make_windows, silence_frame

    md = tiny_model_build.metadata
    pairs = generate_corpus(n_speakers=2, clips_per_label=4, labels=tuple(md["labels"]), duration=(1.0, 2.5), seed=7)
    feats = fixed_point_features([a for _, a in pairs], DEFAULT_CONFIG, cache_dir=None, progress=False)
    Q, _, _ = make_windows(feats, md["window_frames"], md["hop_frames"], silence_frame(DEFAULT_CONFIG))
    return quantize_features(Q, DEFAULT_CONFIG.frac_bits, md["input_scale"], md["input_zero_point"])


def test_reset_matters(tiny_model_path, int8_windows):
    """The fused LSTM keeps state across invocations: without a reset the same window scores differ."""
    from edge_runtime.interpreter import run_litert, run_tflm

    data = tiny_model_path.read_bytes()
    x = np.repeat(int8_windows[:1], 3, axis=0)  # the same window three times in a row
    for run in (run_litert, run_tflm):
        with_reset = run(data, x, reset=True)
        assert (with_reset == with_reset[0]).all(), run.__name__
        no_reset = run(data, x, reset=False)
        assert (no_reset[0] == with_reset[0]).all()  # first call starts from the initial state
        assert (no_reset[1:] != with_reset[1:]).any(), f"{run.__name__}: state did not carry over"


def test_tflm_matches_litert_within_one_lsb(tiny_model_path, int8_windows):
    from edge_runtime.interpreter import compare_int8, run_litert, run_tflm

    data = tiny_model_path.read_bytes()
    tflm = run_tflm(data, int8_windows)
    # same integer kernels family (no XNNPACK): within 1 LSB
    c = compare_int8(run_litert(data, int8_windows, kernels="builtin"), tflm)
    assert c["n_windows"] == len(int8_windows) >= 8
    assert c["max_abs_lsb"] <= 1, c
    assert c["top1_agreement"] >= 0.9, c
    # LiteRT's default XNNPACK delegate requantises conv/FC differently: 1 LSB can stack to 2
    d = compare_int8(run_litert(data, int8_windows), tflm)
    assert d["max_abs_lsb"] <= 2, d
    assert d["fraction_scores_differing"] < 0.5, d


def test_min_arena_is_tight(tiny_model_path):
    from edge_runtime.interpreter import _fits, min_arena_size
    from edge_runtime.native_log import quiet_native_stderr

    data = tiny_model_path.read_bytes()
    r = min_arena_size(data, granularity=16)
    assert 1024 < r["arena_bytes"] < 64 * 1024
    from model_build.embed_metadata import read_metadata

    md = read_metadata(data)
    probe = np.zeros((1, md["window_frames"], md["n_features"]), np.int8)
    assert _fits(data, r["arena_bytes"], probe)
    with quiet_native_stderr():
        assert not _fits(data, r["arena_bytes"] - 256, probe)
    if r["recorded_arena_bytes"] is not None:
        assert abs(r["recorded_arena_bytes"] - r["arena_bytes"]) < 1024
