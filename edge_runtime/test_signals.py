"""Deterministic test signals (int16, 16 kHz) for demos, golden vectors and benchmarks."""
from __future__ import annotations

import numpy as np


def harmonic_vowel(seconds: float = 1.0, f0: float = 140.0, level_dbfs: float = -12.0, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A crude voiced sound: harmonics of ``f0`` with a -12 dB/octave tilt and vibrato, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f = f0 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = sum(np.sin(k * phase) / k**2 for k in range(1, int(sr / 2 / f0)))
    x = x / np.max(np.abs(x)) * 10 ** (level_dbfs / 20) + 1e-3 * rng.standard_normal(t.size)
    return np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)


def tone_sweep(seconds: float = 2.0, f_lo: float = 50.0, f_hi: float = 7900.0, level_dbfs: float = -1.0, sr: int = 16000) -> np.ndarray:
    """Linear chirp from ``f_lo`` to ``f_hi``."""
    t = np.arange(int(seconds * sr)) / sr
    x = np.sin(2 * np.pi * (f_lo * t + (f_hi - f_lo) / (2 * seconds) * t**2)) * 10 ** (level_dbfs / 20)
    return np.round(x * 32767).astype(np.int16)


def white_noise(seconds: float = 2.0, level_dbfs: float = -12.0, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """Gaussian white noise at an RMS of ``level_dbfs``, clipped to int16."""
    x = np.random.default_rng(seed).standard_normal(int(seconds * sr)) * 10 ** (level_dbfs / 20)
    return np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)


def quiet_speechlike(seconds: float = 2.0, peak_dbfs: float = -40.0, sr: int = 16000, seed: int = 1) -> np.ndarray:
    """A harmonic vowel scaled so that its peak is at ``peak_dbfs`` (default -40 dBFS, peak ~328)."""
    x = harmonic_vowel(seconds, level_dbfs=0.0, sr=sr, seed=seed).astype(np.float64)
    x *= 10 ** (peak_dbfs / 20) * 32767 / np.max(np.abs(x))
    return np.round(x).astype(np.int16)


def dithered_silence(seconds: float = 2.0, sr: int = 16000, seed: int = 2) -> np.ndarray:
    """Digital silence plus triangular dither of +-1 LSB."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    return (rng.integers(0, 2, n) - rng.integers(0, 2, n)).astype(np.int16)


def speech_with_pauses(seconds: float, sr: int = 16000, seed: int = 1) -> np.ndarray:
    """Voiced-speech-like audio (gliding f0, 9 harmonics) with syllable envelopes and pauses, so an
    energy gate opens and closes; peak at -10 dBFS."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f0 = 150 + 50 * np.sin(2 * np.pi * 0.5 * t)
    ph = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * ph) / k for k in range(1, 10))
    env = np.clip(np.sin(2 * np.pi * 0.3 * t), 0, None) ** 0.5 * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    x = x * env + 0.01 * rng.standard_normal(n)
    return np.round(0.3 * 32767 * x / np.abs(x).max()).astype(np.int16)


def pink_noise(seconds: float = 2.0, level_dbfs: float = -20.0, sr: int = 16000, seed: int = 3) -> np.ndarray:
    """Pink (1/f power) noise at an RMS of ``level_dbfs`` (white noise shaped in the frequency domain)."""
    n = int(seconds * sr)
    spec = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sr)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    x = np.fft.irfft(spec, n)
    x *= 10 ** (level_dbfs / 20) / np.sqrt(np.mean(x * x))
    return np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)


def _scaled(x: np.ndarray, peak_dbfs: float) -> np.ndarray:
    x = np.asarray(x, np.float64)
    m = np.max(np.abs(x))
    y = x * (10 ** (peak_dbfs / 20) / m) if m > 0 else x
    return np.round(np.clip(y, -1, 1) * 32767).astype(np.int16)


def nonspeech_signals(seconds: float = 4.0, levels_dbfs=(-60.0, -40.0, -25.0, -10.0), sr: int = 16000,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """Sounds that are not speech, each at each level (peak dBFS; RMS for the noises): white and pink
    noise, mains hum (50 Hz + harmonics), steady tones (440 Hz, 1 kHz, 3 kHz), a DC offset, click
    trains (2 clicks/s) and digital silence with ±1 LSB dither. ``{"white@-25": pcm, ...}``."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    out: dict[str, np.ndarray] = {}
    for lv in levels_dbfs:
        out[f"white@{lv:g}"] = white_noise(seconds, lv, sr, seed)
        out[f"pink@{lv:g}"] = pink_noise(seconds, lv, sr, seed + 1)
        hum = sum(np.sin(2 * np.pi * 50 * k * t + k) / k for k in (1, 2, 3, 5))
        out[f"hum@{lv:g}"] = _scaled(hum, lv)
        for f in (440, 1000, 3000):
            out[f"tone{f}@{lv:g}"] = _scaled(np.sin(2 * np.pi * f * t), lv)
        out[f"dc@{lv:g}"] = _scaled(np.ones(n), lv)
        clicks = np.zeros(n)
        clicks[(np.arange(0, seconds, 0.5) * sr).astype(int) + 1000] = 1.0
        clicks[(np.arange(0, seconds, 0.5) * sr).astype(int) + 1001] = -0.6
        out[f"clicks@{lv:g}"] = _scaled(clicks, lv)
    out["silence"] = np.zeros(n, np.int16)
    out["dither"] = dithered_silence(seconds, sr, seed + 2)
    return out
