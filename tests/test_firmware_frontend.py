"""C front end (firmware/ser_frontend.c, built with the system gcc) == numpy front end, bit for bit."""
from __future__ import annotations

import ctypes
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.frontend import FrontendConfig, StreamingFrontend, compute_features
from firmware_bridge.cbuild import CFrontend, load_library, quantize
from firmware_bridge.export import tables_checksum
from tests.golden.regen_frontend_golden import CASES, golden_signal

GOLDEN = json.loads((Path(__file__).parent / "golden" / "frontend_golden.json").read_text())

CONFIGS = {
    "mfcc": FrontendConfig(),  # version 2
    "logmel": FrontendConfig(output="logmel"),
    "v1_mfcc": FrontendConfig(algorithm_version=1),
    "v1_logmel": FrontendConfig(algorithm_version=1, output="logmel"),  # the shipped model's
    "logmel_shift2": FrontendConfig(output="logmel", norm_shift=2),
    "n256_v1": FrontendConfig(algorithm_version=1, frame_length=256, hop_length=128, n_mels=24),
    "n256_h128_m24": FrontendConfig(frame_length=256, hop_length=128, n_mels=24),
    "n256_h100_m24_logmel_q8": FrontendConfig(frame_length=256, hop_length=100, n_mels=24,
                                              output="logmel", frac_bits=8),
    "n1024_m64_mfcc20": FrontendConfig(frame_length=1024, hop_length=1024, n_mels=64, n_mfcc=20,
                                       block_bits=20, fmin=60.0),
}


@pytest.fixture(scope="module", params=list(CONFIGS), ids=list(CONFIGS))
def fe(request) -> CFrontend:
    return CFrontend(CONFIGS[request.param])


_FE_CACHE: dict = {}


def _fe(name: str) -> CFrontend:
    if name not in _FE_CACHE:
        _FE_CACHE[name] = CFrontend(CONFIGS[name])
    return _FE_CACHE[name]


