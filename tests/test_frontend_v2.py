"""Front end version 2: gain normalisation (exact gain cancellation), radix-4 FFT, v1 still served."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.frontend import (
    FrontendConfig,
    StreamingFrontend,
    compute_features,
    compute_features_float,
    compute_features_many,
)
from edge_runtime.frontend.fixed_point import NORM_FRAC_BITS, NormState, engine_for, frame_signal, normalise_mean
from edge_runtime.frontend.float_twin import normalise_mean_float
from edge_runtime.test_signals import harmonic_vowel, quiet_speechlike, speech_with_pauses, tone_sweep, white_noise

V2 = FrontendConfig(algorithm_version=2, output="logmel")
SHIPPED_V1_HASH = "f87a45e1b3aff79a"  # edge_runtime/models/default.tflite records this front end


def snr_db(fixed: np.ndarray, twin: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(twin**2) / np.sum((fixed - twin) ** 2)))


def test_v1_configuration_and_hash_unchanged():
    v1 = FrontendConfig(algorithm_version=1, output="logmel")
    assert v1.hash == SHIPPED_V1_HASH
    assert "norm" not in v1.to_dict() and v1.block_bits == 21 and v1.fft_shift == 0
    assert FrontendConfig.from_dict(v1.to_dict()) == v1
    assert V2.hash != v1.hash and V2.block_bits == 23 and V2.norm == "mean" and V2.norm_shift == 7
    assert FrontendConfig.from_dict(V2.to_dict()) == V2
    assert V2.diff(v1)["norm"] == ("mean", "<absent>")
    with pytest.raises(ValueError, match="algorithm_version 3 is not supported"):
        FrontendConfig.from_dict({**V2.to_dict(), "algorithm_version": 3})
    with pytest.raises(ValueError, match="need algorithm_version 2"):
        FrontendConfig(algorithm_version=1, norm="mean")
    with pytest.raises(ValueError, match="norm_shift"):
        FrontendConfig(algorithm_version=2, norm_shift=13)
    with pytest.raises(ValueError, match="block_bits"):
        FrontendConfig(algorithm_version=2, block_bits=24)  # dr + di would overflow int32 in C
    assert FrontendConfig(algorithm_version=2, norm="none", norm_shift=5).norm_shift == 0  # canonical


def test_power_of_two_gain_gives_bit_identical_features():
    """x and 4x (no clipping): block floating point makes the spectra identical and the log values
    differ by exactly 4 log2 units, which the running mean removes exactly, from the first frame."""
    x = harmonic_vowel(2.0, level_dbfs=-20.0, seed=5)
    y = (x.astype(np.int32) * 4).astype(np.int16)
    for cfg in (V2, FrontendConfig(algorithm_version=2, output="mfcc", norm_shift=3)):
        np.testing.assert_array_equal(compute_features(x, cfg), compute_features(y, cfg))
    v1 = FrontendConfig(algorithm_version=1, output="logmel")
    d = (compute_features(y, v1) - compute_features(x, v1)) / 2**16
    assert np.median(d) == 4.0  # without normalisation the level is in every value


@pytest.mark.parametrize("gain_db", [-30.0, -17.3, -6.0, 4.5])
def test_any_gain_cancels_after_start_up(gain_db):
    """x * 10^(g/20), rounded to int16: the only differences left are the int16 rounding noise of the
    scaled signal in weak bands; v1 features move by g / 3.01 log2 units everywhere."""
    x = harmonic_vowel(3.0, level_dbfs=-6.0, seed=2).astype(np.float64)
    x += np.random.default_rng(0).standard_normal(x.size) * 300  # a noise floor well above 1 LSB
    loud = np.round(x * 10 ** (-2 / 20)).astype(np.int16)
    quiet = np.round(x * 10 ** ((gain_db - 2) / 20)).astype(np.int16)
    a = compute_features(loud, V2) / 2**16
    b = compute_features(quiet, V2) / 2**16
    diff = np.abs(a - b)
    # the level removed is |g| / 3.01 log2 units (up to 10); what is left is 1000x smaller
    assert diff.max() < 0.15 and np.percentile(diff, 99) < 0.08 and np.median(diff) < 0.01, (diff.max(), np.median(diff))
    v1 = FrontendConfig(algorithm_version=1, output="logmel")
    shift = np.median(compute_features(loud, v1) - compute_features(quiet, v1)) / 2**16
    assert abs(shift + gain_db / (10 * np.log10(2))) < 0.05  # the level v2 removes (energy, log2)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), offset=st.integers(-(2**20), 2**20), shift=st.integers(0, 8),
       n=st.integers(1, 300))
def test_running_mean_cancels_any_constant_offset_exactly(seed, offset, shift, n):
    cfg = FrontendConfig(algorithm_version=2, output="logmel", norm_shift=shift)
    rng = np.random.default_rng(seed)
    logmel = rng.integers(-24 * 2**16, 18 * 2**16, (cfg.n_mels, n)).astype(np.int64)
    y0 = normalise_mean(logmel, NormState.new(cfg), cfg)
    y1 = normalise_mean(logmel + offset, NormState.new(cfg), cfg)
    np.testing.assert_array_equal(y0, y1)
    assert np.all(y0[:, 0] == 0)  # the first frame is its own mean
    # the integer mean tracks the exact one within a few Q23 units (the smoother's dead zone)
    exact = normalise_mean_float(logmel.T.astype(np.float64), shift).T
    assert np.max(np.abs(y0 - exact)) <= 1 + 2 ** max(shift - 1 - NORM_FRAC_BITS, 0)


def test_running_mean_start_up_is_the_cumulative_mean():
    cfg = FrontendConfig(algorithm_version=2, output="logmel", norm_shift=6)
    logmel = np.random.default_rng(3).integers(-2**20, 2**20, (cfg.n_mels, 64)).astype(np.int64)
    y = normalise_mean(logmel, NormState.new(cfg), cfg)
    cum = np.cumsum(logmel, axis=1) / np.arange(1, 65)
    assert np.max(np.abs(y - (logmel - cum))) <= 2  # rounding only (Q23 state, Q16 output)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 9000), seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(0, 9000), max_size=12),
       output=st.sampled_from(["mfcc", "logmel"]), shift=st.sampled_from([0, 2, 7]))
def test_v2_streaming_equals_batch_for_any_chunking(n, seed, cuts, output, shift):
    cfg = FrontendConfig(algorithm_version=2, output=output, norm_shift=shift)
    x = np.random.default_rng(seed).integers(-32768, 32768, n).astype(np.int16)
    bounds = sorted({0, n, *[c for c in cuts if c <= n]})
    sf = StreamingFrontend(cfg)
    parts = [sf.push(x[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    got = np.concatenate(parts) if parts else np.zeros((0, cfg.n_features), np.int32)
    want = compute_features(x, cfg) if n else np.zeros((0, cfg.n_features), np.int32)
    np.testing.assert_array_equal(got, want)
    sf.reset()  # a new stream starts its mean afresh
    if n:
        np.testing.assert_array_equal(sf.push(x), want)


def test_v2_many_equals_single():
    clips = [harmonic_vowel(1.3, seed=1), white_noise(0.2, seed=2), np.zeros(100, np.int16), tone_sweep(0.05),
             speech_with_pauses(4.0), harmonic_vowel(0.6, seed=3)]
    for cfg in (V2, FrontendConfig(algorithm_version=2, norm_shift=3), FrontendConfig(norm_shift=0)):
        # clips without frames first, in the middle and last
        for cl in (clips, [np.zeros(7, np.int16), *clips, np.zeros(100, np.int16)]):
            many = compute_features_many(cl, cfg)
            assert len(many) == len(cl)
            for clip, feats in zip(cl, many):
                np.testing.assert_array_equal(feats, compute_features(clip, cfg))


@pytest.mark.parametrize("output", ["logmel", "mfcc"])
def test_v2_tracks_its_float_twin(output):
    cfg = FrontendConfig(algorithm_version=2, output=output)
    for name, x, goal in (("sweep", tone_sweep(3.0), 66), ("speech", speech_with_pauses(4.0), 80),
                          ("quiet", quiet_speechlike(2.0), 75), ("noise", white_noise(1.0), 85)):
        assert snr_db(compute_features(x, cfg), compute_features_float(x, cfg)) > goal, name


def test_v2_fft_matches_exact_dft_of_its_input():
    """Radix-4 FFT + real split = the exact DFT of the normalised frame / 2^fft_shift, within a few LSB."""
    for cfg in (V2, FrontendConfig(algorithm_version=2, frame_length=256, hop_length=128, n_mels=24)):
        eng = engine_for(cfg)
        frames = frame_signal(white_noise(0.3, seed=3), cfg)
        re, im, s = eng.window_and_normalise(frames)
        assert np.abs(np.concatenate([re, im])).max() <= 2**cfg.block_bits
        v = np.empty((frames.shape[0], cfg.frame_length))
        v[:, 0::2], v[:, 1::2] = re.T, im.T
        exact = np.fft.rfft(v, axis=1)[:, eng.t.mel.bin_lo : eng.t.mel.bin_hi] / 2**cfg.fft_shift
        xr, xi = eng.real_split(*eng.fft_v2(re.copy(), im.copy()))
        err = np.abs((xr + 1j * xi).T - exact)
        assert err.max() < 16, err.max()
        assert np.abs(exact).max() > 2**24


def test_v2_full_scale_stays_in_range():
    """Worst cases for the int32 bounds of the v2 FFT: full-scale DC, Nyquist, square, noise."""
    n = 4096
    cfg = FrontendConfig(algorithm_version=2, output="logmel", norm="none")
    eng = engine_for(cfg)
    for x in (np.full(n, -32768, np.int16), np.tile(np.array([32767, -32768], np.int16), n // 2),
              np.where((np.arange(n) // 20) % 2, 32767, -32768).astype(np.int16),
              np.random.default_rng(0).integers(-32768, 32768, n).astype(np.int16)):
        frames = frame_signal(x, cfg)
        re, im, s = eng.window_and_normalise(frames)
        zr, zi = eng.fft_v2(re, im)
        assert max(np.abs(zr).max(), np.abs(zi).max()) < 2**30.5
        xr, xi = eng.real_split(zr, zi)
        assert max(np.abs(xr).max(), np.abs(xi).max()) <= 2**30
        twin = compute_features_float(x, cfg)
        assert np.max(np.abs(compute_features(x, cfg) - twin)) / 2**16 < 0.05


def test_shipped_model_still_gets_version_1_features():
    from pathlib import Path

    from edge_runtime.model_metadata import read_metadata

    model = Path(__file__).resolve().parent.parent / "edge_runtime" / "models" / "default.tflite"
    md = read_metadata(model)
    cfg = md.frontend_config()
    if cfg.algorithm_version == 1:  # until a version-2 model ships
        assert cfg.hash == md.frontend_hash == SHIPPED_V1_HASH
        x = harmonic_vowel(1.0)
        np.testing.assert_array_equal(compute_features(x, cfg), compute_features(x, FrontendConfig(algorithm_version=1, output="logmel")))
    else:
        assert cfg.hash == md.frontend_hash


@pytest.mark.parametrize("version,want", [("1", SHIPPED_V1_HASH), (None, V2.hash)])
def test_cli_selects_the_version(version, want):
    import json
    import subprocess
    import sys
    from pathlib import Path

    cmd = [sys.executable, "-m", "edge_runtime", "frontend", "--output", "logmel", "--json"]
    if version:
        cmd += ["--frontend-version", version]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent, timeout=120)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["frontend_hash"] == want and summary["snr_vs_float_twin_db"] > 66
