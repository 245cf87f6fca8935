"""Streaming = batch, bit for bit, whatever the chunking (property tests)."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.frontend import FrontendConfig, StreamingFrontend, compute_features

CFG = FrontendConfig()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 6000),
    seed=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.integers(0, 6000), max_size=12),
    output=st.sampled_from(["mfcc", "logmel"]),
)
def test_streaming_equals_batch_for_any_chunking(n, seed, cuts, output):
    cfg = FrontendConfig(output=output)
    x = np.random.default_rng(seed).integers(-32768, 32768, n).astype(np.int16)
    bounds = sorted({0, n, *[c for c in cuts if c <= n]})
    sf = StreamingFrontend(cfg)
    parts = [sf.push(x[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    got = np.concatenate(parts) if parts else np.zeros((0, cfg.n_features), np.int32)
    want = compute_features(x, cfg) if n else np.zeros((0, cfg.n_features), np.int32)
    np.testing.assert_array_equal(got, want)
    assert sf.frames_emitted == cfg.n_frames(n)


@settings(max_examples=25, deadline=None)
@given(level=st.integers(0, 32767), seed=st.integers(0, 1000))
def test_saturation_and_bounds_any_level(level, seed):
    """Any amplitude up to full scale: no overflow (values within [floor, 20) log2) and twin-close."""
    from edge_runtime.frontend import compute_features_float

    cfg = FrontendConfig(output="logmel", algorithm_version=2, norm="none")  # absolute values
    rng = np.random.default_rng(seed)
    x = np.clip(rng.standard_normal(2048) * level * 2, -32768, 32767).astype(np.int16)
    fixed = compute_features(x, cfg) / 2**16
    twin = compute_features_float(x, cfg) / 2**16
    assert np.all(fixed >= cfg.log_floor) and np.all(fixed < 20)
    assert np.max(np.abs(fixed - twin)) < 0.01


def test_streaming_reset_and_single_samples():
    x = np.random.default_rng(0).integers(-3000, 3000, 1500).astype(np.int16)
    sf = StreamingFrontend(CFG)
    out = [sf.push(x[i : i + 1]) for i in range(x.size)]
    np.testing.assert_array_equal(np.concatenate(out), compute_features(x, CFG))
    assert sf.pending_samples == x.size - sf.frames_emitted * CFG.hop_length
    sf.reset()
    assert sf.pending_samples == 0 and sf.frames_emitted == 0
    np.testing.assert_array_equal(sf.push(x), compute_features(x, CFG))
