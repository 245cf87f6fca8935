"""Fixed-point MFCC / log-mel front end (integer arithmetic only; bit-exact with the C port).

Public API::

    cfg = FrontendConfig()                      # frozen; cfg.hash identifies it
    feats = compute_features(pcm_int16, cfg)    # int32 (n_frames, cfg.n_features), Q16 log2 units
    many = compute_features_many([pcm, ...])    # the same, vectorised across clips
    twin = compute_features_float(pcm, cfg)     # float64 twin of the same algorithm (error measurement)
    sf = StreamingFrontend(cfg); sf.push(chunk) # frames as they complete, bit-identical to batch

A clip shorter than one frame (``cfg.frame_length`` samples) yields zero frames; an empty array,
float/NaN input, stereo, or a wrong sample rate raise :class:`FrontendInputError`.
"""
from __future__ import annotations

import numpy as np

from .config import DEFAULT_CONFIG, FrontendConfig
from .fixed_point import FixedPointFrontend, engine_for, frame_signal
from .float_twin import compute_features_float
from .pcm import FrontendInputError, ensure_pcm16
from .streaming import StreamingFrontend
from .tables import FrontendTables, make_tables

__all__ = [
    "DEFAULT_CONFIG",
    "FixedPointFrontend",
    "FrontendConfig",
    "FrontendInputError",
    "FrontendTables",
    "StreamingFrontend",
    "compute_features",
    "compute_features_float",
    "compute_features_many",
    "ensure_pcm16",
    "frame_signal",
    "make_tables",
]


def compute_features(pcm: np.ndarray, cfg: FrontendConfig = DEFAULT_CONFIG, sample_rate: int | None = None) -> np.ndarray:
    """Integer features of one mono int16 clip: ``(n_frames, cfg.n_features)`` int32, Q(frac_bits)."""
    pcm = ensure_pcm16(pcm, sample_rate, cfg.sample_rate)
    return engine_for(cfg).process_frames(frame_signal(pcm, cfg))


def compute_features_many(clips: list[np.ndarray], cfg: FrontendConfig = DEFAULT_CONFIG) -> list[np.ndarray]:
    """Features of many clips in one vectorised pass (frames of all clips stacked); same output as
    calling :func:`compute_features` on each."""
    frames, counts = [], []
    for i, pcm in enumerate(clips):
        f = frame_signal(ensure_pcm16(pcm, name=f"clip {i}"), cfg)
        frames.append(f)
        counts.append(f.shape[0])
    if not frames:
        return []
    if not sum(counts):
        return [np.zeros((0, cfg.n_features), np.int32) for _ in counts]
    return engine_for(cfg).process_streams(np.concatenate(frames), counts)
