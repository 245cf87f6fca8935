"""float64 twin of the fixed-point front end: the same algorithm without any rounding.

Used only to measure the integer path's error (``bench/frontend.py``) and to train the
'float front end' comparison row; never on the device. Output is in the same units as the
integer features (log2 values times ``2**frac_bits``), unrounded.
"""
from __future__ import annotations

import numpy as np

from .config import FrontendConfig
from .fixed_point import frame_signal
from .tables import make_tables


def normalise_mean_float(logmel: np.ndarray, norm_shift: int) -> np.ndarray:
    """Exact running-mean subtraction ``(F, n_mels)``: the cumulative mean over the first
    2^norm_shift frames, then an exponential smoother with weight 2^-norm_shift (v2 ``norm='mean'``)."""
    cap = 1 << norm_shift
    out = np.empty_like(logmel)
    mean = np.zeros(logmel.shape[1])
    for t in range(logmel.shape[0]):
        mean += (logmel[t] - mean) / min(t + 1, cap)
        out[t] = logmel[t] - mean
    return out


def compute_features_float(pcm: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """Float64 features of int16 ``pcm`` (same frames and units as :func:`compute_features`)."""
    t = make_tables(cfg)
    frames = frame_signal(np.asarray(pcm), cfg).astype(np.float64) / 32768.0
    spec = np.fft.rfft(frames * t.window_f, axis=1)
    mel_t = t.mel
    p = (spec.real**2 + spec.imag**2)[:, mel_t.bin_lo : mel_t.bin_hi]
    seg = np.repeat(np.arange(cfg.n_mels + 1), mel_t.seg_len.astype(np.intp))  # intp: armv7 is 32-bit
    weights = np.zeros((p.shape[1], cfg.n_mels))
    cols = np.arange(p.shape[1])
    rise_ok = seg < cfg.n_mels
    weights[cols[rise_ok], seg[rise_ok]] = mel_t.rise_f[rise_ok]
    fall_ok = seg > 0
    weights[cols[fall_ok], seg[fall_ok] - 1] = 1.0 - mel_t.rise_f[fall_ok]
    mel = p @ weights
    with np.errstate(divide="ignore"):
        logmel = np.maximum(np.log2(mel), cfg.log_floor)
    if cfg.algorithm_version >= 2 and cfg.norm == "mean":
        logmel = normalise_mean_float(logmel, cfg.norm_shift)
    out = logmel if cfg.output == "logmel" else logmel @ t.dct_f.T
    return out * (1 << cfg.frac_bits)