def _ref(x: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    return compute_features(x, cfg) if x.size else np.zeros((0, cfg.n_features), np.int32)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_vectors_bit_exact(name):
    case = GOLDEN["cases"][name]
    cfg = FrontendConfig(**CASES[name])
    assert cfg.hash == case["config_hash"]
    fe = CFrontend(cfg)
    want = np.array(case["features"], np.int32)
    np.testing.assert_array_equal(fe.compute(golden_signal()), want)
    # streaming with awkward chunks: through ser_fe_push / ser_fe_pop
    s = fe.stream()
    x = golden_signal()
    parts = [s.push(p) for p in np.split(x, [1, 255, 256, 257, 700, 1499, 1500, 2047])]
    np.testing.assert_array_equal(np.concatenate(parts), want)


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(list(CONFIGS)),
    n=st.integers(0, 5000),
    seed=st.integers(0, 2**32 - 1),
    level=st.sampled_from([0, 1, 3, 100, 3000, 32767, 40000]),
    cuts=st.lists(st.integers(0, 5000), max_size=10),
)
def test_random_audio_random_chunking_bit_exact(name, n, seed, level, cuts):
    fe = _fe(name)
    cfg = fe.cfg
    rng = np.random.default_rng(seed)
    x = np.clip(np.round(rng.standard_normal(n) * level), -32768, 32767).astype(np.int16)
    want = _ref(x, cfg)
    np.testing.assert_array_equal(fe.compute(x), want)
    bounds = sorted({0, n, *[c for c in cuts if c <= n]})
    s = fe.stream()
    parts = [s.push(x[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    got = np.concatenate(parts) if parts else np.zeros((0, cfg.n_features), np.int32)
    np.testing.assert_array_equal(got, want)
    # the same state continues like the numpy streaming front end
    sf = StreamingFrontend(cfg)
    sf.push(x) if n else None
    assert s.samples_needed == cfg.frame_length - sf.pending_samples


@pytest.mark.parametrize("kind", ["full_scale_square", "min_only", "max_only", "alternating_max",
                                  "single_impulse", "silence", "lsb_noise", "dc_offset"])
def test_saturation_and_edge_inputs(fe, kind):
    cfg = fe.cfg
    n = cfg.frame_length * 6 + 37
    i = np.arange(n)
    x = {
        "full_scale_square": np.where((i // 8) % 2, 32767, -32768),
        "min_only": np.full(n, -32768),
        "max_only": np.full(n, 32767),
        "alternating_max": np.where(i % 2, 32767, -32768),
        "single_impulse": (i == cfg.frame_length + 3) * -32768,
        "silence": np.zeros(n),
        "lsb_noise": np.random.default_rng(3).integers(-1, 2, n),
        "dc_offset": np.full(n, 1234),
    }[kind].astype(np.int16)
    want = _ref(x, cfg)
    got = fe.compute(x)
    np.testing.assert_array_equal(got, want)
    if kind == "silence":  # every mel at the floor (v2: at its mean)
        assert len(np.unique(got, axis=0)) == 1


def test_short_clips_give_zero_frames():
    fe = _fe("mfcc")
    for n in (0, 1, 511):
        assert fe.compute(np.ones(n, np.int16)).shape == (0, 13)
    assert fe.compute(np.ones(512, np.int16)).shape == (1, 13)


@pytest.mark.parametrize("lanes", [None, 1], ids=["host_lanes", "one_frame"])
def test_batch_lanes_bit_exact(fe, lanes):
    """ser_fe_compute transforms SER_FE_LANES frames side by side on 64-bit hosts (version 2):
    blocks whose frames have very different levels (so every lane has its own block shift: digital
    silence, full scale, +-1 LSB, speech-like), then a partial block, == numpy; and the same with the
    one-frame-at-a-time build (-DSER_FE_LANES=1, what a microcontroller runs)."""
    cfg = fe.cfg
    c = fe if lanes is None else CFrontend(cfg, extra_flags=(f"-DSER_FE_LANES={lanes}",))
    n_lanes = int(c.lib.ser_fe_lanes())
    if lanes is None and __import__("platform").machine() in ("x86_64", "AMD64", "aarch64"):
        assert n_lanes > 1  # the path under test is really in use
    else:
        assert n_lanes == (lanes or n_lanes)
    rng = np.random.default_rng(7)
    n_frames = 3 * max(n_lanes, 8) + 5
    n = cfg.frame_length + (n_frames - 1) * cfg.hop_length
    levels = rng.choice([0, 1, 30, 3000, 32767], size=n // cfg.hop_length + 1)
    x = rng.standard_normal(n) * np.repeat(levels, cfg.hop_length)[:n]
    x[: cfg.hop_length] = np.where(np.arange(cfg.hop_length) % 2, 32767, -32768)  # full-scale square
    x = np.clip(np.round(x), -32768, 32767).astype(np.int16)
    want = _ref(x, cfg)
    assert len(want) == n_frames
    for m in (n, n - cfg.hop_length, n - 5 * cfg.hop_length):  # block boundaries move
        np.testing.assert_array_equal(c.compute(x[:m]), want[: cfg.n_frames(m)])


def test_tables_checksum_matches_python(fe):
    assert fe.checksum() == tables_checksum(fe.cfg)


def test_check_tables_rejects_bad_parameters():
    lib = load_library()
    fe = CFrontend(CONFIGS["mfcc"])
    t = fe.tables
    assert lib.ser_fe_check_tables(ctypes.byref(t)) == 0
    for field, value in (("block_bits", 24), ("frame_length", 500), ("hop_length", 0),
                         ("n_out", 41), ("log_table_bits", 16), ("bin_hi", 300), ("fft_shift", 1),
                         ("norm", 2), ("norm_shift", 13), ("algorithm_version", 3)):
        old = getattr(t, field)
        setattr(t, field, value)
        try:
            assert lib.ser_fe_check_tables(ctypes.byref(t)) == -3, field
        finally:
            setattr(t, field, old)
    fe_v1 = CFrontend(CONFIGS["v1_mfcc"])  # keep it alive: its tables point into its arrays
    v1 = fe_v1.tables
    assert lib.ser_fe_check_tables(ctypes.byref(v1)) == 0
    for field, value in (("block_bits", 22), ("norm", 1), ("fft_shift", 2)):  # not version 1
        old = getattr(v1, field)
        setattr(v1, field, value)
        try:
            assert lib.ser_fe_check_tables(ctypes.byref(v1)) == -3, field
        finally:
            setattr(v1, field, old)
    t.n_mels = 129  # above the compiled SER_FE_MAX_MELS of the host build
    assert lib.ser_fe_check_tables(ctypes.byref(t)) == -2
    t.n_mels = 40
    old = t.dct_q
    t.dct_q = None
    assert lib.ser_fe_check_tables(ctypes.byref(t)) == -1
    t.dct_q = old


@settings(max_examples=40, deadline=None)
@given(scale=st.floats(1e-3, 5.0), zp=st.integers(-128, 127), seed=st.integers(0, 1000))
def test_quantizer_matches_runtime(scale, zp, seed):
    from edge_runtime.interpreter import FeatureQuantizer

    fq = FeatureQuantizer(2.0 ** -16, scale, zp)
    rng = np.random.default_rng(seed)
    q = np.concatenate([rng.integers(-2**27, 2**27, 300), [0, 1, -1, 2**31 - 1, -2**31],
                        np.round(rng.uniform(-130, 130, 100) * scale * 2**16 + 0.5 * scale * 2**16)]).astype(np.int32)
    np.testing.assert_array_equal(quantize(q, fq.m0, fq.right_shift, zp), fq(q))
