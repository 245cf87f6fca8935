"""Variable-length clips -> fixed windows of front-end frames, and window scores -> clip scores.

A window is ``window_frames`` consecutive frames; windows start every ``hop_frames`` frames and the
last one is aligned to the clip's end (so no window is padded unless the clip is shorter than one
window). Short clips are padded at the end with the front end's silence frame: the features of
digital silence (every mel band at the log floor), exactly what the device computes for silence.
A clip's prediction is the mean of its windows' probabilities.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=16)
def _silence_frame(cfg) -> np.ndarray:
    from edge_runtime.frontend import compute_features

    return np.asarray(compute_features(np.zeros(cfg.frame_length, np.int16), cfg)[0])


def silence_frame(cfg) -> np.ndarray:
    """The front end's output for one frame of digital silence (the padding value), raw Q units."""
    return _silence_frame(cfg).copy()


def window_starts(n_frames: int, window_frames: int, hop_frames: int) -> list[int]:
    """Start frames of the windows of an ``n_frames`` clip (last window aligned to the end)."""
    if n_frames <= window_frames:
        return [0]
    starts = list(range(0, n_frames - window_frames + 1, hop_frames))
    if starts[-1] != n_frames - window_frames:
        starts.append(n_frames - window_frames)
    return starts


def clip_windows(feats: np.ndarray, window_frames: int, hop_frames: int, pad_frame: np.ndarray) -> np.ndarray:
    """``(n_windows, window_frames, n_features)`` windows of one clip's ``(n_frames, F)`` features."""
    f = np.asarray(feats)
    if f.shape[0] < window_frames:
        pad = np.broadcast_to(np.asarray(pad_frame, f.dtype), (window_frames - f.shape[0], f.shape[1]))
        f = np.concatenate([f, pad]) if f.shape[0] else np.array(pad)
    starts = window_starts(f.shape[0], window_frames, hop_frames)
    return np.stack([f[s:s + window_frames] for s in starts])


def make_windows(feats_list, window_frames: int, hop_frames: int, pad_frame: np.ndarray,
                 labels=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Windows of many clips: ``(X, clip_index, y)``; ``y`` repeats each clip's label per window."""
    xs, idx = [], []
    for i, f in enumerate(feats_list):
        w = clip_windows(f, window_frames, hop_frames, pad_frame)
        xs.append(w)
        idx.append(np.full(len(w), i, dtype=np.int64))
    X = np.concatenate(xs) if xs else np.zeros((0, window_frames, len(pad_frame)))
    ci = np.concatenate(idx) if idx else np.zeros(0, np.int64)
    y = None if labels is None else np.asarray(labels)[ci]
    return X, ci, y


def aggregate(window_probs: np.ndarray, clip_index: np.ndarray, n_clips: int) -> np.ndarray:
    """Clip probabilities = mean of each clip's window probabilities."""
    p = np.asarray(window_probs, np.float64)
    out = np.zeros((n_clips, p.shape[1]))
    np.add.at(out, clip_index, p)
    counts = np.bincount(clip_index, minlength=n_clips).astype(np.float64)
    return out / np.maximum(counts, 1)[:, None]


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
