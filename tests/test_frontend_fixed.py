"""Fixed-point front end: golden vectors, agreement with the float twin, bounds, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.frontend import (
    FrontendConfig,
    FrontendInputError,
    compute_features,
    compute_features_float,
    compute_features_many,
    make_tables,
)
from edge_runtime.frontend.fixed_point import _bit_length, engine_for, frame_signal
from edge_runtime.test_signals import dithered_silence, harmonic_vowel, quiet_speechlike, tone_sweep, white_noise
from tests.golden.regen_frontend_golden import CASES, golden_signal, tables_digest

GOLDEN = json.loads((Path(__file__).parent / "golden" / "frontend_golden.json").read_text())


def snr_db(fixed: np.ndarray, twin: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(twin**2) / np.sum((fixed - twin) ** 2)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_vectors_bit_exact(name):
    case = GOLDEN["cases"][name]
    cfg = FrontendConfig(**CASES[name])
    assert cfg.hash == case["config_hash"], "config defaults changed: regenerate the golden file on purpose"
    assert tables_digest(cfg) == case["tables_digest"], "integer tables changed"
    got = compute_features(golden_signal(), cfg)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, np.array(case["features"], dtype=np.int32))


def test_fft_stage_matches_exact_dft_of_its_input():
    """The v1 integer FFT + real split is within a few LSB of the exact DFT of the normalised frame
    (version 2: tests/test_frontend_v2.py)."""
    cfg = FrontendConfig(algorithm_version=1)
    eng = engine_for(cfg)
    frames = frame_signal(white_noise(0.3, seed=3), cfg)
    re, im, s = eng.window_and_normalise(frames)
    v = np.empty((frames.shape[0], cfg.frame_length))
    v[:, 0::2], v[:, 1::2] = re.T, im.T
    exact = np.fft.rfft(v, axis=1)[:, eng.t.mel.bin_lo : eng.t.mel.bin_hi]
    xr, xi = eng.real_split(*eng.fft(re.copy(), im.copy()))
    err = np.abs((xr + 1j * xi).T - exact)
    # unnormalised butterflies amplify early rounding by up to sqrt(2) per later stage
    assert err.max() < 64, err.max()  # values reach 2^24..2^28: relative error < 2^-18
    assert np.abs(exact).max() > 2**24


@pytest.mark.parametrize(
    "name,signal,min_snr",
    [
        ("vowel", harmonic_vowel(1.0), 90),
        ("white", white_noise(1.0, level_dbfs=-6), 90),
        ("sweep", tone_sweep(1.0), 60),
        ("quiet", quiet_speechlike(1.0), 90),
        ("dither", dithered_silence(1.0), 90),
    ],
)
def test_fixed_point_tracks_float_twin(name, signal, min_snr):
    for cfg in (FrontendConfig(algorithm_version=1), FrontendConfig(algorithm_version=2, norm="none")):
        fixed = compute_features(signal, cfg)
        twin = compute_features_float(signal, cfg)
        assert fixed.shape == twin.shape == (cfg.n_frames(signal.size), cfg.n_features)
        assert snr_db(fixed, twin) > min_snr, cfg.algorithm_version


@pytest.mark.parametrize("version", [1, 2])
def test_full_scale_input_saturates_cleanly(version):
    """Worst cases for every bound: full-scale DC, Nyquist square, impulses: finite, sane, twin-close."""
    cfg = FrontendConfig(output="logmel", algorithm_version=version, norm=None if version == 1 else "none")
    n = 4096
    cases = {
        "dc_max": np.full(n, 32767, np.int16),
        "dc_min": np.full(n, -32768, np.int16),
        "nyquist": np.tile(np.array([32767, -32768], np.int16), n // 2),
        "impulses": np.where(np.arange(n) % 300 == 0, 32767, 0).astype(np.int16),
        "clipped_sine": np.clip(np.round(3 * 32767 * np.sin(np.arange(n) * 0.3)), -32768, 32767).astype(np.int16),
    }
    for name, x in cases.items():
        fixed = compute_features(x, cfg)
        twin = compute_features_float(x, cfg)
        values = fixed / 2**cfg.frac_bits
        assert np.all(values >= cfg.log_floor) and np.all(values < 20), name  # full-scale band < 2^20
        assert np.max(np.abs(fixed - twin)) / 2**cfg.frac_bits < 0.05 or snr_db(fixed, twin) > 60, name


def test_silence_is_the_floor_and_level_shifts_log():
    """Version 1 (no normalisation): absolute log2 energies."""
    cfg = FrontendConfig(output="logmel", algorithm_version=1)
    zeros = compute_features(np.zeros(2048, np.int16), cfg)
    assert np.all(zeros == round(cfg.log_floor * 2**cfg.frac_bits))
    x = harmonic_vowel(0.5)
    a = compute_features(x, cfg) / 2**16
    b = compute_features((x // 2).astype(np.int16), cfg) / 2**16
    loud = a > 0  # far above the int16 rounding noise of x // 2
    # halving the amplitude lowers every (well above floor) log2 energy by 2
    assert np.allclose((a - b)[loud], 2.0, atol=0.02)


def test_bit_length_is_exact_at_every_power_of_two():
    """numpy's bit length (the C port's 64 - clz) reads a float64 exponent and corrects it with
    integers: exact where the float rounds up to the next power of two (2^k - 1 for k > 53), at 0
    and at the 2^62 top of its range."""
    pow2 = np.int64(1) << np.arange(63, dtype=np.int64)
    vals = {0, 1, 2, 3}
    for k in range(1, 63):
        vals |= {(1 << k) - 2, (1 << k) - 1, 1 << k, (1 << k) + 1}
        vals |= {(1 << k) - (1 << j) for j in range(max(0, k - 60), k)}  # 2^k - 2^j: round-up cases
    vals = sorted(v for v in vals if 0 <= v <= 1 << 62)
    rng = np.random.default_rng(5)
    vals += [int(v) >> int(k) for v, k in zip(rng.integers(0, 1 << 62, 2000), rng.integers(0, 62, 2000))]
    x = np.array(vals, dtype=np.int64)
    np.testing.assert_array_equal(_bit_length(x, pow2), [v.bit_length() for v in vals])
    assert _bit_length(x[:20].reshape(10, 2), pow2).shape == (10, 2)


def test_many_equals_single_and_frame_counts():
    cfg = FrontendConfig()
    clips = [harmonic_vowel(0.5, seed=1), white_noise(0.2, seed=2), np.zeros(100, np.int16), tone_sweep(0.05)]
    many = compute_features_many(clips, cfg)
    for clip, feats in zip(clips, many):
        np.testing.assert_array_equal(feats, compute_features(clip, cfg))
        assert feats.shape == (cfg.n_frames(clip.size), cfg.n_features)
    assert many[2].shape == (0, cfg.n_features)  # shorter than one frame: zero frames, documented


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros(0, np.int16), "empty"),
        (np.zeros(1000, np.float32), "float32"),
        (np.full(1000, np.nan), "NaN"),
        (np.zeros((1000, 2), np.int16), "2-channel"),
        (np.array([0, 40000, 5], np.int32), "outside int16"),
        (np.zeros((2, 3, 4), np.int16), "shape"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(bad, match):
    with pytest.raises(FrontendInputError, match=match):
        compute_features(bad, FrontendConfig())


def test_wrong_sample_rate_refused_and_int_types_accepted():
    with pytest.raises(FrontendInputError, match="44100 Hz"):
        compute_features(np.zeros(2048, np.int16), FrontendConfig(), sample_rate=44100)
    x = harmonic_vowel(0.2)
    np.testing.assert_array_equal(compute_features(x.astype(np.int32)), compute_features(x))
    np.testing.assert_array_equal(compute_features(x.reshape(-1, 1)), compute_features(x))


def test_config_hash_is_stable_and_sensitive():
    a, b = FrontendConfig(), FrontendConfig()
    assert a.hash == b.hash and len(a.hash) == 16
    c = FrontendConfig(n_mels=32)
    assert c.hash != a.hash
    assert a.diff(c) == {"n_mels": (40, 32)}
    assert FrontendConfig.from_dict(a.to_dict()) == a
    with pytest.raises(ValueError, match="unknown front-end parameters"):
        FrontendConfig.from_dict({**a.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="frame_length"):
        FrontendConfig(frame_length=500)
    with pytest.raises(ValueError, match="block_bits"):
        FrontendConfig(frame_length=2048, block_bits=21, algorithm_version=1)
    with pytest.raises(ValueError, match="block_bits"):
        FrontendConfig(frame_length=2048, block_bits=22)


@pytest.mark.parametrize("version", [1, 2])
def test_tables_are_integers_within_declared_formats(version):
    cfg = FrontendConfig(algorithm_version=version)
    t = make_tables(cfg)
    assert sorted(t.bitrev) == list(range(cfg.frame_length // 2))  # a permutation
    assert t.window_q.dtype == np.int32 and t.window_q.max() <= 2**cfg.window_bits
    for tab in (t.fft_cos_q, t.fft_sin_q, t.rfft_cos_q, t.rfft_sin_q):
        assert tab.dtype == np.int32 and np.abs(tab).max() <= 2**cfg.twiddle_bits
    assert t.mel.rise_q.min() >= 0 and t.mel.rise_q.max() <= 2**cfg.mel_bits
    assert t.mel.seg_len.sum() == t.mel.bin_hi - t.mel.bin_lo
    assert t.log_table_q[0] == 0 and t.log_table_q[-1] == 65536


@pytest.mark.parametrize("version,norm,min_snr", [(1, None, 80), (2, "none", 80), (2, "mean", 70)])
def test_other_configs_run(version, norm, min_snr):
    for kw in (dict(frame_length=256, hop_length=128, n_mels=24, fmax=7000.0),
               dict(frame_length=1024, hop_length=160, block_bits=20, n_mels=64, n_mfcc=20)):
        cfg = FrontendConfig(algorithm_version=version, norm=norm, **kw)
        x = harmonic_vowel(0.5)
        assert snr_db(compute_features(x, cfg), compute_features_float(x, cfg)) > min_snr


def test_frame_signal_is_a_read_only_view_of_the_frames():
    """frame_signal builds its view without ``sliding_window_view`` (whose ``__array_interface__``
    dict churned CPython's interned strings once per streamed chunk: the soak's 0.9 MB RSS step);
    the frames must stay exactly the strided frames of the input, without a copy."""
    cfg = FrontendConfig()
    L, H = cfg.frame_length, cfg.hop_length
    rng = np.random.default_rng(7)
    for n in (L - 1, L, L + H - 1, L + H, 16000, 16001):
        x = rng.integers(-32768, 32768, n).astype(np.int16)
        f = frame_signal(x, cfg)
        nf = cfg.n_frames(n)
        assert f.shape == (nf, L) and f.dtype == np.int16
        for k in range(nf):
            assert np.array_equal(f[k], x[k * H:k * H + L])
        if nf:
            assert np.shares_memory(f, x) and not f.flags.writeable
    strided = np.arange(40000, dtype=np.int16)[::2]  # not contiguous: framed from a copy
    assert np.array_equal(frame_signal(strided, cfg)[3], strided[3 * H:3 * H + L])
    frozen = np.frombuffer(np.arange(3000, dtype=np.int16).tobytes(), np.int16)  # read-only buffer
    assert np.array_equal(frame_signal(frozen, cfg)[-1], frozen[(cfg.n_frames(3000) - 1) * H:][:L])
