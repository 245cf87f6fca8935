"""Front-end features for training clips: fixed-point (what the device computes), cached on disk.

Every model input is the fixed-point front end's output (``edge_runtime.frontend``) converted to
real log2 units (``q / 2**frac_bits``); the float64 twin is computed only to measure what the
fixed-point arithmetic costs. Features are cached per clip as ``<cache>/<cfg.hash>/<sha1>.npz``
where ``sha1`` hashes the int16 PCM bytes, so augmented copies and re-runs reuse work and any
front-end change (new hash) invalidates everything automatically.
"""
from __future__ import annotations

import hashlib
import os
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np


def default_cache_dir() -> Path:
    """``$SER_EDGE_CACHE`` or ``~/.cache/ser-edge`` (features live under ``features/``)."""
    return Path(os.environ.get("SER_EDGE_CACHE", Path.home() / ".cache" / "ser-edge")) / "features"


def audio_key(pcm: np.ndarray) -> str:
    """sha1 of the int16 PCM bytes (the cache key, together with the front-end hash)."""
    return hashlib.sha1(np.ascontiguousarray(pcm, dtype=np.int16).tobytes()).hexdigest()


def to_real(q: np.ndarray, cfg) -> np.ndarray:
    """Fixed-point features (Q``frac_bits``) -> float32 log2 units (the model's input units)."""
    return (np.asarray(q, np.float64) / float(1 << cfg.frac_bits)).astype(np.float32)


def _cached(audios: Sequence[np.ndarray], cfg, kind: str, compute, cache_dir, progress: bool,
            batch: int, desc: str) -> list[np.ndarray]:
    cache = Path(cache_dir) / cfg.hash if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    keys = [audio_key(a) for a in audios]
    out: list[np.ndarray | None] = [None] * len(audios)
    todo = []
    for i, k in enumerate(keys):
        p = cache / f"{k}{kind}.npz" if cache is not None else None
        if p is not None and p.exists():
            try:
                with np.load(p) as z:
                    out[i] = z["f"]
                continue
            except (OSError, ValueError, KeyError):  # truncated by a killed run: recompute
                pass
        todo.append(i)
    if todo:
        from tqdm.auto import tqdm

        with tqdm(total=len(todo), desc=desc, unit="clip", disable=not progress, leave=False) as bar:
            for s in range(0, len(todo), batch):
                idx = todo[s:s + batch]
                feats = compute([audios[i] for i in idx])
                for i, f in zip(idx, feats):
                    out[i] = f
                    if cache is not None:
                        tmp = cache / f"{keys[i]}{kind}.tmp.npz"
                        np.savez(tmp, f=f)
                        os.replace(tmp, cache / f"{keys[i]}{kind}.npz")
                bar.update(len(idx))
    return out  # type: ignore[return-value]


def fixed_point_features(audios: Sequence[np.ndarray], cfg, cache_dir: str | os.PathLike | None = "default",
                         progress: bool = True, batch: int = 64) -> list[np.ndarray]:
    """Fixed-point front-end features (raw Q``frac_bits`` integers) of each int16 clip, cached.

    ``cache_dir=None`` disables the cache; ``"default"`` uses :func:`default_cache_dir`.
    """
    from edge_runtime.frontend import compute_features_many

    cache_dir = default_cache_dir() if cache_dir == "default" else cache_dir
    return _cached(audios, cfg, "", lambda xs: compute_features_many(list(xs), cfg), cache_dir,
                   progress, batch, "front end (fixed point)")


def float_twin_features(audios: Sequence[np.ndarray], cfg, cache_dir: str | os.PathLike | None = "default",
                        progress: bool = True) -> list[np.ndarray]:
    """Float64-twin features (same frames and Q units as the fixed-point ones); comparison only."""
    from edge_runtime.frontend import compute_features_float

    cache_dir = default_cache_dir() if cache_dir == "default" else cache_dir
    return _cached(audios, cfg, "_f64", lambda xs: [compute_features_float(x, cfg) for x in xs],
                   cache_dir, progress, 64, "front end (float64 twin)")


# ----------------------------------------------------------------------------- augmentation
def augment(pcm: np.ndarray, rng: np.random.Generator, speed: float = 0.1, gain_db: float = 6.0,
            snr_db: tuple[float, float] = (10.0, 30.0), p_noise: float = 0.5) -> np.ndarray:
    """One random copy of an int16 clip: speed (+-``speed``, resampled, so pitch moves too),
    gain (+-``gain_db``), and with probability ``p_noise`` white noise at 10-30 dB SNR."""
    from scipy.signal import resample_poly

    x = np.asarray(pcm, np.float64) / 32768.0
    if speed > 0:
        r = Fraction(float(rng.uniform(1 - speed, 1 + speed))).limit_denominator(50)
        if r != 1:
            x = resample_poly(x, r.denominator, r.numerator)  # faster speech = fewer samples
    x = x * 10 ** (rng.uniform(-gain_db, gain_db) / 20)
    if rng.random() < p_noise:
        p_sig = float(np.mean(x * x)) + 1e-12
        snr = rng.uniform(*snr_db)
        x = x + rng.standard_normal(x.size) * np.sqrt(p_sig / 10 ** (snr / 10))
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


def augmented_copies(audios: Sequence[np.ndarray], n_copies: int, seed: int = 0) -> list[list[np.ndarray]]:
    """``n_copies`` deterministic augmented versions of each clip (seeded by clip index and copy)."""
    return [[augment(audios[i], np.random.default_rng([seed, i, c])) for c in range(n_copies)]
            for i in range(len(audios))]
